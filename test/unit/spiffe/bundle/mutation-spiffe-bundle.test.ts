import type { JsonWebKey } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { SpiffeBundle, type SpiffeBundleInit } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeCaCert, makeJwk } from './test-certs.js'
import { refusal } from '../../../helpers/thrown.js'

/*
 * SpiffeBundle (src/spiffe/bundle/spiffe-bundle.ts): each refusal of parse()
 * and from() by code and exact message, the sequence and hint checks at 0
 * and around it, equality, emptiness. Plain test titles (the mutation run
 * selects tests by title; a title holding JSON is never run against mutants).
 */

const td = TrustDomain.fromString('domain.test')
const other = TrustDomain.fromString('other.test')
const INVALID = 'ERR_BUNDLE_INVALID'
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const b64 = (der: Uint8Array) => Buffer.from(der).toString('base64')
const doc = (keys: unknown[], extra: Record<string, unknown> = {}) => JSON.stringify({ keys, ...extra })
const ec = makeJwk('ec-p256')
const ec2 = makeJwk('ec-p256')
const notACert = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])

let ca: Uint8Array
let ca2: Uint8Array
beforeAll(async () => {
  ;[ca, ca2] = await Promise.all([makeCaCert('ec-p256'), makeCaCert('ec-p256')])
})

const x509Key = (x5c: unknown = [b64(ca)], more: Record<string, unknown> = {}) => ({ use: 'x509-svid', kty: 'EC', x5c, ...more })
const jwtKey = (kid: unknown, jwk: JsonWebKey = ec.pub) => ({ use: 'jwt-svid', kid, ...jwk })

describe('SpiffeBundle.parse: the document', () => {
  it.each([
    ['{', 'SPIFFE bundle is not valid JSON'],
    ['"keys"', 'SPIFFE bundle must be a JSON object'],
    ['{}', 'SPIFFE bundle has no "keys" member'],
    ['{"keys":null}', 'SPIFFE bundle "keys" must be an array'],
    ['{"keys":{}}', 'SPIFFE bundle "keys" must be an array'],
    ['{"keys":[],"spiffe_sequence":"1"}', 'SPIFFE bundle "spiffe_sequence" must be a non-negative integer (at most 2^53-1)'],
    ['{"keys":[],"spiffe_sequence":-1}', 'SPIFFE bundle "spiffe_sequence" must be a non-negative integer (at most 2^53-1)'],
    ['{"keys":[],"spiffe_sequence":1.5}', 'SPIFFE bundle "spiffe_sequence" must be a non-negative integer (at most 2^53-1)'],
    ['{"keys":[],"spiffe_sequence":9007199254740992}', 'SPIFFE bundle "spiffe_sequence" must be a non-negative integer (at most 2^53-1)'],
    ['{"keys":[],"spiffe_sequence":null}', 'SPIFFE bundle "spiffe_sequence" must be a non-negative integer (at most 2^53-1)'],
    ['{"keys":[],"spiffe_refresh_hint":"60"}', 'SPIFFE bundle "spiffe_refresh_hint" must be a non-negative integer (at most 2^53-1)'],
    ['{"keys":[],"spiffe_refresh_hint":-1}', 'SPIFFE bundle "spiffe_refresh_hint" must be a non-negative integer (at most 2^53-1)'],
  ])('document refusal case %#', (text, message) => {
    expect(refusal(() => SpiffeBundle.parse(td, text))).toEqual([INVALID, message])
  })

  it('bytes that are not UTF-8', () => {
    expect(refusal(() => SpiffeBundle.parse(td, new Uint8Array([0xc3, 0x28])))).toEqual([INVALID, 'SPIFFE bundle is not valid UTF-8'])
  })

  it('a trust domain that is not a TrustDomain is a TypeError', () => {
    expect(() => SpiffeBundle.parse('domain.test' as unknown as TrustDomain, '{"keys":[]}')).toThrow(new TypeError('trustDomain must be a TrustDomain'))
  })

  it('sequence and hint at 0 and at 2^53-1 are read', () => {
    const zero = SpiffeBundle.parse(td, '{"keys":[],"spiffe_sequence":0,"spiffe_refresh_hint":0}')
    expect([zero.sequenceNumber, zero.refreshHintSeconds]).toEqual([0, 0])
    const max = SpiffeBundle.parse(td, '{"keys":[],"spiffe_sequence":9007199254740991,"spiffe_refresh_hint":9007199254740991}')
    expect([max.sequenceNumber, max.refreshHintSeconds]).toEqual([Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER])
    const none = SpiffeBundle.parse(td, '{"keys":[]}')
    expect([none.sequenceNumber, none.refreshHintSeconds]).toEqual([undefined, undefined])
  })
})

