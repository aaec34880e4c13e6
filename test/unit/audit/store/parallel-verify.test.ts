import { copyFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chainHash, GENESIS, parseVerifierKey } from '../../../../src/audit/index.js'
import { AuditLog } from '../../../../src/audit/store/audit-log.js'
import { AuditLogReader, verifyFileInParallel } from '../../../../src/audit/store/log-reader.js'
import { checkpointKey, ORIGIN, sampleEvent } from '../helpers.js'

/** Three whole pages of 4,096 and a part, with checkpoints on and off page boundaries. */
const N = 3 * 4096 + 100
const CHECKPOINTS = [4096, 6000, 8192, N]

describe('verify on worker threads gives the single-threaded report', () => {
  let dir: string
  let original: string
  let key: Awaited<ReturnType<typeof checkpointKey>>
  let n = 0

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wpar-'))
    key = await checkpointKey()
    original = join(dir, 'audit.db')
    const log = AuditLog.open({ path: original, origin: ORIGIN, signer: key.signer })
    let i = 0
    for (const size of CHECKPOINTS) {
      const batch: Promise<unknown>[] = []
      for (; i < size; i++) batch.push(log.append(sampleEvent(i)))
      await Promise.all(batch)
      await log.checkpoint()
    }
    await log.close()
  }, 120_000)
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  async function both(edit: (db: Database.Database) => void, checkEvents = true) {
    const path = join(dir, `c${n++}.db`)
    copyFileSync(original, path)
    const db = new Database(path)
    edit(db)
    db.pragma('wal_checkpoint(TRUNCATE)')
    db.close()
    const reader = AuditLogReader.open(path)
    try {
      const verifier = parseVerifierKey(key.vkey)
      const single = reader.verify({ verifier, checkEvents })
      const parallel = await verifyFileInParallel(reader, { verifier, checkEvents, workers: 2 })
      expect(parallel).toEqual(single)
      // every page read and hashed on a worker thread
      const onWorkers = await verifyFileInParallel(reader, { verifier, checkEvents, workers: 2, workersOnly: true })
      expect(onWorkers).toEqual(single)
      return single
    } finally {
      reader.close()
    }
  }

  const setEvent = (db: Database.Database, seq: number, f: (s: string) => string) => {
    const e = (db.prepare('SELECT event FROM audit_events WHERE seq = ?').get(seq) as { event: Buffer }).event
    db.prepare('UPDATE audit_events SET event = ? WHERE seq = ?').run(Buffer.from(f(e.toString())), seq)
  }

  it('an intact log', async () => {
    expect(await both(() => undefined)).toMatchObject({ ok: true, events: N, verifiedSize: N })
  })

  it('an edited event inside a whole page', async () => {
    expect((await both((db) => setEvent(db, 5000, (s) => s.replace('"read"', '"reae"')))).problem).toMatchObject({ kind: 'chain_mismatch', seq: 5000 })
  })

  it('a deleted row (the page with the gap is applied row by row)', async () => {
    expect((await both((db) => db.prepare('DELETE FROM audit_events WHERE seq = 9000').run())).problem).toMatchObject({ kind: 'seq_gap', seq: 9000 })
  })

  it('two swapped rows, and a non-canonical event, with and without the event check', async () => {
    const swap = (db: Database.Database) => {
      db.prepare('UPDATE audit_events SET seq = -1 WHERE seq = 100').run()
      db.prepare('UPDATE audit_events SET seq = 100 WHERE seq = 101').run()
      db.prepare('UPDATE audit_events SET seq = 101 WHERE seq = -1').run()
    }
    expect((await both(swap)).problem).toMatchObject({ kind: 'chain_mismatch', seq: 100 })
    const spaced = (db: Database.Database) => setEvent(db, 7, (s) => s.replace(',', ', '))
    expect((await both(spaced)).problem).toMatchObject({ kind: 'non_canonical', seq: 7 })
    expect((await both(spaced, false)).problem).toMatchObject({ kind: 'chain_mismatch', seq: 7 })
  })

  it('a rewrite with recomputed chain values inside a whole page, and a cut-off log', async () => {
    const rewrite = (db: Database.Database) => {
      const rows = db.prepare('SELECT seq, event FROM audit_events ORDER BY seq').all() as { seq: number; event: Buffer }[]
      let chain: Uint8Array = GENESIS
      const up = db.prepare('UPDATE audit_events SET event = ?, chain_hash = ? WHERE seq = ?')
      db.transaction(() => {
        for (const r of rows) {
          const bytes = r.seq === 10_001 ? Buffer.from(r.event.toString().replace('"success"', '"error","reason":"X"')) : r.event
          chain = chainHash(chain, bytes)
          up.run(bytes, chain, r.seq)
        }
      })()
    }
    expect((await both(rewrite)).problem).toMatchObject({ kind: 'root_mismatch', range: { after: 8192, upTo: N } })
    expect((await both((db) => db.prepare('DELETE FROM audit_events WHERE seq > 7000').run())).problem).toMatchObject({ kind: 'truncated', seq: 7001 })
  })
})
