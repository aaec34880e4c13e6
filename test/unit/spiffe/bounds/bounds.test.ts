import { describe, expect, it } from 'vitest'
import { BoundsSet, intersect, narrows, normalizePrefix, parseBounds, boundsFor, type Bounds } from '../../../../src/spiffe/bounds/index.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

const td = TrustDomain.fromString('corp.example')
const id = (p: string) => SpiffeId.fromPath(td, p)

const payments = {
  x509_svid_ttl: 900,
  jwt_svid_ttl: 300,
  jwt_audiences: ['spiffe://corp.example/svc/payments-api', 'https://payments.corp.example'],
  dns_suffixes: [],
  federates_with: ['partner.example'],
  max_instances: 50,
  require_node_selectors: ['tpm:pcr_policy:prod'],
}

function issuesOf(fn: () => unknown): { path: string; message: string }[] {
  try {
    fn()
  } catch (err) {
    expect((err as { code: string }).code).toBe('ERR_BOUNDS_INVALID')
    return (err as { details: { issues: { path: string; message: string }[] } }).details.issues
  }
  throw new Error('expected ERR_BOUNDS_INVALID')
}

describe('parseBounds', () => {
  it('parses the issue example and normalises lists', () => {
    const b = parseBounds({ ...payments, jwt_audiences: ['b', 'a', 'b'], dns_suffixes: ['Pay.Example'] })
    expect(b).toEqual({
      x509SvidTtlSeconds: 900,
      jwtSvidTtlSeconds: 300,
      jwtAudiences: ['a', 'b'],
      dnsSuffixes: ['pay.example'],
      federatesWith: ['partner.example'],
      maxInstances: 50,
      requireNodeSelectors: ['tpm:pcr_policy:prod'],
    })
  })

  it.each([
    ['unknown key', { ttl: 5 }, 'ttl'],
    ['zero TTL', { x509_svid_ttl: 0 }, 'x509_svid_ttl'],
    ['fractional TTL', { jwt_svid_ttl: 1.5 }, 'jwt_svid_ttl'],
    ['string TTL', { jwt_svid_ttl: '5m' }, 'jwt_svid_ttl'],
    ['negative instances', { max_instances: -1 }, 'max_instances'],
    ['audience not a list', { jwt_audiences: 'a' }, 'jwt_audiences'],
    ['empty audience', { jwt_audiences: [''] }, 'jwt_audiences.0'],
    ['wildcard DNS suffix', { dns_suffixes: ['*.example'] }, 'dns_suffixes.0'],
    ['bad trust domain', { federates_with: ['Partner Example'] }, 'federates_with.0'],
    ['trust domain as ID', { federates_with: ['spiffe://partner.example'] }, 'federates_with.0'],
    ['selector without type', { require_node_selectors: ['prod'] }, 'require_node_selectors.0'],
  ])('%s → issue at its path', (_t, raw, path) => {
    expect(issuesOf(() => parseBounds(raw, '/a')).map((i) => i.path)).toEqual([`/a.${path}`])
  })

  it('reports every issue at once', () => {
    expect(issuesOf(() => parseBounds({ x509_svid_ttl: -1, nope: 1, jwt_audiences: [1] })).length).toBe(3)
  })
})

describe('intersect', () => {
  it.each<[string, Bounds, Bounds, Bounds]>([
    ['min TTLs', { x509SvidTtlSeconds: 900 }, { x509SvidTtlSeconds: 600, jwtSvidTtlSeconds: 60 }, { x509SvidTtlSeconds: 600, jwtSvidTtlSeconds: 60 }],
    ['common audiences', { jwtAudiences: ['a', 'b'] }, { jwtAudiences: ['b', 'c'] }, { jwtAudiences: ['b'] }],
    ['undefined inherits', { federatesWith: ['p.example'] }, {}, { federatesWith: ['p.example'] }],
    ['deeper DNS suffix wins', { dnsSuffixes: ['example'] }, { dnsSuffixes: ['pay.example', 'other.test'] }, { dnsSuffixes: ['pay.example'] }],
    ['no DNS stays none', { dnsSuffixes: [] }, { dnsSuffixes: ['pay.example'] }, { dnsSuffixes: [] }],
    ['required selectors add up', { requireNodeSelectors: ['a:1'] }, { requireNodeSelectors: ['b:2'] }, { requireNodeSelectors: ['a:1', 'b:2'] }],
    ['min instances', { maxInstances: 50 }, { maxInstances: 5 }, { maxInstances: 5 }],
  ])('%s', (_t, a, b, want) => {
    expect(intersect(a, b)).toEqual(want)
    expect(intersect(b, a)).toEqual(want)
  })
})