describe('SpiffeBundle.parse: each key', () => {
  const cases: Array<[() => unknown[], string]> = [
    [() => [x509Key(), 5], 'SPIFFE bundle key 1 must be an object'],
    [() => [x509Key(), [1]], 'SPIFFE bundle key 1 must be an object'],
    [() => [x509Key(), { use: 'x509-svid' }], 'SPIFFE bundle key 1 has no "kty"'],
    [() => [x509Key(), { use: 'x509-svid', kty: '' }], 'SPIFFE bundle key 1 has no "kty"'],
    [() => [x509Key(), { use: 'x509-svid', kty: 1 }], 'SPIFFE bundle key 1 has no "kty"'],
    [() => [x509Key(), { use: 5, kty: 'EC' }], 'SPIFFE bundle key 1 has a non-string "use"'],
    [() => [x509Key(), { use: null, kty: 'XYZ' }], 'SPIFFE bundle key 1 has a non-string "use"'],
    [() => [x509Key(), x509Key('abc')], 'SPIFFE bundle key 1 "x5c" must be an array'],
    [() => [x509Key(), x509Key({ 0: b64(ca) })], 'SPIFFE bundle key 1 "x5c" must be an array'],
    [() => [x509Key(), { use: 'x509-svid', kty: 'EC' }], 'SPIFFE bundle key 1 must hold exactly one "x5c" certificate, got 0'],
    [() => [x509Key(), x509Key([])], 'SPIFFE bundle key 1 must hold exactly one "x5c" certificate, got 0'],
    [() => [x509Key(), x509Key([b64(ca), b64(ca2)])], 'SPIFFE bundle key 1 must hold exactly one "x5c" certificate, got 2'],
    [() => [x509Key(), x509Key([5])], 'SPIFFE bundle key 1 "x5c" must hold base64 strings'],
    [() => [x509Key(), x509Key([null])], 'SPIFFE bundle key 1 "x5c" must hold base64 strings'],
    [() => [x509Key(), x509Key(['not base64!'])], 'SPIFFE bundle key 1 "x5c" certificate is not valid base64'],
    [() => [x509Key(), x509Key(['A' + b64(ca)])], 'SPIFFE bundle key 1 "x5c" certificate is not valid base64'],
    [() => [x509Key(), x509Key([b64(notACert)])], 'SPIFFE bundle key 1 certificate cannot be parsed'],
    [() => [x509Key(), x509Key([''])], 'SPIFFE bundle key 1 certificate is not a DER certificate'],
    [() => [jwtKey('a'), jwtKey(undefined)], 'SPIFFE bundle key 1 has no "kid"'],
    [() => [jwtKey('a'), jwtKey('')], 'SPIFFE bundle key 1 has no "kid"'],
    [() => [jwtKey('a'), jwtKey(7)], 'SPIFFE bundle key 1 has no "kid"'],
    [() => [jwtKey('a'), jwtKey('a', ec2.pub)], 'SPIFFE bundle key 1 repeats key id "a"'],
    [() => [jwtKey('a'), jwtKey('b', ec.priv)], 'SPIFFE bundle key 1 contains private or secret key material'],
    [() => [jwtKey('a'), { use: 'jwt-svid', kid: 'b', kty: 'oct' }], 'SPIFFE bundle key 1 is not an asymmetric public key'],
    [() => [jwtKey('a'), { use: 'jwt-svid', kid: 'b', kty: 'EC', crv: 'P-256', x: ec.pub.x }], 'SPIFFE bundle key 1 has no string "y" member'],
  ]
  it.each(cases)('key refusal case %#', (keys, message) => {
    expect(refusal(() => SpiffeBundle.parse(td, doc(keys())))).toEqual([INVALID, message])
  })

  it('keys of unknown type or use are skipped, whatever else they hold', () => {
    const b = SpiffeBundle.parse(
      td,
      doc([
        { use: 'x509-svid', kty: 'XYZ', x5c: 'garbage' },
        { use: 'jwt-svid', kty: 'XYZ' },
        { use: 'wit-svid', kty: 'EC', x5c: 'garbage' },
        { kty: 'EC', x5c: 'garbage' },
        { use: 'sig', kty: 'EC', kid: 5 },
        x509Key(),
        jwtKey('a'),
      ]),
    )
    expect(b.x509Authorities.map(hex)).toEqual([hex(ca)])
    expect([...b.jwtAuthorities.keys()]).toEqual(['a'])
  })

  it('a repeated certificate is kept once, in document order', () => {
    const b = SpiffeBundle.parse(td, doc([x509Key([b64(ca2)]), x509Key(), x509Key([b64(ca2)])]))
    expect(b.x509Authorities.map(hex)).toEqual([ca2, ca].map(hex))
  })

  it('keeps the canonical public JWK of each JWT authority', () => {
    const b = SpiffeBundle.parse(td, doc([jwtKey('a', { ...ec.pub, alg: 'ES256' })]))
    expect(b.jwtAuthorities.get('a')).toStrictEqual({ kty: 'EC', crv: 'P-256', x: ec.pub.x, y: ec.pub.y })
  })
})

