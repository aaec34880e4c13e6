import { describe, expect, it } from 'vitest'
import {
  BOUND_NAMES,
  boundsEqual,
  boundsError,
  boundsToJson,
  collectBounds,
  delegateeCovered,
  delegateePatternProblem,
  dnsNameUnder,
  intersect,
  isUnbounded,
  narrows,
  parseBounds,
  resourceProblem,
  type Bounds,
  type BoundsIssue,
} from '../../../../src/spiffe/bounds/index.js'

// Pins the exact issue (path and message) of each refusal of the bounds
// parser, the boundaries of every numeric and length limit, and the exact
// output of intersect / narrows, so that message and boundary mutants die
// (test/mutation-survivors.md). Test titles stay plain: Stryker's vitest
// runner selects tests by name.

const MAX_TTL = 10 * 366 * 86_400
const TTL_MSG = `must be a whole number of seconds between 1 and ${MAX_TTL}`
const ITEM_MSG = 'must be a non-empty string of at most 2048 characters'

function issues(raw: unknown, path = '/a'): BoundsIssue[] {
  const out: BoundsIssue[] = []
  collectBounds(raw, path, out)
  return out
}

describe('parseBounds error', () => {
  it('throws ERR_BOUNDS_INVALID with every issue in the message and the details', () => {
    let err: unknown
    try {
      parseBounds({ x509_svid_ttl: 0, max_instances: -1 }, '/p')
    } catch (e) {
      err = e
    }
    expect(err).toMatchObject({
      code: 'ERR_BOUNDS_INVALID',
      message: `invalid bounds: /p.x509_svid_ttl: ${TTL_MSG}; /p.max_instances: must be a non-negative integer`,
      details: {
        issues: [
          { path: '/p.x509_svid_ttl', message: TTL_MSG },
          { path: '/p.max_instances', message: 'must be a non-negative integer' },
        ],
      },
    })
  })

  it('boundsError names what is invalid', () => {
    expect(boundsError([{ path: 'x', message: 'y' }], 'ceiling').message).toBe('invalid ceiling: x: y')
    expect(boundsError([{ path: 'x', message: 'y' }]).message).toBe('invalid bounds: x: y')
  })

  it('returns the parsed bounds when there is no issue', () => {
    expect(parseBounds({ max_instances: 0 })).toEqual({ maxInstances: 0 })
    expect(parseBounds({})).toEqual({})
  })
})

