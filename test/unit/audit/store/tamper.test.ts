/**
 * Tampering with a copy of a real log file, each one found and located by
 * `verify`: a flipped byte (through SQL and in the raw file), a deleted row,
 * two rows swapped, a cut-off log (rows and raw bytes), a rewritten event
 * with every later chain value recomputed, stripped checkpoints, and a
 * whole replacement log, self-consistent but signed by another key.
 */
import { copyFileSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { chainHash, GENESIS, parseVerifierKey, type VerifyReport } from '../../../../src/audit/index.js'
import { AuditLogReader } from '../../../../src/audit/store/log-reader.js'
import { buildLog, checkpointKey } from '../helpers.js'

describe('verify finds and locates tampering in a copy of the log file', () => {
  let dir: string
  let original: string
  let key: Awaited<ReturnType<typeof checkpointKey>>
  let n = 0

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'wtamper-'))
    key = await checkpointKey()
    // 45 events; checkpoints at 20 and 40; 41..45 chained but not yet signed
    original = await buildLog(dir, 45, [20, 40], key.signer)
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  /** A fresh copy of the original, changed by `edit`, then verified. */
  function tampered(edit: (db: Database.Database, path: string) => void, opts: { external?: string[]; raw?: (path: string) => void } = {}): VerifyReport {
    const path = join(dir, `copy-${n++}.db`)
    copyFileSync(original, path)
    const db = new Database(path)
    edit(db, path)
    db.pragma('wal_checkpoint(TRUNCATE)')
    db.close()
    opts.raw?.(path)
    let reader: AuditLogReader
    try {
      reader = AuditLogReader.open(path)
    } catch (err) {
      return {
        ok: false,
        events: 0,
        checkpoints: 0,
        verifiedSize: 0,
        unsignedTail: 0,
        rootHash: '',
        origin: undefined,
        problem: { code: (err as { code: 'ERR_AUDIT_UNAVAILABLE' }).code, kind: 'unreadable', message: (err as Error).message },
      }
    }
    try {
      return reader.verify({ verifier: parseVerifierKey(key.vkey), ...(opts.external ? { external: opts.external } : {}) })
    } finally {
      reader.close()
    }
  }

  const event = (db: Database.Database, seq: number): Buffer => (db.prepare('SELECT event FROM audit_events WHERE seq = ?').get(seq) as { event: Buffer }).event

  it('the untouched copy verifies: 45 events, 40 signed, 5 chained but not yet signed', () => {
    expect(tampered(() => undefined)).toMatchObject({
      ok: true,
      events: 45,
      checkpoints: 2,
      verifiedSize: 40,
      unsignedTail: 5,
      origin: 'example.org/warrant/audit',
    })
  })

  it('a flipped byte in an event (SQL) is located at its event', () => {
    const r = tampered((db) => {
      const e = event(db, 7)
      e[e.indexOf('"scope"') + 10]! ^= 0x01
      db.prepare('UPDATE audit_events SET event = ? WHERE seq = 7').run(e)
    })
    expect(r.ok).toBe(false)
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', seq: 7 })
    expect(['chain_mismatch', 'event_invalid', 'non_canonical']).toContain(r.problem!.kind)
  })

  it('a flipped byte in the raw file (inside an event) is located at its event', () => {
    const r = tampered(() => undefined, {
      raw: (path) => {
        const bytes = readFileSync(path)
        // event 24's time, which only its event blob holds
        const at = bytes.indexOf(Buffer.from('2026-12-05T12:00:23.000Z'))
        expect(at).toBeGreaterThan(0)
        bytes[at + 18] = '4'.charCodeAt(0)
        writeFileSync(path, bytes)
      },
    })
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'chain_mismatch', seq: 24 })
  })

  it('a deleted row is located as a gap', () => {
    const r = tampered((db) => db.prepare('DELETE FROM audit_events WHERE seq = 10').run())
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'seq_gap', seq: 10 })
  })

  it('two rows swapped are located at the first of them', () => {
    const r = tampered((db) => {
      db.prepare('UPDATE audit_events SET seq = -1 WHERE seq = 5').run()
      db.prepare('UPDATE audit_events SET seq = 5 WHERE seq = 6').run()
      db.prepare('UPDATE audit_events SET seq = 6 WHERE seq = -1').run()
    })
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'chain_mismatch', seq: 5 })
  })

  it('a log cut off below a checkpoint is reported truncated where it ends', () => {
    const r = tampered((db) => db.prepare('DELETE FROM audit_events WHERE seq > 33').run())
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'truncated', seq: 34, checkpointSize: 40 })
  })

  it('a log cut back with its last checkpoint removed passes alone, and is caught by a checkpoint kept outside the log', () => {
    const reader = AuditLogReader.open(original)
    const external = reader.checkpoints().map((c) => c.note)
    reader.close()
    const cut = (db: Database.Database) => {
      db.prepare('DELETE FROM audit_events WHERE seq > 30').run()
      db.prepare('DELETE FROM audit_checkpoints WHERE tree_size = 40').run()
      db.prepare('UPDATE audit_tree SET size = 30, chain_hash = (SELECT chain_hash FROM audit_events WHERE seq = 30)').run()
    }
    // alone, a log cut back past its last checkpoint looks whole (an unsigned tail, too, can be cut):
    // that is what checkpoints kept elsewhere (a witness, a monitor, `verify --checkpoint`) are for
    expect(tampered(cut)).toMatchObject({ ok: true, events: 30, verifiedSize: 20, unsignedTail: 10 })
    expect(tampered(cut, { external })).toMatchObject({ ok: false, problem: { kind: 'truncated', seq: 31, checkpointSize: 40 } })
  })

  it('a file cut short is unreadable (or truncated), never accepted', () => {
    const r = tampered(() => undefined, { raw: (path) => truncateSync(path, Math.floor(readFileSync(path).byteLength / 2)) })
    expect(r.ok).toBe(false)
    expect(['unreadable', 'truncated', 'seq_gap']).toContain(r.problem!.kind)
  })

  it('an event rewritten with every later chain value recomputed is confined between two checkpoints', () => {
    const r = tampered((db) => {
      const rows = db.prepare('SELECT seq, event FROM audit_events ORDER BY seq').all() as { seq: number; event: Buffer }[]
      let chain: Uint8Array = GENESIS
      for (const row of rows) {
        let bytes = row.event
        if (row.seq === 27) bytes = Buffer.from(bytes.toString('utf8').replace('"outcome":"success"', '"outcome":"refused","reason":"ERR_X"'))
        chain = chainHash(chain, bytes)
        db.prepare('UPDATE audit_events SET event = ?, chain_hash = ? WHERE seq = ?').run(bytes, chain, row.seq)
      }
    })
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'root_mismatch', range: { after: 20, upTo: 40 }, checkpointSize: 40 })
  })

  it('a log whose checkpoints were removed authenticates nothing', () => {
    expect(tampered((db) => db.prepare('DELETE FROM audit_checkpoints').run()).problem).toMatchObject({
      code: 'ERR_AUDIT_CHECKPOINT_INVALID',
      kind: 'no_checkpoint',
    })
  })

  it('a replacement log, self-consistent and signed by another key, fails on the first checkpoint', async () => {
    const other = await checkpointKey()
    const fake = await buildLog(mkdtempSync(join(dir, 'fake-')), 45, [20, 40], other.signer)
    const reader = AuditLogReader.open(fake)
    expect(reader.verify({ verifier: parseVerifierKey(other.vkey) }).ok).toBe(true)
    const r = reader.verify({ verifier: parseVerifierKey(key.vkey) })
    reader.close()
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_CHECKPOINT_INVALID', kind: 'signature_missing', checkpointSize: 20 })
  })

  it('a checkpoint note edited in place (its size or root) fails its signature', () => {
    const r = tampered((db) => {
      const note = (db.prepare('SELECT note FROM audit_checkpoints WHERE tree_size = 40').get() as { note: string }).note
      db.prepare('UPDATE audit_checkpoints SET note = ? WHERE tree_size = 40').run(note.replace('\n40\n', '\n39\n'))
    })
    expect(r.problem).toMatchObject({ code: 'ERR_AUDIT_CHECKPOINT_INVALID', kind: 'signature_invalid' })
  })
})