describe('SpiffeBundle.from refusals', () => {
  const from = (init: Partial<SpiffeBundleInit>) => () => SpiffeBundle.from({ trustDomain: td, ...init })
  it.each([
    [{ jwtAuthorities: [['', ec.pub]] }, 'JWT authority has an empty key id'],
    [{ jwtAuthorities: [[5, ec.pub]] }, 'JWT authority has an empty key id'],
    [
      {
        jwtAuthorities: [
          ['k', ec.pub],
          ['k', ec2.pub],
        ],
      },
      'JWT authority key id "k" is repeated',
    ],
    [{ jwtAuthorities: [['k', 'jwk']] }, 'JWT authority "k" is not a JWK object'],
    [{ jwtAuthorities: [['k', null]] }, 'JWT authority "k" is not a JWK object'],
    [{ jwtAuthorities: [['k', [1]]] }, 'JWT authority "k" is not a JWK object'],
    [{ jwtAuthorities: [['k', { kty: 'EC', crv: 'P-256', x: ec.pub.x }]] }, 'JWT authority "k" has no string "y" member'],
  ])('from refusal case %#', (init, message) => {
    expect(refusal(from(init as Partial<SpiffeBundleInit>))).toEqual([INVALID, message])
  })

  it('a certificate that does not parse names its position', () => {
    expect(refusal(from({ x509Authorities: [ca, notACert] }))).toEqual([INVALID, 'X.509 authority 1 cannot be parsed'])
    expect(refusal(from({ x509Authorities: [ca, new Uint8Array()] }))).toEqual([INVALID, 'X.509 authority 1 is not a DER certificate'])
  })

  it('type errors name what is wrong', () => {
    expect(() => SpiffeBundle.from({ trustDomain: 'domain.test' as unknown as TrustDomain })).toThrow(new TypeError('trustDomain must be a TrustDomain'))
    expect(from({ x509Authorities: ['abc' as unknown as Uint8Array] })).toThrow(new TypeError('x509Authorities must hold Uint8Array DER certificates'))
  })

  it('sequence number and refresh hint: 0 and up are taken, below 0, fractions and non-numbers are RangeErrors', () => {
    expect(SpiffeBundle.from({ trustDomain: td, sequenceNumber: 0, refreshHintSeconds: 0 }).sequenceNumber).toBe(0)
    for (const bad of [-1, 1.5, Number.NaN, 2 ** 53, '1']) {
      expect(from({ sequenceNumber: bad as number })).toThrow(new RangeError('sequenceNumber must be a non-negative safe integer'))
      expect(from({ refreshHintSeconds: bad as number })).toThrow(new RangeError('refreshHintSeconds must be a non-negative safe integer'))
    }
  })

  it('drops a repeated certificate and copies the bytes', () => {
    const der = new Uint8Array(ca)
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [der, ca2, new Uint8Array(ca)] })
    der[0] = 0
    expect(b.x509Authorities.map(hex)).toEqual([ca, ca2].map(hex))
  })

  it('takes a map of JWT authorities', () => {
    const b = SpiffeBundle.from({ trustDomain: td, jwtAuthorities: new Map([['k', ec.pub]]) })
    expect([...b.jwtAuthorities.keys()]).toEqual(['k'])
  })
})

