import { describe, expect, it } from 'vitest'
import { authorize, BoundsSet, checkBounds, matchBoundedPrefix, matchWithinBounds } from '../../../../src/spiffe/bounds/index.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { JwtSvid } from '../../../../src/spiffe/jwt-svid/jwt-svid.js'
import { mintJwtSvid } from '../../../../src/spiffe/jwt-svid/mint-jwt-svid.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { X509Svid } from '../../../../src/spiffe/x509-svid/x509-svid.js'

const td = TrustDomain.fromString('corp.example')
const NOW = new Date(Date.UTC(2026, 0, 1))
const API = 'spiffe://corp.example/svc/payments-api'
const WEB = 'https://payments.corp.example'
const set = BoundsSet.parse(td, {
  '/agents': { x509_svid_ttl: 3600 },
  '/agents/payments': {
    x509_svid_ttl: 900,
    jwt_svid_ttl: 300,
    jwt_audiences: [API, WEB],
    dns_suffixes: [],
    federates_with: ['partner.example'],
    max_instances: 50,
    require_node_selectors: ['tpm:pcr_policy:prod'],
  },
})
const bot = SpiffeId.fromPath(td, '/agents/payments/bot-1')
const caKeys = generateKeyPair('ec-p256')
const caSigner = new KeyObjectSigner(caKeys.privateKey)
const caCert = await createCaCertificate({
  trustDomain: td,
  publicKey: caKeys.publicKey,
  signer: caSigner,
  notBefore: NOW,
  notAfter: new Date(NOW.getTime() + 86_400_000),
})

async function x509(id: SpiffeId, ttlSeconds: number, dnsNames?: string[]): Promise<X509Svid> {
  const k = generateKeyPair('ec-p256')
  const leaf = await createX509Svid({
    spiffeId: id,
    publicKey: k.publicKey,
    signer: caSigner,
    issuer: { certificate: caCert },
    notBefore: new Date(NOW.getTime() - 10_000),
    notAfter: new Date(NOW.getTime() + ttlSeconds * 1000),
    ...(dnsNames ? { dnsNames } : {}),
  })
  return X509Svid.fromChain([leaf, caCert])
}

async function jwt(id: SpiffeId, audience: string[], ttlSeconds: number): Promise<JwtSvid> {
  const token = await mintJwtSvid({
    spiffeId: id,
    audience,
    issuedAt: NOW,
    expiresAt: new Date(NOW.getTime() + ttlSeconds * 1000),
    signer: caSigner,
    kid: 'k1',
  })
  return JwtSvid.parseInsecure(token)
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

describe('authorize', () => {
  it('allows a JWT-SVID within bounds and returns the effective bounds', async () => {
    const eff = authorize(await jwt(bot, [WEB], 300), { audience: WEB }, set)
    expect(eff?.prefixes).toEqual(['/agents', '/agents/payments'])
  })

  it.each([
    [
      'the gateway audience is outside the bounds',
      async () => [await jwt(bot, [WEB], 60), { audience: 'https://evil.example' }] as const,
      'jwt_audiences of "/agents/payments"',
    ],
    [
      'the token names an audience outside the bounds',
      async () => [await jwt(bot, [WEB, 'https://evil.example'], 60), { audience: WEB }] as const,
      'audience "https://evil.example"',
    ],
    ['the JWT lives longer than the bound', async () => [await jwt(bot, [WEB], 3600), {}] as const, 'SVID lifetime exceeds bound jwt_svid_ttl'],
    ['the X.509-SVID lives longer than the bound', async () => [await x509(bot, 1800), {}] as const, 'bound x509_svid_ttl of "/agents/payments"'],
    ['the X.509-SVID carries a DNS name', async () => [await x509(bot, 600, ['bot.corp.example']), {}] as const, 'no DNS names are allowed'],
    ['federation outside the bounds', async () => [bot, { federatesWith: 'other.example' }] as const, 'federates_with'],
    ['node selectors missing', async () => [bot, { nodeSelectors: ['tpm:pcr_policy:dev'] }] as const, 'require_node_selectors'],
    ['a requested TTL above the bound', async () => [bot, { ttlSeconds: 901 }] as const, 'x509_svid_ttl'],
    [
      'an ID of another trust domain',
      async () => [SpiffeId.fromString('spiffe://partner.example/agents/payments/x'), {}] as const,
      'trust domain "corp.example"',
    ],
  ])('denies when %s', async (_t, mk, msg) => {
    const [svid, opts] = await mk()
    expect(denied(() => authorize(svid, opts, set))).toContain(msg)
  })

  it('accepts an X.509-SVID at the bound (CA backdating is within leeway)', async () => {
    expect(
      authorize(await x509(bot, 900), { federatesWith: TrustDomain.fromString('partner.example'), nodeSelectors: ['tpm:pcr_policy:prod', 'x:y'] }, set)?.bounds
        .x509SvidTtlSeconds,
    ).toBe(900)
  })

  it('IDs under no prefix pass unless bounds are required', () => {
    const free = SpiffeId.fromPath(td, '/svc/web')
    expect(authorize(free, { audience: 'anything' }, set)).toBeUndefined()
    expect(denied(() => authorize(free, { requireBounds: true }, set))).toContain('no operating bounds')
  })

  it('names the deepest prefix that forbids the request', () => {
    expect(checkBounds(set, bot, { x509SvidTtlSeconds: 4000 })).toMatchObject({ prefix: '/agents/payments', bound: 'x509_svid_ttl' })
    expect(checkBounds(set, SpiffeId.fromPath(td, '/agents/x'), { x509SvidTtlSeconds: 4000 })).toMatchObject({ prefix: '/agents' })
    expect(checkBounds(set, bot, { x509SvidTtlSeconds: 900, audience: [API] })).toBeUndefined()
  })

  it('matchers', () => {
    expect(() => matchWithinBounds(set, { audience: API })(bot)).not.toThrow()
    expect(denied(() => matchWithinBounds(set, { audience: 'x' })(bot))).toContain('jwt_audiences')
    expect(() => matchBoundedPrefix(set, '/agents/payments')(bot)).not.toThrow()
    expect(denied(() => matchBoundedPrefix(set, '/agents/payments')(SpiffeId.fromPath(td, '/agents/other')))).toContain('/agents/payments')
    expect(denied(() => matchBoundedPrefix(set)(SpiffeId.fromPath(td, '/svc/web')))).toContain('no operating bounds')
  })
})
