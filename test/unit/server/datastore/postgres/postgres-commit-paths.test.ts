/**
 * The PostgreSQL datastore's three ways of committing a write with its change-log rows, side by side on two
 * servers (two pools) of one real cluster: an `alone` operation (an entry created outside a transaction: one
 * statement that logs its own change and commits by itself), a write outside a transaction (its changes and
 * COMMIT sent as one query), and a transaction (the same, at its end). The change_counter row lock is what
 * orders them; these tests hold each path to the feed's guarantees.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { ChangeFeedEvent, DataStore, DataStoreChange } from '../../../../../src/server/datastore/index.js'
import { openPostgresDataStore } from '../../../../../src/server/datastore/postgres/index.js'
import { newEntry } from '../../../../helpers/entries.js'
import { requirePostgres, startPostgresCluster, type PostgresCluster, type PostgresDatabase } from '../../../../helpers/postgres-cluster.js'

const sel = (v: string) => [{ type: 'unix', value: v }]

function recorder() {
  const events: ChangeFeedEvent[] = []
  return {
    events,
    changes: (): DataStoreChange[] => events.flatMap((e) => (e.type === 'changes' ? e.changes : [])),
    onEvent: (e: ChangeFeedEvent) => void events.push(e),
  }
}

describe.runIf(requirePostgres())('postgres commit paths', () => {
  let cluster: PostgresCluster
  const open = (db: PostgresDatabase): Promise<DataStore> => openPostgresDataStore({ connectionString: db.connectionString, password: cluster.password })

  beforeAll(async () => {
    cluster = await startPostgresCluster()
  })
  afterAll(async () => {
    await cluster?.destroy()
  })

  it('all three paths at once from two servers: every change once, numbered 1..n in commit order, seen alike by both', async () => {
    const db = await cluster.createDatabase('paths')
    const [a, b] = [await open(db), await open(db)]
    const recA = recorder()
    const recB = recorder()
    await a.changes!({}, recA.onEvent)
    await b.changes!({}, recB.onEvent)
    const N = 40
    const keys = new Set<string>()
    await Promise.all(
      Array.from({ length: N }, async (_, i) => {
        const ds = i % 2 === 0 ? a : b
        // alone: one statement
        const e = await ds.entries.create(newEntry({ selectors: sel(`uid:${i}`) }))
        keys.add(`entry:${e.id}`)
        // outside a transaction, changes and COMMIT in one query
        await ds.kv.put('bounds', `/p${i}`, '{}')
        keys.add(`bounds:/p${i}`)
        // a transaction of two writes
        const id = await ds.tx(async (t) => {
          const x = await t.entries.create(newEntry({ selectors: sel(`tx:${i}`) }))
          await t.kv.put('federation', `td${i}.example`, '{}')
          return x.id
        })
        keys.add(`entry:${id}`)
        keys.add(`federation:td${i}.example`)
        // a one-statement write that records a change
        await ds.entries.delete(e.id)
      }),
    )
    const total = 5 * N
    await expect.poll(() => recA.changes().length, { timeout: 10_000 }).toBe(total)
    await expect.poll(() => recB.changes().length, { timeout: 10_000 }).toBe(total)
    // A commit out of seq order would leave a hole a listener meets: it would be told to reload.
    expect(recA.events.some((e) => e.type === 'reset')).toBe(false)
    expect(recB.events.some((e) => e.type === 'reset')).toBe(false)
    const seqs = Array.from({ length: total }, (_, i) => i + 1)
    expect(recA.changes().map((c) => c.seq)).toEqual(seqs)
    expect(recB.changes().map((c) => c.seq)).toEqual(seqs)
    expect(recB.changes()).toEqual(recA.changes())
    const puts = new Set(recA.changes().flatMap((c) => (c.op === 'put' ? [`${c.kind}:${c.key}`] : [])))
    expect(puts).toEqual(keys)
    // Each entry's delete comes after its creation.
    const at = new Map(recA.changes().map((c) => [`${c.kind}:${c.op}:${c.key}`, c.seq]))
    for (const c of recA.changes()) if (c.op === 'delete') expect(c.seq).toBeGreaterThan(at.get(`entry:put:${c.key}`)!)
    await a.close()
    await b.close()
  })

  it('without the change counter row, no path commits a change the feed would not carry', async () => {
    const db = await cluster.createDatabase('nocounter')
    const ds = await open(db)
    const kept = await ds.entries.create(newEntry({ selectors: sel('kept') }))
    await cluster.sql(db.name, 'DELETE FROM change_counter')
    await expect(ds.entries.create(newEntry({ selectors: sel('alone') }))).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
    await expect(ds.kv.put('bounds', '/x', '{}')).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
    await expect(ds.entries.delete(kept.id)).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
    await expect(
      ds.tx(async (t) => {
        await t.entries.create(newEntry({ selectors: sel('tx') }))
      }),
    ).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
    expect((await ds.entries.list({}, {})).entries.map((e) => e.id)).toEqual([kept.id])
    expect(await ds.kv.list('bounds')).toEqual([])
    expect(await cluster.sql(db.name, 'SELECT seq FROM changes')).toEqual([{ seq: '1' }])
    // A write that changes nothing the feed carries still works.
    await ds.kv.put('instances', 'i1', '{}')
    await ds.close()
  })

  it('an id that is taken is reported as such, also when the identity is a duplicate too; a transaction stays usable', async () => {
    const db = await cluster.createDatabase('taken')
    const ds = await open(db)
    const first = await ds.entries.create(newEntry({ id: 'fixed-id', selectors: sel('a') }))
    const other = await ds.entries.create(newEntry({ selectors: sel('b') }))
    // Taken id, new identity: a unique violation, reported with the id.
    await expect(ds.entries.create(newEntry({ id: 'fixed-id', selectors: sel('c') }))).rejects.toMatchObject({
      code: 'ERR_ALREADY_EXISTS',
      details: { entryId: 'fixed-id' },
    })
    // Taken id and the identity of another entry: still the id.
    await expect(ds.entries.create(newEntry({ id: 'fixed-id', selectors: sel('b') }))).rejects.toMatchObject({ details: { entryId: first.id } })
    // Free id, duplicate identity: the entry that has it.
    await expect(ds.entries.create(newEntry({ id: 'free-id', selectors: sel('b') }))).rejects.toMatchObject({ details: { entryId: other.id } })
    // The same inside a transaction, which goes on and commits.
    const made = await ds.tx(async (t) => {
      await expect(t.entries.create(newEntry({ id: 'fixed-id', selectors: sel('c') }))).rejects.toMatchObject({ details: { entryId: 'fixed-id' } })
      await expect(t.entries.create(newEntry({ id: 'fixed-id', selectors: sel('b') }))).rejects.toMatchObject({ details: { entryId: 'fixed-id' } })
      await expect(t.entries.create(newEntry({ selectors: sel('b') }))).rejects.toMatchObject({ details: { entryId: other.id } })
      return t.entries.create(newEntry({ selectors: sel('d') }))
    })
    expect(await ds.entries.count()).toBe(3)
    expect((await ds.entries.get(made.id)).selectors).toEqual(sel('d'))
    expect(await cluster.sql(db.name, 'SELECT COUNT(*)::int AS n FROM entry_selectors')).toEqual([{ n: 3 }])
    await ds.close()
  })
})
