import { describe, expect, it } from 'vitest'
import {
  BoundsSet,
  ceilingFor,
  checkCeiling,
  DEFAULT_MAX_DELEGATION_DEPTH,
  intersect,
  narrows,
  parseBounds,
  signBoundsDocument,
  verifyBoundsDocument,
  type Bounds,
} from '../../../../src/spiffe/bounds/index.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

const td = TrustDomain.fromString('corp.example')
const id = (p: string) => SpiffeId.fromPath(td, p)

const agents = {
  scopes: ['payments:read', 'payments:refund', 'ledger:read'],
  resources: ['https://payments.corp.example', 'https://ledger.corp.example/api'],
  max_token_ttl: 900,
  max_renewals: 10,
  max_delegation_depth: 3,
  may_delegate_to: ['spiffe://corp.example/agents/'],
  allow_bearer: false,
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

describe('ceiling fields: parse', () => {
  it('parses every ceiling field and sorts lists', () => {
    expect(parseBounds({ ...agents, scopes: ['b', 'a'] })).toEqual({
      scopes: ['a', 'b'],
      resources: ['https://ledger.corp.example/api', 'https://payments.corp.example'],
      maxTokenTtlSeconds: 900,
      maxRenewals: 10,
      maxDelegationDepth: 3,
      mayDelegateTo: ['spiffe://corp.example/agents/'],
      allowBearer: false,
    })
  })

  it.each([
    ['scope with a space', { scopes: ['a b'] }, 'scopes.0'],
    ['scope with a quote', { scopes: ['a"b'] }, 'scopes.0'],
    ['scope with a backslash', { scopes: ['a\\b'] }, 'scopes.0'],
    ['scopes not a list', { scopes: 'a' }, 'scopes'],
    ['relative resource', { resources: ['/api'] }, 'resources.0'],
    ['resource with fragment', { resources: ['https://a.example/#x'] }, 'resources.0'],
    ['zero token TTL', { max_token_ttl: 0 }, 'max_token_ttl'],
    ['fractional token TTL', { max_token_ttl: 1.5 }, 'max_token_ttl'],
    ['negative renewals', { max_renewals: -1 }, 'max_renewals'],
    ['negative depth', { max_delegation_depth: -1 }, 'max_delegation_depth'],
    ['huge depth', { max_delegation_depth: 1000 }, 'max_delegation_depth'],
    ['delegatee not an ID', { may_delegate_to: ['agents/'] }, 'may_delegate_to.0'],
    ['delegatee trust domain without slash', { may_delegate_to: ['spiffe://corp.example'] }, 'may_delegate_to.0'],
    ['delegatee bad path', { may_delegate_to: ['spiffe://corp.example/a//b'] }, 'may_delegate_to.0'],
    ['bearer as string', { allow_bearer: 'yes' }, 'allow_bearer'],
  ])('%s → issue at its path', (_t, raw, path) => {
    expect(issuesOf(() => parseBounds(raw, '/a')).map((i) => i.path)).toEqual([`/a.${path}`])
  })

  it('accepts a whole trust domain and an exact ID as delegatees', () => {
    expect(parseBounds({ may_delegate_to: ['spiffe://corp.example/', 'spiffe://corp.example/agents/x'] }).mayDelegateTo).toEqual([
      'spiffe://corp.example/',
      'spiffe://corp.example/agents/x',
    ])
  })
})

describe('ceiling fields: narrowing', () => {
  const parent = parseBounds(agents)
  it.each<[string, Bounds, string]>([
    ['extra scope', { scopes: ['payments:read', 'admin'] }, 'scopes'],
    ['extra resource', { resources: ['https://other.example'] }, 'resources'],
    ['longer token TTL', { maxTokenTtlSeconds: 901 }, 'max_token_ttl'],
    ['more renewals', { maxRenewals: 11 }, 'max_renewals'],
    ['deeper delegation', { maxDelegationDepth: 4 }, 'max_delegation_depth'],
    ['delegation outside the prefix', { mayDelegateTo: ['spiffe://corp.example/tools/'] }, 'may_delegate_to'],
    ['delegation to the whole domain', { mayDelegateTo: ['spiffe://corp.example/'] }, 'may_delegate_to'],
    ['delegation to a sibling prefix spelled alike', { mayDelegateTo: ['spiffe://corp.example/agentsx/'] }, 'may_delegate_to'],
    ['bearer where the parent forbids it', { allowBearer: true }, 'allow_bearer'],
  ])('%s is a violation', (_t, child, bound) => {
    expect(narrows(child, parent).map((v) => v.bound)).toEqual([bound])
  })

  it('narrower values and omitted fields are no violation', () => {
    expect(
      narrows(
        {
          scopes: ['ledger:read'],
          resources: [],
          maxTokenTtlSeconds: 60,
          maxRenewals: 0,
          maxDelegationDepth: 0,
          mayDelegateTo: ['spiffe://corp.example/agents/sub/', 'spiffe://corp.example/agents/x'],
          allowBearer: false,
        },
        parent,
      ),
    ).toEqual([])
    expect(narrows({}, parent)).toEqual([])
    expect(narrows({ allowBearer: true }, {})).toEqual([])
  })

  it('a set whose child widens its parent is refused with the path', () => {
    const issues = issuesOf(() => BoundsSet.parse(td, { '/agents': agents, '/agents/payments': { scopes: ['root'], max_renewals: 99 } }))
    expect(issues.map((i) => i.path).sort()).toEqual(['/agents/payments.max_renewals', '/agents/payments.scopes'])
  })

  it('intersect narrows each field', () => {
    const a: Bounds = {
      scopes: ['a', 'b'],
      resources: ['https://x.example'],
      maxTokenTtlSeconds: 600,
      maxRenewals: 5,
      maxDelegationDepth: 4,
      mayDelegateTo: ['spiffe://corp.example/agents/'],
      allowBearer: true,
    }
    const b: Bounds = {
      scopes: ['b', 'c'],
      resources: [],
      maxTokenTtlSeconds: 300,
      maxRenewals: 9,
      maxDelegationDepth: 2,
      mayDelegateTo: ['spiffe://corp.example/agents/sub/', 'spiffe://corp.example/tools/'],
      allowBearer: false,
    }
    const want: Bounds = {
      scopes: ['b'],
      resources: [],
      maxTokenTtlSeconds: 300,
      maxRenewals: 5,
      maxDelegationDepth: 2,
      mayDelegateTo: ['spiffe://corp.example/agents/sub/'],
      allowBearer: false,
    }
    expect(intersect(a, b)).toEqual(want)
    expect(intersect(b, a)).toEqual(want)
    expect(intersect({ allowBearer: true }, {})).toEqual({ allowBearer: true })
  })
})

describe('ceilingFor / checkCeiling', () => {
  const set = BoundsSet.parse(td, {
    '/agents': agents,
    '/agents/payments': { scopes: ['payments:read', 'payments:refund'], max_token_ttl: 300, may_delegate_to: ['spiffe://corp.example/agents/payments/'] },
    '/open': { scopes: ['x'], allow_bearer: true },
  })

  it('is the intersection down the tree, with defaults for what is undeclared', () => {
    const c = ceilingFor(set, id('/agents/payments/i-1'))
    expect(c).toEqual({
      scopes: ['payments:read', 'payments:refund'],
      resources: agents.resources.slice().sort(),
      maxTokenTtlSeconds: 300,
      maxRenewals: 10,
      maxDelegationDepth: 3,
      mayDelegateTo: ['spiffe://corp.example/agents/payments/'],
      allowBearer: false,
      prefixes: ['/agents', '/agents/payments'],
    })
  })

  it('an ID under no prefix (or of another trust domain) gets nothing', () => {
    for (const c of [ceilingFor(set, id('/svc/x')), ceilingFor(set, SpiffeId.fromString('spiffe://other.example/agents/payments/i'))]) {
      expect(c.scopes).toEqual([])
      expect(c.resources).toEqual([])
      expect(c.mayDelegateTo).toEqual([])
      expect(c.allowBearer).toBe(false)
      expect(c.maxDelegationDepth).toBe(DEFAULT_MAX_DELEGATION_DEPTH)
    }
  })

  it('accepts what lies inside and names the first bound a request exceeds', () => {
    const c = ceilingFor(set, id('/agents/payments/i-1'))
    expect(
      checkCeiling(c, {
        scopes: ['payments:read'],
        resources: ['https://payments.corp.example'],
        ttlSeconds: 300,
        maxRenewals: 10,
        delegationDepth: 3,
        delegateTo: 'spiffe://corp.example/agents/payments/sub',
        bearer: false,
      }),
    ).toBeUndefined()
    expect(checkCeiling(c, { scopes: ['ledger:read'] })?.bound).toBe('scopes')
    expect(checkCeiling(c, { resources: ['https://evil.example'] })?.bound).toBe('resources')
    expect(checkCeiling(c, { ttlSeconds: 301 })?.bound).toBe('max_token_ttl')
    expect(checkCeiling(c, { maxRenewals: 11 })?.bound).toBe('max_renewals')
    expect(checkCeiling(c, { delegationDepth: 4 })?.bound).toBe('max_delegation_depth')
    expect(checkCeiling(c, { delegateTo: 'spiffe://corp.example/agents/ledger/x' })?.bound).toBe('may_delegate_to')
    expect(checkCeiling(c, { delegateTo: 'spiffe://corp.example/agents/payments' })?.bound).toBe('may_delegate_to')
    expect(checkCeiling(c, { bearer: true })?.bound).toBe('allow_bearer')
    expect(checkCeiling(ceilingFor(set, id('/open/a')), { bearer: true })).toBeUndefined()
  })

  it('ceiling fields travel in the signed bounds document', async () => {
    const { privateKey } = generateKeyPair('ec-p256')
    const signer = new KeyObjectSigner(privateKey)
    const doc = await signBoundsDocument({ set, sequence: 1, issuedAt: new Date(), signer, kid: 'k1' })
    const bundle = new JwtBundle(td, new Map([['k1', signer.publicKey.export({ format: 'jwk' })]]))
    const verified = await verifyBoundsDocument(doc, bundle)
    expect(ceilingFor(verified.set, id('/agents/payments/i-1'))).toEqual(ceilingFor(set, id('/agents/payments/i-1')))
    expect(verified.set.get('/open')?.allowBearer).toBe(true)
  })
})
