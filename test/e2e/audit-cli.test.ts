/**
 * `warrant audit` as a real process over a real log file: verify (whole,
 * and on tampered copies, with the place and the code), prove and
 * verify-proof (inclusion and consistency), tail and search, verifier-key.
 */
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { buildLog, checkpointKey } from '../unit/audit/helpers.js'

describe('warrant audit (CLI)', () => {
  const tmp = tempDir('waudit-cli-')
  let log: string
  let key: Awaited<ReturnType<typeof checkpointKey>>

  beforeAll(async () => {
    key = await checkpointKey()
    log = await buildLog(tmp.dir, 30, [10, 25], key.signer)
  })
  afterAll(() => tmp.cleanup())

  it('verify: an intact copy exits 0 and reports what it checked', async () => {
    const copy = join(tmp.dir, 'copy.db')
    copyFileSync(log, copy)
    const r = await warrant(['audit', 'verify', '--log', copy, '--key', key.vkey, '--output', 'json'])
    expect(r.code, r.stderr).toBe(0)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: true, events: 30, checkpoints: 2, verified_size: 25, unsigned_tail: 5, problem: null })
    const keyFile = join(tmp.dir, 'vkey')
    writeFileSync(keyFile, `${key.vkey}\n`)
    const pretty = await warrant(['audit', 'verify', '--log', copy, '--key-file', keyFile])
    expect(pretty.code, pretty.stderr).toBe(0)
    expect(pretty.stdout).toMatch(/^OK: 30 events; 2 checkpoint\(s\) verified/)
  })

  it('verify: a tampered copy exits 1 with the stable code and the event where it breaks', async () => {
    const copy = join(tmp.dir, 'tampered.db')
    copyFileSync(log, copy)
    const db = new Database(copy)
    db.prepare('DELETE FROM audit_events WHERE seq = 17').run()
    db.close()
    const r = await warrant(['audit', 'verify', '--log', copy, '--key', key.vkey, '--output', 'json'])
    expect(r.code).toBe(1)
    expect(JSON.parse(r.stdout).problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'seq_gap', seq: 17 })
    expect(r.stderr).toMatch(/verification failed at event 17 \(seq_gap\).*\[ERR_AUDIT_LOG_TAMPERED\]/)
    // on this thread only (the default hashes on worker threads): the same report
    const single = await warrant(['audit', 'verify', '--log', copy, '--key', key.vkey, '--workers', '0', '--output', 'json'])
    expect(single.code).toBe(1)
    expect(JSON.parse(single.stdout)).toEqual(JSON.parse(r.stdout))
  })

  it('verify: a log checked with another key exits 1 with ERR_AUDIT_CHECKPOINT_INVALID', async () => {
    const other = await checkpointKey()
    const r = await warrant(['audit', 'verify', '--log', log, '--key', other.vkey])
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/checkpoint of size 10 \(signature_missing\).*\[ERR_AUDIT_CHECKPOINT_INVALID\]/)
  })

  it('prove and verify-proof: inclusion against a checkpoint and consistency between two, checked offline', async () => {
    const proof = join(tmp.dir, 'proof.json')
    const p = await warrant(['audit', 'prove', '--log', log, '--seq', '8', '--size', '10', '--out', proof])
    expect(p.code, p.stderr).toBe(0)
    expect(JSON.parse(readFileSync(proof, 'utf8'))).toMatchObject({ format: 'warrant-audit-inclusion-v1', seq: 8, leaf_index: 7, tree_size: 10 })
    const v = await warrant(['audit', 'verify-proof', '--proof', proof, '--key', key.vkey])
    expect(v.code, v.stderr).toBe(0)
    expect(v.stdout).toMatch(/^OK: event 8 \(x509_svid.issued, 2026-12-05T12:00:07.000Z\) is in the log of 10 events/)
    // a proof for another event's bytes does not verify
    const bundle = JSON.parse(readFileSync(proof, 'utf8')) as { event: string }
    bundle.event = bundle.event.replace('task-000007', 'task-000070')
    writeFileSync(proof, JSON.stringify(bundle))
    const bad = await warrant(['audit', 'verify-proof', '--proof', proof, '--key', key.vkey])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain('[ERR_AUDIT_PROOF_INVALID]')
    const cons = join(tmp.dir, 'consistency.json')
    expect((await warrant(['audit', 'prove', '--log', log, '--from-size', '10', '--size', '25', '--out', cons])).code).toBe(0)
    const c = await warrant(['audit', 'verify-proof', '--proof', cons, '--key', key.vkey, '--output', 'json'])
    expect(c.code, c.stderr).toBe(0)
    expect(JSON.parse(c.stdout)).toMatchObject({ ok: true, first_size: 10, second_size: 25 })
  })

  it('tail and search by type, actor, task and time', async () => {
    const t = await warrant(['audit', 'tail', '--log', log, '-n', '2', '--output', 'json'])
    expect(t.code, t.stderr).toBe(0)
    expect((JSON.parse(t.stdout) as { seq: number }[]).map((e) => e.seq)).toEqual([29, 30])
    const s = await warrant([
      'audit',
      'search',
      '--log',
      log,
      '--type',
      'token.exchanged',
      '--actor',
      'spiffe://example.org/agents/a',
      '--since',
      '2026-12-05T12:00:00Z',
      '--until',
      '2026-12-05T12:00:20Z',
      '--output',
      'json',
    ])
    expect(s.code, s.stderr).toBe(0)
    expect((JSON.parse(s.stdout) as { seq: number; event: { task_id: string } }[]).map((e) => e.event.task_id)).toEqual(['task-000000', 'task-000015'])
    const byTask = await warrant(['audit', 'search', '--log', log, '--task', 'task-000004'])
    expect(byTask.code, byTask.stderr).toBe(0)
    expect(byTask.stdout).toMatch(/^\s+5 {2}2026-12-05T12:00:04.000Z {2}node_attestation.refused {2}refused {2}ERR_JOIN_TOKEN_INVALID/)
  })

  it('verifier-key: prints the C2SP verifier key of a checkpoint public key', async () => {
    const pem = join(tmp.dir, 'pub.pem')
    writeFileSync(pem, key.key.publicKey.export({ type: 'spki', format: 'pem' }))
    const r = await warrant(['audit', 'verifier-key', '--public-key', pem, '--name', 'example.org/warrant/audit'])
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim()).toBe(key.vkey)
    expect((await warrant(['audit', 'verify', '--log', log])).code).toBe(1)
    expect((await warrant(['audit', 'nope'])).code).toBe(2)
  })
})
