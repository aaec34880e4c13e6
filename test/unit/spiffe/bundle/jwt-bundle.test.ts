import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { MAX_BUNDLE_BYTES } from '../../../../src/spiffe/bundle/encoding.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeJwk } from './test-certs.js'

const td = TrustDomain.fromString('domain.test')

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return err.code
    throw err
  }
  return undefined
}

const ec = makeJwk('ec-p256').pub
const ec384 = makeJwk('ec-p384').pub
const rsa = makeJwk('rsa-2048').pub
const jwks = (...keys: unknown[]) => JSON.stringify({ keys })

describe('JwtBundle.parseJwks (standard JWKS, as FetchJWTBundles sends)', () => {
  it('reads keys without use, as SPIRE sends them', () => {
    const b = JwtBundle.parseJwks(td, jwks({ kid: 'a', ...ec }, { kid: 'b', ...rsa }))
    expect([...b.keys.keys()]).toEqual(['a', 'b'])
    expect(b.keys.get('a')).toEqual({ kty: 'EC', crv: 'P-256', x: ec.x, y: ec.y })
    expect(b.findKey('a')?.asymmetricKeyType).toBe('ec')
    expect(b.findKey('b')?.asymmetricKeyType).toBe('rsa')
    expect(b.findKey('missing')).toBeUndefined()
  })

  it('accepts use "jwt-svid" and "sig"; ignores other uses and unknown kty', () => {
    const b = JwtBundle.parseJwks(
      td,
      jwks(
        { use: 'jwt-svid', kid: 'a', ...ec },
        { use: 'sig', kid: 'b', ...ec384 },
        { use: 'x509-svid', kty: 'EC', x5c: ['AAAA'] },
        { use: 'enc', kid: 'c', ...ec },
        { kty: 'FOO', kid: 'd' },
      ),
    )
    expect([...b.keys.keys()]).toEqual(['a', 'b'])
  })

  it('accepts an empty key set and bytes input', () => {
    expect(JwtBundle.parseJwks(td, '{"keys":[]}').isEmpty()).toBe(true)
    expect(JwtBundle.parseJwks(td, new TextEncoder().encode(jwks({ kid: 'a', ...ec }))).keys.size).toBe(1)
  })

  const bad: Array<[string, () => string | Uint8Array]> = [
    ['malformed JSON', () => '{'],
    ['not an object', () => '[]'],
    ['missing keys', () => '{}'],
    ['keys not an array', () => '{"keys":"x"}'],
    ['key not an object', () => '{"keys":[1]}'],
    ['key without kty', () => jwks({ kid: 'a', crv: 'P-256', x: ec.x, y: ec.y })],
    ['use not a string', () => jwks({ use: true, kid: 'a', ...ec })],
    ['key without kid', () => jwks({ ...ec })],
    ['empty kid', () => jwks({ kid: '', ...ec })],
    ['repeated kid', () => jwks({ kid: 'a', ...ec }, { kid: 'a', ...ec384 })],
    ['private key', () => jwks({ kid: 'a', ...makeJwk().priv })],
    ['symmetric key', () => jwks({ kid: 'a', kty: 'oct', k: 'c2VjcmV0' })],
    ['broken EC point', () => jwks({ kid: 'a', ...ec, y: ec.x })],
    ['RSA key missing e', () => jwks({ kid: 'a', kty: 'RSA', n: rsa.n })],
    ['invalid UTF-8', () => new Uint8Array([0xc3, 0x28])],
    ['over the size cap', () => new Uint8Array(MAX_BUNDLE_BYTES + 1)],
  ]
  it.each(bad)('rejects %s with ERR_BUNDLE_INVALID', (_name, make) => {
    expect(codeOf(() => JwtBundle.parseJwks(td, make()))).toBe('ERR_BUNDLE_INVALID')
  })
})

describe('JwtBundle.toJwks', () => {
  it('writes a standard JWKS with no use member, in SPIRE member order, and round-trips', () => {
    const b = new JwtBundle(td, [
      ['a', ec],
      ['b', rsa],
    ])
    const text = b.toJwks()
    const doc = JSON.parse(text) as { keys: Array<Record<string, unknown>> }
    expect(Object.keys(doc)).toEqual(['keys'])
    expect(doc.keys.map((k) => Object.keys(k))).toEqual([
      ['kty', 'kid', 'crv', 'x', 'y'],
      ['kty', 'kid', 'n', 'e'],
    ])
    expect(doc.keys.some((k) => 'use' in k)).toBe(false)
    const back = JwtBundle.parseJwks(td, text)
    expect([...back.keys]).toEqual([...b.keys])
    expect(back.toJwks()).toBe(text)
  })

  it('an empty bundle is {"keys":[]}', () => {
    expect(new JwtBundle(td, []).toJwks()).toBe('{"keys":[]}')
  })
})

describe('JwtBundle as a source', () => {
  it('answers for its own trust domain only', () => {
    const b = new JwtBundle(td, [['a', ec]])
    expect(b.getJwtBundleForTrustDomain(td)).toBe(b)
    expect(codeOf(() => b.getJwtBundleForTrustDomain(TrustDomain.fromString('other.test')))).toBe('ERR_BUNDLE_NOT_FOUND')
  })
})
