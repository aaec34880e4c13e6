import { generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import type { JwtBundleSource } from '../../../../src/spiffe/bundle/sources.js'
import { JwtSvid, validateJwtSvid } from '../../../../src/spiffe/jwt-svid/index.js'
import { algorithmsForKey, defaultAlgorithmForKey, MAX_JWT_SVID_LENGTH } from '../../../../src/spiffe/jwt-svid/parse.js'
import { b64, baseClaims, bundles, forge, ID, keys, NOW, NOW_S, TD } from './fixtures.js'
import { thrown } from '../../../helpers/thrown.js'

/*
 * A refused JWT-SVID is logged with its reason (never the token); the caller
 * gets only the code. These tests pin each reason, so that a check which
 * another, later check happens to back up (jose's own parsing, the SPIFFE ID
 * parser) is still proven to be the one that refuses.
 */

const H = { alg: 'ES256', kid: 'k-es256', typ: 'JWT' }
const without = (o: Record<string, unknown>, k: string): Record<string, unknown> => {
  const c = { ...o }
  delete c[k]
  return c
}

async function rejected(p: Promise<unknown>): Promise<IdentityError> {
  try {
    await p
  } catch (err) {
    if (err instanceof IdentityError) return err
    throw err
  }
  throw new Error('expected a rejection')
}

const validate = (token: string, source: JwtBundleSource = bundles, extra: { audience?: string | string[]; leewaySeconds?: number } = {}) =>
  validateJwtSvid(token, source, { audience: 'svc', now: NOW, ...extra })

const headerSeg = b64(H)
const payloadSeg = b64(baseClaims())

describe('JWT-SVID structure: the reason for each refusal (parseInsecure and validateJwtSvid alike)', () => {
  const cases: Array<[title: string, token: () => string, reason: string]> = [
    ['empty token', () => '', 'token is empty'],
    ['no dot', () => 'abcd', 'malformed token: expected the JWS compact serialization (three parts)'],
    ['one dot', () => `${headerSeg}.${payloadSeg}`, 'malformed token: expected the JWS compact serialization (three parts)'],
    ['four parts', () => `${headerSeg}.${payloadSeg}.AAAA.AAAA`, 'malformed token: expected the JWS compact serialization (three parts)'],
    ['one-character header', () => 'a.b.cc', 'malformed token: header is not base64url'],
    ['empty signature', () => `${headerSeg}.${payloadSeg}.`, 'malformed token: signature is not base64url'],
    ['signature with padding', () => `${headerSeg}.${payloadSeg}.AA==`, 'malformed token: signature is not base64url'],
    ['signature of 4n+1 characters', () => `${headerSeg}.${payloadSeg}.AAAAA`, 'malformed token: signature is not base64url'],
    [
      'header of 4n+1 characters',
      () => `${headerSeg}${headerSeg.length % 4 === 0 ? 'A' : 'AAAAA'.slice(0, 5 - (headerSeg.length % 4))}.${payloadSeg}.AAAA`,
      'malformed token: header is not base64url',
    ],
    [
      'payload of 4n+1 characters',
      () => `${headerSeg}.${payloadSeg}${'A'.repeat((5 - (payloadSeg.length % 4)) % 4 || 4)}.AAAA`,
      'malformed token: payload is not base64url',
    ],
    ['header not JSON', () => `${b64('nope')}.${payloadSeg}.AAAA`, 'malformed token: header is not a JSON object'],
    ['header null', () => `${b64('null')}.${payloadSeg}.AAAA`, 'malformed token: header is not a JSON object'],
    ['header a number', () => `${b64('1')}.${payloadSeg}.AAAA`, 'malformed token: header is not a JSON object'],
    ['header an array', () => `${b64('[{"alg":"ES256"}]')}.${payloadSeg}.AAAA`, 'malformed token: header is not a JSON object'],
    [
      'header with invalid UTF-8 inside a string',
      () => `${Buffer.concat([Buffer.from('{"alg":"ES256","kid":"k'), Buffer.from([0xff]), Buffer.from('"}')]).toString('base64url')}.${payloadSeg}.AAAA`,
      'malformed token: header is not a JSON object',
    ],
    ['payload null', () => `${headerSeg}.${b64('null')}.AAAA`, 'malformed token: payload is not a JSON object'],
    ['payload a string', () => `${headerSeg}.${b64('"spiffe://example.org/x"')}.AAAA`, 'malformed token: payload is not a JSON object'],
    ['payload an array', () => `${headerSeg}.${b64([baseClaims()])}.AAAA`, 'malformed token: payload is not a JSON object'],
    ['payload not JSON', () => `${headerSeg}.${b64('{sub')}.AAAA`, 'malformed token: payload is not a JSON object'],
    ['unknown header member', () => forge({ ...H, x5u: 'https://x' }, baseClaims()), 'token header member "x5u" is not allowed'],
    [
      'long header member name (cut to 32)',
      () => forge({ ...H, ['m'.repeat(100)]: 1 }, baseClaims()),
      `token header member "${'m'.repeat(32)}" is not allowed`,
    ],
    ['alg none', () => forge({ ...H, alg: 'none' }, baseClaims()), 'unsupported token signature algorithm "none"'],
    ['long alg (cut to 16)', () => forge({ ...H, alg: 'X'.repeat(40) }, baseClaims()), `unsupported token signature algorithm "${'X'.repeat(16)}"`],
    ['no alg', () => forge(without(H, 'alg'), baseClaims()), 'token header missing alg'],
    ['numeric alg', () => forge({ ...H, alg: 256 }, baseClaims()), 'token header missing alg'],
    ['typ foo', () => forge({ ...H, typ: 'foo' }, baseClaims()), 'token header typ must be "JWT" or "JOSE"'],
    ['numeric kid', () => forge({ ...H, kid: 7 }, baseClaims()), 'token header has an invalid key id'],
    ['empty kid', () => forge({ ...H, kid: '' }, baseClaims()), 'token header has an invalid key id'],
    ['no sub', () => forge(H, without(baseClaims(), 'sub')), 'token missing subject claim'],
    ['empty sub', () => forge(H, { ...baseClaims(), sub: '' }), 'token missing subject claim'],
    ['numeric sub', () => forge(H, { ...baseClaims(), sub: 42 }), 'token has an invalid subject claim'],
    ['sub not a SPIFFE ID', () => forge(H, { ...baseClaims(), sub: 'spiffe://example.org/a/' }), 'token has an invalid subject claim'],
    ['no exp', () => forge(H, without(baseClaims(), 'exp')), 'token missing exp claim'],
    ['string exp', () => forge(H, { ...baseClaims(), exp: String(NOW_S + 300) }), 'token has an invalid exp claim'],
    [
      'exp that overflows to Infinity',
      () => `${headerSeg}.${Buffer.from(`{"sub":"${ID.toString()}","aud":"svc","exp":1e400}`).toString('base64url')}.AAAA`,
      'token has an invalid exp claim',
    ],
    ['exp just past the Date range', () => forge(H, { ...baseClaims(), exp: 8.64e12 + 1 }), 'token has an invalid exp claim'],
    ['string iat', () => forge(H, { ...baseClaims(), iat: 'now' }), 'token has an invalid iat claim'],
    ['negative nbf past the Date range', () => forge(H, { ...baseClaims(), nbf: -8.64e12 - 1 }), 'token has an invalid nbf claim'],
    ['no aud', () => forge(H, without(baseClaims(), 'aud')), 'token missing aud claim'],
    ['empty string aud', () => forge(H, { ...baseClaims(), aud: '' }), 'token has an empty aud claim'],
    ['empty aud list', () => forge(H, { ...baseClaims(), aud: [] }), 'token has an invalid aud claim'],
    ['numeric aud', () => forge(H, { ...baseClaims(), aud: 5 }), 'token has an invalid aud claim'],
    ['aud list with a number', () => forge(H, { ...baseClaims(), aud: ['svc', 5] }), 'token has an invalid aud claim'],
    ['numeric iss', () => forge(H, { ...baseClaims(), iss: 1 }), 'token has an invalid iss claim'],
  ]

  it.each(cases)('%s', async (_title, token, reason) => {
    const t = token()
    const insecure = thrown(() => JwtSvid.parseInsecure(t))
    expect([insecure.code, insecure.message]).toEqual(['ERR_JWT_SVID_INVALID', `jwtsvid: ${reason}`])
    const checked = await rejected(validate(t))
    expect([checked.code, checked.message]).toEqual(['ERR_JWT_SVID_INVALID', `jwtsvid: ${reason}`])
  })

  it('the subject error chains the SPIFFE ID error; a non-string subject has no cause', () => {
    const bad = thrown(() => JwtSvid.parseInsecure(forge(H, { ...baseClaims(), sub: 'spiffe://Example.org/x' })))
    expect((bad.cause as IdentityError).code).toBe('ERR_SPIFFE_ID_INVALID')
    expect(thrown(() => JwtSvid.parseInsecure(forge(H, { ...baseClaims(), sub: 42 }))).cause).toBeUndefined()
    expect(thrown(() => JwtSvid.parseInsecure(forge({ ...H, typ: 'foo' }, baseClaims()))).cause).toBeUndefined()
  })

  it('accepts the last representable date and a token of exactly the maximum length', () => {
    expect(JwtSvid.parseInsecure(forge(H, { ...baseClaims(), exp: 8.64e12 })).expiry.getTime()).toBe(8.64e15)
    expect(JwtSvid.parseInsecure(forge(H, { ...baseClaims(), nbf: -8.64e12 })).id.equals(ID)).toBe(true)
    let pad = Math.floor(((MAX_JWT_SVID_LENGTH - 600) * 3) / 4)
    let t = ''
    for (;;) {
      const base = `${headerSeg}.${b64({ ...baseClaims(), pad: 'x'.repeat(pad) })}.`
      const sig = MAX_JWT_SVID_LENGTH - base.length
      if (sig <= 0) throw new Error('padding overshot')
      if (sig % 4 !== 1) {
        t = base + 'A'.repeat(sig)
        break
      }
      pad++
    }
    expect(t.length).toBe(MAX_JWT_SVID_LENGTH)
    expect(JwtSvid.parseInsecure(t).id.equals(ID)).toBe(true)
    const over = thrown(() => JwtSvid.parseInsecure(`${t}A`))
    expect(over.message).toBe(`jwtsvid: token exceeds ${MAX_JWT_SVID_LENGTH} characters`)
  })

  it('accepts a payload holding a real U+FFFD character', () => {
    const svid = JwtSvid.parseInsecure(forge(H, { ...baseClaims(), note: 'a\uFFFDb' }))
    expect(svid.claims.note).toBe('a\uFFFDb')
  })

  it('refuses a non-string token with a TypeError that says so', () => {
    expect(() => JwtSvid.parseInsecure(42 as unknown as string)).toThrow(new TypeError('JWT-SVID token must be a string'))
  })
})

describe('JWT-SVID times and audience: the reasons', () => {
  it.each([
    [{ exp: NOW_S - 31 }, 'ERR_JWT_SVID_EXPIRED', 'token has expired'],
    [{ nbf: NOW_S + 31 }, 'ERR_JWT_SVID_INVALID', 'token is not valid yet (nbf)'],
    [{ iat: NOW_S + 31 }, 'ERR_JWT_SVID_INVALID', 'token was issued in the future (iat)'],
  ])('%j', async (claims, code, reason) => {
    const err = await rejected(validate(forge(H, { ...baseClaims(), ...claims })))
    expect([err.code, err.message]).toEqual([code, `jwtsvid: ${reason}`])
  })

  it('nbf and iat exactly at now + leeway are accepted', async () => {
    expect((await validate(forge(H, { ...baseClaims(), nbf: NOW_S + 30 }))).id.equals(ID)).toBe(true)
    expect((await validate(forge(H, { ...baseClaims(), iat: NOW_S + 30 }))).id.equals(ID)).toBe(true)
  })

  it('an audience mismatch names the expected audiences, cut to 256 characters', async () => {
    const t = forge(H, { ...baseClaims(), aud: ['other'] })
    const err = await rejected(validate(t, bundles, { audience: ['a', 'b'] }))
    expect([err.code, err.message]).toEqual([
      'ERR_JWT_AUDIENCE_MISMATCH',
      'jwtsvid: token audience does not contain any expected audience (expected ["a","b"])',
    ])
    const long = 'x'.repeat(400)
    const cut = await rejected(validate(t, bundles, { audience: long }))
    expect(cut.message).toBe(`jwtsvid: token audience does not contain any expected audience (expected ${JSON.stringify([long]).slice(0, 256)})`)
  })
})

describe('JWT-SVID options: programming errors', () => {
  const t = forge(H, baseClaims())
  it.each([
    [{ audience: [] as string[] }, new TypeError('expected audience must be a non-empty string or list')],
    [{ audience: [5] as unknown as string[] }, new TypeError('expected audience values must be non-empty strings')],
    [{ audience: ['svc', ''] }, new TypeError('expected audience values must be non-empty strings')],
    [{ audience: 'svc', now: 'now' as unknown as Date }, new TypeError('now must be a valid Date')],
    [{ audience: 'svc', leewaySeconds: Number.NaN }, new RangeError('leewaySeconds must be a finite number >= 0')],
    [{ audience: 'svc', leewaySeconds: Number.POSITIVE_INFINITY }, new RangeError('leewaySeconds must be a finite number >= 0')],
    [{ audience: 'svc', leewaySeconds: '5' as unknown as number }, new RangeError('leewaySeconds must be a finite number >= 0')],
    [{ audience: 'svc', hint: 5 as unknown as string }, new TypeError('hint must be a string')],
  ] as Array<[{ audience: string | string[]; now?: Date; leewaySeconds?: number; hint?: string }, Error]>)('%j', async (opts, error) => {
    await expect(validateJwtSvid(t, bundles, { now: NOW, ...opts })).rejects.toThrow(error)
    if (!('audience' in opts && Array.isArray(opts.audience) && opts.audience.length !== 1)) {
      expect(() =>
        JwtSvid.parseInsecure(t, opts.audience, {
          now: opts.now ?? NOW,
          ...(opts.leewaySeconds === undefined ? {} : { leewaySeconds: opts.leewaySeconds }),
          ...(opts.hint === undefined ? {} : { hint: opts.hint }),
        }),
      ).toThrow(error)
    }
  })

  it('withHint refuses a non-string hint', () => {
    expect(() => JwtSvid.parseInsecure(t).withHint(1 as unknown as string)).toThrow(new TypeError('hint must be a string'))
  })
})

describe('JwtSvid fields and printing', () => {
  it('a token without iat has no issuedAt, and toJSON leaves it and an empty hint out', () => {
    const svid = JwtSvid.parseInsecure(forge(H, without(baseClaims(), 'iat')))
    expect(svid.issuedAt).toBeUndefined()
    expect(svid.hint).toBe('')
    expect(svid.toJSON()).toEqual({ id: ID.toString(), kid: 'k-es256', audience: ['svc'], expiry: new Date((NOW_S + 300) * 1000).toISOString() })
  })

  it('toJSON carries issuedAt and the hint when present; inspect prints toString', () => {
    const svid = JwtSvid.parseInsecure(forge(H, baseClaims()), undefined, { hint: 'h' })
    expect(svid.toJSON()).toEqual({
      id: ID.toString(),
      kid: 'k-es256',
      audience: ['svc'],
      expiry: new Date((NOW_S + 300) * 1000).toISOString(),
      issuedAt: NOW.toISOString(),
      hint: 'h',
    })
    expect(inspect(svid)).toBe(`JwtSvid(${ID.toString()}, kid=k-es256)`)
  })
})

describe('validateJwtSvid: the reasons a key is refused', () => {
  it('a kid of the header that is missing', async () => {
    const err = await rejected(validate(forge(without(H, 'kid'), baseClaims())))
    expect([err.code, err.message]).toEqual(['ERR_JWT_SVID_INVALID', 'jwtsvid: token header missing key id'])
  })

  it('no bundle for the trust domain (cause kept)', async () => {
    const err = await rejected(validate(forge(H, { ...baseClaims(), sub: 'spiffe://unknown.org/x' })))
    expect([err.code, err.message]).toEqual(['ERR_JWT_SVID_UNTRUSTED', 'jwtsvid: no bundle found for trust domain "unknown.org"'])
    expect((err.cause as IdentityError).code).toBe('ERR_BUNDLE_NOT_FOUND')
  })

  it('a bundle key that cannot be imported (cause kept)', async () => {
    const broken = new JwtBundle(TD, new Map<string, JsonWebKey>([['k-es256', { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }]]))
    const err = await rejected(validate(forge(H, baseClaims()), broken))
    expect([err.code, err.message]).toEqual(['ERR_JWT_SVID_UNTRUSTED', 'jwtsvid: key "k-es256" of trust domain "example.org" is unusable'])
    expect((err.cause as IdentityError).code).toBe('ERR_BUNDLE_INVALID')
  })

  it('any other failure of the bundle source is passed through unchanged', async () => {
    const boom = new Error('source down')
    const source: JwtBundleSource = {
      getJwtBundleForTrustDomain() {
        throw boom
      },
    }
    await expect(validate(forge(H, baseClaims()), source)).rejects.toBe(boom)
  })

  it('an unknown kid, named in the reason cut to 64 characters', async () => {
    const kid = 'k'.repeat(100)
    const err = await rejected(validate(forge({ ...H, kid }, baseClaims())))
    expect([err.code, err.message]).toEqual(['ERR_JWT_SVID_UNTRUSTED', `jwtsvid: no key "${'k'.repeat(64)}" found for trust domain "example.org"`])
  })

  it('a key that cannot verify the alg is refused before any signature check', async () => {
    // signed correctly with the P-384 key, but named with the P-256 kid: the curve does not fit ES384
    const err = await rejected(validate(forge({ ...H, alg: 'ES384' }, baseClaims(), { key: keys.es384.privateKey, alg: 'ES384' })))
    expect([err.code, err.message]).toEqual(['ERR_JWT_SVID_UNTRUSTED', 'jwtsvid: key "k-es256" of trust domain "example.org" cannot verify ES384'])
    const rsaOnEc = await rejected(validate(forge({ ...H, alg: 'RS256' }, baseClaims(), { key: keys.rsa.privateKey, alg: 'RS256' })))
    expect(rsaOnEc.message).toBe('jwtsvid: key "k-es256" of trust domain "example.org" cannot verify RS256')
  })

  it('a long kid is cut to 64 characters in the "unusable" and "cannot verify" reasons too', async () => {
    const kid = 'q'.repeat(100)
    const cut = 'q'.repeat(64)
    const broken = new JwtBundle(TD, new Map<string, JsonWebKey>([[kid, { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }]]))
    const unusable = await rejected(validate(forge({ ...H, kid }, baseClaims()), broken))
    expect(unusable.message).toBe(`jwtsvid: key "${cut}" of trust domain "example.org" is unusable`)
    const p384 = new JwtBundle(TD, new Map<string, JsonWebKey>([[kid, keys.es384.publicKey.export({ format: 'jwk' })]]))
    const misfit = await rejected(validate(forge({ ...H, kid }, baseClaims()), p384))
    expect(misfit.message).toBe(`jwtsvid: key "${cut}" of trust domain "example.org" cannot verify ES256`)
  })

  it('a bad signature', async () => {
    const err = await rejected(validate(forge(H, baseClaims(), { key: keys.other.privateKey, alg: 'ES256' })))
    expect([err.code, err.message]).toEqual(['ERR_JWT_SVID_UNTRUSTED', 'jwtsvid: token signature verification failed'])
    expect(err.cause).toBeDefined()
  })
})

describe('algorithmsForKey / defaultAlgorithmForKey', () => {
  const pss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 }).publicKey
  const k256 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey
  it.each([
    ['P-256', keys.es256.publicKey, ['ES256'], 'ES256'],
    ['P-384', keys.es384.publicKey, ['ES384'], 'ES384'],
    ['P-521', keys.es512.publicKey, ['ES512'], 'ES512'],
    ['secp256k1 (no JWS alg of ours)', k256, [], undefined],
    ['RSA', keys.rsa.publicKey, ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'], 'RS256'],
    ['RSA-PSS', pss, ['PS256', 'PS384', 'PS512'], 'PS256'],
    ['Ed25519 (not a JWT-SVID alg)', keys.ed25519.publicKey, [], undefined],
  ])('%s', (_name, key, algs, dflt) => {
    expect([...algorithmsForKey(key)]).toEqual(algs)
    expect([...algorithmsForKey(key)]).toEqual(algs) // cached answer is the same
    expect(defaultAlgorithmForKey(key)).toBe(dflt)
  })
})
