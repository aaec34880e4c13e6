import { spawn } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openSqliteDataStore } from '../../src/server/datastore/index.js'
import { tempDir } from '../helpers/temp.js'

const repoRoot = resolve(import.meta.dirname, '..', '..')
const datastoreIndex = join(repoRoot, 'src', 'server', 'datastore', 'index.ts')

/**
 * The child creates entries (three selectors, a DNS name) and transactions
 * (an entry plus a kv record) as fast as it can, printing each id only after
 * the write resolved. Writes to a pipe are synchronous on Linux, so a printed
 * id was acknowledged before the next write began.
 */
const CHILD = `
import { openSqliteDataStore } from ${JSON.stringify(datastoreIndex)}
const [path, round] = process.argv.slice(2)
const ds = await openSqliteDataStore({ path })
let n = 0
const one = async () => {
  const i = n++
  const spec = {
    spiffeId: 'spiffe://corp.example/r' + round + '/w' + i,
    parentId: 'spiffe://corp.example/agent',
    selectors: [{ type: 'unix', value: 'uid:' + i }, { type: 'unix', value: 'gid:' + (i % 7) }, { type: 'k8s', value: 'ns:' + round }],
    x509SvidTtl: 0, jwtSvidTtl: 0, dnsNames: ['w' + i + '.example'], federatesWith: [], hint: '',
    admin: false, downstream: false, expiresAt: null,
  }
  if (i % 5 === 0) {
    const id = await ds.tx(async (t) => {
      const e = await t.entries.create(spec)
      await t.kv.put('crash', e.id, String(i))
      return e.id
    })
    process.stdout.write('tx ' + id + '\\n')
  } else {
    const e = await ds.entries.create(spec)
    process.stdout.write('entry ' + e.id + '\\n')
  }
}
for (;;) await Promise.all([one(), one(), one(), one()])
`

interface Acked {
  entries: string[]
  txs: string[]
}

function runChildUntilKilled(script: string, path: string, round: number, killAfter: number): Promise<Acked> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, path, String(round)], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    const acked: Acked = { entries: [], txs: [] }
    let stderr = ''
    let killed = false
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString()
    })
    const rl = createInterface({ input: child.stdout })
    const drained = new Promise<void>((r) => rl.once('close', () => r()))
    rl.on('line', (line) => {
      const [kind, id] = line.split(' ')
      if (kind === 'tx' && id !== undefined) acked.txs.push(id)
      else if (kind === 'entry' && id !== undefined) acked.entries.push(id)
      if (!killed && acked.entries.length + acked.txs.length >= killAfter) {
        killed = true
        child.kill('SIGKILL')
      }
    })
    child.on('error', reject)
    child.on('close', (code, signal) => {
      if (signal !== 'SIGKILL') reject(new Error(`child exited (code ${code}, signal ${signal}) before it was killed: ${stderr}`))
      else void drained.then(() => resolvePromise(acked))
    })
  })
}

describe('SQLite datastore crash safety', () => {
  let dir: string
  let cleanup: () => void
  beforeEach(() => {
    ;({ dir, cleanup } = tempDir('w-crash-'))
  })
  afterEach(() => cleanup())

  it('every acknowledged write survives SIGKILL, with no partial entry, across repeated crashes', async () => {
    const script = join(dir, 'writer.mts')
    writeFileSync(script, CHILD)
    const path = join(dir, 'db', 'datastore.sqlite3')
    const all: Acked = { entries: [], txs: [] }

    for (let round = 0; round < 3; round++) {
      const acked = await runChildUntilKilled(script, path, round, 120)
      all.entries.push(...acked.entries)
      all.txs.push(...acked.txs)

      const db = new Database(path, { fileMustExist: true })
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok')
      expect(db.pragma('foreign_key_check')).toEqual([])
      db.close()

      const ds = await openSqliteDataStore({ path })
      try {
        for (const id of [...all.entries, ...all.txs]) {
          const e = await ds.entries.find(id)
          expect(e, `acknowledged entry ${id}`).toBeDefined()
        }
        for (const id of all.txs) expect(await ds.kv.get('crash', id), `kv of acknowledged tx ${id}`).toBeDefined()
        // No partial writes: every stored entry is whole, every kv record has its entry.
        const { entries } = await ds.entries.list()
        expect(entries.length).toBeGreaterThanOrEqual(all.entries.length + all.txs.length)
        for (const e of entries) {
          expect(e.selectors, e.id).toHaveLength(3)
          expect(e.dnsNames, e.id).toHaveLength(1)
        }
        const ids = new Set(entries.map((e) => e.id))
        for (const { key } of await ds.kv.list('crash')) expect(ids.has(key), `entry of kv ${key}`).toBe(true)
      } finally {
        await ds.close()
      }
    }
  })
})
