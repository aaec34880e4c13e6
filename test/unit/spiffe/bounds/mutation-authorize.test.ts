import { describe, expect, it } from 'vitest'
import {
  authorize,
  BoundsSet,
  ceilingFor,
  checkBounds,
  checkCeiling,
  checkEffective,
  DEFAULT_MAX_DELEGATION_DEPTH,
  describeCeilingFailure,
  describeFailure,
  matchBoundedPrefix,
  matchWithinBounds,
  type Ceiling,
} from '../../../../src/spiffe/bounds/index.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { JwtSvid } from '../../../../src/spiffe/jwt-svid/jwt-svid.js'
import { mintJwtSvid } from '../../../../src/spiffe/jwt-svid/mint-jwt-svid.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { X509Svid } from '../../../../src/spiffe/x509-svid/x509-svid.js'

// Exact reasons of every bounds and ceiling refusal, their boundaries (equal
// passes, one more fails), option errors and the lifetime leeway, so that
// message, boundary and backed-up-check mutants die (test/mutation-survivors.md).
// Test titles stay plain: Stryker's vitest runner selects tests by name.

const td = TrustDomain.fromString('corp.example')
const NOW = new Date(Date.UTC(2026, 0, 1))
const long = 'z'.repeat(250)
const set = BoundsSet.parse(td, {
  '/agents': {
    x509_svid_ttl: 3600,
    jwt_svid_ttl: 600,
    jwt_audiences: ['a', 'b', long],
    dns_suffixes: ['corp.example'],
    federates_with: ['p.example', 'q.example', long.slice(0, 60)],
  },
  '/agents/pay': {
    x509_svid_ttl: 900,
    jwt_svid_ttl: 300,
    jwt_audiences: ['a', long],
    dns_suffixes: ['pay.corp.example'],
    federates_with: ['p.example', long.slice(0, 60)],
    require_node_selectors: ['tpm:a:1', 'tpm:b:2'],
  },
  '/nodns': { dns_suffixes: [] },
})
const bot = SpiffeId.fromPath(td, '/agents/pay/bot')
const agentX = SpiffeId.fromPath(td, '/agents/x')
const free = SpiffeId.fromPath(td, '/free')
const caKeys = generateKeyPair('ec-p256')
const caSigner = new KeyObjectSigner(caKeys.privateKey)
const caCert = await createCaCertificate({
  trustDomain: td,
  publicKey: caKeys.publicKey,
  signer: caSigner,
  notBefore: NOW,
  notAfter: new Date(NOW.getTime() + 86_400_000),
})

async function x509(id: SpiffeId, lifetimeSeconds: number, dnsNames?: string[]): Promise<X509Svid> {
  const k = generateKeyPair('ec-p256')
  const leaf = await createX509Svid({
    spiffeId: id,
    publicKey: k.publicKey,
    signer: caSigner,
    issuer: { certificate: caCert },
    notBefore: NOW,
    notAfter: new Date(NOW.getTime() + lifetimeSeconds * 1000),
    ...(dnsNames ? { dnsNames } : {}),
  })
  return X509Svid.fromChain([leaf, caCert])
}

async function jwt(id: SpiffeId, audience: string[], lifetimeSeconds: number): Promise<JwtSvid> {
  const token = await mintJwtSvid({
    spiffeId: id,
    audience,
    issuedAt: NOW,
    expiresAt: new Date(NOW.getTime() + lifetimeSeconds * 1000),
    signer: caSigner,
    kid: 'k1',
  })
  return JwtSvid.parseInsecure(token)
}

/** A JWT-SVID without `iat` (parseInsecure does not verify the signature). */
function jwtWithoutIat(id: SpiffeId, audience: string[]): JwtSvid {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
  return JwtSvid.parseInsecure(
    `${b64({ alg: 'ES256', kid: 'k1', typ: 'JWT' })}.${b64({ sub: id.toString(), aud: audience, exp: NOW.getTime() / 1000 + 86_400 })}.${Buffer.alloc(64).toString('base64url')}`,
  )
}

function denied(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect((err as { code: string }).code).toBe('ERR_ID_NOT_AUTHORIZED')
    return (err as Error).message
  }
  throw new Error('expected ERR_ID_NOT_AUTHORIZED')
}

const BOT = 'unexpected ID "spiffe://corp.example/agents/pay/bot": '