describe('collectBounds issues', () => {
  it('a non object is refused at the root or at its path', () => {
    expect(issues(null, '')).toEqual([{ path: '(root)', message: 'must be an object' }])
    expect(issues([], '/x')).toEqual([{ path: '/x', message: 'must be an object' }])
    expect(issues('s', '/x')).toEqual([{ path: '/x', message: 'must be an object' }])
    expect(issues(7, '')).toEqual([{ path: '(root)', message: 'must be an object' }])
  })

  it('keys without a path have no leading dot', () => {
    expect(issues({ max_instances: -1 }, '')).toEqual([{ path: 'max_instances', message: 'must be a non-negative integer' }])
  })

  it('an unknown key lists the known ones', () => {
    expect(issues({ nope: 1 })).toEqual([{ path: '/a.nope', message: `unknown key (known: ${BOUND_NAMES.join(', ')})` }])
    expect(BOUND_NAMES.join(', ')).toBe(
      'x509_svid_ttl, jwt_svid_ttl, jwt_audiences, dns_suffixes, federates_with, max_instances, require_node_selectors, scopes, resources, max_token_ttl, max_renewals, max_delegation_depth, may_delegate_to, allow_bearer',
    )
  })

  it('an undefined value is skipped', () => {
    expect(issues({ x509_svid_ttl: undefined, nope: undefined })).toEqual([])
    expect(parseBounds({ x509_svid_ttl: undefined })).toEqual({})
  })

  it('TTL bounds are 1 and ten years for both SVID kinds and the token', () => {
    for (const key of ['x509_svid_ttl', 'jwt_svid_ttl', 'max_token_ttl']) {
      for (const bad of [0, MAX_TTL + 1, 1.5, '5', -1, Number.NaN, 2 ** 53]) {
        expect(issues({ [key]: bad })).toEqual([{ path: `/a.${key}`, message: TTL_MSG }])
      }
      expect(issues({ [key]: 1 })).toEqual([])
      expect(issues({ [key]: MAX_TTL })).toEqual([])
    }
    expect(parseBounds({ x509_svid_ttl: 1, jwt_svid_ttl: MAX_TTL, max_token_ttl: 2 })).toEqual({
      x509SvidTtlSeconds: 1,
      jwtSvidTtlSeconds: MAX_TTL,
      maxTokenTtlSeconds: 2,
    })
  })

  it('counts are non negative safe integers', () => {
    for (const key of ['max_instances', 'max_renewals']) {
      for (const bad of [-1, 1.5, '1', 2 ** 53, null]) {
        expect(issues({ [key]: bad })).toEqual([{ path: `/a.${key}`, message: 'must be a non-negative integer' }])
      }
      expect(issues({ [key]: 0 })).toEqual([])
    }
    expect(parseBounds({ max_instances: 0, max_renewals: 0 })).toEqual({ maxInstances: 0, maxRenewals: 0 })
    expect(parseBounds({ max_renewals: 7 })).toEqual({ maxRenewals: 7 })
  })

  it('delegation depth lies between 0 and 32', () => {
    for (const bad of [-1, 33, 1.5, '3']) {
      expect(issues({ max_delegation_depth: bad })).toEqual([{ path: '/a.max_delegation_depth', message: 'must be an integer between 0 and 32' }])
    }
    expect(parseBounds({ max_delegation_depth: 0 })).toEqual({ maxDelegationDepth: 0 })
    expect(parseBounds({ max_delegation_depth: 32 })).toEqual({ maxDelegationDepth: 32 })
  })

  it('allow_bearer is a boolean', () => {
    expect(issues({ allow_bearer: 1 })).toEqual([{ path: '/a.allow_bearer', message: 'must be true or false' }])
    expect(parseBounds({ allow_bearer: true })).toEqual({ allowBearer: true })
    expect(parseBounds({ allow_bearer: false })).toEqual({ allowBearer: false })
  })

  it('every list field is refused when not a list', () => {
    for (const key of ['jwt_audiences', 'dns_suffixes', 'federates_with', 'require_node_selectors', 'scopes', 'resources', 'may_delegate_to']) {
      expect(issues({ [key]: 'x' })).toEqual([{ path: `/a.${key}`, message: 'must be a list of strings' }])
      expect(parseBounds({ [key]: [] })).toEqual({
        [key === 'jwt_audiences'
          ? 'jwtAudiences'
          : key === 'dns_suffixes'
            ? 'dnsSuffixes'
            : key === 'federates_with'
              ? 'federatesWith'
              : key === 'require_node_selectors'
                ? 'requireNodeSelectors'
                : key === 'may_delegate_to'
                  ? 'mayDelegateTo'
                  : key]: [],
      })
    }
  })

  it('a list holds at most 256 items', () => {
    const ok = Array.from({ length: 256 }, (_, i) => `aud-${i}`)
    expect(parseBounds({ jwt_audiences: ok }).jwtAudiences).toHaveLength(256)
    expect(issues({ jwt_audiences: [...ok, 'one-more'] })).toEqual([{ path: '/a.jwt_audiences', message: 'must have at most 256 items' }])
  })

  it('an item is a non empty string of at most 2048 characters', () => {
    expect(parseBounds({ jwt_audiences: ['x'.repeat(2048)] }).jwtAudiences).toEqual(['x'.repeat(2048)])
    for (const bad of ['', 'x'.repeat(2049), 5, null]) {
      expect(issues({ jwt_audiences: ['ok', bad] })).toEqual([{ path: '/a.jwt_audiences.1', message: ITEM_MSG }])
    }
  })

  it('an item with a problem is left out and the rest is deduplicated and sorted', () => {
    const out: BoundsIssue[] = []
    expect(collectBounds({ scopes: ['b', 'a b', 'a', 'b'] }, '', out)).toEqual({ scopes: ['a', 'b'] })
    expect(out).toEqual([{ path: 'scopes.1', message: '"a b" is not an OAuth scope token (RFC 6749 §3.3)' }])
  })

  it('a list with an issue still keeps its valid items in collectBounds', () => {
    const out: BoundsIssue[] = []
    expect(collectBounds({ federates_with: ['b.example', 'Bad Name'] }, '', out)).toEqual({ federatesWith: ['b.example'] })
    expect(out).toEqual([{ path: 'federates_with.1', message: '"Bad Name" is not a trust domain name' }])
  })
})

