import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { AgentManager } from '../../../../src/agent/manager/manager.js'
import type { AgentEntry, BundleDoc, JwtSvidMint, SvidSigner, X509SvidResultItem } from '../../../../src/agent/server-client.js'
import type { WorkloadUpdate } from '../../../../src/agent/workload-api/manager.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { KeyObjectSigner, mintJwtSvid, SpiffeBundle, SpiffeId, TrustDomain } from '../../../../src/spiffe/index.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const TD = TrustDomain.fromString('example.org')
const X509_TTL = 100_000
const JWT_TTL = 60_000

/** Signs "SVIDs" as opaque bytes naming the entry and a serial; records every batch. */
class FakeSigner implements SvidSigner {
  down = false
  batches: string[][] = []
  jwtCalls: { entryId: string; audience: string[] }[] = []
  serial = 0
  readonly clock: FakeClock
  constructor(clock: FakeClock) {
    this.clock = clock
  }
  async batchNewX509Svid(params: { entryId: string; csr: Uint8Array }[]): Promise<X509SvidResultItem[]> {
    if (this.down) throw new IdentityError('ERR_UNAVAILABLE', 'server down')
    expect(params.length).toBeLessThanOrEqual(500)
    this.batches.push(params.map((p) => p.entryId))
    return params.map((p) => ({
      entryId: p.entryId,
      error: undefined,
      svidChain: [new Uint8Array(Buffer.from(`${p.entryId}#${++this.serial}`))],
      expiresAt: this.clock.now() + X509_TTL,
    }))
  }
  async newJwtSvid(entryId: string, audience: string[]): Promise<JwtSvidMint> {
    if (this.down) throw new IdentityError('ERR_UNAVAILABLE', 'server down')
    this.jwtCalls.push({ entryId, audience })
    const now = this.clock.now()
    return { token: `tok-${entryId}-${audience.join('+')}-${++this.serial}`, issuedAt: now, expiresAt: now + JWT_TTL }
  }
}

function entry(id: string, selectors: string[], extra: Partial<AgentEntry> = {}): AgentEntry {
  return {
    id,
    spiffeId: `spiffe://example.org/${id}`,
    parentId: 'spiffe://example.org/agent',
    selectors,
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    hint: '',
    revision: 1,
    ...extra,
  }
}

const jwtKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
const localBundle: BundleDoc = {
  trustDomain: 'example.org',
  document: SpiffeBundle.from({ trustDomain: TD, jwtAuthorities: [['k1', new KeyObjectSigner(jwtKey).publicKey.export({ format: 'jwk' })]] }).marshal(),
  sequence: 1,
}
const fedKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
const FED = TrustDomain.fromString('partner.test')
const fedBundle: BundleDoc = {
  trustDomain: 'partner.test',
  document: SpiffeBundle.from({ trustDomain: FED, jwtAuthorities: [['f1', new KeyObjectSigner(fedKey).publicKey.export({ format: 'jwk' })]] }).marshal(),
  sequence: 1,
}

function setup(opts: { max?: number; maxJwt?: number } = {}) {
  const clock = new FakeClock()
  const signer = new FakeSigner(clock)
  const manager = new AgentManager({
    trustDomain: TD,
    signer,
    clock,
    log: nullLogger,
    attestWorkload: async () => [],
    autoTick: false,
    random: () => 0.5,
    x509SvidCacheMaxSize: opts.max ?? 1000,
    jwtSvidCacheMaxSize: opts.maxJwt ?? 1000,
    retryBackoff: { initialMs: 1000, maxMs: 8000 },
  })
  return { clock, signer, manager }
}

const full = (entries: AgentEntry[], extra: { federatedBundles?: BundleDoc[] } = {}) => ({
  full: true,
  entries,
  deletedEntryIds: [],
  bundle: localBundle,
  federatedBundles: extra.federatedBundles ?? [],
})

/** Collects updates; `ids()` lists the SPIFFE IDs of the latest one. */
function collect(manager: AgentManager, selectors: string[]) {
  const updates: WorkloadUpdate[] = []
  const unsubscribe = manager.subscribe(selectors, (u) => updates.push(u))
  return {
    updates,
    unsubscribe,
    ids: () => updates.at(-1)?.identities.map((i) => i.spiffeId),
    chain: () => Buffer.from(updates.at(-1)!.identities[0]!.x509Svid[0]!).toString(),
  }
}

const settle = () => new Promise((r) => setImmediate(r))

