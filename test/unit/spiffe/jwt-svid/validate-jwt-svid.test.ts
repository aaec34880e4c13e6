import { inspect } from 'node:util'
import * as jose from 'jose'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import type { ErrorCode } from '../../../../src/errors/codes.js'
import { mintJwtSvid, validateJwtSvid, type JwtSvid } from '../../../../src/spiffe/jwt-svid/index.js'
import type { SignatureAlgorithm } from '../../../../src/spiffe/signer.js'
import { baseClaims, bundles, forge, ID, keys, NOW, NOW_S, b64 } from './fixtures.js'
import type { KeySigner } from './key-signer.js'

async function rejection(p: Promise<unknown>): Promise<IdentityError> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError)
    return err as IdentityError
  }
  throw new Error('expected a rejection')
}

const validate = (token: string, extra: { audience?: string | string[]; now?: Date; leewaySeconds?: number } = {}): Promise<JwtSvid> =>
  validateJwtSvid(token, bundles, { audience: 'svc', now: NOW, ...extra })

const H = { alg: 'ES256', kid: 'k-es256', typ: 'JWT' }
const without = (o: Record<string, unknown>, k: string): Record<string, unknown> => {
  const c = { ...o }
  delete c[k]
  return c
}

describe('validateJwtSvid: mint and validate per algorithm', () => {
  const cases: { alg: SignatureAlgorithm; signer: KeySigner; kid: string }[] = [
    { alg: 'ES256', signer: keys.es256, kid: 'k-es256' },
    { alg: 'ES384', signer: keys.es384, kid: 'k-es384' },
    { alg: 'ES512', signer: keys.es512, kid: 'k-es512' },
    { alg: 'RS256', signer: keys.rsa, kid: 'k-rsa' },
    { alg: 'RS512', signer: keys.rsa, kid: 'k-rsa' },
    { alg: 'PS256', signer: keys.rsa, kid: 'k-rsa' },
    { alg: 'PS384', signer: keys.rsa, kid: 'k-rsa' },
  ]
  it.each(cases)('$alg round-trips', async ({ alg, signer, kid }) => {
    const token = await mintJwtSvid({
      spiffeId: ID,
      audience: ['svc', 'other'],
      issuedAt: NOW,
      expiresAt: new Date(NOW.getTime() + 300_000),
      signer,
      kid,
      alg,
      extraClaims: { jti: 'j-1' },
    })
    const svid = await validate(token)
    expect(svid.id.equals(ID)).toBe(true)
    expect(svid.audience).toEqual(['svc', 'other'])
    expect(svid.expiry.getTime()).toBe(NOW.getTime() + 300_000)
    expect(svid.issuedAt?.getTime()).toBe(NOW.getTime())
    expect(svid.kid).toBe(kid)
    expect(svid.hint).toBe('')
    expect(svid.claims.jti).toBe('j-1')
    expect(svid.token).toBe(token)
    expect(Object.isFrozen(svid.claims)).toBe(true)
  })
})

