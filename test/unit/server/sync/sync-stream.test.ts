/**
 * An agent's Sync stream over the real registration, bounds, CA and
 * federated-bundle services (memory datastore): the full set first, then
 * only what changed; entries whose bounds the node does not meet are
 * withdrawn; a failed re-authentication ends the stream with its error.
 */
import { afterEach, describe, expect, it } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { BoundsService } from '../../../../src/server/bounds/bounds-service.js'
import { FederatedBundles } from '../../../../src/server/bundle/federated.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { AttestedNode, DataStore, NewEntry, RegistrationEntry } from '../../../../src/server/datastore/types.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { SyncStreams, type SyncUpdate } from '../../../../src/server/sync/sync-stream.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { parseBounds } from '../../../../src/spiffe/bounds/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/join_token/n1'
const PROD = { type: 'tpm', value: 'pcr:prod' }

const node = (selectors = [PROD]): AttestedNode => ({
  agentId: AGENT,
  attestor: 'join_token',
  selectors,
  serial: '01',
  expiresAt: Date.UTC(2027, 0, 1),
  previousSerial: '',
  banned: false,
  canReattest: false,
  createdAt: 0,
  updatedAt: 0,
})

const newEntry = (path: string, o: Partial<NewEntry> = {}): NewEntry => baseEntry({ spiffeId: `spiffe://example.org${path}`, parentId: AGENT, ...o })

async function newCa(trustDomain: TrustDomain, ds: DataStore, clock: FakeClock): Promise<CaManager> {
  const ca = new CaManager({
    trustDomain,
    keyManager: new MemoryKeyManager(),
    ds,
    clock,
    log: captureLogger(),
    caTtlMs: 24 * 3_600_000,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 300,
  })
  await ca.init()
  return ca
}

/** The updates a stream sent, and a way to wait for the next one. */
function recorder() {
  const updates: SyncUpdate[] = []
  let waiting: ((u: SyncUpdate) => void) | undefined
  return {
    updates,
    send: (u: SyncUpdate) => {
      updates.push(u)
      waiting?.(u)
      waiting = undefined
    },
    next: () => new Promise<SyncUpdate>((r) => (waiting = r)),
  }
}

const streams: AbortController[] = []
afterEach(() => {
  for (const s of streams.splice(0)) s.abort()
})

async function setup(recheckMs?: number) {
  const clock = new FakeClock()
  const log = captureLogger()
  const ds = createMemoryDataStore({ clock })
  const ca = await newCa(td, ds, clock)
  const bounds = new BoundsService({ trustDomain: td, ds, clock, log })
  await bounds.init()
  const registration = new RegistrationService({ ds, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 }, bounds })
  const federated = new FederatedBundles({ ds, localTrustDomain: td, log })
  const sync = new SyncStreams({ registration, bounds, ca, federated, log, ...(recheckMs ? { recheckMs } : {}) })
  const create = async (e: NewEntry): Promise<RegistrationEntry> => {
    const [r] = await registration.createEntries([e])
    if (!r!.ok) throw r!.error
    return r!.value
  }
  const open = (n: AttestedNode, reauthenticate: () => Promise<AttestedNode> = async () => n) => {
    const rec = recorder()
    const ac = new AbortController()
    streams.push(ac)
    const first = rec.next()
    const done = sync.serve(n, { send: rec.send, reauthenticate, signal: ac.signal })
    return { ...rec, first, done, ac }
  }
  return { clock, ds, ca, bounds, registration, federated, create, open, sync }
}

