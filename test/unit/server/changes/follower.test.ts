/**
 * The change feed applied to a server's services (src/server/changes): two servers' services on one shared
 * datastore, the second following a fake feed the test pushes. An entry, revocation, bounds, federated bundle or
 * node change written through server A is applied by server B only when the feed delivers it (each test checks B
 * is stale before): B's Sync streams and authorized-entries cache follow, a revocation is enforced, a banned agent's
 * stream ends at once; the echo of B's own writes is not emitted twice; a reset reloads everything.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { BoundsService } from '../../../../src/server/bounds/bounds-service.js'
import { FederatedBundles } from '../../../../src/server/bundle/federated.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { applyChangeEvent, followChanges } from '../../../../src/server/changes/follower.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { AttestedNode, ChangeFeedEvent, DataStore, DataStoreChange, NewEntry } from '../../../../src/server/datastore/types.js'
import { InstanceService } from '../../../../src/server/instances/instance-service.js'
import { AuthorizedEntries } from '../../../../src/server/registration/authorized-entries.js'
import { RegistrationService, type EntryChange } from '../../../../src/server/registration/service.js'
import { RevocationService } from '../../../../src/server/revocation/revocation-service.js'
import { SyncStreams } from '../../../../src/server/sync/sync-stream.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { parseBounds } from '../../../../src/spiffe/bounds/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/join_token/n1'
const HOUR = 3_600_000
const node: AttestedNode = {
  agentId: AGENT,
  attestor: 'join_token',
  selectors: [],
  serial: '01',
  expiresAt: Date.UTC(2027, 0, 1),
  previousSerial: '',
  banned: false,
  canReattest: false,
  createdAt: 0,
  updatedAt: 0,
}
const newEntry = (path: string, o: Partial<NewEntry> = {}): NewEntry => baseEntry({ spiffeId: `spiffe://example.org${path}`, parentId: AGENT, ...o })

/** A change feed the test drives: `push` delivers an event and waits until the subscriber has applied it. */
class FakeFeed {
  subscribers = 0
  closed = 0
  #onEvent: ((ev: ChangeFeedEvent) => void | Promise<void>) | undefined
  #seq = 0
  readonly changes = async (_opts: { fromSeq?: number }, onEvent: (ev: ChangeFeedEvent) => void | Promise<void>) => {
    this.subscribers++
    this.#onEvent = onEvent
    const seq = () => this.#seq
    return {
      get seq() {
        return seq()
      },
      close: async () => {
        this.closed++
        this.#onEvent = undefined
      },
    }
  }
  async push(...changes: Omit<DataStoreChange, 'seq' | 'at'>[]): Promise<void> {
    const cs = changes.map((c) => ({ ...c, seq: ++this.#seq, at: 0 }))
    await this.#onEvent?.({ type: 'changes', changes: cs, seq: this.#seq })
  }
  async reset(): Promise<void> {
    await this.#onEvent?.({ type: 'reset', seq: ++this.#seq })
  }
}

/** One server's services on `ds`. */
async function services(ds: DataStore, clock: FakeClock, serverId = 'a') {
  const log = captureLogger()
  const ca = new CaManager({
    serverId,
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    ds,
    clock,
    log,
    caTtlMs: 24 * HOUR,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 300,
  })
  await ca.init()
  const bounds = new BoundsService({ trustDomain: td, ds, clock, log })
  await bounds.init()
  const registration = new RegistrationService({ ds, clock, log, bounds, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 } })
  const instances = new InstanceService({ ds, clock, log })
  const revocations = new RevocationService({ ds, instances, trustDomain: td, clock, log, defaultX509TtlMs: HOUR, defaultJwtTtlMs: 300_000 })
  await revocations.start()
  const federated = new FederatedBundles({ ds, localTrustDomain: td, log })
  const nodeListeners = new Set<(id: string) => void>()
  const nodes = {
    onNodeChange: (fn: (id: string) => void) => (nodeListeners.add(fn), () => nodeListeners.delete(fn)),
    applyNodeChanges: (ids: Iterable<string>) => {
      for (const id of ids) for (const fn of nodeListeners) fn(id)
    },
  }
  const localBundle = { trustDomain: td.name, refresh: () => ca.refreshBundle() }
  return { ca, bounds, registration, revocations, federated, nodes, log, localBundle }
}

const cleanups: (() => void | Promise<void>)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function twoServers() {
  const clock = new FakeClock()
  const ds = createMemoryDataStore({ clock })
  const a = await services(ds, clock)
  const b = await services(ds, clock, 'b')
  cleanups.push(
    () => a.revocations.stop(),
    () => b.revocations.stop(),
  )
  const feed = new FakeFeed()
  const follower = await followChanges({ changes: feed.changes }, b, b.log)
  cleanups.push(() => follower!.close())
  const changesAtB: EntryChange[] = []
  cleanups.push(b.registration.onChange((c) => changesAtB.push(c)))
  const create = async (svc: RegistrationService, e: NewEntry) => {
    const [r] = await svc.createEntries([e])
    if (!r!.ok) throw r!.error
    return r!.value
  }
  return { clock, ds, a, b, feed, follower: follower!, changesAtB, create }
}

describe('change follower', () => {
  it('subscribes once and closes its feed; without a feed (SQLite, memory) there is nothing to follow', async () => {
    const { feed, follower } = await twoServers()
    expect(feed.subscribers).toBe(1)
    await feed.push({ kind: 'task', key: 't1', op: 'put' })
    expect(follower.seq).toBe(1)
    await follower.close()
    expect(feed.closed).toBe(1)
    const s = await services(createMemoryDataStore({ clock: new FakeClock() }), new FakeClock())
    cleanups.push(() => s.revocations.stop())
    expect(await followChanges({}, s, s.log)).toBeUndefined()
  })

  it('an entry created, updated and deleted through A is emitted at B (Sync, authorized-entries cache) once the feed names it', async () => {
    const { a, b, feed, changesAtB, create } = await twoServers()
    const authorizedAtB = new AuthorizedEntries({ registration: b.registration, clock: new FakeClock() })
    cleanups.push(() => authorizedAtB.close())
    expect((await authorizedAtB.of(node)).size).toBe(0) // cached at B
    const e = await create(a.registration, newEntry('/web'))
    expect(changesAtB).toEqual([])
    expect((await authorizedAtB.of(node)).size).toBe(0) // still B's stale answer
    await feed.push({ kind: 'entry', key: e.id, op: 'put' })
    expect(changesAtB).toEqual([{ upserted: [e], deleted: [], deletedIds: [] }])
    expect([...(await authorizedAtB.of(node)).keys()]).toEqual([e.id])

    const [u] = await a.registration.updateEntries([{ id: e.id, hint: 'v2' }])
    await feed.push({ kind: 'entry', key: e.id, op: 'put' })
    expect(changesAtB[1]!.upserted.map((x) => [x.id, x.hint, x.revision])).toEqual([[e.id, 'v2', u!.ok ? u!.value.revision : -1]])

    await a.registration.deleteEntries([e.id])
    await feed.push({ kind: 'entry', key: e.id, op: 'delete' })
    expect(changesAtB[2]).toEqual({ upserted: [], deleted: [], deletedIds: [e.id] })
    expect((await authorizedAtB.of(node)).size).toBe(0)
  })

  it("the echo of B's own entry writes is not emitted twice; a later change by A of the same entry is", async () => {
    const { a, b, feed, changesAtB, create } = await twoServers()
    const e = await create(b.registration, newEntry('/own'))
    expect(changesAtB).toHaveLength(1)
    await feed.push({ kind: 'entry', key: e.id, op: 'put' })
    expect(changesAtB).toHaveLength(1)
    await b.registration.deleteEntries([e.id])
    await feed.push({ kind: 'entry', key: e.id, op: 'delete' })
    expect(changesAtB).toHaveLength(2)

    const f = await create(b.registration, newEntry('/shared'))
    await a.registration.updateEntries([{ id: f.id, hint: 'by A' }])
    await feed.push({ kind: 'entry', key: f.id, op: 'put' }, { kind: 'entry', key: f.id, op: 'put' })
    expect(changesAtB).toHaveLength(4)
    expect(changesAtB[3]!.upserted[0]!.hint).toBe('by A')
  })

  it('a revocation made at A is enforced at B (and pushed to its Sync streams) once the feed names it; its deletion too', async () => {
    const { a, b, feed } = await twoServers()
    let told = 0
    cleanups.push(b.revocations.onChange(() => told++))
    const id = 'spiffe://example.org/web'
    const { revocation } = await a.revocations.revoke({ kind: 'instance', value: id, reason: 'leaked' })
    expect(b.revocations.covering(id, undefined)).toBeUndefined() // the gap the feed closes
    await feed.push({ kind: 'revocation', key: String(revocation.id), op: 'put' })
    expect(b.revocations.covering(id, undefined)?.id).toBe(revocation.id)
    expect(() => b.revocations.refuse(id, undefined)).toThrow(expect.objectContaining({ code: 'ERR_REVOKED' }) as unknown)
    expect(told).toBe(1)
    // The same change again (an echo, a replay) changes nothing and tells no one.
    await feed.push({ kind: 'revocation', key: String(revocation.id), op: 'put' })
    expect(told).toBe(1)
    await a.revocations.delete(revocation.id)
    await feed.push({ kind: 'revocation', key: String(revocation.id), op: 'delete' })
    expect(b.revocations.covering(id, undefined)).toBeUndefined()
    expect(told).toBe(2)
  })

  it('bounds set and deleted at A are adopted at B, its listeners told; its own echo is not', async () => {
    const { a, b, feed } = await twoServers()
    const seen: string[] = []
    cleanups.push(b.bounds.onChange((c) => seen.push(`${c.kind} ${c.prefix} ${c.sequence}`)))
    await a.bounds.set('/payments', parseBounds({ x509_svid_ttl: 3600 }, '/payments'))
    expect(b.bounds.get('/payments')).toBeUndefined()
    await feed.push({ kind: 'bounds', key: '/payments', op: 'put' })
    expect(b.bounds.get('/payments')?.source).toBe('api')
    expect(b.bounds.sequence).toBe(a.bounds.sequence)
    await feed.push({ kind: 'bounds', key: '/payments', op: 'put' })
    await a.bounds.delete('/payments')
    await feed.push({ kind: 'bounds', key: '/payments', op: 'delete' })
    expect(b.bounds.get('/payments')).toBeUndefined()
    expect(seen).toEqual([`set /payments ${a.bounds.sequence - 1}`, `delete /payments ${a.bounds.sequence}`])
  })

  it("a foreign trust domain's bundle stored at A reaches B's listeners; the local one is the CA's", async () => {
    const { a, b, feed } = await twoServers()
    let told = 0
    cleanups.push(b.federated.onChange(() => told++))
    const other = TrustDomain.fromString('other.org')
    await a.federated.put(SpiffeBundle.from({ trustDomain: other, x509Authorities: a.ca.bundle().x509Authorities }))
    await feed.push({ kind: 'bundle', key: td.name, op: 'put' })
    expect(told).toBe(0)
    await feed.push({ kind: 'bundle', key: 'other.org', op: 'put' })
    expect(told).toBe(1)
    expect((await b.federated.listFor(new Set(['other.org']))).map((r) => r.trustDomain)).toEqual(['other.org'])
  })

  it("a change of the local bundle record (a third server's CA joined) makes B's CA adopt the union, through the one subscription", async () => {
    const { ds, clock, b, feed } = await twoServers()
    const c = await services(ds, clock, 'c')
    cleanups.push(() => c.revocations.stop())
    const der = (x: { x509Authorities: readonly Uint8Array[] }) => x.x509Authorities.map((a) => Buffer.from(a).toString('base64'))
    const cAuthority = der(c.ca.bundle()).find((x) => !der(b.ca.bundle()).includes(x))
    expect(cAuthority).toBeDefined()
    await feed.push({ kind: 'bundle', key: 'other.org', op: 'put' })
    expect(der(b.ca.bundle())).not.toContain(cAuthority)
    await feed.push({ kind: 'bundle', key: td.name, op: 'put' })
    expect(der(b.ca.bundle())).toContain(cAuthority)
  })

  it("a node change (a ban at A) makes the agent's open Sync stream at B authenticate again at once and end", async () => {
    const { b, feed, ds } = await twoServers()
    const { createdAt: _c, updatedAt: _u, ...n } = node
    await ds.nodes.upsert(n)
    const sync = new SyncStreams({ ...b, recheckMs: 3_600_000, log: b.log })
    const ac = new AbortController()
    cleanups.push(() => ac.abort())
    let authentications = 0
    let first!: () => void
    const opened = new Promise<void>((r) => (first = r))
    const done = sync.serve(node, {
      send: () => first(),
      reauthenticate: async () => {
        authentications++
        const n = await ds.nodes.get(AGENT)
        if (n.banned) throw new IdentityError('ERR_AGENT_BANNED', 'banned')
        return n
      },
      signal: ac.signal,
    })
    await opened
    await ds.nodes.update(AGENT, { banned: true }) // server A's ban, in the shared datastore
    await feed.push({ kind: 'node', key: 'spiffe://example.org/warrant/agent/join_token/other', op: 'put' })
    expect(authentications).toBe(0)
    await feed.push({ kind: 'node', key: AGENT, op: 'put' })
    await expect(done).rejects.toMatchObject({ code: 'ERR_AGENT_BANNED' })
    expect(authentications).toBe(1)
  })

  it('a reset reloads every service: entries re-sent, revocations, bounds and federated bundles read again', async () => {
    const { a, b, feed, changesAtB } = await twoServers()
    let federatedTold = 0
    cleanups.push(b.federated.onChange(() => federatedTold++))
    const id = 'spiffe://example.org/db'
    await a.revocations.revoke({ kind: 'prefix', value: id })
    await a.bounds.set('/db', parseBounds({ x509_svid_ttl: 3600 }, '/db'))
    await feed.reset()
    expect(b.revocations.covering(`${id}/x`, undefined)).toBeDefined()
    expect(b.bounds.get('/db')).toBeDefined()
    expect(changesAtB).toHaveLength(1)
    expect(federatedTold).toBe(1)
  })

  it('what was committed between a service loading its state and the subscription is read once subscribed', async () => {
    const clock = new FakeClock()
    const ds = createMemoryDataStore({ clock })
    const a = await services(ds, clock)
    const b = await services(ds, clock, 'b')
    cleanups.push(
      () => a.revocations.stop(),
      () => b.revocations.stop(),
    )
    const id = 'spiffe://example.org/late'
    await a.revocations.revoke({ kind: 'instance', value: id })
    await a.bounds.set('/late', parseBounds({ x509_svid_ttl: 3600 }, '/late'))
    expect(b.revocations.covering(id, undefined)).toBeUndefined()
    const follower = await followChanges({ changes: new FakeFeed().changes }, b, b.log)
    cleanups.push(() => follower!.close())
    expect(b.revocations.covering(id, undefined)).toBeDefined()
    expect(b.bounds.get('/late')).toBeDefined()
  })

  it("a federation relationship changed at another server makes the refresher sync its relationships; task changes are not the services'", async () => {
    const called: string[] = []
    const targets = {
      registration: { applyRemoteEntryChanges: async () => void called.push('entry'), reloadAll: () => void called.push('entries') },
      revocations: { reload: async () => void called.push('revocation') },
      bounds: { reload: async () => void called.push('bounds') },
      federated: { applyRemoteChange: () => void called.push('bundle') },
      nodes: { applyNodeChanges: () => void called.push('node') },
      federation: { sync: async () => void called.push('federation') },
    }
    const change = (kind: DataStoreChange['kind'], key: string): ChangeFeedEvent => ({
      type: 'changes',
      seq: 1,
      changes: [{ seq: 1, kind, key, op: 'put', at: 0 }],
    })
    await applyChangeEvent(change('federation', 'other.org'), targets, captureLogger())
    expect(called).toEqual(['federation'])
    called.length = 0
    await applyChangeEvent(change('task', 't1'), targets, captureLogger())
    expect(called).toEqual([])
    await applyChangeEvent({ type: 'reset', seq: 2 }, targets, captureLogger())
    expect(called.sort()).toEqual(['bounds', 'bundle', 'entries', 'federation', 'revocation'])
  })

  it('a service that fails to apply a change is logged and the others still apply theirs', async () => {
    const log = captureLogger()
    const applied: string[] = []
    await applyChangeEvent(
      {
        type: 'changes',
        seq: 2,
        changes: [
          { seq: 1, kind: 'entry', key: 'e1', op: 'put', at: 0 },
          { seq: 2, kind: 'revocation', key: '1', op: 'put', at: 0 },
        ],
      },
      {
        registration: { applyRemoteEntryChanges: async (ids) => void applied.push(...ids), reloadAll: () => undefined },
        revocations: { reload: () => Promise.reject(new Error('datastore down')) },
        bounds: { reload: async () => false },
        federated: { applyRemoteChange: () => undefined },
        nodes: { applyNodeChanges: () => undefined },
      },
      log,
    )
    expect(applied).toEqual(['e1'])
    expect(log.lines.some((l) => l.msg === 'Datastore change not applied')).toBe(true)
  })
})