describe('validateJwtSvid: rules', () => {
  const accepting: { title: string; token: () => string; opts?: { audience?: string | string[]; leewaySeconds?: number } }[] = [
    { title: 'typ JWT', token: () => forge(H, baseClaims()) },
    { title: 'typ JOSE', token: () => forge({ ...H, typ: 'JOSE' }, baseClaims()) },
    { title: 'typ absent', token: () => forge(without(H, 'typ'), baseClaims()) },
    { title: 'aud as a string', token: () => forge(H, { ...baseClaims(), aud: 'svc' }) },
    { title: 'any expected audience matches', token: () => forge(H, { ...baseClaims(), aud: ['b'] }), opts: { audience: ['a', 'b'] } },
    { title: 'expired but within leeway', token: () => forge(H, { ...baseClaims(), exp: NOW_S - 20 }) },
    { title: 'exp exactly now', token: () => forge(H, { ...baseClaims(), exp: NOW_S }), opts: { leewaySeconds: 0 } },
    { title: 'iat within leeway in the future', token: () => forge(H, { ...baseClaims(), iat: NOW_S + 20 }) },
    { title: 'nbf within leeway in the future', token: () => forge(H, { ...baseClaims(), nbf: NOW_S + 20 }) },
    { title: 'nbf in the past', token: () => forge(H, { ...baseClaims(), nbf: NOW_S - 100 }) },
    { title: 'no iat', token: () => forge(H, without(baseClaims(), 'iat')) },
    { title: 'fractional exp', token: () => forge(H, { ...baseClaims(), exp: NOW_S + 0.5 }) },
    { title: 'extra private claims', token: () => forge(H, { ...baseClaims(), iss: 'https://issuer', scope: ['a'] }) },
    { title: 'PS256 with an RSA key', token: () => forge({ ...H, alg: 'PS256', kid: 'k-rsa' }, baseClaims(), { key: keys.rsa.privateKey, alg: 'PS256' }) },
  ]
  it.each(accepting)('accepts: $title', async ({ token, opts }) => {
    const svid = await validate(token(), opts)
    expect(svid.id.toString()).toBe(ID.toString())
  })

  const hmacKey = keys.es256.publicKey.export({ format: 'der', type: 'spki' })
  const rejecting: { title: string; code: ErrorCode; token: () => string; opts?: { audience?: string | string[]; leewaySeconds?: number } }[] = [
    { title: 'alg none, empty signature', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, alg: 'none' }, baseClaims(), 'none') },
    { title: 'alg none with a signature', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, alg: 'none' }, baseClaims()) },
    { title: 'HS256 whose kid resolves', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, alg: 'HS256' }, baseClaims(), { hmac: hmacKey }) },
    { title: 'EdDSA', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, alg: 'EdDSA' }, baseClaims(), { key: keys.ed25519.privateKey, alg: 'EdDSA' }) },
    { title: 'lower-case alg', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, alg: 'es256' }, baseClaims()) },
    { title: 'missing alg', code: 'ERR_JWT_SVID_INVALID', token: () => forge(without(H, 'alg'), baseClaims()) },
    { title: 'no kid', code: 'ERR_JWT_SVID_INVALID', token: () => forge(without(H, 'kid'), baseClaims()) },
    { title: 'empty kid', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, kid: '' }, baseClaims()) },
    { title: 'non-string kid', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, kid: 7 }, baseClaims()) },
    { title: 'unknown kid', code: 'ERR_JWT_SVID_UNTRUSTED', token: () => forge({ ...H, kid: 'nope' }, baseClaims()) },
    {
      title: "kid from another trust domain's bundle",
      code: 'ERR_JWT_SVID_UNTRUSTED',
      token: () => forge({ ...H, kid: 'k-other' }, baseClaims(), { key: keys.other.privateKey, alg: 'ES256' }),
    },
    {
      title: 'alg does not fit the key curve',
      code: 'ERR_JWT_SVID_UNTRUSTED',
      token: () => forge({ ...H, alg: 'ES384' }, baseClaims(), { key: keys.es384.privateKey, alg: 'ES384' }),
    },
    {
      title: 'RS256 naming an EC key',
      code: 'ERR_JWT_SVID_UNTRUSTED',
      token: () => forge({ ...H, alg: 'RS256' }, baseClaims(), { key: keys.rsa.privateKey, alg: 'RS256' }),
    },
    { title: 'signed by another key', code: 'ERR_JWT_SVID_UNTRUSTED', token: () => forge(H, baseClaims(), { key: keys.other.privateKey, alg: 'ES256' }) },
    {
      title: 'tampered payload',
      code: 'ERR_JWT_SVID_UNTRUSTED',
      token: () => {
        const [h, , s] = forge(H, baseClaims()).split('.')
        return `${h}.${b64({ ...baseClaims(), sub: 'spiffe://example.org/admin' })}.${s}`
      },
    },
    {
      title: 'signature of the wrong length',
      code: 'ERR_JWT_SVID_UNTRUSTED',
      token: () => `${forge(H, baseClaims())}AAAA`,
    },
    { title: 'wrong audience', code: 'ERR_JWT_AUDIENCE_MISMATCH', token: () => forge(H, { ...baseClaims(), aud: ['other'] }) },
    { title: 'audience is a prefix only', code: 'ERR_JWT_AUDIENCE_MISMATCH', token: () => forge(H, { ...baseClaims(), aud: 'svc-2' }) },
    { title: 'missing aud', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, without(baseClaims(), 'aud')) },
    { title: 'empty aud array', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), aud: [] }) },
    { title: 'non-string aud element', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), aud: ['svc', 1] }) },
    { title: 'missing exp', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, without(baseClaims(), 'exp')) },
    { title: 'string exp', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), exp: String(NOW_S + 300) }) },
    { title: 'exp beyond Date range', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), exp: 1e300 }) },
    { title: 'expired beyond leeway', code: 'ERR_JWT_SVID_EXPIRED', token: () => forge(H, { ...baseClaims(), exp: NOW_S - 31 }) },
    {
      title: 'expired within leeway, leeway 0',
      code: 'ERR_JWT_SVID_EXPIRED',
      token: () => forge(H, { ...baseClaims(), exp: NOW_S - 20 }),
      opts: { leewaySeconds: 0 },
    },
    { title: 'nbf in the future', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), nbf: NOW_S + 31 }) },
    { title: 'iat in the future', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), iat: NOW_S + 31 }) },
    { title: 'missing sub', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, without(baseClaims(), 'sub')) },
    { title: 'sub not a SPIFFE ID', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), sub: 'https://example.org/bot' }) },
    { title: 'sub with upper-case trust domain', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), sub: 'spiffe://Example.org/bot' }) },
    { title: 'sub not a string', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), sub: 42 }) },
    {
      title: 'sub in a trust domain without a bundle',
      code: 'ERR_JWT_SVID_UNTRUSTED',
      token: () => forge(H, { ...baseClaims(), sub: 'spiffe://unknown.org/bot' }),
    },
    { title: 'iss not a string', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), iss: 1 }) },
    { title: "typ 'foo'", code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, typ: 'foo' }, baseClaims()) },
    { title: 'crit header', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, crit: ['exp'] }, baseClaims()) },
    { title: 'jku header', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, jku: 'https://evil.example/jwks' }, baseClaims()) },
    { title: 'unknown header member', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, foo: 1 }, baseClaims()) },
    { title: 'b64 header', code: 'ERR_JWT_SVID_INVALID', token: () => forge({ ...H, b64: false }, baseClaims()) },
    { title: 'two parts', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, baseClaims()).split('.').slice(0, 2).join('.') },
    { title: 'four parts', code: 'ERR_JWT_SVID_INVALID', token: () => `${forge(H, baseClaims())}.AAAA` },
    { title: 'JWE-like five parts', code: 'ERR_JWT_SVID_INVALID', token: () => `${forge(H, baseClaims())}.AAAA.AAAA` },
    { title: 'empty token', code: 'ERR_JWT_SVID_INVALID', token: () => '' },
    { title: 'padding in a segment', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, baseClaims()).replace('.', '=.') },
    { title: 'header not JSON', code: 'ERR_JWT_SVID_INVALID', token: () => `${b64('not json')}.${b64(baseClaims())}.AAAA` },
    { title: 'header a JSON array', code: 'ERR_JWT_SVID_INVALID', token: () => `${b64([1])}.${b64(baseClaims())}.AAAA` },
    { title: 'payload not UTF-8', code: 'ERR_JWT_SVID_INVALID', token: () => `${b64(H)}.${Buffer.from([0xff, 0xfe, 0x7b]).toString('base64url')}.AAAA` },
    { title: 'oversized token', code: 'ERR_JWT_SVID_INVALID', token: () => forge(H, { ...baseClaims(), pad: 'x'.repeat(70_000) }) },
  ]
  it.each(rejecting)('rejects: $title', async ({ code, token, opts }) => {
    const t = token()
    const err = await rejection(validate(t, opts))
    expect(err.code).toBe(code)
    if (t.length > 0) {
      expect(err.message).not.toContain(t)
      for (const part of t.split('.')) if (part.length > 8) expect(err.message).not.toContain(part)
    }
  })

  it('wraps ERR_BUNDLE_NOT_FOUND as the cause', async () => {
    const err = await rejection(validate(forge(H, { ...baseClaims(), sub: 'spiffe://unknown.org/bot' })))
    expect(err.code).toBe('ERR_JWT_SVID_UNTRUSTED')
    expect((err.cause as IdentityError).code).toBe('ERR_BUNDLE_NOT_FOUND')
  })

  it('checks the signature before time and audience', async () => {
    const token = forge(H, { ...baseClaims(), aud: 'other', exp: NOW_S - 1000 }, { key: keys.other.privateKey, alg: 'ES256' })
    expect((await rejection(validate(token))).code).toBe('ERR_JWT_SVID_UNTRUSTED')
  })

  it('memoised header and subject do not carry over between tokens', async () => {
    const good = forge(H, baseClaims())
    await validate(good)
    await validate(good)
    // same header segment, same sub, but a forged payload and a bad sub in turn
    const [h, , s] = good.split('.')
    expect((await rejection(validate(`${h}.${b64({ ...baseClaims(), exp: NOW_S + 9999 })}.${s}`))).code).toBe('ERR_JWT_SVID_UNTRUSTED')
    expect((await rejection(validate(forge(H, { ...baseClaims(), sub: `${ID.toString()}/` })))).code).toBe('ERR_JWT_SVID_INVALID')
    // a rejected header is never remembered as valid
    const badHeader = forge({ ...H, typ: 'foo' }, baseClaims())
    for (let i = 0; i < 2; i++) expect((await rejection(validate(badHeader))).code).toBe('ERR_JWT_SVID_INVALID')
  })

  it('programming errors throw TypeError / RangeError', async () => {
    const t = forge(H, baseClaims())
    await expect(validateJwtSvid(t, bundles, { audience: [] })).rejects.toBeInstanceOf(TypeError)
    await expect(validateJwtSvid(t, bundles, { audience: '' })).rejects.toBeInstanceOf(TypeError)
    await expect(validateJwtSvid(t, bundles, { audience: 'svc', leewaySeconds: -1 })).rejects.toBeInstanceOf(RangeError)
    await expect(validateJwtSvid(t, bundles, { audience: 'svc', now: new Date(Number.NaN) })).rejects.toBeInstanceOf(TypeError)
    await expect(validateJwtSvid(42 as unknown as string, bundles, { audience: 'svc' })).rejects.toBeInstanceOf(TypeError)
  })

  it('carries the hint and never prints the token', async () => {
    const t = forge(H, baseClaims())
    const svid = await validateJwtSvid(t, bundles, { audience: 'svc', now: NOW, hint: 'external' })
    expect(svid.hint).toBe('external')
    expect(String(svid)).toBe(`JwtSvid(${ID.toString()}, kid=k-es256)`)
    expect(JSON.stringify(svid)).not.toContain(t.split('.')[2])
    expect(JSON.parse(JSON.stringify(svid))).toMatchObject({ id: ID.toString(), kid: 'k-es256', audience: ['svc'], hint: 'external' })
    expect(inspect(svid, { showHidden: true, depth: 5 })).not.toContain(t.split('.')[2])
    expect(inspect({ nested: svid })).not.toContain(t.split('.')[2])
  })
})