describe('AgentManager: entries, matching and subscribers', () => {
  it('pre-mints on the first full sync and serves only entries whose selectors are a subset of the caller selectors', async () => {
    const { manager, signer } = setup()
    const early = collect(manager, ['unix:uid:1000'])
    expect(early.updates).toHaveLength(0) // not ready before the first sync
    await manager.applySync(
      full([entry('a', ['unix:uid:1000']), entry('b', ['unix:uid:1000', 'unix:gid:5']), entry('c', ['unix:uid:65534']), entry('none', [])]),
    )
    await settle()
    expect(manager.ready).toBe(true)
    expect(signer.batches.flat().sort()).toEqual(['a', 'b', 'c'])
    expect(early.ids()).toEqual(['spiffe://example.org/a'])

    const cases: [string[], string[]][] = [
      [['unix:uid:1000'], ['spiffe://example.org/a']],
      [
        ['unix:uid:1000', 'unix:gid:5'],
        ['spiffe://example.org/a', 'spiffe://example.org/b'],
      ],
      [['unix:uid:65534'], ['spiffe://example.org/c']],
      [['unix:gid:5'], []],
      [[], []],
    ]
    for (const [selectors, expected] of cases) {
      const c = collect(manager, selectors)
      expect(c.ids(), selectors.join(',')).toEqual(expected) // delivered synchronously when cached
      c.unsubscribe()
    }
    const u = early.updates.at(-1)!
    expect(u.trustDomainId).toBe('spiffe://example.org')
    expect(JSON.parse(u.bundle.jwks).keys[0].kid).toBe('k1')
    expect(u.identities[0]!.x509SvidKey.length).toBeGreaterThan(100) // PKCS#8 P-256
  })

  it('pushes updates on entry add, change and delete, only to concerned subscribers', async () => {
    const { manager } = setup()
    await manager.applySync(full([entry('a', ['unix:uid:1'])]))
    const one = collect(manager, ['unix:uid:1'])
    const two = collect(manager, ['unix:uid:2'])
    expect(one.updates).toHaveLength(1)
    expect(two.ids()).toEqual([])

    await manager.applySync({ full: false, entries: [entry('b', ['unix:uid:2'])], deletedEntryIds: [], bundle: undefined, federatedBundles: undefined })
    await settle()
    expect(two.ids()).toEqual(['spiffe://example.org/b'])
    expect(one.updates).toHaveLength(1)

    await manager.applySync({ full: false, entries: [], deletedEntryIds: ['a'], bundle: undefined, federatedBundles: undefined })
    await settle()
    expect(one.ids()).toEqual([])

    // a full sync replaces everything: b disappears, a comes back
    await manager.applySync(full([entry('a', ['unix:uid:1'])]))
    await settle()
    expect(one.ids()).toEqual(['spiffe://example.org/a'])
    expect(two.ids()).toEqual([])
  })

  it('a changed SPIFFE ID is never served with the old certificate', async () => {
    const { manager } = setup()
    await manager.applySync(full([entry('a', ['unix:uid:1'])]))
    const s = collect(manager, ['unix:uid:1'])
    await manager.applySync({
      full: false,
      entries: [entry('a', ['unix:uid:1'], { spiffeId: 'spiffe://example.org/renamed', revision: 2 })],
      deletedEntryIds: [],
      bundle: undefined,
      federatedBundles: undefined,
    })
    await settle()
    await settle()
    for (const u of s.updates.slice(1)) for (const i of u.identities) expect(i.spiffeId).toBe('spiffe://example.org/renamed')
    expect(s.ids()).toEqual(['spiffe://example.org/renamed'])
  })

  it('sends federated bundles only for the trust domains the caller entries federate with', async () => {
    const { manager } = setup()
    await manager.applySync(
      full([entry('a', ['unix:uid:1'], { federatesWith: ['partner.test'] }), entry('b', ['unix:uid:2'])], { federatedBundles: [fedBundle] }),
    )
    const a = collect(manager, ['unix:uid:1'])
    const b = collect(manager, ['unix:uid:2'])
    expect([...a.updates[0]!.federatedBundles.keys()]).toEqual(['spiffe://partner.test'])
    expect(b.updates[0]!.federatedBundles.size).toBe(0)
    // removing the federated bundle is pushed
    await manager.applySync({ full: false, entries: [], deletedEntryIds: [], bundle: undefined, federatedBundles: [] })
    await settle()
    expect(a.updates.at(-1)!.federatedBundles.size).toBe(0)
  })
})

