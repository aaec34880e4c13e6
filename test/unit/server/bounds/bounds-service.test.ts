import { describe, expect, it, vi } from 'vitest'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { BOUNDS_KV_NAMESPACE, BoundsService, type BoundsChange } from '../../../../src/server/bounds/bounds-service.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore, NewEntry } from '../../../../src/server/datastore/types.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { BoundsSet, parseBounds, verifyBoundsDocument } from '../../../../src/spiffe/bounds/index.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { caWithJwtSigner } from './helpers.js'
import { newEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('corp.example')
const API = 'spiffe://corp.example/svc/payments-api'
const WEB = 'https://payments.corp.example'
const PAYMENTS = {
  x509_svid_ttl: 900,
  jwt_svid_ttl: 300,
  jwt_audiences: [API, WEB],
  dns_suffixes: [],
  federates_with: ['partner.example'],
  max_instances: 2,
  require_node_selectors: ['tpm:pcr_policy:prod'],
}
const config = BoundsSet.parse(td, { '/agents': { x509_svid_ttl: 3600, max_instances: 100 } })
const PROD = [
  { type: 'tpm', value: 'pcr_policy:prod' },
  { type: 'tpm', value: 'ek_hash:ab' },
]

async function setup(ds: DataStore = createMemoryDataStore(), clock = new FakeClock()) {
  const svc = new BoundsService({ trustDomain: td, ds, config, clock, log: nullLogger })
  await svc.init()
  return { svc, ds, clock }
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<{ code: string; message: string; issues?: { path: string }[] }> {
  try {
    await (typeof p === 'function' ? p() : p)
  } catch (err) {
    const e = err as { code: string; message: string; details?: { issues?: { path: string }[] } }
    return { code: e.code, message: e.message, ...(e.details?.issues ? { issues: e.details.issues } : {}) }
  }
  return { code: 'OK', message: '' }
}

const entry = (o: Partial<NewEntry> = {}): NewEntry =>
  newEntry({ spiffeId: 'spiffe://corp.example/agents/payments/bot-1', parentId: 'spiffe://corp.example/warrant/agent/join_token/n1', ...o })

describe('BoundsService: set, delete, persistence', () => {
  it('sets bounds under a config prefix, persists them, and bumps the sequence', async () => {
    const { svc, ds, clock } = await setup()
    const changes: BoundsChange[] = []
    svc.onChange((c) => changes.push(c))
    const seq0 = svc.sequence
    const r = await svc.set('/agents/payments/', parseBounds(PAYMENTS))
    expect(r.prefix).toBe('/agents/payments')
    expect(svc.sequence).toBe(seq0 + 1)
    expect(changes.map((c) => [c.kind, c.prefix, c.sequence])).toEqual([['set', '/agents/payments', seq0 + 1]])
    expect(svc.effective('spiffe://corp.example/agents/payments/bot-1')?.prefixes).toEqual(['/agents', '/agents/payments'])
    expect(svc.list().map((d) => [d.prefix, d.source])).toEqual([
      ['/agents', 'config'],
      ['/agents/payments', 'api'],
    ])

    // A restart on the same datastore sees the same bounds and sequence.
    const again = new BoundsService({ trustDomain: td, ds, config, clock, log: nullLogger })
    await again.init()
    expect(again.sequence).toBe(svc.sequence)
    expect(again.current().toJSON()).toEqual(svc.current().toJSON())

    await again.delete('/agents/payments')
    expect(again.get('/agents/payments')).toBeUndefined()
    expect((await ds.kv.list(BOUNDS_KV_NAMESPACE)).map((r) => r.key).sort()).toEqual(['config_digest', 'sequence'])
  })

  it.each([
    ['a prefix that widens its ancestor', '/agents/x', { x509_svid_ttl: 7200 }, '/agents/x.x509_svid_ttl'],
    ['a prefix declared in the config', '/agents', { x509_svid_ttl: 60 }, '/agents'],
    ['a relative prefix', 'agents/x', {}, 'agents/x'],
    ['a prefix with dot segments', '/agents/../x', {}, '/agents/../x'],
  ])('refuses %s and stores nothing', async (_t, prefix, raw, path) => {
    const { svc, ds } = await setup()
    const before = await ds.kv.list(BOUNDS_KV_NAMESPACE)
    const seq = svc.sequence
    const r = await codeOf(svc.set(prefix, parseBounds(raw)))
    expect(r.code).toBe('ERR_BOUNDS_INVALID')
    expect(r.issues?.map((i) => i.path)).toEqual([path])
    expect(await ds.kv.list(BOUNDS_KV_NAMESPACE)).toEqual(before)
    expect(svc.sequence).toBe(seq)
  })

  it('refuses a parent change that would leave an existing child wider', async () => {
    const { svc } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS))
    const r = await codeOf(svc.set('/agents/payments', parseBounds({ ...PAYMENTS, ...{ jwt_svid_ttl: 300 } })))
    expect(r.code).toBe('OK')
    await svc.set('/agents/payments/refunds', parseBounds({ jwt_svid_ttl: 120 }))
    const bad = await codeOf(svc.set('/agents/payments', parseBounds({ ...PAYMENTS, jwt_svid_ttl: 60 })))
    expect(bad.code).toBe('ERR_BOUNDS_INVALID')
    expect(bad.message).toContain('/agents/payments/refunds.jwt_svid_ttl: widens ancestor "/agents/payments"')
    expect(svc.get('/agents/payments')?.bounds.jwtSvidTtlSeconds).toBe(300)
  })

  it('delete of unknown or config prefixes is refused', async () => {
    const { svc } = await setup()
    expect((await codeOf(svc.delete('/agents/none'))).code).toBe('ERR_NOT_FOUND')
    expect((await codeOf(svc.delete('/agents'))).code).toBe('ERR_BOUNDS_INVALID')
  })

  it('stored bounds that clash with a tighter config stop the start, naming each', async () => {
    const { svc, ds, clock } = await setup()
    await svc.set('/agents/payments', parseBounds({ x509_svid_ttl: 3000 }))
    const tighter = BoundsSet.parse(td, { '/agents': { x509_svid_ttl: 600 } })
    const next = new BoundsService({ trustDomain: td, ds, config: tighter, clock, log: nullLogger })
    const r = await codeOf(next.init())
    expect(r.code).toBe('ERR_CONFIG_INVALID')
    expect(r.issues?.map((i) => i.path)).toEqual(['bounds./agents/payments.x509_svid_ttl'])
  })

  it('a changed config publishes under a new sequence', async () => {
    const { svc, ds, clock } = await setup()
    const other = new BoundsService({ trustDomain: td, ds, config: BoundsSet.parse(td, { '/agents': { x509_svid_ttl: 1800 } }), clock, log: nullLogger })
    await other.init()
    expect(other.sequence).toBe(svc.sequence + 1)
  })
})

