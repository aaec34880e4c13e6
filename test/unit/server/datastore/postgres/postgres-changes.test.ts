import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChangeFeedEvent, DataStore, DataStoreChange } from '../../../../../src/server/datastore/index.js'
import { openPostgresDataStore, type PostgresDataStoreOptions } from '../../../../../src/server/datastore/postgres/index.js'
import { captureLogger } from '../../../../helpers/capture-logger.js'
import { newEntry } from '../../../../helpers/entries.js'
import { FakeClock } from '../../../../helpers/fake-clock.js'
import { requirePostgres, startPostgresCluster, type PostgresCluster, type PostgresDatabase } from '../../../../helpers/postgres-cluster.js'

const sel = (v: string) => [{ type: 'unix', value: v }]

/** A subscriber that keeps every event and can wait for a condition on them. */
function recorder() {
  const events: ChangeFeedEvent[] = []
  const waiters: (() => void)[] = []
  return {
    events,
    changes: (): DataStoreChange[] => events.flatMap((e) => (e.type === 'changes' ? e.changes : [])),
    onEvent: (e: ChangeFeedEvent) => {
      events.push(e)
      for (const w of waiters.splice(0)) w()
    },
    async until(cond: () => boolean, ms = 5_000): Promise<void> {
      const deadline = Date.now() + ms
      while (!cond()) {
        if (Date.now() > deadline) throw new Error(`timed out; events: ${JSON.stringify(events)}`)
        await new Promise<void>((r) => {
          waiters.push(r)
          setTimeout(r, 50)
        })
      }
    },
  }
}

const brief = (c: DataStoreChange) => `${c.kind}:${c.op}:${c.key}`

