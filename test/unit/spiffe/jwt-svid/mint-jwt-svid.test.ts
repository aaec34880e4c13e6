import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { mintJwtSvid, validateJwtSvid, type MintJwtSvidOptions } from '../../../../src/spiffe/jwt-svid/index.js'
import type { SignatureAlgorithm, Signer } from '../../../../src/spiffe/signer.js'
import { bundles, ID, keys, NOW, NOW_S } from './fixtures.js'
import type { KeySigner } from './key-signer.js'

const EXP = new Date(NOW.getTime() + 300_000)
const base = (over: Partial<MintJwtSvidOptions> = {}): MintJwtSvidOptions => ({
  spiffeId: ID,
  audience: ['svc'],
  expiresAt: EXP,
  issuedAt: NOW,
  signer: keys.es256,
  kid: 'k-es256',
  ...over,
})

function decode(token: string): { header: Record<string, unknown>; payload: Record<string, unknown> } {
  const [h, p] = token.split('.')
  return {
    header: JSON.parse(Buffer.from(h ?? '', 'base64url').toString()) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(p ?? '', 'base64url').toString()) as Record<string, unknown>,
  }
}

describe('mintJwtSvid', () => {
  it('emits header {alg, kid, typ} and claims sub, aud, exp, iat', async () => {
    const token = await mintJwtSvid(base())
    const { header, payload } = decode(token)
    expect(header).toEqual({ alg: 'ES256', kid: 'k-es256', typ: 'JWT' })
    expect(payload).toEqual({ sub: ID.toString(), aud: 'svc', exp: NOW_S + 300, iat: NOW_S })
    expect(token.split('.')).toHaveLength(3)
  })

  it('encodes one audience as a string and several as an array (as SPIRE / go-jose)', async () => {
    expect(decode(await mintJwtSvid(base({ audience: ['a'] }))).payload.aud).toBe('a')
    expect(decode(await mintJwtSvid(base({ audience: ['a', 'b'] }))).payload.aud).toEqual(['a', 'b'])
  })

  it('truncates times to whole seconds and defaults iat to now', async () => {
    const t = decode(await mintJwtSvid(base({ issuedAt: new Date(NOW.getTime() + 999), expiresAt: new Date(EXP.getTime() + 999) }))).payload
    expect(t).toMatchObject({ iat: NOW_S, exp: NOW_S + 300 })
    const before = Math.floor(Date.now() / 1000)
    const { issuedAt: _drop, ...noIat } = base({ expiresAt: new Date(Date.now() + 60_000) })
    const iat = decode(await mintJwtSvid(noIat)).payload.iat as number
    expect(iat).toBeGreaterThanOrEqual(before)
    expect(iat).toBeLessThanOrEqual(Math.floor(Date.now() / 1000))
  })

  it('adds iss and extra claims', async () => {
    const { payload } = decode(await mintJwtSvid(base({ issuer: 'https://oidc.example.org', extraClaims: { jti: 'x', nbf: NOW_S } })))
    expect(payload).toMatchObject({ iss: 'https://oidc.example.org', jti: 'x', nbf: NOW_S })
  })

  const defaults: { key: KeySigner; alg: SignatureAlgorithm; kid: string }[] = [
    { key: keys.es256, alg: 'ES256', kid: 'k-es256' },
    { key: keys.es384, alg: 'ES384', kid: 'k-es384' },
    { key: keys.es512, alg: 'ES512', kid: 'k-es512' },
    { key: keys.rsa, alg: 'RS256', kid: 'k-rsa' },
  ]
  it.each(defaults)('defaults to $alg from the key, and the token validates', async ({ key, alg, kid }) => {
    const token = await mintJwtSvid(base({ signer: key, kid }))
    expect(decode(token).header.alg).toBe(alg)
    const svid = await validateJwtSvid(token, bundles, { audience: 'svc', now: NOW })
    expect(svid.kid).toBe(kid)
  })

  const bad: { title: string; opts: () => MintJwtSvidOptions; error: typeof TypeError | typeof RangeError }[] = [
    { title: 'ES384 with a P-256 key', opts: () => base({ alg: 'ES384' }), error: TypeError },
    { title: 'RS256 with an EC key', opts: () => base({ alg: 'RS256' }), error: TypeError },
    { title: 'ES256 with an RSA key', opts: () => base({ signer: keys.rsa, alg: 'ES256' }), error: TypeError },
    { title: 'HS256', opts: () => base({ alg: 'HS256' as SignatureAlgorithm }), error: TypeError },
    { title: 'none', opts: () => base({ alg: 'none' as SignatureAlgorithm }), error: TypeError },
    { title: 'an Ed25519 signer', opts: () => base({ signer: keys.ed25519 }), error: TypeError },
    { title: 'empty audience list', opts: () => base({ audience: [] }), error: TypeError },
    { title: 'an empty audience value', opts: () => base({ audience: ['svc', ''] }), error: TypeError },
    { title: 'empty kid', opts: () => base({ kid: '' }), error: TypeError },
    { title: 'a string spiffeId', opts: () => base({ spiffeId: ID.toString() as never }), error: TypeError },
    { title: 'invalid expiresAt', opts: () => base({ expiresAt: new Date(Number.NaN) }), error: TypeError },
    { title: 'exp not after iat', opts: () => base({ expiresAt: NOW }), error: RangeError },
    { title: 'extraClaims overriding sub', opts: () => base({ extraClaims: { sub: 'spiffe://evil.org/x' } }), error: TypeError },
    { title: 'extraClaims overriding aud', opts: () => base({ extraClaims: { aud: 'x' } }), error: TypeError },
    { title: 'extraClaims overriding exp', opts: () => base({ extraClaims: { exp: 1 } }), error: TypeError },
    { title: 'extraClaims overriding iat', opts: () => base({ extraClaims: { iat: 1 } }), error: TypeError },
    { title: 'extraClaims iss with issuer', opts: () => base({ issuer: 'a', extraClaims: { iss: 'b' } }), error: TypeError },
    { title: 'empty issuer', opts: () => base({ issuer: '' }), error: TypeError },
  ]
  it.each(bad)('rejects $title', async ({ opts, error }) => {
    await expect(mintJwtSvid(opts())).rejects.toBeInstanceOf(error)
  })

  it('signs only through the Signer, with the chosen alg, over header.payload', async () => {
    const calls: { data: string; alg: SignatureAlgorithm }[] = []
    const spy: Signer = {
      publicKey: keys.rsa.publicKey,
      sign: async (data, alg) => {
        calls.push({ data: Buffer.from(data).toString('ascii'), alg })
        return keys.rsa.sign(data, alg)
      },
    }
    const token = await mintJwtSvid(base({ signer: spy, kid: 'k-rsa', alg: 'PS256' }))
    expect(calls).toEqual([{ data: token.split('.').slice(0, 2).join('.'), alg: 'PS256' }])
    await expect(validateJwtSvid(token, bundles, { audience: 'svc', now: NOW })).resolves.toBeDefined()
  })

  it('rejects an ECDSA signer that returns DER instead of r||s', async () => {
    const der: Signer = { publicKey: keys.es256.publicKey, sign: async () => new Uint8Array(71) }
    await expect(mintJwtSvid(base({ signer: der }))).rejects.toBeInstanceOf(TypeError)
  })

  it('propagates signer failures unchanged', async () => {
    const down: Signer = {
      publicKey: keys.es256.publicKey,
      sign: async () => {
        throw new IdentityError('ERR_HSM_UNAVAILABLE', 'token removed')
      },
    }
    await expect(mintJwtSvid(base({ signer: down }))).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' })
  })
})