describe('validateJwtSvid: jose interop', () => {
  it('a token we mint verifies with plain jose.jwtVerify', async () => {
    const token = await mintJwtSvid({
      spiffeId: ID,
      audience: ['svc'],
      expiresAt: new Date(NOW.getTime() + 300_000),
      issuedAt: NOW,
      signer: keys.es256,
      kid: 'k-es256',
    })
    const { payload, protectedHeader } = await jose.jwtVerify(token, keys.es256.publicKey, { audience: 'svc', currentDate: NOW, algorithms: ['ES256'] })
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: 'k-es256', typ: 'JWT' })
    expect(payload).toMatchObject({ sub: ID.toString(), aud: 'svc', exp: NOW_S + 300, iat: NOW_S })
  })

  it.each([
    { alg: 'ES256', key: keys.es256, kid: 'k-es256' },
    { alg: 'RS256', key: keys.rsa, kid: 'k-rsa' },
    { alg: 'PS512', key: keys.rsa, kid: 'k-rsa' },
  ])('a $alg token signed by jose.SignJWT validates with ours', async ({ alg, key, kid }) => {
    const token = await new jose.SignJWT({})
      .setProtectedHeader({ alg, kid, typ: 'JWT' })
      .setSubject(ID.toString())
      .setAudience(['svc', 'x'])
      .setIssuedAt(NOW_S)
      .setExpirationTime(NOW_S + 60)
      .sign(key.privateKey)
    const svid = await validate(token)
    expect(svid.audience).toEqual(['svc', 'x'])
    expect(svid.expiry.getTime()).toBe((NOW_S + 60) * 1000)
  })
})
