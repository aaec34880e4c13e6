import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeJwk } from './test-certs.js'

/*
 * JwtBundle.parseJwks refusals inside the per-key callback, by code and exact
 * message. jwt-bundle-reasons.test.ts asserts the same messages, but its
 * `it.each` titles print the JSON document, and the mutation run never ran
 * those cases against mutants; these titles are plain.
 */

function refusal(fn: () => unknown): [string, string] {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return [err.code, err.message]
    throw err
  }
  throw new Error('expected an IdentityError, nothing was thrown')
}

const td = TrustDomain.fromString('domain.test')
const ec = makeJwk('ec-p256')
const ec2 = makeJwk('ec-p256')
const jwks = (...keys: unknown[]) => JSON.stringify({ keys })

describe('JwtBundle.parseJwks key refusals', () => {
  it.each([
    [jwks({ kid: 'a', ...ec.pub }, 1), 'JWKS key 1 must be an object'],
    [jwks({ kid: 'a', ...ec.pub }, null), 'JWKS key 1 must be an object'],
    [jwks({ kid: 'a', ...ec.pub }, [ec.pub]), 'JWKS key 1 must be an object'],
    [jwks({ kid: 'a', ...ec.pub }, { kid: 'b' }), 'JWKS key 1 has no "kty"'],
    [jwks({ kid: 'a', ...ec.pub }, { use: 5, kid: 'b', ...ec2.pub }), 'JWKS key 1 has a non-string "use"'],
    [jwks({ kid: 'a', ...ec.pub }, { use: null, kty: 'XYZ' }), 'JWKS key 1 has a non-string "use"'],
    [jwks({ kid: 'a', ...ec.pub }, { ...ec2.pub }), 'JWKS key 1 has no "kid"'],
    [jwks({ kid: 'a', ...ec.pub }, { kid: '', ...ec2.pub }), 'JWKS key 1 has no "kid"'],
    [jwks({ kid: 'a', ...ec.pub }, { kid: 5, ...ec2.pub }), 'JWKS key 1 has no "kid"'],
    [jwks({ kid: 'a', ...ec.pub }, { use: 'sig', ...ec2.pub }), 'JWKS key 1 has no "kid"'],
    [jwks({ kid: 'a', ...ec.pub }, { use: 'jwt-svid', kid: '', ...ec2.pub }), 'JWKS key 1 has no "kid"'],
    [jwks({ kid: 'a', ...ec.pub }, { kid: 'a', ...ec2.pub }), 'JWKS key 1 repeats key id "a"'],
    [jwks({ kid: 'a', ...ec.pub }, { kid: 'b', ...ec2.priv }), 'JWKS key 1 contains private or secret key material'],
  ])('refusal case %#', (doc, message) => {
    expect(refusal(() => JwtBundle.parseJwks(td, doc))).toEqual(['ERR_BUNDLE_INVALID', message])
  })

  it('keys of another use or unknown type are skipped before their kid is read', () => {
    const b = JwtBundle.parseJwks(
      td,
      jwks({ use: 'x509-svid', ...ec2.pub }, { kty: 'XYZ' }, { kid: 'a', use: 'sig', ...ec.pub }, { kid: 'b', use: 'jwt-svid', ...ec2.pub }),
    )
    expect([...b.keys.keys()]).toEqual(['a', 'b'])
  })
})