describe.runIf(requirePostgres())('postgres change feed', () => {
  let cluster: PostgresCluster
  const open = (db: PostgresDatabase, extra: Partial<PostgresDataStoreOptions> = {}): Promise<DataStore> =>
    openPostgresDataStore({ connectionString: db.connectionString, password: cluster.password, ...extra })

  beforeAll(async () => {
    cluster = await startPostgresCluster()
  })
  afterAll(async () => {
    await cluster?.destroy()
  })

  it('pushes what one server commits to another, in commit order, with gapless sequence numbers', async () => {
    const db = await cluster.createDatabase('feed')
    const [a, b] = [await open(db), await open(db)]
    const rec = recorder()
    const feed = await b.changes!({}, rec.onEvent)
    expect(feed.seq).toBe(0)

    const t0 = Date.now()
    const e = await a.entries.create(newEntry())
    await rec.until(() => rec.changes().length === 1)
    expect(Date.now() - t0).toBeLessThan(1_000)

    await a.entries.update(e.id, { hint: 'x' })
    await a.kv.put('bounds', '/agents', '{}')
    await a.kv.put('federation', 'partner.example', '{}')
    await a.kv.put('ca_authorities', 'server-1', '{}')
    await a.kv.put('instances', 'i1', '{}') // not followed
    await a.bundles.put({ trustDomain: 'partner.example', document: '{}', sequence: 1 })
    const r = await a.revocations.create({ kind: 'instance', value: 'i1', reason: '', notAfter: null, expiresAt: null })
    await a.nodes.upsert({
      agentId: 'spiffe://corp.example/a',
      attestor: 'tpm',
      selectors: [],
      serial: '1',
      previousSerial: '',
      expiresAt: 1,
      banned: false,
      canReattest: true,
    })
    await a.nodes.update('spiffe://corp.example/a', { serial: '2' }) // a renewal: not followed
    await a.nodes.update('spiffe://corp.example/a', { banned: true })
    await a.entries.delete(e.id)
    await rec.until(() => rec.changes().some((c) => c.kind === 'entry' && c.op === 'delete'))
    expect(rec.changes().map(brief)).toEqual([
      `entry:put:${e.id}`,
      `entry:put:${e.id}`,
      'bounds:put:/agents',
      'federation:put:partner.example',
      'authority:put:server-1',
      'bundle:put:partner.example',
      `revocation:put:${r.revocation.id}`,
      'node:put:spiffe://corp.example/a',
      'node:put:spiffe://corp.example/a',
      `entry:delete:${e.id}`,
    ])
    expect(rec.changes().map((c) => c.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])
    expect(feed.seq).toBe(10)
    await a.close()
    await b.close()
  })

  it('carries a transaction at its commit, once per record, and nothing of a rolled-back one', async () => {
    const db = await cluster.createDatabase('feedtx')
    const ds = await open(db)
    const rec = recorder()
    await ds.changes!({}, rec.onEvent)
    await expect(
      ds.tx(async (t) => {
        await t.entries.create(newEntry())
        throw new Error('abort')
      }),
    ).rejects.toThrow('abort')
    await ds.tx(async (t) => {
      await t.kv.put('bounds', '/a', '1')
      await t.kv.put('bounds', 'sequence', '1')
      await t.kv.put('bounds', '/a', '2')
      // a nested transaction that rolls back takes its changes with it
      await t
        .tx(async (n) => {
          await n.kv.put('federation', 'x', '1')
          throw new Error('inner')
        })
        .catch(() => undefined)
      await t.tx(async (n) => n.kv.put('federation', 'y', '1'))
    })
    await rec.until(() => rec.changes().length >= 3)
    await new Promise((r) => setTimeout(r, 100))
    expect(rec.changes().map(brief)).toEqual(['bounds:put:sequence', 'bounds:put:/a', 'federation:put:y'])
    await ds.close()
  })

  it('a subscriber from a seq gets what happened since first; from the head, only what follows', async () => {
    const db = await cluster.createDatabase('feedfrom')
    const ds = await open(db)
    for (let i = 0; i < 3; i++) await ds.entries.create(newEntry({ selectors: sel(`uid:${i}`) }))
    const fromOne = recorder()
    const f1 = await ds.changes!({ fromSeq: 1 }, fromOne.onEvent)
    const head = recorder()
    const f2 = await ds.changes!({}, head.onEvent)
    expect(f2.seq).toBe(3)
    await fromOne.until(() => fromOne.changes().length === 2)
    expect(fromOne.changes().map((c) => c.seq)).toEqual([2, 3])
    await ds.kv.put('bounds', 'k', 'v')
    await head.until(() => head.changes().length === 1)
    await fromOne.until(() => fromOne.changes().length === 3)
    expect(head.changes().map((c) => c.seq)).toEqual([4])
    expect(f1.seq).toBe(4)
    await f1.close()
    await f1.close()
    await ds.close()
  })

  it('catches up after its connection is lost, from its seq, without a reload', async () => {
    const db = await cluster.createDatabase('feedlost')
    const [a, b] = [await open(db), await open(db, { log: captureLogger() })]
    const rec = recorder()
    await b.changes!({}, rec.onEvent)
    await a.kv.put('bounds', 'before', '1')
    await rec.until(() => rec.changes().length === 1)
    // The listener's backend is killed; changes land while it is away.
    await cluster.sql('postgres', "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'", [db.name])
    for (let i = 0; i < 5; i++) await a.kv.put('bounds', `during-${i}`, '1')
    await rec.until(() => rec.changes().length === 6)
    expect(rec.events.some((e) => e.type === 'reset')).toBe(false)
    expect(rec.changes().map((c) => c.seq)).toEqual([1, 2, 3, 4, 5, 6])
    await a.close()
    await b.close()
  })

  it('survives a PostgreSQL restart and catches up', async () => {
    const db = await cluster.createDatabase('feedrestart')
    const [a, b] = [await open(db), await open(db)]
    const rec = recorder()
    await b.changes!({}, rec.onEvent)
    await cluster.stop()
    await new Promise((r) => setTimeout(r, 300))
    await cluster.start()
    for (let i = 0; i < 3; i++) await a.kv.put('federation', `td-${i}`, '1')
    await rec.until(() => rec.changes().length === 3, 15_000)
    expect(rec.changes().map((c) => c.key)).toEqual(['td-0', 'td-1', 'td-2'])
    await a.close()
    await b.close()
  })

  it('concurrent writers on two servers: every change arrives once, numbered 1..n', async () => {
    const db = await cluster.createDatabase('feedmany')
    const [a, b] = [await open(db), await open(db)]
    const rec = recorder()
    await a.changes!({}, rec.onEvent)
    await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 === 0 ? a : b).entries.create(newEntry({ selectors: sel(`uid:${i}`) }))))
    await rec.until(() => rec.changes().length === 60)
    expect(rec.changes().map((c) => c.seq)).toEqual(Array.from({ length: 60 }, (_, i) => i + 1))
    expect(new Set(rec.changes().map((c) => c.key)).size).toBe(60)
    await a.close()
    await b.close()
  })

  it('a subscriber behind the pruned log is told to reload; a throwing subscriber does not stop the feed', async () => {
    const db = await cluster.createDatabase('feedprune')
    const clock = new FakeClock(Date.UTC(2026, 0, 1))
    const ds = await open(db, { clock, changeRetentionMs: 60_000 })
    for (let i = 0; i < 3; i++) await ds.kv.put('bounds', `old-${i}`, '1')
    await ds.close()
    // Opening later prunes what is older than the retention.
    clock.advance(120_000)
    const later = await open(db, { clock, changeRetentionMs: 60_000 })
    await expect.poll(async () => (await cluster.sql(db.name, 'SELECT * FROM changes')).length).toBe(0)
    const rec = recorder()
    let calls = 0
    const feed = await later.changes!({ fromSeq: 1 }, (e) => {
      calls++
      if (calls === 2) throw new Error('subscriber bug')
      rec.onEvent(e)
    })
    await rec.until(() => rec.events.length === 1)
    expect(rec.events[0]).toEqual({ type: 'reset', seq: 3 })
    await later.kv.put('bounds', 'a', '1') // delivered to the throwing call
    await expect.poll(() => calls).toBe(2)
    await later.kv.put('bounds', 'b', '1')
    await rec.until(() => rec.changes().length === 1)
    expect(rec.changes().map(brief)).toEqual(['bounds:put:b'])
    expect(feed.seq).toBe(5)
    await later.close()
    // the store's close ended the feed
    await expect(later.changes!({}, () => undefined)).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
  })

  it('is refused inside a transaction, and its callback may use the store', async () => {
    const db = await cluster.createDatabase('feedtxuse')
    const ds = await open(db)
    await ds.tx(async () => {
      await expect(ds.changes!({}, () => undefined)).rejects.toBeInstanceOf(TypeError)
    })
    const seen: string[] = []
    await ds.changes!({}, async (e) => {
      if (e.type !== 'changes') return
      for (const c of e.changes) seen.push((await ds.kv.get('bounds', c.key)) ?? 'gone')
    })
    await ds.tx(async (t) => t.kv.put('bounds', 'k', 'v'))
    await expect.poll(() => seen).toEqual(['v'])
    await ds.close()
  })
})