describe('item problems', () => {
  const long = 'y'.repeat(100)
  it('DNS suffixes are DNS names without wildcards, lowered', () => {
    expect(parseBounds({ dns_suffixes: ['Pay.Example', 'a-b.c0'] }).dnsSuffixes).toEqual(['a-b.c0', 'pay.example'])
    const msg = (s: string) => `"${s.slice(0, 80)}" is not a DNS name (wildcards are not allowed)`
    for (const bad of ['*.example', '-a.example', 'a-.example', 'a..example', 'a_b.example', `${'a'.repeat(64)}.example`, `${long} x`]) {
      expect(issues({ dns_suffixes: [bad] })).toEqual([{ path: '/a.dns_suffixes.0', message: msg(bad) }])
    }
    expect(issues({ dns_suffixes: [`${'a'.repeat(63)}.example`] })).toEqual([])
    const label = 'a'.repeat(63)
    const n253 = `${label}.${label}.${label}.${'a'.repeat(61)}`
    expect(n253).toHaveLength(253)
    expect(issues({ dns_suffixes: [n253] })).toEqual([])
    expect(issues({ dns_suffixes: [`${n253}a`] })).toEqual([{ path: '/a.dns_suffixes.0', message: msg(`${n253}a`) }])
    expect(issues({ dns_suffixes: ['a'] })).toEqual([])
  })

  it('selectors are type colon value', () => {
    const msg = (s: string) => `"${s.slice(0, 80)}" is not a selector (type:value)`
    for (const bad of [':a', 'a:', 'a', `${long}`]) {
      expect(issues({ require_node_selectors: [bad] })).toEqual([{ path: '/a.require_node_selectors.0', message: msg(bad) }])
    }
    expect(parseBounds({ require_node_selectors: ['a:b', 'a::', 'x:y:z'] }).requireNodeSelectors).toEqual(['a::', 'a:b', 'x:y:z'])
  })

  it('scopes are RFC 6749 scope tokens', () => {
    const msg = (s: string) => `"${s.slice(0, 80)}" is not an OAuth scope token (RFC 6749 §3.3)`
    expect(parseBounds({ scopes: ['!', '#', '[', ']', '~', 'a:b/c'] }).scopes).toEqual(['!', '#', '[', ']', 'a:b/c', '~'])
    for (const bad of ['"', '\\', ' ', '\x7f', 'é', `a ${long}`, 'a\nb']) {
      expect(issues({ scopes: [bad] })).toEqual([{ path: '/a.scopes.0', message: msg(bad) }])
    }
  })

  it('resources are absolute URIs without fragment or white space', () => {
    expect(resourceProblem('https://a.example/api')).toBeUndefined()
    expect(resourceProblem('urn:example:x')).toBeUndefined()
    expect(resourceProblem('/api')).toBe('"/api" is not an absolute URI')
    expect(resourceProblem(`/${long}`)).toBe(`"/${long.slice(0, 79)}" is not an absolute URI`)
    expect(resourceProblem('https://a.example/#x')).toBe('"https://a.example/#x" must not have a fragment')
    expect(resourceProblem('https://a.example/#')).toBe('"https://a.example/#" must not have a fragment')
    expect(resourceProblem(`https://a.example/${long}#x`)).toBe(`"${`https://a.example/${long}`.slice(0, 80)}" must not have a fragment`)
    expect(resourceProblem('https://a.example/a b')).toBe('"https://a.example/a b" must not contain white space')
    expect(resourceProblem('urn:x\ty')).toBe('"urn:x\ty" must not contain white space')
    expect(resourceProblem(`https://a.example/${long} b`)).toBe(`"${`https://a.example/${long}`.slice(0, 80)}" must not contain white space`)
    expect(issues({ resources: ['/api'] })).toEqual([{ path: '/a.resources.0', message: '"/api" is not an absolute URI' }])
  })

  it('delegatee patterns are SPIFFE IDs or prefixes ending in a slash', () => {
    const bad = (s: string) => `"${s.slice(0, 80)}" is not a SPIFFE ID or an ID prefix ending in "/"`
    for (const ok of ['spiffe://corp.example/', 'spiffe://corp.example/a', 'spiffe://corp.example/a/', 'spiffe://corp.example/a/b']) {
      expect(delegateePatternProblem(ok)).toBeUndefined()
    }
    for (const s of [
      'spiffe://corp.example',
      'spiffe://Corp.example/',
      'spiffe://corp example/',
      'https://corp.example/',
      'spiffe://corp.example/a//',
      'spiffe://corp.example/a b',
      'spiffe:/',
      'corp.example/',
      `spiffe://corp.example/${long}//`,
    ]) {
      expect(delegateePatternProblem(s)).toBe(bad(s))
    }
    expect(issues({ may_delegate_to: ['x'] })).toEqual([{ path: '/a.may_delegate_to.0', message: bad('x') }])
  })

  it('trust domains are names, not IDs', () => {
    const msg = (s: string) => `"${s.slice(0, 80)}" is not a trust domain name`
    for (const bad of ['spiffe://partner.example', 'Partner.example', `${long}@`]) {
      expect(issues({ federates_with: [bad] })).toEqual([{ path: '/a.federates_with.0', message: msg(bad) }])
    }
    expect(parseBounds({ federates_with: ['b.example', 'a.example'] }).federatesWith).toEqual(['a.example', 'b.example'])
  })

  it('audiences accept any non empty string', () => {
    expect(parseBounds({ jwt_audiences: ['a b', '"'] }).jwtAudiences).toEqual(['"', 'a b'])
  })
})

describe('boundsToJson and isUnbounded', () => {
  const full: Bounds = {
    x509SvidTtlSeconds: 1,
    jwtSvidTtlSeconds: 2,
    jwtAudiences: ['a'],
    dnsSuffixes: ['d.example'],
    federatesWith: ['f.example'],
    maxInstances: 3,
    requireNodeSelectors: ['s:1'],
    scopes: ['sc'],
    resources: ['urn:r'],
    maxTokenTtlSeconds: 4,
    maxRenewals: 5,
    maxDelegationDepth: 6,
    mayDelegateTo: ['spiffe://corp.example/'],
    allowBearer: false,
  }
  it('maps every field and leaves out absent ones', () => {
    expect(boundsToJson(full)).toStrictEqual({
      x509_svid_ttl: 1,
      jwt_svid_ttl: 2,
      jwt_audiences: ['a'],
      dns_suffixes: ['d.example'],
      federates_with: ['f.example'],
      max_instances: 3,
      require_node_selectors: ['s:1'],
      scopes: ['sc'],
      resources: ['urn:r'],
      max_token_ttl: 4,
      max_renewals: 5,
      max_delegation_depth: 6,
      may_delegate_to: ['spiffe://corp.example/'],
      allow_bearer: false,
    })
    expect(boundsToJson({})).toStrictEqual({})
    expect(parseBounds(boundsToJson(full))).toEqual(full)
  })

  it('each field on its own makes the bounds bounded', () => {
    expect(isUnbounded({})).toBe(true)
    for (const [k, v] of Object.entries(full)) {
      expect(isUnbounded({ [k]: v })).toBe(false)
      expect(Object.keys(boundsToJson({ [k]: v }))).toHaveLength(1)
    }
  })

  it('boundsEqual compares the wire form', () => {
    expect(boundsEqual(full, { ...full })).toBe(true)
    expect(boundsEqual(full, { ...full, maxRenewals: 9 })).toBe(false)
    expect(boundsEqual({}, {})).toBe(true)
  })
})

describe('dnsNameUnder and delegateeCovered', () => {
  it('dns names match on label boundaries ignoring the case of the name', () => {
    expect(dnsNameUnder('A.Pay.Example', 'pay.example')).toBe(true)
    expect(dnsNameUnder('pay.example', 'pay.example')).toBe(true)
    expect(dnsNameUnder('xpay.example', 'pay.example')).toBe(false)
    expect(dnsNameUnder('example', 'pay.example')).toBe(false)
  })

  it('patterns cover equal IDs and IDs under a slash prefix', () => {
    expect(delegateeCovered('spiffe://t/a', 'spiffe://t/a')).toBe(true)
    expect(delegateeCovered('spiffe://t/a/', 'spiffe://t/a/b')).toBe(true)
    expect(delegateeCovered('spiffe://t/a', 'spiffe://t/a/b')).toBe(false)
    expect(delegateeCovered('spiffe://t/a/', 'spiffe://t/ab')).toBe(false)
  })
})

describe('intersect each field', () => {
  const both = (a: Bounds, b: Bounds, want: Bounds) => {
    expect(intersect(a, b)).toStrictEqual(want)
    expect(intersect(b, a)).toStrictEqual(want)
  }
  it('numbers take the smaller or the one defined', () => {
    both({ x509SvidTtlSeconds: 5 }, { x509SvidTtlSeconds: 7 }, { x509SvidTtlSeconds: 5 })
    both({ jwtSvidTtlSeconds: 5 }, {}, { jwtSvidTtlSeconds: 5 })
    both({ jwtSvidTtlSeconds: 9 }, { jwtSvidTtlSeconds: 4 }, { jwtSvidTtlSeconds: 4 })
    both({ maxInstances: 0 }, { maxInstances: 3 }, { maxInstances: 0 })
    both({ maxInstances: 2 }, {}, { maxInstances: 2 })
    both({ maxTokenTtlSeconds: 60 }, { maxTokenTtlSeconds: 30 }, { maxTokenTtlSeconds: 30 })
    both({ maxTokenTtlSeconds: 60 }, {}, { maxTokenTtlSeconds: 60 })
    both({ maxRenewals: 0 }, { maxRenewals: 3 }, { maxRenewals: 0 })
    both({ maxRenewals: 2 }, {}, { maxRenewals: 2 })
    both({ maxDelegationDepth: 0 }, { maxDelegationDepth: 3 }, { maxDelegationDepth: 0 })
    both({ maxDelegationDepth: 2 }, {}, { maxDelegationDepth: 2 })
    both({ x509SvidTtlSeconds: 3 }, {}, { x509SvidTtlSeconds: 3 })
    expect(intersect({}, {})).toStrictEqual({})
  })

  it('lists keep common items, in the first list order', () => {
    both({ jwtAudiences: ['a'] }, {}, { jwtAudiences: ['a'] })
    both({ federatesWith: ['a', 'b'] }, { federatesWith: ['b'] }, { federatesWith: ['b'] })
    both({ federatesWith: ['a'] }, {}, { federatesWith: ['a'] })
    both({ scopes: ['a', 'b'] }, { scopes: ['b', 'c'] }, { scopes: ['b'] })
    both({ scopes: ['a'] }, {}, { scopes: ['a'] })
    both({ resources: ['urn:a', 'urn:b'] }, { resources: ['urn:b'] }, { resources: ['urn:b'] })
    both({ resources: ['urn:a'] }, {}, { resources: ['urn:a'] })
    both({ scopes: [] }, { scopes: ['a'] }, { scopes: [] })
  })

  it('DNS suffixes keep the deeper of each pair, sorted', () => {
    both({ dnsSuffixes: ['b.example', 'a.example'] }, { dnsSuffixes: ['x.b.example', 'a.example', 'c.test'] }, { dnsSuffixes: ['a.example', 'x.b.example'] })
    both({ dnsSuffixes: ['a.example'] }, {}, { dnsSuffixes: ['a.example'] })
  })

  it('delegatee patterns keep the narrower of each pair, sorted', () => {
    both(
      { mayDelegateTo: ['spiffe://t/b/', 'spiffe://t/a/'] },
      { mayDelegateTo: ['spiffe://t/a/x', 'spiffe://t/b/', 'spiffe://t/c/'] },
      { mayDelegateTo: ['spiffe://t/a/x', 'spiffe://t/b/'] },
    )
    both({ mayDelegateTo: ['spiffe://t/a/'] }, {}, { mayDelegateTo: ['spiffe://t/a/'] })
    both({ mayDelegateTo: ['spiffe://t/a'] }, { mayDelegateTo: ['spiffe://t/a/'] }, { mayDelegateTo: [] })
  })

  it('required selectors are the sorted union', () => {
    both({ requireNodeSelectors: ['b:1', 'a:1'] }, {}, { requireNodeSelectors: ['a:1', 'b:1'] })
    both({ requireNodeSelectors: ['b:1'] }, { requireNodeSelectors: ['a:1', 'b:1'] }, { requireNodeSelectors: ['a:1', 'b:1'] })
  })

  it('bearer is allowed only when neither side forbids it', () => {
    both({ allowBearer: true }, { allowBearer: true }, { allowBearer: true })
    both({ allowBearer: true }, { allowBearer: false }, { allowBearer: false })
    both({ allowBearer: false }, {}, { allowBearer: false })
    both({ allowBearer: true }, {}, { allowBearer: true })
  })
})

describe('narrows messages', () => {
  it('numbers name both values with their unit', () => {
    expect(narrows({ x509SvidTtlSeconds: 11 }, { x509SvidTtlSeconds: 10 })).toEqual([{ bound: 'x509_svid_ttl', message: '11s is wider than 10s' }])
    expect(narrows({ jwtSvidTtlSeconds: 11 }, { jwtSvidTtlSeconds: 10 })).toEqual([{ bound: 'jwt_svid_ttl', message: '11s is wider than 10s' }])
    expect(narrows({ maxInstances: 4 }, { maxInstances: 3 })).toEqual([{ bound: 'max_instances', message: '4 is wider than 3' }])
    expect(narrows({ maxTokenTtlSeconds: 61 }, { maxTokenTtlSeconds: 60 })).toEqual([{ bound: 'max_token_ttl', message: '61s is wider than 60s' }])
    expect(narrows({ maxRenewals: 1 }, { maxRenewals: 0 })).toEqual([{ bound: 'max_renewals', message: '1 is wider than 0' }])
    expect(narrows({ maxDelegationDepth: 1 }, { maxDelegationDepth: 0 })).toEqual([{ bound: 'max_delegation_depth', message: '1 is wider than 0' }])
  })

  it('equal numbers and one side absent are no violation', () => {
    const all: Bounds = { x509SvidTtlSeconds: 5, jwtSvidTtlSeconds: 5, maxInstances: 5, maxTokenTtlSeconds: 5, maxRenewals: 5, maxDelegationDepth: 5 }
    expect(narrows(all, all)).toEqual([])
    expect(narrows(all, {})).toEqual([])
    expect(narrows({}, all)).toEqual([])
  })

  it('lists name the extra items and the parent list', () => {
    expect(narrows({ jwtAudiences: ['a', 'x', 'y'] }, { jwtAudiences: ['a', 'b'] })).toEqual([
      { bound: 'jwt_audiences', message: '"x", "y" not allowed by "a", "b"' },
    ])
    expect(narrows({ federatesWith: ['x'] }, { federatesWith: [] })).toEqual([{ bound: 'federates_with', message: '"x" not allowed by none' }])
    expect(narrows({ scopes: ['x'] }, { scopes: ['a'] })).toEqual([{ bound: 'scopes', message: '"x" not allowed by "a"' }])
    expect(narrows({ resources: ['urn:x'] }, { resources: [] })).toEqual([{ bound: 'resources', message: '"urn:x" not allowed by none' }])
    expect(narrows({ scopes: ['a'] }, {})).toEqual([])
    expect(narrows({}, { scopes: [] })).toEqual([])
  })

  it('DNS suffixes name those not under the parent', () => {
    expect(narrows({ dnsSuffixes: ['a.ok.example', 'bad.example'] }, { dnsSuffixes: ['ok.example'] })).toEqual([
      { bound: 'dns_suffixes', message: '"bad.example" not under "ok.example"' },
    ])
    expect(narrows({ dnsSuffixes: ['a.example'] }, { dnsSuffixes: [] })).toEqual([{ bound: 'dns_suffixes', message: '"a.example" not under none' }])
    expect(narrows({ dnsSuffixes: ['a.example'] }, {})).toEqual([])
    expect(narrows({}, { dnsSuffixes: [] })).toEqual([])
  })

  it('required selectors name the dropped ones', () => {
    expect(narrows({ requireNodeSelectors: ['b:1'] }, { requireNodeSelectors: ['a:1', 'b:1', 'c:1'] })).toEqual([
      { bound: 'require_node_selectors', message: 'drops required "a:1", "c:1"' },
    ])
    expect(narrows({ requireNodeSelectors: [] }, {})).toEqual([])
    expect(narrows({}, { requireNodeSelectors: ['a:1'] })).toEqual([])
  })

  it('delegatee patterns name those not covered', () => {
    expect(narrows({ mayDelegateTo: ['spiffe://t/a/b', 'spiffe://t/c'] }, { mayDelegateTo: ['spiffe://t/a/'] })).toEqual([
      { bound: 'may_delegate_to', message: '"spiffe://t/c" not covered by "spiffe://t/a/"' },
    ])
    expect(narrows({ mayDelegateTo: ['spiffe://t/a'] }, { mayDelegateTo: [] })).toEqual([
      { bound: 'may_delegate_to', message: '"spiffe://t/a" not covered by none' },
    ])
    expect(narrows({ mayDelegateTo: ['spiffe://t/a'] }, {})).toEqual([])
    expect(narrows({}, { mayDelegateTo: [] })).toEqual([])
  })

  it('bearer widens only from false to true', () => {
    expect(narrows({ allowBearer: true }, { allowBearer: false })).toEqual([{ bound: 'allow_bearer', message: 'allows bearer tokens the parent forbids' }])
    expect(narrows({ allowBearer: false }, { allowBearer: false })).toEqual([])
    expect(narrows({ allowBearer: true }, { allowBearer: true })).toEqual([])
    expect(narrows({ allowBearer: false }, { allowBearer: true })).toEqual([])
    expect(narrows({}, { allowBearer: false })).toEqual([])
  })

  it('reports every violation in field order', () => {
    const parent: Bounds = {
      x509SvidTtlSeconds: 1,
      jwtSvidTtlSeconds: 1,
      jwtAudiences: [],
      federatesWith: [],
      dnsSuffixes: [],
      maxInstances: 1,
      requireNodeSelectors: ['a:1'],
      scopes: [],
      resources: [],
      maxTokenTtlSeconds: 1,
      maxRenewals: 1,
      maxDelegationDepth: 1,
      mayDelegateTo: [],
      allowBearer: false,
    }
    const child: Bounds = {
      x509SvidTtlSeconds: 2,
      jwtSvidTtlSeconds: 2,
      jwtAudiences: ['x'],
      federatesWith: ['x'],
      dnsSuffixes: ['x'],
      maxInstances: 2,
      requireNodeSelectors: [],
      scopes: ['x'],
      resources: ['urn:x'],
      maxTokenTtlSeconds: 2,
      maxRenewals: 2,
      maxDelegationDepth: 2,
      mayDelegateTo: ['spiffe://t/x'],
      allowBearer: true,
    }
    expect(narrows(child, parent).map((v) => v.bound)).toEqual([
      'x509_svid_ttl',
      'jwt_svid_ttl',
      'jwt_audiences',
      'federates_with',
      'dns_suffixes',
      'max_instances',
      'require_node_selectors',
      'scopes',
      'resources',
      'max_token_ttl',
      'max_renewals',
      'max_delegation_depth',
      'may_delegate_to',
      'allow_bearer',
    ])
  })
})