describe('SpiffeBundle.fromBundles', () => {
  it('an X.509 half alone, and a JWT half alone', () => {
    const x = SpiffeBundle.fromBundles(td, { x509: new X509Bundle(td, [ca]) })
    expect([x.x509Authorities.map(hex), [...x.jwtAuthorities.keys()]]).toEqual([[hex(ca)], []])
    const j = SpiffeBundle.fromBundles(td, { jwt: new JwtBundle(td, [['k', ec.pub]]) })
    expect([j.x509Authorities, [...j.jwtAuthorities.keys()]]).toEqual([[], ['k']])
    const none = SpiffeBundle.fromBundles(td, {})
    expect(none.isEmpty()).toBe(true)
  })

  it('keeps a sequence number and refresh hint', () => {
    const b = SpiffeBundle.fromBundles(td, { x509: new X509Bundle(td, [ca]), sequenceNumber: 3, refreshHintSeconds: 60 })
    expect([b.sequenceNumber, b.refreshHintSeconds]).toEqual([3, 60])
  })

  it('a half of another trust domain is a RangeError naming both', () => {
    expect(() => SpiffeBundle.fromBundles(td, { jwt: new JwtBundle(other, []) })).toThrow(
      new RangeError('bundle for "other.test" cannot join a bundle for "domain.test"'),
    )
    expect(() => SpiffeBundle.fromBundles(td, { x509: new X509Bundle(other, []) })).toThrow(
      new RangeError('bundle for "other.test" cannot join a bundle for "domain.test"'),
    )
  })
})