describe('AgentManager: rotation and resilience', () => {
  it('rotates at half-life with jitter and pushes the new SVID to open subscribers', async () => {
    const { manager, clock, signer } = setup()
    await manager.applySync(full([entry('a', ['unix:uid:1'])]))
    const s = collect(manager, ['unix:uid:1'])
    const first = s.chain()
    const t = manager.svidTimes('a')!
    expect(t.rotateAt - t.issuedAt).toBeGreaterThanOrEqual(X509_TTL * 0.45)
    expect(t.rotateAt - t.issuedAt).toBeLessThanOrEqual(X509_TTL * 0.55)

    clock.set(t.rotateAt - 1)
    await manager.tick()
    expect(signer.batches).toHaveLength(1)
    clock.set(t.rotateAt)
    await manager.tick()
    await settle()
    expect(signer.batches).toHaveLength(2)
    expect(s.chain()).not.toBe(first)
    expect(s.updates).toHaveLength(2)
  })

  it('jitter spreads rotation times over ±10% of the half-life', () => {
    const clocks = [0, 0.25, 0.5, 0.75, 0.999].map((r) => {
      const clock = new FakeClock()
      const m = new AgentManager({
        trustDomain: TD,
        signer: new FakeSigner(clock),
        clock,
        log: nullLogger,
        attestWorkload: async () => [],
        autoTick: false,
        random: () => r,
      })
      return { m, clock }
    })
    return Promise.all(
      clocks.map(async ({ m, clock }) => {
        await m.applySync(full([entry('a', ['unix:uid:1'])]))
        return (m.svidTimes('a')!.rotateAt - clock.now()) / (X509_TTL / 2)
      }),
    ).then((fractions) => {
      for (const f of fractions) {
        expect(f).toBeGreaterThanOrEqual(0.9)
        expect(f).toBeLessThanOrEqual(1.1)
      }
      expect(new Set(fractions).size).toBe(fractions.length)
    })
  })

  it('with the server down keeps serving the cached SVID until it expires, retries with backoff, resumes when it returns', async () => {
    const { manager, clock, signer } = setup()
    await manager.applySync(full([entry('a', ['unix:uid:1'])]))
    const s = collect(manager, ['unix:uid:1'])
    const first = s.chain()
    const t = manager.svidTimes('a')!
    signer.down = true
    clock.set(t.rotateAt)
    await manager.tick()
    expect(s.ids()).toEqual(['spiffe://example.org/a'])
    const retryAt = manager.svidTimes('a')!.rotateAt
    expect(retryAt).toBeGreaterThan(clock.now()) // backoff, not a hot loop
    expect(retryAt - clock.now()).toBeLessThanOrEqual(1000 * 1.2)
    // a workload connecting now still gets the cached SVID
    const late = collect(manager, ['unix:uid:1'])
    expect(late.chain()).toBe(first)

    clock.set(t.expiresAt)
    await manager.tick()
    await settle()
    expect(s.ids()).toEqual([]) // expired: no longer served
    expect(manager.stats().cachedX509Svids).toBe(0)

    signer.down = false
    clock.advance(10_000)
    await manager.tick()
    await settle()
    expect(s.ids()).toEqual(['spiffe://example.org/a'])
    expect(s.chain()).not.toBe(first)
  })

  it('signs in batches of at most 500', async () => {
    const { manager, signer } = setup({ max: 2000 })
    const entries = Array.from({ length: 1201 }, (_, i) => entry(`e${i}`, [`unix:uid:${i}`]))
    await manager.applySync(full(entries))
    expect(signer.batches.map((b) => b.length)).toEqual([500, 500, 201])
    expect(manager.stats().cachedX509Svids).toBe(1201)
  })

  it('keeps at most x509_svid_cache_max_size pre-minted SVIDs and mints the rest on demand', async () => {
    const { manager, signer } = setup({ max: 2 })
    await manager.applySync(full([entry('a', ['unix:uid:1']), entry('b', ['unix:uid:2']), entry('c', ['unix:uid:3']), entry('d', ['unix:uid:4'])]))
    expect(manager.stats().cachedX509Svids).toBe(2)
    const notCached = ['a', 'b', 'c', 'd'].find((id) => !signer.batches.flat().includes(id))!
    const uid = { a: 1, b: 2, c: 3, d: 4 }[notCached]
    const s = collect(manager, [`unix:uid:${uid}`])
    expect(s.updates).toHaveLength(0) // minting on demand
    await settle()
    await settle()
    expect(s.ids()).toEqual([`spiffe://example.org/${notCached}`])
    expect(manager.stats().cachedX509Svids).toBeLessThanOrEqual(2) // unsubscribed ones were evicted
    await manager.tick()
    expect(manager.stats().cachedX509Svids).toBeLessThanOrEqual(2)
  })
})