describe('BoundsService: registration hook', () => {
  it.each([
    ['within bounds', {}, 'OK', undefined],
    ['server-default TTLs (0) are clamped later, not refused', { x509SvidTtl: 0, jwtSvidTtl: 0 }, 'OK', undefined],
    ['X.509 TTL above the bound', { x509SvidTtl: 901 }, 'ERR_ENTRY_INVALID', 'x509_svid_ttl'],
    ['JWT TTL above the bound', { jwtSvidTtl: 600 }, 'ERR_ENTRY_INVALID', 'jwt_svid_ttl'],
    ['a DNS name where none are allowed', { dnsNames: ['bot.corp.example'] }, 'ERR_ENTRY_INVALID', 'dns_names'],
    ['federation outside the bounds', { federatesWith: ['other.example'] }, 'ERR_ENTRY_INVALID', 'federates_with'],
    ['an unbounded ID', { spiffeId: 'spiffe://corp.example/svc/web', x509SvidTtl: 86_400 }, 'OK', undefined],
  ])('%s', async (_t, o, code, path) => {
    const { svc } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS))
    const r = await codeOf(() => svc.checkEntry(entry(o)))
    expect(r.code).toBe(code)
    if (path) {
      expect(r.issues?.map((i) => i.path)).toEqual([path])
      expect(r.message).toContain('"/agents/payments"')
    }
  })

  it('composes with RegistrationService: a refused entry is not stored', async () => {
    const { svc, ds, clock } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS))
    const reg = new RegistrationService({ ds, clock, log: nullLogger, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 86_400 } })
    // What the lead's hook does: check before createEntries / updateEntries.
    const create = async (e: NewEntry) => {
      svc.checkEntry(e)
      return reg.createEntries([e])
    }
    expect((await codeOf(create(entry({ x509SvidTtl: 3600 })))).code).toBe('ERR_ENTRY_INVALID')
    expect(await ds.entries.count()).toBe(0)
    const [ok] = await create(entry({ x509SvidTtl: 600 }))
    expect(ok?.ok).toBe(true)
  })
})