describe('checkBounds reasons', () => {
  it('TTLs pass at the bound and fail one above with both values', () => {
    expect(checkBounds(set, bot, { x509SvidTtlSeconds: 900, jwtSvidTtlSeconds: 300 })).toBeUndefined()
    expect(checkBounds(set, bot, { x509SvidTtlSeconds: 901 })).toEqual({
      prefix: '/agents/pay',
      bound: 'x509_svid_ttl',
      message: 'X.509-SVID TTL 901s exceeds 900s',
    })
    expect(checkBounds(set, bot, { jwtSvidTtlSeconds: 301 })).toEqual({
      prefix: '/agents/pay',
      bound: 'jwt_svid_ttl',
      message: 'JWT-SVID TTL 301s exceeds 300s',
    })
    expect(checkBounds(set, agentX, { jwtSvidTtlSeconds: 601 })).toEqual({
      prefix: '/agents',
      bound: 'jwt_svid_ttl',
      message: 'JWT-SVID TTL 601s exceeds 600s',
    })
    expect(checkBounds(set, agentX, { x509SvidTtlSeconds: 3601 })).toEqual({
      prefix: '/agents',
      bound: 'x509_svid_ttl',
      message: 'X.509-SVID TTL 3601s exceeds 3600s',
    })
  })

  it('audiences name the first one not allowed, cut to 200 characters', () => {
    expect(checkBounds(set, bot, { audience: ['a', long] })).toBeUndefined()
    expect(checkBounds(set, bot, { audience: ['a', 'x', 'y'] })).toEqual({
      prefix: '/agents/pay',
      bound: 'jwt_audiences',
      message: 'audience "x" is not allowed',
    })
    expect(checkBounds(set, bot, { audience: ['b'] })).toEqual({ prefix: '/agents/pay', bound: 'jwt_audiences', message: 'audience "b" is not allowed' })
    expect(checkBounds(set, bot, { audience: [`${long}x`] })?.message).toBe(`audience "${long.slice(0, 200)}" is not allowed`)
  })

  it('DNS names must lie under a suffix, or none are allowed', () => {
    expect(checkBounds(set, bot, { dnsNames: ['x.pay.corp.example', 'pay.corp.example'] })).toBeUndefined()
    expect(checkBounds(set, bot, { dnsNames: ['pay.corp.example', 'web.corp.example'] })).toEqual({
      prefix: '/agents/pay',
      bound: 'dns_suffixes',
      message: 'DNS name "web.corp.example" is not allowed',
    })
    expect(checkBounds(set, agentX, { dnsNames: ['evil.example'] })).toEqual({
      prefix: '/agents',
      bound: 'dns_suffixes',
      message: 'DNS name "evil.example" is not allowed',
    })
    expect(checkBounds(set, SpiffeId.fromPath(td, '/nodns/a'), { dnsNames: ['a.example'] })).toEqual({
      prefix: '/nodns',
      bound: 'dns_suffixes',
      message: 'DNS name "a.example": no DNS names are allowed',
    })
    expect(checkBounds(set, SpiffeId.fromPath(td, '/nodns/a'), { dnsNames: [] })).toBeUndefined()
  })

  it('federation names the first trust domain not allowed', () => {
    expect(checkBounds(set, bot, { federatesWith: ['p.example'] })).toBeUndefined()
    expect(checkBounds(set, bot, { federatesWith: ['q.example'] })).toEqual({
      prefix: '/agents/pay',
      bound: 'federates_with',
      message: 'federation with "q.example" is not allowed',
    })
    expect(checkBounds(set, agentX, { federatesWith: ['p.example', 'r.example'] })).toEqual({
      prefix: '/agents',
      bound: 'federates_with',
      message: 'federation with "r.example" is not allowed',
    })
  })

  it('node selectors must include every required one', () => {
    expect(checkBounds(set, bot, { nodeSelectors: ['tpm:b:2', 'x:y', 'tpm:a:1'] })).toBeUndefined()
    expect(checkBounds(set, bot, { nodeSelectors: ['tpm:b:2'] })).toEqual({
      prefix: '/agents/pay',
      bound: 'require_node_selectors',
      message: 'node lacks required selector "tpm:a:1"',
    })
    expect(checkBounds(set, bot, { nodeSelectors: ['tpm:a:1'] })).toEqual({
      prefix: '/agents/pay',
      bound: 'require_node_selectors',
      message: 'node lacks required selector "tpm:b:2"',
    })
    expect(checkBounds(set, agentX, { nodeSelectors: [] })).toBeUndefined()
  })

  it('checks bounds in order and names the deepest prefix first', () => {
    expect(checkBounds(set, bot, { x509SvidTtlSeconds: 5000, jwtSvidTtlSeconds: 5000, audience: ['x'] })?.message).toBe('X.509-SVID TTL 5000s exceeds 900s')
    expect(checkBounds(set, bot, { jwtSvidTtlSeconds: 5000, audience: ['x'] })?.message).toBe('JWT-SVID TTL 5000s exceeds 300s')
    expect(checkBounds(set, bot, { audience: ['x'], dnsNames: ['x'] })?.bound).toBe('jwt_audiences')
    expect(checkBounds(set, bot, { dnsNames: ['x'], federatesWith: ['x'] })?.bound).toBe('dns_suffixes')
    expect(checkBounds(set, bot, { federatesWith: ['x'], nodeSelectors: [] })?.bound).toBe('federates_with')
    expect(checkBounds(set, free, { x509SvidTtlSeconds: 1e9 })).toBeUndefined()
  })

  it('checkEffective walks from the deepest prefix up', () => {
    const eff = set.boundsFor(bot)!
    expect(checkEffective(set, eff, { audience: ['b'] })?.prefix).toBe('/agents/pay')
    expect(checkEffective(set, eff, { federatesWith: [long.slice(0, 60)] })).toBeUndefined()
    const deep = BoundsSet.parse(td, { '/a': { jwt_audiences: ['x'] }, '/a/b': {} })
    expect(checkEffective(deep, deep.boundsFor(SpiffeId.fromPath(td, '/a/b/c'))!, { audience: ['y'] })).toEqual({
      prefix: '/a',
      bound: 'jwt_audiences',
      message: 'audience "y" is not allowed',
    })
  })

  it('describeFailure formats bound prefix and reason', () => {
    expect(describeFailure({ prefix: '/p', bound: 'scopes', message: 'm' })).toBe('exceeds bound scopes of "/p": m')
  })
})

