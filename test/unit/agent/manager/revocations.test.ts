import { describe, expect, it } from 'vitest'
import { AgentManager } from '../../../../src/agent/manager/manager.js'
import type { AgentRevocation } from '../../../../src/agent/manager/ports.js'
import { Revocations } from '../../../../src/agent/manager/revocations.js'
import type { AgentEntry, JwtSvidMint, SvidSigner, X509SvidResultItem } from '../../../../src/agent/server-client.js'
import type { WorkloadUpdate } from '../../../../src/agent/workload-api/manager.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { TrustDomain } from '../../../../src/spiffe/index.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const rev = (id: number, kind: 'instance' | 'prefix', value: string, expiresAt = 0): AgentRevocation => ({ id, kind, value, expiresAt })

describe('agent Revocations', () => {
  it('covers by instance ID, by SPIFFE ID, and by prefix only at a segment boundary', () => {
    const r = new Revocations()
    expect(r.covers('spiffe://td/a', 'i-1', 0)).toBe(false)
    expect(r.set([rev(1, 'instance', 'i-1'), rev(2, 'instance', 'spiffe://td/b'), rev(3, 'prefix', 'spiffe://td/ns')])).toBe(true)
    expect(r.size).toBe(3)
    expect(r.covers('spiffe://td/a', 'i-1', 0)).toBe(true)
    expect(r.covers('spiffe://td/a', 'i-2', 0)).toBe(false)
    expect(r.covers('spiffe://td/a', undefined, 0)).toBe(false)
    expect(r.covers('spiffe://td/b', undefined, 0)).toBe(true)
    expect(r.covers('spiffe://td/ns', undefined, 0)).toBe(true)
    expect(r.covers('spiffe://td/ns/x/y', undefined, 0)).toBe(true)
    expect(r.covers('spiffe://td/nsx', undefined, 0)).toBe(false)
    expect(r.covers(undefined, undefined, 0)).toBe(false)
    expect(r.hasInstanceId('i-1')).toBe(true)
    expect(r.hasInstanceId('spiffe://td/ns')).toBe(false)
    // The same set again is no change.
    expect(r.set([rev(1, 'instance', 'i-1'), rev(2, 'instance', 'spiffe://td/b'), rev(3, 'prefix', 'spiffe://td/ns')])).toBe(false)
  })

  it('a record stops applying at its expiry, and expire() drops it once', () => {
    const r = new Revocations()
    r.set([rev(1, 'prefix', 'spiffe://td/ns', 1000), rev(2, 'instance', 'i-1', 5000)])
    expect(r.covers('spiffe://td/ns/a', undefined, 999)).toBe(true)
    expect(r.covers('spiffe://td/ns/a', undefined, 1000)).toBe(false)
    expect(r.expire(999)).toBe(false)
    expect(r.expire(1000)).toBe(true)
    expect(r.size).toBe(1)
    expect(r.expire(1001)).toBe(false)
    expect(r.covers('x', 'i-1', 4999)).toBe(true)
    expect(r.expire(5000)).toBe(true)
    expect(r.size).toBe(0)
  })
})

class Signer implements SvidSigner {
  x509: string[] = []
  jwt: string[] = []
  n = 0
  readonly clock: FakeClock
  constructor(clock: FakeClock) {
    this.clock = clock
  }
  async batchNewX509Svid(params: { entryId: string; csr: Uint8Array }[]): Promise<X509SvidResultItem[]> {
    this.x509.push(...params.map((p) => p.entryId))
    return params.map((p) => ({
      entryId: p.entryId,
      error: undefined,
      svidChain: [new Uint8Array(Buffer.from(`${p.entryId}#${++this.n}`))],
      expiresAt: this.clock.now() + 100_000,
    }))
  }
  async newJwtSvid(entryId: string): Promise<JwtSvidMint> {
    this.jwt.push(entryId)
    const now = this.clock.now()
    return { token: `tok-${entryId}-${++this.n}`, issuedAt: now, expiresAt: now + 60_000 }
  }
}