describe('BoundsService: issuance hooks', () => {
  it('clamps TTLs, drops disallowed DNS names and requires node selectors', async () => {
    const { svc } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS))
    const id = 'spiffe://corp.example/agents/payments/bot-1'
    expect(await svc.admitX509({ spiffeId: id, ttlMs: 3_600_000, dnsNames: ['bot.corp.example'], nodeSelectors: PROD, instanceKey: 'a1|e1' })).toEqual({
      ttlMs: 900_000,
      dnsNames: [],
    })
    expect(svc.clampJwtTtlMs(id, 3_600_000)).toBe(300_000)
    expect(svc.clampX509TtlMs('spiffe://corp.example/svc/web', 3_600_000)).toBe(3_600_000)
    const r = await codeOf(() =>
      svc.admitX509({ spiffeId: id, ttlMs: 1000, dnsNames: [], nodeSelectors: [{ type: 'tpm', value: 'pcr_policy:dev' }], instanceKey: 'a2|e1' }),
    )
    expect(r).toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
    expect(r.message).toContain('require_node_selectors')
    expect(svc.allowsNode(id, PROD)).toBe(true)
    expect(svc.allowsNode(id, [])).toBe(false)
  })

  it('admitX509 uses a lookup handed to it only while the bounds it was made under are current', async () => {
    const { svc } = await setup()
    const id = SpiffeId.fromString('spiffe://corp.example/agents/payments/bot-1')
    const lookups = vi.spyOn(BoundsSet.prototype, 'boundsFor')
    try {
      const fresh = svc.lookup(id)
      expect(fresh.effective?.prefixes).toEqual(['/agents'])
      expect(await svc.admitX509({ spiffeId: id, ttlMs: 7_200_000, dnsNames: [], nodeSelectors: [], instanceKey: 'a1|e1', lookup: fresh })).toEqual({
        ttlMs: 3_600_000,
        dnsNames: [],
      })
      expect(lookups).toHaveBeenCalledTimes(1) // the lookup was reused
      // Bounds change between the lookup and the admission: the stale lookup (no /agents/payments) is not trusted.
      const stale = svc.lookup(id)
      await svc.set('/agents/payments', parseBounds(PAYMENTS))
      const r = await codeOf(() => svc.admitX509({ spiffeId: id, ttlMs: 1000, dnsNames: [], nodeSelectors: [], instanceKey: 'a2|e1', lookup: stale }))
      expect(r).toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
      expect(r.message).toContain('require_node_selectors')
      // A lookup for another ID is not used for this one.
      const other = svc.lookup(SpiffeId.fromString('spiffe://corp.example/svc/web'))
      expect(
        (await codeOf(() => svc.admitX509({ spiffeId: id, ttlMs: 1000, dnsNames: [], nodeSelectors: [], instanceKey: 'a3|e1', lookup: other }))).code,
      ).toBe('ERR_ID_NOT_AUTHORIZED')
    } finally {
      lookups.mockRestore()
    }
  })

  it('refuses JWT audiences outside the bounds', async () => {
    const { svc } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS))
    const id = 'spiffe://corp.example/agents/payments/bot-1'
    expect(await svc.admitJwt({ spiffeId: id, ttlMs: 3_600_000, audience: [WEB], nodeSelectors: PROD, instanceKey: 'a1|e1' })).toEqual({ ttlMs: 300_000 })
    const r = await codeOf(() =>
      svc.admitJwt({ spiffeId: id, ttlMs: 60_000, audience: [WEB, 'https://evil.example'], nodeSelectors: PROD, instanceKey: 'a1|e1' }),
    )
    expect(r.code).toBe('ERR_ID_NOT_AUTHORIZED')
    expect(r.message).toContain('jwt_audiences of "/agents/payments"')
    expect((await codeOf(() => svc.checkAudience(id, ['x']))).code).toBe('ERR_ID_NOT_AUTHORIZED')
    expect(svc.allowedFederation(id, ['partner.example', 'other.example'])).toEqual(['partner.example'])
  })

  it('allowedFederation answers from the current bounds: tightening, an ancestor and deleting take effect at once', async () => {
    const { svc } = await setup()
    const id = 'spiffe://corp.example/agents/payments/bot-1'
    const asked = ['partner.example', 'other.example', 'third.example']
    expect(svc.allowedFederation(id, asked)).toEqual(asked) // no federates_with bound anywhere
    await svc.set('/agents/payments', parseBounds({ federates_with: ['partner.example', 'other.example'] }))
    expect(svc.allowedFederation(id, asked)).toEqual(['partner.example', 'other.example'])
    await svc.set('/agents/payments/bot-1', parseBounds({ federates_with: ['other.example'] }))
    expect(svc.allowedFederation(id, asked)).toEqual(['other.example'])
    expect(svc.allowedFederation('spiffe://corp.example/agents/payments/bot-2', asked)).toEqual(['partner.example', 'other.example'])
    // Narrowing the parent below its child is refused until the child goes.
    expect((await codeOf(svc.set('/agents/payments', parseBounds({ federates_with: ['partner.example'] })))).code).toBe('ERR_BOUNDS_INVALID')
    await svc.delete('/agents/payments/bot-1')
    await svc.set('/agents/payments', parseBounds({ federates_with: ['partner.example'] }))
    expect(svc.allowedFederation(id, asked)).toEqual(['partner.example'])
    await svc.delete('/agents/payments')
    expect(svc.allowedFederation(id, asked)).toEqual(asked)
    expect(svc.allowedFederation(id, [])).toEqual([])
  })

  it('federationFor: the union of every entry federatesWith, each within the current bounds of that entry', async () => {
    const { svc } = await setup()
    const sample = (id: string) => id.replace('{instance}', 'i0')
    const entries = [
      { spiffeId: 'spiffe://corp.example/agents/payments/{instance}', federatesWith: ['partner.example', 'other.example'] },
      { spiffeId: 'spiffe://corp.example/svc/web', federatesWith: ['third.example'] },
      { spiffeId: 'spiffe://corp.example/svc/none', federatesWith: [] },
    ]
    expect([...svc.federationFor(entries, sample)].sort()).toEqual(['other.example', 'partner.example', 'third.example'])
    await svc.set('/agents/payments', parseBounds({ federates_with: ['partner.example'] }))
    expect([...svc.federationFor(entries, sample)].sort()).toEqual(['partner.example', 'third.example'])
    await svc.set('/svc', parseBounds({ federates_with: [] }))
    expect([...svc.federationFor(entries, sample)]).toEqual(['partner.example'])
    expect(svc.federationFor([])).toEqual(new Set())
  })

  it('holds the instance limit until SVIDs expire; renewals are the same instance', async () => {
    const { svc, clock } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS)) // max_instances 2
    const admit = (key: string, n = 1) =>
      svc.admitX509({ spiffeId: `spiffe://corp.example/agents/payments/bot-${n}`, ttlMs: 600_000, dnsNames: [], nodeSelectors: PROD, instanceKey: key })
    await admit('a1|e1', 1)
    await admit('a2|e2', 2)
    await admit('a1|e1', 1) // renewal
    expect(await svc.instances('/agents/payments')).toBe(2)
    expect(await svc.instances('/agents')).toBe(2)
    const r = await codeOf(() => admit('a3|e3', 3))
    expect(r.code).toBe('ERR_ID_NOT_AUTHORIZED')
    expect(r.message).toContain('max_instances of "/agents/payments"')
    clock.advance(600_001)
    expect(await svc.instances('/agents/payments')).toBe(0)
    await admit('a3|e3', 3)
    expect(await svc.instances('/agents/payments')).toBe(1)
  })

  it('keeps the instance counts in the datastore: a new service on the same store still holds the limit', async () => {
    const { svc, ds, clock } = await setup()
    await svc.set('/agents/payments', parseBounds(PAYMENTS)) // max_instances 2
    const admit = (s: BoundsService, key: string) =>
      s.admitX509({ spiffeId: 'spiffe://corp.example/agents/payments/bot-1', ttlMs: 600_000, dnsNames: [], nodeSelectors: PROD, instanceKey: key })
    await admit(svc, 'a1|e1')
    await admit(svc, 'a2|e2')
    const { svc: restarted } = await setup(ds, clock)
    expect(await restarted.instances('/agents/payments')).toBe(2)
    expect((await codeOf(admit(restarted, 'a3|e3'))).code).toBe('ERR_ID_NOT_AUTHORIZED')
    expect(await ds.liveInstances.list('/agents/payments', clock.now())).toHaveLength(2) // the refusal stored nothing
    await admit(restarted, 'a1|e1') // a renewal of a counted instance still passes
  })

  it('concurrent admissions share one transaction, are decided in call order, and a failed write admits none of them', async () => {
    const clock = new FakeClock()
    const real = createMemoryDataStore({ clock })
    let txs = 0
    let failing = false
    const ds: DataStore = {
      ...real,
      tx: (fn) =>
        real.tx(async (t) => {
          txs++
          const r = await fn(t)
          if (failing) throw new Error('disk full')
          return r
        }),
    }
    const { svc } = await setup(ds, clock)
    await svc.set('/agents/payments', parseBounds({ max_instances: 2 }))
    const admit = (key: string) =>
      svc.admitX509({ spiffeId: 'spiffe://corp.example/agents/payments/x', ttlMs: 60_000, dnsNames: [], nodeSelectors: PROD, instanceKey: key }).then(
        () => 'ok',
        (e: { code?: string; message: string }) => e.code ?? e.message,
      )
    txs = 0
    expect(await Promise.all([admit('k1'), admit('k2'), admit('k3'), admit('k1')])).toEqual(['ok', 'ok', 'ERR_ID_NOT_AUTHORIZED', 'ok'])
    expect(txs).toBeLessThanOrEqual(2) // the first round may start alone; the rest join the next
    expect((await real.liveInstances.list('/agents/payments', clock.now())).map((l) => l.instanceKey)).toEqual(['k1', 'k2'])

    // A round whose transaction fails admits none of its admissions and records nothing.
    failing = true
    const failed = await Promise.all([admit('k4'), admit('k1')])
    failing = false
    expect(failed).toEqual(['disk full', 'disk full'])
    expect((await real.liveInstances.list('/agents/payments', clock.now())).map((l) => l.instanceKey)).toEqual(['k1', 'k2'])
    expect(await admit('k4')).toBe('ERR_ID_NOT_AUTHORIZED') // still two live
  })

  it('a refusal under one prefix records nothing under the others', async () => {
    const { svc, ds, clock } = await setup()
    await svc.set('/agents/payments', parseBounds({ max_instances: 1 }))
    const admit = (key: string) =>
      svc.admitJwt({ spiffeId: 'spiffe://corp.example/agents/payments/x', ttlMs: 60_000, audience: [WEB], nodeSelectors: PROD, instanceKey: key })
    await admit('a1|e1')
    expect((await codeOf(admit('a2|e2'))).code).toBe('ERR_ID_NOT_AUTHORIZED')
    expect((await ds.liveInstances.list('/agents', clock.now())).map((i) => i.instanceKey)).toEqual(['a1|e1'])
  })
})