describe('authorize reasons', () => {
  it('refuses bad leeway and TTL options', () => {
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      expect(() => authorize(bot, { leewaySeconds: bad }, set)).toThrow(new RangeError('leewaySeconds must be a non-negative number'))
      expect(() => authorize(bot, { ttlSeconds: bad }, set)).toThrow(new RangeError('ttlSeconds must be a non-negative number'))
    }
    expect(authorize(bot, { leewaySeconds: 0, ttlSeconds: 0 }, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
    expect(() => authorize({} as SpiffeId, {}, set)).toThrow(new TypeError('svid must be an X509Svid, a JwtSvid or a SpiffeId'))
  })

  it('names the trust domain and the missing bounds', () => {
    expect(denied(() => authorize(SpiffeId.fromString('spiffe://other.example/agents/pay/bot'), {}, set))).toBe(
      'unexpected ID "spiffe://other.example/agents/pay/bot": bounds are for trust domain "corp.example"',
    )
    expect(denied(() => authorize(free, { requireBounds: true }, set))).toBe('unexpected ID "spiffe://corp.example/free": no operating bounds cover this ID')
    expect(authorize(free, { requireBounds: false, ttlSeconds: 1e9 }, set)).toBeUndefined()
  })

  it('a requested TTL goes to the X.509 bound for IDs and X.509-SVIDs', async () => {
    expect(authorize(bot, { ttlSeconds: 900 }, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
    expect(denied(() => authorize(bot, { ttlSeconds: 901 }, set))).toBe(`${BOT}exceeds bound x509_svid_ttl of "/agents/pay": X.509-SVID TTL 901s exceeds 900s`)
    const svid = await x509(bot, 60)
    expect(denied(() => authorize(svid, { ttlSeconds: 901 }, set))).toBe(`${BOT}exceeds bound x509_svid_ttl of "/agents/pay": X.509-SVID TTL 901s exceeds 900s`)
  })

  it('a requested TTL goes to the JWT bound for JWT-SVIDs', async () => {
    const svid = await jwt(bot, ['a'], 60)
    expect(authorize(svid, { ttlSeconds: 300 }, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
    expect(denied(() => authorize(svid, { ttlSeconds: 301 }, set))).toBe(`${BOT}exceeds bound jwt_svid_ttl of "/agents/pay": JWT-SVID TTL 301s exceeds 300s`)
  })

  it('a JWT-SVID lifetime gets the leeway', async () => {
    const svid = await jwt(bot, ['a'], 330)
    expect(authorize(svid, {}, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
    expect(denied(() => authorize(svid, { leewaySeconds: 29 }, set))).toBe(
      `${BOT}SVID lifetime exceeds bound jwt_svid_ttl of "/agents/pay": JWT-SVID TTL 301s exceeds 300s`,
    )
  })

  it('an X.509-SVID lifetime gets the leeway', async () => {
    const svid = await x509(bot, 930)
    expect(authorize(svid, {}, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
    expect(denied(() => authorize(svid, { leewaySeconds: 29 }, set))).toBe(
      `${BOT}SVID lifetime exceeds bound x509_svid_ttl of "/agents/pay": X.509-SVID TTL 901s exceeds 900s`,
    )
    expect(authorize(await x509(bot, 10), { leewaySeconds: 100 }, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
  })

  it('a JWT-SVID without iat has no lifetime check', () => {
    expect(authorize(jwtWithoutIat(bot, ['a']), { leewaySeconds: 0 }, set)?.prefixes).toEqual(['/agents', '/agents/pay'])
    expect(denied(() => authorize(jwtWithoutIat(bot, ['x']), {}, set))).toBe(`${BOT}exceeds bound jwt_audiences of "/agents/pay": audience "x" is not allowed`)
  })

  it('audiences come from the option and the token', async () => {
    const svid = await jwt(bot, ['a', 'b'], 60)
    expect(denied(() => authorize(svid, { audience: 'a' }, set))).toBe(`${BOT}exceeds bound jwt_audiences of "/agents/pay": audience "b" is not allowed`)
    expect(denied(() => authorize(bot, { audience: ['a', 'q'] }, set))).toBe(`${BOT}exceeds bound jwt_audiences of "/agents/pay": audience "q" is not allowed`)
    expect(denied(() => authorize(bot, { audience: 'q' }, set))).toContain('audience "q" is not allowed')
    expect(authorize(bot, { audience: ['a', 'a'] }, set)).toBeDefined()
    expect(authorize(await jwt(bot, ['a'], 60), { audience: 'a' }, set)).toBeDefined()
  })

  it('DNS names come from the option and the X.509-SVID', async () => {
    expect(denied(() => authorize(bot, { dnsNames: ['web.example'] }, set))).toBe(
      `${BOT}exceeds bound dns_suffixes of "/agents/pay": DNS name "web.example" is not allowed`,
    )
    const svid = await x509(bot, 60, ['x.pay.corp.example', 'other.example'])
    expect(denied(() => authorize(svid, {}, set))).toBe(`${BOT}exceeds bound dns_suffixes of "/agents/pay": DNS name "other.example" is not allowed`)
    const ok = await x509(bot, 60, ['x.pay.corp.example'])
    expect(authorize(ok, {}, set)).toBeDefined()
    expect(denied(() => authorize(ok, { dnsNames: ['y.example'] }, set))).toContain('DNS name "y.example" is not allowed')
    expect(authorize(await x509(bot, 60), { dnsNames: [] }, set)).toBeDefined()
  })

  it('federation accepts a name or a TrustDomain', () => {
    expect(denied(() => authorize(bot, { federatesWith: 'q.example' }, set))).toBe(
      `${BOT}exceeds bound federates_with of "/agents/pay": federation with "q.example" is not allowed`,
    )
    expect(denied(() => authorize(bot, { federatesWith: TrustDomain.fromString('q.example') }, set))).toContain('federation with "q.example" is not allowed')
    expect(authorize(bot, { federatesWith: TrustDomain.fromString('p.example') }, set)).toBeDefined()
  })

  it('node selectors are checked when given', () => {
    expect(denied(() => authorize(bot, { nodeSelectors: ['tpm:a:1'] }, set))).toBe(
      `${BOT}exceeds bound require_node_selectors of "/agents/pay": node lacks required selector "tpm:b:2"`,
    )
    expect(authorize(bot, { nodeSelectors: ['tpm:a:1', 'tpm:b:2'] }, set)).toBeDefined()
    expect(authorize(bot, {}, set)).toBeDefined()
  })

  it('returns the effective bounds of the ID', () => {
    expect(authorize(bot, {}, set)).toBe(set.boundsFor(bot))
  })
})

describe('matchers reasons', () => {
  it('matchWithinBounds applies authorize with its options', () => {
    expect(denied(() => matchWithinBounds(set, { ttlSeconds: 901 })(bot))).toBe(
      `${BOT}exceeds bound x509_svid_ttl of "/agents/pay": X.509-SVID TTL 901s exceeds 900s`,
    )
    expect(denied(() => matchWithinBounds(set)(SpiffeId.fromString('spiffe://o.example/a')))).toContain('bounds are for trust domain "corp.example"')
    expect(matchWithinBounds(set)(free)).toBeUndefined()
  })

  it('matchBoundedPrefix needs a covering prefix, one of those named', () => {
    expect(denied(() => matchBoundedPrefix(set)(free))).toBe('unexpected ID "spiffe://corp.example/free": no operating bounds cover this ID')
    expect(denied(() => matchBoundedPrefix(set)(SpiffeId.fromString('spiffe://o.example/agents/pay/bot')))).toBe(
      'unexpected ID "spiffe://o.example/agents/pay/bot": no operating bounds cover this ID',
    )
    expect(matchBoundedPrefix(set)(agentX)).toBeUndefined()
    expect(matchBoundedPrefix(set, '/nodns', '/agents/pay')(bot)).toBeUndefined()
    expect(denied(() => matchBoundedPrefix(set, '/agents/pay', '/nodns')(agentX))).toBe(
      'unexpected ID "spiffe://corp.example/agents/x": expected an ID under "/agents/pay", "/nodns"',
    )
    expect(denied(() => matchBoundedPrefix(set, '/agents/x')(agentX))).toBe('unexpected ID "spiffe://corp.example/agents/x": expected an ID under "/agents/x"')
  })
})

describe('ceilingFor and checkCeiling reasons', () => {
  const cset = BoundsSet.parse(td, {
    '/a': {
      scopes: ['s1', 's2'],
      resources: ['urn:r1'],
      max_token_ttl: 300,
      max_renewals: 2,
      max_delegation_depth: 3,
      may_delegate_to: ['spiffe://corp.example/a/', 'spiffe://corp.example/x'],
      allow_bearer: true,
    },
    '/b': { scopes: ['s'] },
  })
  const full = ceilingFor(cset, SpiffeId.fromPath(td, '/a/i'))

  it('carries every declared field, frozen', () => {
    expect(full).toStrictEqual({
      scopes: ['s1', 's2'],
      resources: ['urn:r1'],
      maxTokenTtlSeconds: 300,
      maxRenewals: 2,
      maxDelegationDepth: 3,
      mayDelegateTo: ['spiffe://corp.example/a/', 'spiffe://corp.example/x'],
      allowBearer: true,
      prefixes: ['/a'],
    })
    expect(Object.isFrozen(full)).toBe(true)
    expect(Object.isFrozen(full.scopes)).toBe(true)
    expect(Object.isFrozen(full.resources)).toBe(true)
    expect(Object.isFrozen(full.mayDelegateTo)).toBe(true)
  })

  it('applies the secure defaults for what no prefix declares', () => {
    const c = ceilingFor(cset, SpiffeId.fromPath(td, '/b/i'))
    expect(c).toStrictEqual({
      scopes: ['s'],
      resources: [],
      maxDelegationDepth: DEFAULT_MAX_DELEGATION_DEPTH,
      mayDelegateTo: [],
      allowBearer: false,
      prefixes: ['/b'],
    })
    expect(DEFAULT_MAX_DELEGATION_DEPTH).toBe(5)
    expect(Object.isFrozen(c.resources)).toBe(true)
    expect(Object.isFrozen(c.mayDelegateTo)).toBe(true)
    const none = ceilingFor(cset, SpiffeId.fromPath(td, '/c'))
    expect(none).toStrictEqual({ scopes: [], resources: [], maxDelegationDepth: 5, mayDelegateTo: [], allowBearer: false, prefixes: [] })
    expect(Object.isFrozen(none)).toBe(true)
    expect(Object.isFrozen(none.scopes)).toBe(true)
    expect(Object.isFrozen(none.prefixes)).toBe(true)
  })

  it('passes at every limit', () => {
    expect(
      checkCeiling(full, {
        scopes: ['s2', 's1'],
        resources: ['urn:r1'],
        ttlSeconds: 300,
        maxRenewals: 2,
        delegationDepth: 3,
        delegateTo: 'spiffe://corp.example/x',
        bearer: true,
      }),
    ).toBeUndefined()
    expect(checkCeiling(full, { delegateTo: 'spiffe://corp.example/a/b' })).toBeUndefined()
    expect(checkCeiling(full, {})).toBeUndefined()
    expect(checkCeiling(full, { scopes: [], resources: [] })).toBeUndefined()
  })

  it('names each exceeded bound with its reason', () => {
    expect(checkCeiling(full, { scopes: ['s1', 'admin', 'root'] })).toEqual({ bound: 'scopes', message: 'scope "admin" is above the ceiling' })
    expect(checkCeiling(full, { resources: ['urn:r1', 'urn:r2'] })).toEqual({ bound: 'resources', message: 'resource "urn:r2" is above the ceiling' })
    expect(checkCeiling(full, { ttlSeconds: 301 })).toEqual({ bound: 'max_token_ttl', message: 'lifetime 301s exceeds 300s' })
    expect(checkCeiling(full, { maxRenewals: 3 })).toEqual({ bound: 'max_renewals', message: '3 renewals exceed 2' })
    expect(checkCeiling(full, { delegationDepth: 4 })).toEqual({ bound: 'max_delegation_depth', message: 'delegation depth 4 exceeds 3' })
    expect(checkCeiling(full, { delegateTo: 'spiffe://corp.example/x/y' })).toEqual({
      bound: 'may_delegate_to',
      message: 'delegation to "spiffe://corp.example/x/y" is not allowed',
    })
    const none = ceilingFor(cset, SpiffeId.fromPath(td, '/c'))
    expect(checkCeiling(none, { bearer: true })).toEqual({ bound: 'allow_bearer', message: 'bearer tokens are not allowed' })
    expect(checkCeiling(none, { bearer: false })).toBeUndefined()
    expect(checkCeiling(none, { delegationDepth: 5 })).toBeUndefined()
    expect(checkCeiling(none, { delegationDepth: 6 })).toEqual({ bound: 'max_delegation_depth', message: 'delegation depth 6 exceeds 5' })
  })

  it('quotes values cut to 200 characters', () => {
    const big = `urn:${'q'.repeat(300)}`
    expect(checkCeiling(full, { resources: [big] })?.message).toBe(`resource "${big.slice(0, 200)}" is above the ceiling`)
    expect(checkCeiling(full, { scopes: [big] })?.message).toBe(`scope "${big.slice(0, 200)}" is above the ceiling`)
    expect(checkCeiling(full, { delegateTo: `spiffe://corp.example/${'q'.repeat(300)}` })?.message).toBe(
      `delegation to "${`spiffe://corp.example/${'q'.repeat(300)}`.slice(0, 200)}" is not allowed`,
    )
  })

  it('undeclared TTL and renewals are not checked', () => {
    const c: Ceiling = ceilingFor(cset, SpiffeId.fromPath(td, '/b/i'))
    expect(checkCeiling(c, { ttlSeconds: 1e9, maxRenewals: 1e9 })).toBeUndefined()
  })

  it('checks bounds in order', () => {
    const all = { scopes: ['x'], resources: ['urn:x'], ttlSeconds: 1e9, maxRenewals: 1e9, delegationDepth: 99, delegateTo: 'spiffe://o/x', bearer: true }
    const none = ceilingFor(cset, SpiffeId.fromPath(td, '/c'))
    expect(checkCeiling(full, all)?.bound).toBe('scopes')
    const { scopes: _s, ...noScopes } = all
    const { resources: _r, ...noResources } = noScopes
    const { ttlSeconds: _t, ...noTtl } = noResources
    expect(checkCeiling(full, noScopes)?.bound).toBe('resources')
    expect(checkCeiling(full, noResources)?.bound).toBe('max_token_ttl')
    expect(checkCeiling(full, noTtl)?.bound).toBe('max_renewals')
    expect(checkCeiling(full, { delegationDepth: 99, delegateTo: 'spiffe://o/x' })?.bound).toBe('max_delegation_depth')
    expect(checkCeiling(none, { delegateTo: 'spiffe://o/x', bearer: true })?.bound).toBe('may_delegate_to')
  })

  it('describeCeilingFailure formats the bound and reason', () => {
    expect(describeCeilingFailure({ bound: 'scopes', message: 'scope "x" is above the ceiling' })).toBe(
      'exceeds ceiling scopes: scope "x" is above the ceiling',
    )
  })
})
