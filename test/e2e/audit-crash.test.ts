/**
 * Durability: a child process appends events in a loop (group-committed
 * batches of varying size, a checkpoint now and then) and prints each
 * receipt only after its promise resolved; it is killed with SIGKILL
 * mid-stream. Every receipt it printed must be in the log, at its seq with
 * its chain value, and the log must reopen and verify.
 */
import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, describe, expect, it } from 'vitest'
import { ecdsaNoteSigner, parseVerifierKey, verifierKey } from '../../src/audit/index.js'
import { AuditLog } from '../../src/audit/store/audit-log.js'
import { AuditLogReader } from '../../src/audit/store/log-reader.js'
import { DiskKeyManager } from '../../src/keymanager/index.js'
import { E2E_REPO } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { ORIGIN } from '../unit/audit/helpers.js'

const src = (p: string): string => join(E2E_REPO, 'src', p)

const CHILD = `
import { ecdsaNoteSigner } from ${JSON.stringify(src('audit/index.ts'))}
import { AuditLog } from ${JSON.stringify(src('audit/store/audit-log.ts'))}
import { DiskKeyManager } from ${JSON.stringify(src('keymanager/index.ts'))}
const [path, keys, origin] = process.argv.slice(2)
const key = await new DiskKeyManager({ dir: keys }).getKey('audit')
const log = AuditLog.open({ path, origin, signer: ecdsaNoteSigner(origin, key) })
let i = 0
for (;;) {
  const n = 1 + (i % 9)
  const batch = []
  for (let k = 0; k < n; k++, i++) {
    batch.push(log.append({ type: 'token.exchanged', outcome: 'success', actor: { spiffe_id: 'spiffe://example.org/agents/a' }, task_id: 'task-' + i }))
  }
  for (const p of batch) {
    const r = await p
    process.stdout.write(r.seq + ' ' + r.chainHash + '\\n')
  }
  if (i % 40 < 9) await log.checkpoint()
}
`

describe('audit log survives kill -9 of its writer', () => {
  const tmp = tempDir('waudit-crash-')
  afterAll(() => tmp.cleanup())

  it('every acknowledged append is present after SIGKILL, and the log verifies', async () => {
    const path = join(tmp.dir, 'audit.db')
    const keys = join(tmp.dir, 'keys')
    const key = await new DiskKeyManager({ dir: keys }).generateKey('audit', 'ec-p256')
    const script = join(tmp.dir, 'child.mts')
    writeFileSync(script, CHILD)

    const child = spawn(process.execPath, ['--import', 'tsx', script, path, keys, ORIGIN], { cwd: E2E_REPO, stdio: ['ignore', 'pipe', 'pipe'] })
    const acked = new Map<number, string>()
    let buffered = ''
    let stderr = ''
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`child acknowledged only ${acked.size} appends: ${stderr}`)), 60_000)
      child.stdout.on('data', (d: Buffer) => {
        buffered += d.toString()
        const lines = buffered.split('\n')
        buffered = lines.pop()!
        for (const l of lines) {
          const [seq, chain] = l.split(' ')
          acked.set(Number(seq), chain!)
        }
        if (acked.size >= 600) {
          clearTimeout(timer)
          child.kill('SIGKILL')
          resolve()
        }
      })
      child.on('exit', (code) => {
        clearTimeout(timer)
        if (acked.size < 600) reject(new Error(`child exited ${code}: ${stderr}`))
      })
    })
    await exited
    expect(child.signalCode).toBe('SIGKILL')

    // straight from the file as the crash left it (WAL included)
    const db = new Database(path, { readonly: true })
    const stored = new Map(
      (db.prepare('SELECT seq, chain_hash FROM audit_events').all() as { seq: number; chain_hash: Buffer }[]).map((r) => [r.seq, r.chain_hash.toString('hex')]),
    )
    db.close()
    const missing = [...acked].filter(([seq, chain]) => stored.get(seq) !== chain)
    expect(missing).toEqual([])
    expect(stored.size).toBeGreaterThanOrEqual(acked.size)

    // the log reopens (its tree state matches its last event), takes a checkpoint, and verifies
    const log = AuditLog.open({ path, origin: ORIGIN, signer: ecdsaNoteSigner(ORIGIN, key) })
    expect(log.size).toBe(stored.size)
    await log.append({ type: 'signal', outcome: 'success', reason: 'writer_restarted' })
    await log.checkpoint()
    await log.close()
    const reader = AuditLogReader.open(path)
    const report = reader.verify({ verifier: parseVerifierKey(verifierKey(ORIGIN, key.publicKey)) })
    reader.close()
    expect(report).toMatchObject({ ok: true, events: stored.size + 1, unsignedTail: 0 })
  })
})
