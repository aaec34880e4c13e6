import { copyFileSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { AuditLog, TREE_SAVE_EVERY } from '../../../../src/audit/store/audit-log.js'
import { MerkleAccumulator } from '../../../../src/audit/merkle.js'
import { AuditLogReader } from '../../../../src/audit/store/log-reader.js'
import {
  leafHash,
  parseVerifierKey,
  subtreeRoot,
  verifyInclusionBundle,
  verifyConsistencyBundle,
  chainHash,
  GENESIS,
  canonicalBytes,
} from '../../../../src/audit/index.js'
import { isIdentityError } from '../../../../src/errors/index.js'
import { checkpointKey, ORIGIN, sampleEvent } from '../helpers.js'

describe('AuditLog (SQLite, group commit)', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'waudit-'))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  it('appends events of one turn in one batch, each acknowledged with seq, leaf index and chain value', async () => {
    const batches: number[] = []
    const log = AuditLog.open({ path: join(dir, 'a.db'), origin: ORIGIN, hooks: { batchCommitted: (n) => batches.push(n) } })
    const receipts = await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(sampleEvent(i))))
    expect(batches).toEqual([50])
    expect(receipts.map((r) => r.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    expect(receipts.every((r) => r.leafIndex === r.seq - 1)).toBe(true)
    // the chain value is SHA-256(previous || canonical bytes), from the genesis value
    let chain: Uint8Array = GENESIS
    for (const [i, r] of receipts.entries()) {
      chain = chainHash(chain, canonicalBytes({ v: 1, ...sampleEvent(i) }))
      expect(r.chainHash).toBe(Buffer.from(chain).toString('hex'))
    }
    await log.append(sampleEvent(50))
    expect(batches).toEqual([50, 1])
    await log.close()
    expect(statSync(join(dir, 'a.db')).mode & 0o777).toBe(0o600)
  })

  it('fills in v and time, refuses an invalid event without writing it, and keeps going', async () => {
    const log = AuditLog.open({ path: join(dir, 'a.db'), origin: ORIGIN, now: () => Date.UTC(2026, 0, 1) })
    const r = await log.append({ type: 'task.created', outcome: 'success', task_id: 't1' })
    expect(r.time).toBe('2026-01-01T00:00:00.000Z')
    await expect(log.append({ type: 'task.created', outcome: 'success', task_id: 'has space' })).rejects.toMatchObject({ code: 'ERR_AUDIT_EVENT_INVALID' })
    await expect(log.append({ type: 'task.created', outcome: 'success', attributes: { prompt: 'x' } })).rejects.toMatchObject({
      code: 'ERR_AUDIT_EVENT_INVALID',
    })
    expect((await log.append({ type: 'task.ended', outcome: 'success', task_id: 't1' })).seq).toBe(2)
    await log.close()
  })

  it('fails closed: a store that cannot be written rejects the whole batch with ERR_AUDIT_UNAVAILABLE, counts it, keeps nothing', async () => {
    const path = join(dir, 'a.db')
    const failures: string[] = []
    const log = AuditLog.open({ path, origin: ORIGIN, busyTimeoutMs: 20, hooks: { appendFailed: (c) => failures.push(c) } })
    await log.append(sampleEvent(0))
    // another connection holds the write lock: the log's IMMEDIATE transaction cannot start
    const other = new Database(path)
    other.exec('BEGIN IMMEDIATE')
    const results = await Promise.allSettled([log.append(sampleEvent(1)), log.append(sampleEvent(2))])
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected'])
    for (const r of results) expect(isIdentityError((r as PromiseRejectedResult).reason, 'ERR_AUDIT_UNAVAILABLE')).toBe(true)
    expect(failures).toEqual(['ERR_AUDIT_UNAVAILABLE', 'ERR_AUDIT_UNAVAILABLE'])
    other.exec('ROLLBACK')
    other.close()
    // nothing of the refused batch was kept: the next event is seq 2 and chains from seq 1
    expect((await log.append(sampleEvent(3))).seq).toBe(2)
    await log.close()
    await expect(log.append(sampleEvent(4))).rejects.toMatchObject({ code: 'ERR_AUDIT_UNAVAILABLE' })
    expect(failures).toHaveLength(3)
  })

  it('reopens from its stored tree state and carries on the same chain and tree', async () => {
    const { signer, vkey } = await checkpointKey()
    const path = join(dir, 'a.db')
    let log = AuditLog.open({ path, origin: ORIGIN, signer })
    for (let i = 0; i < 5; i++) await log.append(sampleEvent(i))
    await log.close()
    log = AuditLog.open({ path, origin: ORIGIN, signer })
    expect(log.size).toBe(5)
    for (let i = 5; i < 13; i++) await log.append(sampleEvent(i))
    const cp = await log.checkpoint()
    await log.close()
    const reader = AuditLogReader.open(path)
    expect(cp.rootHash.equals(subtreeRoot(reader.leafHashes(13)))).toBe(true)
    const report = reader.verify({ verifier: parseVerifierKey(vkey) })
    expect(report).toMatchObject({ ok: true, events: 13, verifiedSize: 13, unsignedTail: 0 })
    reader.close()
    expect(() => AuditLog.open({ path, origin: 'other.example/audit' })).toThrow(/origin/)
  })

  it('saves its tree state every TREE_SAVE_EVERY events and on close, and reopens by replaying the events after it', async () => {
    const { signer, vkey } = await checkpointKey()
    const path = join(dir, 'a.db')
    const saved = () => {
      const db = new Database(path, { readonly: true })
      try {
        return (db.prepare('SELECT size FROM audit_tree WHERE id = 1').get() as { size: number } | undefined)?.size
      } finally {
        db.close()
      }
    }
    let log = AuditLog.open({ path, origin: ORIGIN })
    await Promise.all(Array.from({ length: TREE_SAVE_EVERY - 1 }, (_, i) => log.append(sampleEvent(i))))
    expect(saved()).toBeUndefined() // a batch writes its events and nothing else
    await log.append(sampleEvent(TREE_SAVE_EVERY - 1))
    expect(saved()).toBe(TREE_SAVE_EVERY)
    for (let i = TREE_SAVE_EVERY; i < TREE_SAVE_EVERY + 7; i++) await log.append(sampleEvent(i))
    expect(saved()).toBe(TREE_SAVE_EVERY)
    await log.close()
    expect(saved()).toBe(TREE_SAVE_EVERY + 7)
    // a state saved before the last events (as after a kill): the rest is replayed and the log carries on one chain and tree
    const reference = new MerkleAccumulator()
    for (let i = 0; i < TREE_SAVE_EVERY; i++) reference.push(leafHash(canonicalBytes({ v: 1, ...sampleEvent(i) })))
    const db = new Database(path)
    db.prepare('UPDATE audit_tree SET size = ?, chain_hash = (SELECT chain_hash FROM audit_events WHERE seq = ?), edge = ? WHERE id = 1').run(
      TREE_SAVE_EVERY,
      TREE_SAVE_EVERY,
      Buffer.concat(reference.edge),
    )
    db.close()
    log = AuditLog.open({ path, origin: ORIGIN, signer })
    expect(log.size).toBe(TREE_SAVE_EVERY + 7)
    await log.append(sampleEvent(TREE_SAVE_EVERY + 7))
    await log.checkpoint()
    await log.close()
    const reader = AuditLogReader.open(path)
    expect(reader.verify({ verifier: parseVerifierKey(vkey) })).toMatchObject({ ok: true, events: TREE_SAVE_EVERY + 8, verifiedSize: TREE_SAVE_EVERY + 8 })
    reader.close()
  })

  it('refuses to open a log whose events after the saved tree state, or the state itself, do not match (ERR_AUDIT_LOG_TAMPERED)', async () => {
    const original = join(dir, 'original.db')
    const log = AuditLog.open({ path: original, origin: ORIGIN })
    for (let i = 0; i < 6; i++) await log.append(sampleEvent(i))
    await log.close()
    let copies = 0
    const opened = (edit: (db: Database.Database) => void): unknown => {
      const path = join(dir, `copy-${copies++}.db`)
      copyFileSync(original, path)
      const db = new Database(path)
      db.prepare('DELETE FROM audit_tree').run() // no saved state: every event is replayed from the genesis value
      edit(db)
      db.close()
      try {
        AuditLog.open({ path, origin: ORIGIN })
          .close()
          .catch(() => undefined)
        return 'opened'
      } catch (err) {
        return isIdentityError(err) ? { code: err.code, message: err.message } : err
      }
    }
    expect(opened(() => undefined)).toBe('opened')
    expect(opened((db) => db.prepare('UPDATE audit_events SET chain_hash = zeroblob(32) WHERE seq = 4').run())).toEqual({
      code: 'ERR_AUDIT_LOG_TAMPERED',
      message: "the audit log's event 4 does not match its chain value; run warrant audit verify",
    })
    expect(
      opened((db) => db.prepare("UPDATE audit_events SET event = CAST(replace(CAST(event AS TEXT), 'success', 'refused') AS BLOB) WHERE seq = 2").run()),
    ).toMatchObject({
      code: 'ERR_AUDIT_LOG_TAMPERED',
      message: expect.stringContaining('event 2 does not match') as string,
    })
    expect(opened((db) => db.prepare('DELETE FROM audit_events WHERE seq = 3').run())).toMatchObject({
      code: 'ERR_AUDIT_LOG_TAMPERED',
      message: 'the audit log has no event 3 before event 4; run warrant audit verify',
    })
    // a saved state past the last event, or not ending at the chain value of its event
    const state = (size: number, chainOf: number) => (db: Database.Database) =>
      db
        .prepare('INSERT INTO audit_tree (id, size, chain_hash, edge) VALUES (1, ?, (SELECT chain_hash FROM audit_events WHERE seq = ?), ?)')
        .run(size, chainOf, Buffer.alloc(32 * (size.toString(2).split('1').length - 1)))
    expect(
      opened((db) => {
        state(6, 6)(db)
        db.prepare('DELETE FROM audit_events WHERE seq = 6').run()
      }),
    ).toMatchObject({
      code: 'ERR_AUDIT_LOG_TAMPERED',
      message: "the audit log's tree state (size 6) does not match its event 6; run warrant audit verify",
    })
    expect(opened(state(4, 3))).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', message: expect.stringContaining('tree state (size 4)') as string })
  })

  it('signs checkpoints on demand after pending appends, and periodically when the log grew', async () => {
    const { signer, vkey } = await checkpointKey()
    const path = join(dir, 'a.db')
    const log = AuditLog.open({ path, origin: ORIGIN, signer, checkpointIntervalMs: 20 })
    const pending = [log.append(sampleEvent(0)), log.append(sampleEvent(1))]
    const cp = await log.checkpoint()
    expect(cp.size).toBe(2)
    await Promise.all(pending)
    await log.append(sampleEvent(2))
    const reader = AuditLogReader.open(path)
    const deadline = Date.now() + 5000
    while (!reader.checkpoints().some((c) => c.size === 3) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10))
    expect(reader.checkpoints().map((c) => c.size)).toEqual([2, 3])
    reader.close()
    await log.close()
    await expect(AuditLog.open({ path, origin: ORIGIN }).checkpoint()).rejects.toMatchObject({ code: 'ERR_NOT_CONFIGURED' })
    const r2 = AuditLogReader.open(path)
    expect(r2.verify({ verifier: parseVerifierKey(vkey) }).ok).toBe(true)
    r2.close()
  })

  it('proves inclusion and consistency from the stored log, checkable with the verifier key alone', async () => {
    const { signer, vkey } = await checkpointKey()
    const path = join(dir, 'a.db')
    const log = AuditLog.open({ path, origin: ORIGIN, signer })
    for (let i = 0; i < 11; i++) await log.append(sampleEvent(i))
    await log.checkpoint()
    for (let i = 11; i < 20; i++) await log.append(sampleEvent(i))
    await log.checkpoint()
    await log.close()
    const reader = AuditLogReader.open(path)
    const verifier = parseVerifierKey(vkey)
    for (const seq of [1, 7, 11, 12, 20]) {
      const bundle = reader.proveInclusion(seq)
      expect(bundle.tree_size).toBe(20)
      const { event } = verifyInclusionBundle(JSON.parse(JSON.stringify(bundle)), verifier)
      expect(event.task_id).toBe(sampleEvent(seq - 1).task_id)
      expect(Buffer.from(leafHash(Buffer.from(bundle.event))).byteLength).toBe(32)
    }
    expect(verifyInclusionBundle(reader.proveInclusion(3, 11), verifier).checkpoint.size).toBe(11)
    const bent = { ...reader.proveInclusion(3), event: reader.event(4)!.event }
    expect(() => verifyInclusionBundle(bent, verifier)).toThrow(expect.objectContaining({ code: 'ERR_AUDIT_PROOF_INVALID' }))
    const stranger = parseVerifierKey((await checkpointKey()).vkey)
    expect(() => verifyInclusionBundle(reader.proveInclusion(3), stranger)).toThrow(expect.objectContaining({ code: 'ERR_AUDIT_CHECKPOINT_INVALID' }))
    expect(verifyConsistencyBundle(reader.proveConsistency(11, 20), verifier).second.size).toBe(20)
    reader.close()
  })

  it('searches by type, actor, task and time range, and tails', async () => {
    const path = join(dir, 'a.db')
    const log = AuditLog.open({ path, origin: ORIGIN })
    await Promise.all(Array.from({ length: 30 }, (_, i) => log.append(sampleEvent(i))))
    await log.close()
    const r = AuditLogReader.open(path)
    expect(r.search({ type: 'task.created' }).map((e) => e.seq)).toEqual([4, 9, 14, 19, 24, 29])
    expect(r.search({ actor: 'spiffe://example.org/agents/a' }).map((e) => e.seq)).toEqual([1, 4, 7, 10, 13, 16, 19, 22, 25, 28])
    expect(r.search({ taskId: 'task-000007' }).map((e) => e.seq)).toEqual([8])
    const t0 = Date.UTC(2026, 11, 5, 12, 0, 0)
    expect(r.search({ since: t0 + 10_000, until: t0 + 13_000 }).map((e) => e.seq)).toEqual([11, 12, 13])
    expect(r.search({ limit: 2 }).map((e) => e.seq)).toEqual([1, 2])
    expect(r.tail(3).map((e) => e.seq)).toEqual([28, 29, 30])
    expect(JSON.parse(r.tail(1)[0]!.event)).toMatchObject({ task_id: 'task-000029' })
    r.close()
  })
})
