import { inspect } from 'node:util'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { JwtSvid, validateJwtSvid } from '../../../../src/spiffe/jwt-svid/index.js'
import { b64, baseClaims, bundles, forge, ID, NOW, NOW_S } from './fixtures.js'

const H = { alg: 'ES256', kid: 'k-es256', typ: 'JWT' }

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError)
    return (err as IdentityError).code
  }
  return undefined
}

describe('JwtSvid.parseInsecure', () => {
  it('parses without checking the signature', () => {
    const [h, p] = forge(H, baseClaims()).split('.')
    const svid = JwtSvid.parseInsecure(`${h}.${p}.AAAA`, 'svc')
    expect(svid.id.equals(ID)).toBe(true)
    expect(svid.audience).toEqual(['svc'])
    expect(svid.expiry.getTime()).toBe((NOW_S + 300) * 1000)
    expect(svid.issuedAt?.getTime()).toBe(NOW.getTime())
  })

  it('accepts a token without kid (kid is then empty)', () => {
    const { kid: _k, ...noKid } = H
    expect(JwtSvid.parseInsecure(forge(noKid, baseClaims())).kid).toBe('')
  })

  it('does not check times unless `now` is given', () => {
    const t = forge(H, { ...baseClaims(), exp: NOW_S - 3600 })
    expect(JwtSvid.parseInsecure(t).id.equals(ID)).toBe(true)
    expect(code(() => JwtSvid.parseInsecure(t, undefined, { now: NOW }))).toBe('ERR_JWT_SVID_EXPIRED')
  })

  const rejecting: { title: string; token: () => string; audience?: string; code: string }[] = [
    { title: 'alg none', token: () => forge({ ...H, alg: 'none' }, baseClaims(), 'none'), code: 'ERR_JWT_SVID_INVALID' },
    { title: 'HS256', token: () => forge({ ...H, alg: 'HS256' }, baseClaims(), { hmac: new Uint8Array(32) }), code: 'ERR_JWT_SVID_INVALID' },
    { title: 'missing exp', token: () => forge(H, { sub: ID.toString(), aud: 'svc' }), code: 'ERR_JWT_SVID_INVALID' },
    { title: 'bad sub', token: () => forge(H, { ...baseClaims(), sub: 'spiffe://ex ample/x' }), code: 'ERR_JWT_SVID_INVALID' },
    { title: 'wrong audience', token: () => forge(H, baseClaims()), audience: 'other', code: 'ERR_JWT_AUDIENCE_MISMATCH' },
    { title: 'two parts', token: () => `${b64(H)}.${b64(baseClaims())}`, code: 'ERR_JWT_SVID_INVALID' },
  ]
  it.each(rejecting)('rejects $title', ({ token, audience, code: expected }) => {
    expect(code(() => JwtSvid.parseInsecure(token(), audience))).toBe(expected)
  })

  it('never prints the token', () => {
    const t = forge(H, baseClaims())
    const svid = JwtSvid.parseInsecure(t, 'svc', { hint: 'h1' })
    const sig = t.split('.')[2] ?? ''
    expect(svid.toString()).toBe(`JwtSvid(${ID.toString()}, kid=k-es256)`)
    expect(JSON.stringify({ svid })).not.toContain(sig)
    expect(inspect(svid)).not.toContain(sig)
    expect(`${svid}`).not.toContain(sig)
    expect(svid.token).toBe(t)
    expect(svid.marshal()).toBe(t)
    const hinted = svid.withHint('h2')
    expect([svid.hint, hinted.hint, hinted.token]).toEqual(['h1', 'h2', t])
  })
})

describe('JwtSvid fuzzing', () => {
  it('random strings only ever fail with IdentityError', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.string({ unit: 'binary' }), fc.stringMatching(/^[A-Za-z0-9_.-]{0,200}$/)), async (s) => {
        expect(code(() => JwtSvid.parseInsecure(s, 'svc'))).toBeDefined()
        await expect(validateJwtSvid(s, bundles, { audience: 'svc', now: NOW })).rejects.toBeInstanceOf(IdentityError)
      }),
      { numRuns: 300 },
    )
  })

  it('random headers and payloads only ever fail with IdentityError', async () => {
    const claim = fc.oneof(fc.constant(undefined), fc.jsonValue(), fc.constant(ID.toString()), fc.integer())
    const header = fc.record(
      { alg: fc.oneof(fc.constantFrom('ES256', 'RS256', 'none', 'HS256'), fc.jsonValue()), kid: fc.oneof(fc.constant('k-es256'), fc.jsonValue()), typ: claim },
      { requiredKeys: [] },
    )
    const payload = fc.record(
      { sub: claim, aud: fc.oneof(fc.constant('svc'), fc.jsonValue()), exp: claim, iat: claim, nbf: claim, iss: claim },
      { requiredKeys: [] },
    )
    await fc.assert(
      fc.asyncProperty(header, payload, fc.stringMatching(/^[A-Za-z0-9_-]{0,100}$/), async (h, p, sig) => {
        const t = `${b64(h)}.${b64(p)}.${sig}`
        // every outcome is either a parsed SVID or an IdentityError, never a TypeError or crash
        try {
          JwtSvid.parseInsecure(t, 'svc')
        } catch (err) {
          expect(err).toBeInstanceOf(IdentityError)
        }
        await expect(validateJwtSvid(t, bundles, { audience: 'svc', now: NOW })).rejects.toBeInstanceOf(IdentityError)
      }),
      { numRuns: 300 },
    )
  })
})