describe('AgentManager: JWT-SVIDs', () => {
  it('caches per (SPIFFE ID, audience set), re-mints at half-life, serves the cached token while the server is down', async () => {
    const { manager, clock, signer } = setup()
    await manager.applySync(full([entry('a', ['unix:uid:1'])]))
    const r1 = await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x', 'y'] }, {})
    const r2 = await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['y', 'x', 'x'] }, {})
    expect(r1).toHaveLength(1)
    expect(r2[0]!.token).toBe(r1[0]!.token)
    expect(signer.jwtCalls).toEqual([{ entryId: 'a', audience: ['x', 'y'] }])
    await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x'] }, {})
    expect(signer.jwtCalls).toHaveLength(2)

    clock.advance(JWT_TTL / 2)
    const r3 = await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x', 'y'] }, {})
    expect(r3[0]!.token).not.toBe(r1[0]!.token)

    signer.down = true
    clock.advance(JWT_TTL / 2 + 1)
    expect((await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x', 'y'] }, {}))[0]!.token).toBe(r3[0]!.token)
    clock.advance(JWT_TTL)
    await expect(manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x', 'y'] }, {})).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })

  it('filters by SPIFFE ID, returns nothing for unmatched selectors, and bounds the cache', async () => {
    const { manager, signer } = setup({ maxJwt: 2 })
    await manager.applySync(full([entry('a', ['unix:uid:1']), entry('b', ['unix:uid:1'])]))
    expect((await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x'] }, {})).map((r) => r.spiffeId)).toEqual([
      'spiffe://example.org/a',
      'spiffe://example.org/b',
    ])
    expect(await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['x'], spiffeId: 'spiffe://example.org/b' }, {})).toHaveLength(1)
    expect(await manager.fetchJwtSvids(['unix:uid:9'], { audience: ['x'] }, {})).toEqual([])
    await manager.fetchJwtSvids(['unix:uid:1'], { audience: ['y'] }, {})
    expect(manager.stats().cachedJwtSvids).toBe(2)
    await expect(manager.fetchJwtSvids(['unix:uid:1'], { audience: [] }, {})).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    expect(signer.jwtCalls.length).toBe(4)
  })

  it('validates against the local bundle and the federated bundles the caller may see', async () => {
    const { manager, clock } = setup()
    await manager.applySync(
      full([entry('a', ['unix:uid:1'], { federatesWith: ['partner.test'] }), entry('b', ['unix:uid:2'])], { federatedBundles: [fedBundle] }),
    )
    const mint = (td: string, key: typeof jwtKey, kid: string, aud = ['svc']) =>
      mintJwtSvid({
        spiffeId: SpiffeId.fromString(`spiffe://${td}/w`),
        audience: aud,
        expiresAt: new Date(clock.now() + 60_000),
        issuedAt: new Date(clock.now()),
        signer: new KeyObjectSigner(key),
        kid,
        extraClaims: { tenant: 'acme', roles: ['refund'] },
      })
    const local = await mint('example.org', jwtKey, 'k1')
    const foreign = await mint('partner.test', fedKey, 'f1')
    const ok = await manager.validateJwtSvid(['unix:uid:2'], { token: local, audience: 'svc' }, {})
    expect(ok.spiffeId).toBe('spiffe://example.org/w')
    expect(ok.claims.aud).toBe('svc')
    expect(ok.claims.tenant).toBe('acme')
    const fed = await manager.validateJwtSvid(['unix:uid:1'], { token: foreign, audience: 'svc' }, {})
    expect(fed.spiffeId).toBe('spiffe://partner.test/w')
    // A federated trust domain's token: only the registered claims come back (as SPIRE filters them).
    expect(Object.keys(fed.claims).sort()).toEqual(['aud', 'exp', 'iat', 'sub'])

    const cases: [string, string[], { token: string; audience: string }, string][] = [
      ['foreign bundle not visible to this caller', ['unix:uid:2'], { token: foreign, audience: 'svc' }, 'ERR_JWT_SVID_UNTRUSTED'],
      ['wrong audience', ['unix:uid:2'], { token: local, audience: 'other' }, 'ERR_JWT_AUDIENCE_MISMATCH'],
      ['empty audience', ['unix:uid:2'], { token: local, audience: '' }, 'ERR_INVALID_ARGUMENT'],
      ['empty token', ['unix:uid:2'], { token: '', audience: 'svc' }, 'ERR_INVALID_ARGUMENT'],
      ['garbage', ['unix:uid:2'], { token: 'a.b.c', audience: 'svc' }, 'ERR_JWT_SVID_INVALID'],
    ]
    for (const [title, selectors, req, code] of cases) {
      await expect(manager.validateJwtSvid(selectors, req, {}), title).rejects.toMatchObject({ code })
    }
  })
})