describe('SyncStreams', () => {
  it("sends the full set first, then only what changed, and nothing for changes that are not the agent's", async () => {
    const w = await setup()
    const a = await w.create(newEntry('/a'))
    const s = w.open(node())
    const first = await s.first
    expect(first.full).toBe(true)
    expect(first.entries!.map((e) => e.id)).toEqual([a.id])
    expect(first.bundle!.trustDomain.name).toBe('example.org')
    expect(first.federatedBundles).toEqual([])

    let next = s.next()
    // Another agent's entry changes nothing for this one; the next update is this agent's new entry alone.
    await w.create(newEntry('/other', { parentId: 'spiffe://example.org/warrant/agent/join_token/n2' }))
    const b = await w.create(newEntry('/b'))
    const inc = await next
    expect(inc).toMatchObject({ full: false, deletedEntryIds: [] })
    expect(inc.entries!.map((e) => e.id)).toEqual([b.id])
    expect(inc.bundle).toBeUndefined()
    expect(s.updates).toHaveLength(2)

    next = s.next()
    await w.registration.deleteEntries([a.id])
    expect(await next).toMatchObject({ full: false, entries: [], deletedEntryIds: [a.id] })
  })

  it('withdraws entries whose bounds the node does not meet, and sends the federated bundles an entry may use', async () => {
    const w = await setup()
    const partner = TrustDomain.fromString('partner.example')
    await w.federated.put((await newCa(partner, createMemoryDataStore({ clock: w.clock }), w.clock)).bundle())
    const a = await w.create(newEntry('/agents/a', { federatesWith: ['partner.example'] }))
    const s = w.open(node([]))
    const first = await s.first
    expect(first.entries!.map((e) => e.id)).toEqual([a.id])
    expect(first.federatedBundles!.map((b) => b.trustDomain)).toEqual(['partner.example'])

    const next = s.next()
    await w.bounds.set('/agents', parseBounds({ require_node_selectors: ['tpm:pcr:prod'] }))
    const u = await next
    expect(u.deletedEntryIds).toEqual([a.id])
    expect(u.federatedBundles).toEqual([]) // no entry left that federates
  })

  it('follows a change of the node selectors found on re-authentication, and ends the stream when it fails', async () => {
    const w = await setup(20)
    await w.create(newEntry('/a'))
    const g = await w.create(newEntry('/agents/g'))
    await w.bounds.set('/agents', parseBounds({ require_node_selectors: ['tpm:pcr:prod'] }))
    let current = node([])
    let fail: Error | undefined
    const s = w.open(node([]), async () => {
      if (fail) throw fail
      return current
    })
    expect((await s.first).entries!.map((e) => e.spiffeId)).toEqual(['spiffe://example.org/a'])
    const next = s.next()
    current = node([PROD])
    expect((await next).entries!.map((e) => e.id)).toEqual([g.id])
    fail = new IdentityError('ERR_AGENT_EVICTED', 'agent evicted')
    await expect(s.done).rejects.toMatchObject({ code: 'ERR_AGENT_EVICTED' })
  })

  it("ends the stream when the connection's SVID expires, not at the next periodic recheck", async () => {
    const w = await setup() // the periodic recheck every 30 s
    await w.create(newEntry('/a'))
    const expiresAt = Date.now() + 150
    let calls = 0
    const rec = recorder()
    const first = rec.next()
    const ac = new AbortController()
    streams.push(ac)
    const done = w.sync.serve(node(), {
      send: rec.send,
      reauthenticate: async () => {
        calls++
        if (Date.now() >= expiresAt) throw new IdentityError('ERR_X509_SVID_INVALID', 'the agent SVID has expired')
        return node()
      },
      credentialExpiresAt: expiresAt,
      signal: ac.signal,
    })
    expect((await first).entries!.map((e) => e.spiffeId)).toEqual(['spiffe://example.org/a'])
    const ended = await Promise.race([
      done.then(
        () => 'ended quietly',
        (err: unknown) => err,
      ),
      new Promise((r) => setTimeout(() => r('still open'), 3000)),
    ])
    expect(ended).toMatchObject({ code: 'ERR_X509_SVID_INVALID' })
    expect(calls).toBe(1)
  })

  it('pushes a new local bundle after a CA rotation, and ends quietly when the agent goes away', async () => {
    const w = await setup()
    const s = w.open(node())
    const first = await s.first
    const next = s.next()
    await w.ca.forceRotate()
    const u = await next
    expect(u.bundle).toBeDefined()
    expect(u.bundle!.marshal()).not.toEqual(first.bundle!.marshal())
    s.ac.abort()
    await expect(s.done).resolves.toBeUndefined()
  })
})
