import type { JsonWebKey } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeJwk } from './test-certs.js'
import { thrown } from '../../../helpers/thrown.js'

/* The reason a JWT bundle is refused (logged by the agent and the federation refresher), and what it keeps. */

const td = TrustDomain.fromString('domain.test')
const ec = makeJwk('ec-p256')
const jwks = (...keys: unknown[]) => JSON.stringify({ keys })

describe('JwtBundle.parseJwks: the reason for each refusal', () => {
  it.each([
    ['{', 'JWKS is not valid JSON'],
    ['[]', 'JWKS must be a JSON object'],
    ['{"keys":"x"}', 'JWKS "keys" must be an array'],
    ['{"keys":[{"kid":"a"},1]}', 'JWKS key 0 has no "kty"'],
    [jwks({ kid: 'a', ...ec.pub }, 1), 'JWKS key 1 must be an object'],
    [jwks({ use: 5, kid: 'a', ...ec.pub }), 'JWKS key 0 has a non-string "use"'],
    [jwks({ ...ec.pub }), 'JWKS key 0 has no "kid"'],
    [jwks({ kid: '', ...ec.pub }), 'JWKS key 0 has no "kid"'],
    [jwks({ kid: 5, ...ec.pub }), 'JWKS key 0 has no "kid"'],
    [jwks({ kid: 'a', ...ec.pub }, { kid: 'a', ...ec.pub }), 'JWKS key 1 repeats key id "a"'],
  ])('case %#: %s', (doc, message) => {
    const err = thrown(() => JwtBundle.parseJwks(td, doc))
    expect([err.code, err.message]).toEqual(['ERR_BUNDLE_INVALID', message])
  })

  it('names the document in size and encoding errors', () => {
    expect(thrown(() => JwtBundle.parseJwks(td, new Uint8Array([0xc3, 0x28]))).message).toBe('JWKS is not valid UTF-8')
  })
})

describe('new JwtBundle: what the constructor refuses and keeps', () => {
  it.each([
    [[['', ec.pub]], 'JWT authority has an empty key id'],
    [[[7, ec.pub]], 'JWT authority has an empty key id'],
    [[['a', null]], 'JWT authority is not a JWK object'],
    [[['a', 'jwk']], 'JWT authority is not a JWK object'],
  ])('case %#: %s', (entries, message) => {
    const err = thrown(() => new JwtBundle(td, entries as unknown as Array<[string, JsonWebKey]>))
    expect([err.code, err.message]).toEqual(['ERR_BUNDLE_INVALID', message])
  })

  it('drops private members and imports each key once', () => {
    const b = new JwtBundle(td, [['a', ec.priv]])
    expect(b.keys.get('a')).not.toHaveProperty('d')
    expect(b.isEmpty()).toBe(false)
    const key = b.findKey('a')
    expect(key?.type).toBe('public')
    expect(b.findKey('a')).toBe(key)
  })

  it('a key that cannot be imported fails at lookup, with the cause kept', () => {
    const b = new JwtBundle(td, [['bad', { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }]])
    const err = thrown(() => b.findKey('bad'))
    expect([err.code, err.message]).toEqual(['ERR_BUNDLE_INVALID', 'JWT authority "bad" cannot be imported'])
    expect(err.cause).toBeInstanceOf(Error)
  })

  it('the source refusal names the trust domain asked for', () => {
    const err = thrown(() => new JwtBundle(td, []).getJwtBundleForTrustDomain(TrustDomain.fromString('other.test')))
    expect([err.code, err.message]).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no JWT bundle for trust domain "other.test"'])
  })
})
