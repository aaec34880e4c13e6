/**
 * Several servers on one datastore (SPIRE's model): each CaManager has its own
 * keys and journal, and the bundle is the union of every server's authorities.
 */
import { X509Certificate } from 'node:crypto'
import { beforeEach, describe, expect, it } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { AUTHORITIES_NAMESPACE } from '../../../../src/server/ca/shared-bundle.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { ChangeFeedEvent, DataStore } from '../../../../src/server/datastore/types.js'
import type { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { validateJwtSvid } from '../../../../src/spiffe/jwt-svid/index.js'
import { generateKeyPair } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { verifyX509Svid } from '../../../../src/spiffe/x509-svid/verify.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const td = TrustDomain.fromString('example.org')
const MIN = 60_000
const CA_TTL = 60 * MIN
const workload = SpiffeId.fromString('spiffe://example.org/ns/web')

let clock: FakeClock
let ds: DataStore
let t0: number

function newCa(serverId: string | undefined, km: MemoryKeyManager): CaManager {
  return new CaManager({
    trustDomain: td,
    keyManager: km,
    ds,
    clock,
    log: captureLogger(),
    caTtlMs: CA_TTL,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 120,
    ...(serverId === undefined ? {} : { serverId }),
  })
}

async function started(serverId: string | undefined, km = new MemoryKeyManager()): Promise<CaManager> {
  const ca = newCa(serverId, km)
  await ca.init()
  return ca
}

const activeFp = (ca: CaManager) => ca.slots().x509.find((s) => s.status === 'active')!.fingerprint
const fps = (b: SpiffeBundle) => b.x509Authorities.map((d) => new X509Certificate(d).fingerprint256.replaceAll(':', '').toLowerCase())
const svidOf = async (ca: CaManager) => (await ca.signX509Svid({ spiffeId: workload, publicKey: generateKeyPair('ec-p256').publicKey, ttlMs: CA_TTL })).chain
const verifies = async (chain: Uint8Array[], b: SpiffeBundle) =>
  verifyX509Svid(chain, b, { now: new Date(clock.now()) }).then(
    () => true,
    () => false,
  )

beforeEach(() => {
  clock = new FakeClock()
  t0 = clock.now()
  ds = createMemoryDataStore({ clock })
})

describe('CaManager with several servers on one datastore', () => {
  it('publishes the union of both servers’ authorities: an SVID or JWT-SVID of either verifies against the other’s bundle', async () => {
    const a = await started('a')
    const b = await started('b')
    const seenByA: SpiffeBundle[] = []
    a.onBundleChange((x) => seenByA.push(x))
    // B's start reaches A at A's next rotation check.
    await a.rotate()
    expect(seenByA).toHaveLength(1)
    expect(a.bundle().marshal()).toBe(b.bundle().marshal())
    expect(a.bundle().sequenceNumber).toBe(2)
    expect(fps(a.bundle()).sort()).toEqual([activeFp(a), activeFp(b)].sort())
    expect([...a.bundle().jwtAuthorities.keys()].sort()).toEqual([...a.slots().jwt, ...b.slots().jwt].map((j) => j.kid).sort())
    expect(await verifies(await svidOf(b), a.bundle())).toBe(true)
    expect(await verifies(await svidOf(a), b.bundle())).toBe(true)
    const jwt = await b.mintJwtSvid({ spiffeId: workload, audience: ['svc'], ttlMs: 5 * MIN })
    expect((await validateJwtSvid(jwt.token, a.bundle(), { audience: 'svc', now: new Date(clock.now()) })).id.toString()).toBe(workload.toString())
    // Each server keeps its own journal and keys.
    expect(await ds.journal.get('ca/a')).toBeDefined()
    expect(await ds.journal.get('ca/b')).toBeDefined()
    expect(await ds.journal.get('ca')).toBeUndefined()
  })

  it('one server’s rotations never drop the other’s CA: its SVIDs keep verifying until they expire', async () => {
    const a = await started('a')
    const b = await started('b')
    await a.rotate()
    const bSvid = await svidOf(b)
    const bFp = activeFp(b)
    // A rotates by force twice and runs through its schedule; B does nothing meanwhile.
    await a.forceRotate()
    await a.forceRotate()
    for (const m of [10, 20, 30, 40, 50]) {
      clock.set(t0 + m * MIN)
      await a.rotate()
      expect(fps(a.bundle())).toContain(bFp)
      expect(await verifies(bSvid, a.bundle())).toBe(true)
    }
    // B sees A's new keys at its own check, and A's SVIDs verify against B's bundle.
    await b.rotate() // B also prepares its own next key now
    await a.rotate()
    expect(b.bundle().marshal()).toBe(a.bundle().marshal())
    expect(fps(a.bundle())).toContain(bFp)
    expect(await verifies(await svidOf(a), b.bundle())).toBe(true)
  })

  it('two servers on one key manager (a shared HSM) name their keys apart and never replace each other’s', async () => {
    const km = new MemoryKeyManager()
    const a = await started('a', km)
    const b = await started('b', km)
    const ids = (await km.listKeys()).map((k) => k.id).sort()
    expect(ids).toEqual(['a.jwt-2', 'a.x509-ca-1', 'b.jwt-2', 'b.x509-ca-1'])
    await b.rotate()
    await a.rotate()
    expect(await verifies(await svidOf(a), b.bundle())).toBe(true)
    expect(await verifies(await svidOf(b), a.bundle())).toBe(true)
  })

  it('an expired server’s authorities leave the bundle and its record goes', async () => {
    const a = await started('a')
    const b = await started('b') // then gone: never rotates again
    const bFp = activeFp(b)
    clock.set(t0 + 30 * MIN)
    await a.rotate() // A prepares its next key (and publishes B's CA still)
    expect(fps(a.bundle())).toContain(bFp)
    expect(a.bundle().x509Authorities).toHaveLength(3)
    clock.set(t0 + CA_TTL + MIN)
    await a.rotate()
    expect(fps(a.bundle())).not.toContain(bFp)
    expect(fps(a.bundle()).sort()).toEqual(
      a
        .slots()
        .x509.map((s) => s.fingerprint)
        .sort(),
    )
    expect((await ds.kv.list(AUTHORITIES_NAMESPACE)).map((r) => r.key)).toEqual(['a'])
  })

  it('servers computing the same union agree on one sequence; a record that does not parse is skipped', async () => {
    const a = await started('a')
    const b = await started('b')
    await a.rotate()
    await b.rotate()
    const seq = a.bundle().sequenceNumber
    await ds.kv.put(AUTHORITIES_NAMESPACE, 'c', '{"version":2}')
    expect(await a.refreshBundle()).toBe(false)
    expect(await b.refreshBundle()).toBe(false)
    expect((await ds.bundles.get('example.org'))?.sequence).toBe(seq)
  })

  it('a server given an ID adopts the single-server journal when its key manager holds those keys, once', async () => {
    const km = new MemoryKeyManager()
    const legacy = await started(undefined, km)
    const before = legacy.bundle()
    const legacyFp = activeFp(legacy)
    const a = await started('a', km)
    expect(activeFp(a)).toBe(legacyFp)
    expect(a.bundle().marshal()).toBe(before.marshal()) // same authorities, same sequence
    expect(JSON.parse((await ds.journal.get('ca'))!)).toMatchObject({ movedTo: 'ca/a' })
    // Another server with its own keys does not take it, and starts its own CA beside it.
    const b = await started('b')
    expect(activeFp(b)).not.toBe(legacyFp)
    await a.rotate()
    expect(fps(a.bundle()).sort()).toEqual([legacyFp, activeFp(b)].sort())
    // A restart of A finds its own journal.
    const a2 = await started('a', km)
    expect(activeFp(a2)).toBe(legacyFp)
  })

  it('does not adopt the single-server journal when its keys are not in this key manager', async () => {
    const legacy = await started(undefined)
    const a = await started('a') // another key manager
    expect(activeFp(a)).not.toBe(activeFp(legacy))
    expect(JSON.parse((await ds.journal.get('ca'))!)).not.toHaveProperty('movedTo')
  })

  it('follows a datastore that pushes its changes: another server’s bundle write is adopted at once, other changes are ignored', async () => {
    let push: ((e: ChangeFeedEvent) => void | Promise<void>) | undefined
    let closed = false
    const a = newCa('a', new MemoryKeyManager())
    const feedDs: DataStore = Object.assign(Object.create(ds) as DataStore, {
      changes: async (_o: { fromSeq?: number }, onEvent: (e: ChangeFeedEvent) => void | Promise<void>) => {
        push = onEvent
        return {
          seq: 0,
          close: async () => {
            closed = true
          },
        }
      },
    })
    const followed = new CaManager({
      trustDomain: td,
      keyManager: new MemoryKeyManager(),
      ds: feedDs,
      clock,
      log: captureLogger(),
      caTtlMs: CA_TTL,
      caKeyType: 'ec-p256',
      jwtKeyType: 'ec-p256',
      refreshHintSeconds: 120,
      serverId: 'f',
    })
    await followed.init()
    const stop = await followed.followDatastoreChanges()
    expect(stop).toBeDefined()
    await a.init() // another server joins: it writes the bundle record
    const change = (kind: 'bundle' | 'entry', key: string) => ({
      type: 'changes' as const,
      seq: 1,
      changes: [{ seq: 1, kind, key, op: 'put' as const, at: 0 }],
    })
    await push!(change('entry', 'some-entry'))
    await push!(change('bundle', 'other.example'))
    expect(fps(followed.bundle())).not.toContain(activeFp(a))
    await push!(change('bundle', 'example.org'))
    expect(fps(followed.bundle())).toContain(activeFp(a))
    await stop!()
    expect(closed).toBe(true)
    // Without a change feed there is nothing to follow (the rotation check does it).
    expect(await a.followDatastoreChanges()).toBeUndefined()
  })

  it('refuses a malformed server id', () => {
    expect(() => newCa('Bad_ID', new MemoryKeyManager())).toThrow(RangeError)
  })
})