const entry = (id: string, path: string): AgentEntry => ({
  id,
  spiffeId: `spiffe://example.org/${path}`,
  parentId: 'spiffe://example.org/agent',
  selectors: ['unix:uid:1'],
  x509SvidTtl: 0,
  jwtSvidTtl: 0,
  dnsNames: [],
  federatesWith: [],
  hint: '',
  revision: 1,
})

const delta = (revocations: AgentRevocation[]) => ({
  full: false,
  entries: [],
  deletedEntryIds: [],
  bundle: undefined,
  federatedBundles: undefined,
  revocations,
})
const settle = () => new Promise((r) => setImmediate(r))

function setup() {
  const clock = new FakeClock()
  const signer = new Signer(clock)
  const manager = new AgentManager({
    trustDomain: TrustDomain.fromString('example.org'),
    signer,
    clock,
    log: nullLogger,
    attestWorkload: async () => [],
    autoTick: false,
    random: () => 0.5,
    retryBackoff: { initialMs: 1000, maxMs: 8000 },
  })
  return { clock, signer, manager }
}

describe('AgentManager: revocations pushed over Sync', () => {
  it('a revoked SPIFFE ID is dropped from subscribers and the JWT-SVID cache at once, neither minted nor served, and served again when the record goes', async () => {
    const { manager, signer } = setup()
    await manager.applySync({ full: true, entries: [entry('a', 'ns/a'), entry('b', 'other/b')], deletedEntryIds: [], bundle: undefined, federatedBundles: [] })
    await settle()
    const updates: WorkloadUpdate[] = []
    manager.subscribe(['unix:uid:1'], (u) => updates.push(u))
    const ids = () => updates.at(-1)?.identities.map((i) => i.spiffeId)
    expect(ids()).toEqual(['spiffe://example.org/ns/a', 'spiffe://example.org/other/b'])
    const jwt1 = await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x'] }, {})
    expect(jwt1.map((j) => j.spiffeId)).toEqual(['spiffe://example.org/ns/a', 'spiffe://example.org/other/b'])

    await manager.applySync(delta([rev(1, 'instance', 'spiffe://example.org/ns/a')]))
    await settle()
    expect(ids()).toEqual(['spiffe://example.org/other/b'])
    const jwtCalls = signer.jwt.length
    const jwt2 = await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x'] }, {})
    expect(jwt2.map((j) => j.spiffeId)).toEqual(['spiffe://example.org/other/b'])
    expect(signer.jwt.length).toBe(jwtCalls) // b's cached token; nothing minted for a
    expect(await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x'], spiffeId: 'spiffe://example.org/ns/a' }, {})).toEqual([])
    expect(signer.jwt.slice(jwtCalls)).not.toContain('a')

    // Maintenance does not mint it again while revoked.
    const x509Before = signer.x509.filter((e) => e === 'a').length
    await manager.tick()
    await settle()
    expect(signer.x509.filter((e) => e === 'a').length).toBe(x509Before)
    expect(ids()).toEqual(['spiffe://example.org/other/b'])

    // Lifted: minted and served again.
    await manager.applySync(delta([]))
    await manager.tick()
    await settle()
    expect(signer.x509.filter((e) => e === 'a').length).toBe(x509Before + 1)
    expect(ids()).toEqual(['spiffe://example.org/ns/a', 'spiffe://example.org/other/b'])
  })

  it('a prefix quarantine with an end time covers the namespace only until it ends', async () => {
    const { manager, clock } = setup()
    await manager.applySync({ full: true, entries: [entry('a', 'ns/a'), entry('b', 'nsb')], deletedEntryIds: [], bundle: undefined, federatedBundles: [] })
    await settle()
    const updates: WorkloadUpdate[] = []
    manager.subscribe(['unix:uid:1'], (u) => updates.push(u))
    const ids = () => updates.at(-1)?.identities.map((i) => i.spiffeId)
    await manager.applySync(delta([rev(7, 'prefix', 'spiffe://example.org/ns', clock.now() + 10_000)]))
    await settle()
    expect(ids()).toEqual(['spiffe://example.org/nsb'])
    clock.advance(10_000)
    await manager.tick()
    await settle()
    expect(ids()).toEqual(['spiffe://example.org/ns/a', 'spiffe://example.org/nsb'])
  })
})