describe('narrows', () => {
  const parent = parseBounds(payments)
  it.each<[string, Bounds, string[]]>([
    ['tighter TTL', { x509SvidTtlSeconds: 600 }, []],
    ['absent bounds inherit', {}, []],
    ['longer X.509 TTL', { x509SvidTtlSeconds: 3600 }, ['x509_svid_ttl']],
    ['longer JWT TTL', { jwtSvidTtlSeconds: 301 }, ['jwt_svid_ttl']],
    ['new audience', { jwtAudiences: ['https://evil.example'] }, ['jwt_audiences']],
    ['subset of audiences', { jwtAudiences: ['https://payments.corp.example'] }, []],
    ['DNS where none allowed', { dnsSuffixes: ['pay.example'] }, ['dns_suffixes']],
    ['other federation', { federatesWith: ['other.example'] }, ['federates_with']],
    ['more instances', { maxInstances: 51 }, ['max_instances']],
    ['drops a required selector', { requireNodeSelectors: ['tpm:other:x'] }, ['require_node_selectors']],
    ['adds a required selector', { requireNodeSelectors: ['tpm:pcr_policy:prod', 'k8s:ns:pay'] }, []],
  ])('%s', (_t, child, bounds) => {
    expect(narrows(child, parent).map((v) => v.bound)).toEqual(bounds)
  })
  it("DNS suffixes must lie under the parent's", () => {
    expect(narrows({ dnsSuffixes: ['a.pay.example'] }, { dnsSuffixes: ['pay.example'] })).toEqual([])
    expect(narrows({ dnsSuffixes: ['xpay.example'] }, { dnsSuffixes: ['pay.example'] }).map((v) => v.bound)).toEqual(['dns_suffixes'])
  })
})

describe('BoundsSet', () => {
  const set = BoundsSet.parse(td, {
    '/agents': { x509_svid_ttl: 3600, jwt_svid_ttl: 600, max_instances: 500 },
    '/agents/payments': payments,
    '/agents/payments/refunds': { jwt_audiences: ['https://payments.corp.example'], max_instances: 5 },
  })

  it('effective bounds intersect every matching prefix', () => {
    const eff = set.boundsFor(id('/agents/payments/refunds/bot-7'))!
    expect(eff.prefixes).toEqual(['/agents', '/agents/payments', '/agents/payments/refunds'])
    expect(eff.bounds).toMatchObject({
      x509SvidTtlSeconds: 900,
      jwtSvidTtlSeconds: 300,
      jwtAudiences: ['https://payments.corp.example'],
      maxInstances: 5,
      dnsSuffixes: [],
    })
    expect(boundsFor(id('/agents/payments/refunds/bot-7').toString(), set)).toBe(eff)
  })

  it.each([
    ['/agents/paymentsx', ['/agents']],
    ['/agents', ['/agents']],
    ['/other', undefined],
  ])('prefixes match on segment boundaries: %s', (path, want) => {
    expect(set.boundsFor(id(path))?.prefixes).toEqual(want)
  })

  it('IDs of another trust domain have no bounds', () => {
    expect(set.boundsFor(SpiffeId.fromString('spiffe://partner.example/agents/payments'))).toBeUndefined()
  })

  it('root prefix covers every ID', () => {
    const s = BoundsSet.parse(td, { '/': { jwt_svid_ttl: 60 } })
    expect(s.boundsFor(id('/x/y'))?.prefixes).toEqual(['/'])
    expect(normalizePrefix(td, '/a/')).toEqual({ prefix: '/a' })
  })

  it.each([
    ['child widens a parent', { '/a': { jwt_svid_ttl: 60 }, '/a/b': { jwt_svid_ttl: 120 } }, ['/a/b.jwt_svid_ttl']],
    ['grandchild widens the grandparent', { '/a': { max_instances: 5 }, '/a/b/c': { max_instances: 6 } }, ['/a/b/c.max_instances']],
    ['overlapping spellings', { '/a': {}, '/a/': {} }, ['/a/']],
    ['dot segments (cyclic path)', { '/a/../a': {} }, ['/a/../a']],
    ['relative prefix', { agents: {} }, ['agents']],
    ['unknown key', { '/a': { ttl: 1 } }, ['/a.ttl']],
    ['local trust domain federation', { '/a': { federates_with: ['corp.example'] } }, ['/a.federates_with']],
  ])('refuses %s', (_t, raw, paths) => {
    expect(issuesOf(() => BoundsSet.parse(td, raw)).map((i) => i.path)).toEqual(paths)
  })

  it('with() checks ancestors and descendants and leaves the set unchanged on error', () => {
    const looserParent = issuesOf(() => set.with('/agents', { x509SvidTtlSeconds: 600 }))
    expect(looserParent.map((i) => i.path)).toEqual(['/agents/payments.x509_svid_ttl'])
    expect(looserParent[0]!.message).toContain('widens ancestor "/agents"')
    expect(issuesOf(() => set.with('/agents/payments/x', { jwtSvidTtlSeconds: 301 }))[0]!.path).toBe('/agents/payments/x.jwt_svid_ttl')
    expect(set.get('/agents')?.x509SvidTtlSeconds).toBe(3600)
    const next = set.with('/agents/payments/x', { jwtSvidTtlSeconds: 30 })
    expect(next.boundsFor(id('/agents/payments/x/1'))?.bounds.jwtSvidTtlSeconds).toBe(30)
    expect(set.has('/agents/payments/x')).toBe(false)
    expect(next.without('/agents/payments/x').prefixes()).toEqual(set.prefixes())
  })

  it('round-trips through the list form', () => {
    const again = BoundsSet.parse(td, set.toJSON())
    expect(again.toJSON()).toEqual(set.toJSON())
    expect(set.descendantsOf('/agents')).toEqual(['/agents/payments', '/agents/payments/refunds'])
    expect(set.ancestorsOf('/agents/payments/refunds')).toEqual(['/agents', '/agents/payments'])
  })
})