describe('SpiffeBundle state, output and equality', () => {
  it('isEmpty is true only with neither kind of authority', () => {
    expect(SpiffeBundle.from({ trustDomain: td }).isEmpty()).toBe(true)
    expect(SpiffeBundle.from({ trustDomain: td, x509Authorities: [ca] }).isEmpty()).toBe(false)
    expect(SpiffeBundle.from({ trustDomain: td, jwtAuthorities: [['k', ec.pub]] }).isEmpty()).toBe(false)
    expect(SpiffeBundle.from({ trustDomain: td, x509Authorities: [ca], jwtAuthorities: [['k', ec.pub]] }).isEmpty()).toBe(false)
  })

  it('marshal writes sequence and hint only when set, 0 included', () => {
    expect(SpiffeBundle.from({ trustDomain: td }).marshal()).toBe('{"keys":[]}')
    expect(SpiffeBundle.from({ trustDomain: td, sequenceNumber: 0, refreshHintSeconds: 0 }).marshal()).toBe(
      '{"keys":[],"spiffe_sequence":0,"spiffe_refresh_hint":0}',
    )
    expect(SpiffeBundle.from({ trustDomain: td, refreshHintSeconds: 5 }).marshal()).toBe('{"keys":[],"spiffe_refresh_hint":5}')
  })

  it('marshal writes each key in SPIRE order', () => {
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [ca], jwtAuthorities: [['k', ec.pub]], sequenceNumber: 1 })
    const parsed = JSON.parse(b.marshal()) as { keys: Array<Record<string, unknown>> }
    expect(parsed.keys.map((k) => Object.keys(k))).toEqual([
      ['use', 'kty', 'crv', 'x', 'y', 'x5c'],
      ['use', 'kty', 'kid', 'crv', 'x', 'y'],
    ])
    expect(parsed.keys[1]).toEqual({ use: 'jwt-svid', kty: 'EC', kid: 'k', crv: 'P-256', x: ec.pub.x, y: ec.pub.y })
    expect(parsed.keys[0]!.x5c).toEqual([b64(ca)])
    expect(b.marshal({ indent: 2 })).toContain('\n  "keys": [')
  })

  it('equals: the same content, another instance', () => {
    const make = () => SpiffeBundle.from({ trustDomain: td, x509Authorities: [ca], jwtAuthorities: [['k', ec.pub]], sequenceNumber: 2, refreshHintSeconds: 9 })
    expect(make().equals(make())).toBe(true)
  })

  it('equals: nothing, another trust domain, another sequence, another hint, other authorities', () => {
    const base = {
      trustDomain: td,
      x509Authorities: [ca],
      jwtAuthorities: [['k', ec.pub]] as Array<[string, JsonWebKey]>,
      sequenceNumber: 2,
      refreshHintSeconds: 9,
    }
    const b = SpiffeBundle.from(base)
    expect(b.equals(undefined)).toBe(false)
    expect(b.equals(null)).toBe(false)
    expect(b.equals(SpiffeBundle.from({ ...base, trustDomain: other }))).toBe(false)
    expect(b.equals(SpiffeBundle.from({ ...base, sequenceNumber: 3 }))).toBe(false)
    expect(b.equals(SpiffeBundle.from({ ...base, refreshHintSeconds: undefined }))).toBe(false)
    expect(b.equals(SpiffeBundle.from({ ...base, x509Authorities: [ca2] }))).toBe(false)
    expect(b.equals(SpiffeBundle.from({ ...base, jwtAuthorities: [['k', ec2.pub]] }))).toBe(false)
  })

  it('withSequence and withRefreshHint check their value and keep the rest', () => {
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [ca], sequenceNumber: 1, refreshHintSeconds: 5 })
    expect(b.withSequence(0).sequenceNumber).toBe(0)
    expect(b.withSequence(0).refreshHintSeconds).toBe(5)
    expect(b.withRefreshHint(0).refreshHintSeconds).toBe(0)
    expect(b.withRefreshHint(undefined).refreshHintSeconds).toBeUndefined()
    expect(b.withRefreshHint(0).sequenceNumber).toBe(1)
    expect(b.withSequence(7).x509Authorities.map(hex)).toEqual([hex(ca)])
    expect(() => b.withSequence(-1)).toThrow(new RangeError('sequenceNumber must be a non-negative safe integer'))
    expect(() => b.withSequence(0.5)).toThrow(new RangeError('sequenceNumber must be a non-negative safe integer'))
    expect(() => b.withRefreshHint(-1)).toThrow(new RangeError('refreshHintSeconds must be a non-negative safe integer'))
    expect(() => b.withRefreshHint(0.5)).toThrow(new RangeError('refreshHintSeconds must be a non-negative safe integer'))
  })

  it('halves and sources: the same half each time, the trust domain checked by name', () => {
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [ca], jwtAuthorities: [['k', ec.pub]] })
    expect(b.x509Bundle()).toBe(b.x509Bundle())
    expect(b.jwtBundle()).toBe(b.jwtBundle())
    expect(b.getX509BundleForTrustDomain(TrustDomain.fromString('domain.test'))).toBe(b.x509Bundle())
    expect(b.getJwtBundleForTrustDomain(TrustDomain.fromString('domain.test'))).toBe(b.jwtBundle())
    expect(refusal(() => b.getX509BundleForTrustDomain(other))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no bundle for trust domain "other.test"'])
    expect(refusal(() => b.getJwtBundleForTrustDomain(other))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no bundle for trust domain "other.test"'])
  })
})