describe('BoundsService: signed document', () => {
  it('is signed with the CA JWT key, verifies against the bundle, and is re-signed on change', async () => {
    const ds = createMemoryDataStore()
    const clock = new FakeClock()
    const { ca, jwtSigner } = await caWithJwtSigner(td, ds, clock)
    const svc = new BoundsService({ trustDomain: td, ds, config, clock, log: nullLogger, jwtSigner })
    await svc.init()
    await svc.set('/agents/payments', parseBounds(PAYMENTS))
    const doc = await svc.signedDocument()
    expect(await svc.signedDocument()).toBe(doc)
    const v = await verifyBoundsDocument(doc, ca.bundle(), { trustDomain: td, now: new Date(clock.now()), maxAgeSeconds: 600 })
    expect(v.sequence).toBe(svc.sequence)
    expect(v.kid).toBe(ca.slots().jwt.find((s) => s.status === 'active')!.kid)
    expect(v.set.toJSON()).toEqual(svc.current().toJSON())

    await svc.set('/agents/payments/refunds', parseBounds({ max_instances: 1 }))
    const doc2 = await svc.signedDocument()
    expect(doc2).not.toBe(doc)
    expect((await verifyBoundsDocument(doc2, ca.bundle(), { minSequence: v.sequence + 1 })).set.has('/agents/payments/refunds')).toBe(true)
  })

  it('without a signer the document is not configured', async () => {
    const { svc } = await setup()
    expect((await codeOf(svc.signedDocument())).code).toBe('ERR_NOT_CONFIGURED')
  })
})
