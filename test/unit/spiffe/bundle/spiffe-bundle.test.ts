import { X509Certificate } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { MAX_BUNDLE_BYTES } from '../../../../src/spiffe/bundle/encoding.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeCaCert, makeJwk } from './test-certs.js'

// Stryker runs the tests from a copy in <repo>/.stryker-tmp/<sandbox>/: the vectors sit beside the repo, not the copy.
const REPO_ROOT = fileURLToPath(new URL('../../../../', import.meta.url)).replace(/[\\/]\.stryker-tmp[\\/][^\\/]+[\\/]$/, '/')
const VECTORS = join(REPO_ROOT, '..', 'shared', 'vectors', 'spire-bundles')
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

const b64 = (der: Uint8Array) => Buffer.from(der).toString('base64')

/** Member names per key, keyed by use: the "shape" of a bundle document. */
function shape(doc: string): Record<string, string[][]> {
  const obj = JSON.parse(doc) as { keys: Array<Record<string, unknown>> }
  const out: Record<string, string[][]> = {}
  for (const k of obj.keys) (out[String(k.use)] ??= []).push(Object.keys(k).sort())
  return out
}

describe('SPIRE-format bundle documents (/work/shared/vectors/spire-bundles)', () => {
  const files = [
    { file: 'ca.spiffe', td: 'domain1.test', x509: 1, jwt: ['KID'] },
    { file: 'ca2.spiffe', td: 'domain2.test', x509: 1, jwt: [] as string[] },
  ]

  it.each(files)('$file parses, marshals to the same shape and re-parses', ({ file, td: tdName, x509, jwt }) => {
    const text = readFileSync(join(VECTORS, file), 'utf8')
    const bundleTd = TrustDomain.fromString(tdName)
    const b = SpiffeBundle.parse(bundleTd, text)

    expect(b.trustDomain.equals(bundleTd)).toBe(true)
    expect(b.x509Authorities).toHaveLength(x509)
    expect([...b.jwtAuthorities.keys()]).toEqual(jwt)
    expect(b.sequenceNumber).toBeUndefined()
    expect(b.refreshHintSeconds).toBeUndefined()

    // The authority is the CA certificate whose URI SAN names the trust domain.
    const cert = new X509Certificate(b.x509Authorities[0]!)
    expect(cert.subjectAltName).toBe(`URI:spiffe://${tdName}`)
    expect(cert.ca).toBe(true)

    // The JWT authority is the key SPIRE wrote (this fixture reuses the CA key).
    const raw = JSON.parse(text) as { keys: Array<Record<string, string>> }
    for (const kid of jwt) {
      const src = raw.keys.find((k) => k.kid === kid)!
      expect(b.jwtAuthorities.get(kid)).toEqual({ kty: src.kty, crv: src.crv, x: src.x, y: src.y })
    }

    // Our document has the same members per use, and SPIRE's 4-space layout reproduces the file exactly.
    const ours = b.marshal()
    expect(shape(ours)).toEqual(shape(text))
    expect(b.marshal({ indent: 4 })).toBe(text.trimEnd())

    const again = SpiffeBundle.parse(bundleTd, ours)
    expect(again.equals(b)).toBe(true)
    expect(again.marshal()).toBe(ours)
  })

  it('the x509 JWK members in ca.spiffe match the certificate key', () => {
    const text = readFileSync(join(VECTORS, 'ca.spiffe'), 'utf8')
    const b = SpiffeBundle.parse(TrustDomain.fromString('domain1.test'), new TextEncoder().encode(text))
    const key = new X509Certificate(b.x509Authorities[0]!).publicKey.export({ format: 'jwk' })
    const src = (JSON.parse(text) as { keys: Array<Record<string, string>> }).keys[0]!
    expect({ x: key.x, y: key.y, crv: key.crv }).toEqual({ x: src.x, y: src.y, crv: src.crv })
  })
})

describe('SpiffeBundle.parse accepts', () => {
  let ec: Uint8Array
  let rsa: Uint8Array
  let ed: Uint8Array
  beforeAll(async () => {
    ;[ec, rsa, ed] = await Promise.all([makeCaCert('ec-p256'), makeCaCert('rsa-2048'), makeCaCert('ed25519')])
  })

  const doc = (keys: unknown[], extra: Record<string, unknown> = {}) => JSON.stringify({ keys, ...extra })

  it('an empty key set (every SVID of the domain untrusted)', () => {
    const b = SpiffeBundle.parse(td, '{"keys":[]}')
    expect(b.isEmpty()).toBe(true)
    expect(b.x509Bundle().isEmpty()).toBe(true)
    expect(b.jwtBundle().isEmpty()).toBe(true)
    expect(b.marshal()).toBe('{"keys":[]}')
  })

  it('spiffe_sequence and spiffe_refresh_hint, written back after keys', () => {
    const b = SpiffeBundle.parse(td, doc([], { spiffe_sequence: 42, spiffe_refresh_hint: 300 }))
    expect(b.sequenceNumber).toBe(42)
    expect(b.refreshHintSeconds).toBe(300)
    expect(b.marshal()).toBe('{"keys":[],"spiffe_sequence":42,"spiffe_refresh_hint":300}')
    const zero = SpiffeBundle.parse(td, doc([], { spiffe_sequence: 0 }))
    expect(zero.sequenceNumber).toBe(0)
    expect(zero.marshal()).toBe('{"keys":[],"spiffe_sequence":0}')
  })

  it('RSA and Ed25519 X.509 authorities, marshalled with n/e and crv/x', () => {
    const b = SpiffeBundle.parse(
      td,
      doc([
        { use: 'x509-svid', kty: 'RSA', x5c: [b64(rsa)] },
        { use: 'x509-svid', kty: 'OKP', x5c: [b64(ed)] },
      ]),
    )
    expect(b.x509Authorities.map(b64)).toEqual([b64(rsa), b64(ed)])
    const keys = (JSON.parse(b.marshal()) as { keys: Array<Record<string, unknown>> }).keys
    expect(Object.keys(keys[0]!)).toEqual(['use', 'kty', 'n', 'e', 'x5c'])
    expect(Object.keys(keys[1]!)).toEqual(['use', 'kty', 'crv', 'x', 'x5c'])
    expect(keys[1]!.crv).toBe('Ed25519')
  })

  it('JWT authorities of EC P-384, RSA and Ed25519 keys', () => {
    const p384 = makeJwk('ec-p384').pub
    const r = makeJwk('rsa-2048').pub
    const e = makeJwk('ed25519').pub
    const b = SpiffeBundle.parse(
      td,
      doc([
        { use: 'jwt-svid', kid: 'a', ...p384 },
        { use: 'jwt-svid', kid: 'b', ...r },
        { use: 'jwt-svid', kid: 'c', ...e },
      ]),
    )
    expect(b.jwtAuthorities.get('a')).toEqual({ kty: 'EC', crv: 'P-384', x: p384.x, y: p384.y })
    expect(b.jwtAuthorities.get('b')).toEqual({ kty: 'RSA', n: r.n, e: r.e })
    expect(b.jwtAuthorities.get('c')).toEqual({ kty: 'OKP', crv: 'Ed25519', x: e.x })
    const keys = (JSON.parse(b.marshal()) as { keys: Array<Record<string, unknown>> }).keys
    expect(keys.map((k) => Object.keys(k))).toEqual([
      ['use', 'kty', 'kid', 'crv', 'x', 'y'],
      ['use', 'kty', 'kid', 'n', 'e'],
      ['use', 'kty', 'kid', 'crv', 'x'],
    ])
    expect(b.jwtBundle().findKey('b')?.asymmetricKeyType).toBe('rsa')
  })

  it.each([
    ['unknown kty', { use: 'jwt-svid', kty: 'FOO', kid: 'k' }],
    ['missing use', { kty: 'EC', crv: 'P-256', x: 'x', y: 'y', kid: 'k' }],
    ['unknown use', { use: 'enc', kty: 'EC', kid: 'k' }],
    ["SPIRE's wit-svid use", { use: 'wit-svid', kty: 'EC', kid: 'k', crv: 'P-256' }],
    ['use is case-sensitive (X509-SVID)', { use: 'X509-SVID', kty: 'EC', x5c: [] }],
    ['use is case-sensitive (JWT-SVID)', { use: 'JWT-SVID', kty: 'EC' }],
    ['unknown kty with x509-svid use and no x5c', { use: 'x509-svid', kty: 'PQC' }],
  ])('ignores an element with %s', (_name, key) => {
    const b = SpiffeBundle.parse(td, doc([key, { use: 'x509-svid', kty: 'EC', x5c: [b64(ec)] }]))
    expect(b.x509Authorities).toHaveLength(1)
    expect(b.jwtAuthorities.size).toBe(0)
  })

  it('ignores unknown top-level and key members, and a kid on an X.509 key', () => {
    const b = SpiffeBundle.parse(td, doc([{ use: 'x509-svid', kty: 'EC', kid: 'ignored', alg: 'ES256', x5c: [b64(ec)] }], { extra: { nested: true } }))
    expect(b.x509Authorities.map(b64)).toEqual([b64(ec)])
  })

  it('drops a repeated X.509 authority', () => {
    const k = { use: 'x509-svid', kty: 'EC', x5c: [b64(ec)] }
    expect(SpiffeBundle.parse(td, doc([k, k])).x509Authorities).toHaveLength(1)
  })
})

describe('SpiffeBundle.parse rejects with ERR_BUNDLE_INVALID', () => {
  let ec: Uint8Array
  beforeAll(async () => {
    ec = await makeCaCert('ec-p256')
  })
  const pub = makeJwk('ec-p256').pub
  const priv = makeJwk('ec-p256').priv
  const x509Key = (x5c: unknown) => ({ use: 'x509-svid', kty: 'EC', x5c })
  const jwtKey = (extra: Record<string, unknown>) => ({ use: 'jwt-svid', kty: 'EC', kid: 'k1', ...pub, ...extra })

  const cases: Array<[string, () => string | Uint8Array]> = [
    ['empty input', () => ''],
    ['malformed JSON', () => '{"keys": ['],
    ['JSON array', () => '[]'],
    ['JSON null', () => 'null'],
    ['JSON string', () => '"keys"'],
    ['missing keys', () => '{}'],
    ['keys is an object', () => '{"keys":{}}'],
    ['keys is null', () => '{"keys":null}'],
    ['key is not an object', () => '{"keys":["x"]}'],
    ['key is null', () => '{"keys":[null]}'],
    ['key without kty', () => JSON.stringify({ keys: [{ use: 'x509-svid', x5c: [b64(ec)] }] })],
    ['kty is not a string', () => JSON.stringify({ keys: [{ use: 'jwt-svid', kty: 1 }] })],
    ['kty is empty', () => JSON.stringify({ keys: [{ use: 'jwt-svid', kty: '' }] })],
    ['use is not a string', () => JSON.stringify({ keys: [{ use: 1, kty: 'EC' }] })],
    ['x509-svid without x5c', () => JSON.stringify({ keys: [{ use: 'x509-svid', kty: 'EC' }] })],
    ['x509-svid with empty x5c', () => JSON.stringify({ keys: [x509Key([])] })],
    ['x509-svid with two certificates', () => JSON.stringify({ keys: [x509Key([b64(ec), b64(ec)])] })],
    ['x5c is not an array', () => JSON.stringify({ keys: [x509Key(b64(ec))] })],
    ['x5c element is not a string', () => JSON.stringify({ keys: [x509Key([123])] })],
    ['x5c is base64url, not base64', () => JSON.stringify({ keys: [x509Key([Buffer.from(ec).toString('base64url')])] })],
    ['x5c base64 with whitespace', () => JSON.stringify({ keys: [x509Key([`${b64(ec).slice(0, 10)} ${b64(ec).slice(10)}`])] })],
    ['x5c is not a certificate', () => JSON.stringify({ keys: [x509Key([Buffer.from('not a certificate').toString('base64')])] })],
    ['x5c is a truncated certificate', () => JSON.stringify({ keys: [x509Key([b64(ec.subarray(0, ec.length - 5))])] })],
    ['x5c holds PEM text', () => JSON.stringify({ keys: [x509Key([Buffer.from(new X509Certificate(ec).toString()).toString('base64')])] })],
    ['jwt-svid without kid', () => JSON.stringify({ keys: [jwtKey({ kid: undefined })] })],
    ['jwt-svid with empty kid', () => JSON.stringify({ keys: [jwtKey({ kid: '' })] })],
    ['jwt-svid with numeric kid', () => JSON.stringify({ keys: [jwtKey({ kid: 7 })] })],
    ['jwt-svid with repeated kid', () => JSON.stringify({ keys: [jwtKey({}), jwtKey({})] })],
    ['jwt-svid missing y', () => JSON.stringify({ keys: [jwtKey({ y: undefined })] })],
    ['jwt-svid point not on curve', () => JSON.stringify({ keys: [jwtKey({ x: pub.y })] })],
    ['jwt-svid unknown curve', () => JSON.stringify({ keys: [jwtKey({ crv: 'P-999' })] })],
    ['jwt-svid with private key member d', () => JSON.stringify({ keys: [{ use: 'jwt-svid', kid: 'k', ...priv }] })],
    ['jwt-svid symmetric oct key', () => JSON.stringify({ keys: [{ use: 'jwt-svid', kty: 'oct', kid: 'k', k: 'c2VjcmV0' }] })],
    ['negative spiffe_sequence', () => '{"keys":[],"spiffe_sequence":-1}'],
    ['fractional spiffe_sequence', () => '{"keys":[],"spiffe_sequence":1.5}'],
    ['string spiffe_sequence', () => '{"keys":[],"spiffe_sequence":"1"}'],
    ['spiffe_sequence beyond 2^53', () => '{"keys":[],"spiffe_sequence":18446744073709551615}'],
    ['negative spiffe_refresh_hint', () => '{"keys":[],"spiffe_refresh_hint":-5}'],
    ['string spiffe_refresh_hint', () => '{"keys":[],"spiffe_refresh_hint":"5m"}'],
    ['invalid UTF-8', () => new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])],
    ['document over the size cap (string)', () => `{"keys":[],"pad":"${'a'.repeat(MAX_BUNDLE_BYTES)}"}`],
    ['document over the size cap (bytes)', () => new Uint8Array(MAX_BUNDLE_BYTES + 1).fill(0x20)],
  ]
  it.each(cases)('%s', (_name, make) => {
    expect(codeOf(() => SpiffeBundle.parse(td, make()))).toBe('ERR_BUNDLE_INVALID')
  })

  it('throws TypeError when the trust domain is not a TrustDomain', () => {
    expect(() => SpiffeBundle.parse('domain.test' as unknown as TrustDomain, '{"keys":[]}')).toThrow(TypeError)
  })

  it('error messages never carry the key material', () => {
    try {
      SpiffeBundle.parse(td, JSON.stringify({ keys: [{ use: 'jwt-svid', kid: 'k', ...priv }] }))
      expect.unreachable()
    } catch (err) {
      expect((err as Error).message).not.toContain(String(priv.d))
    }
  })
})

describe('SpiffeBundle.from, accessors and marshal', () => {
  let ec: Uint8Array
  let ec2: Uint8Array
  beforeAll(async () => {
    ;[ec, ec2] = await Promise.all([makeCaCert('ec-p256'), makeCaCert('ec-p384')])
  })
  const k1 = makeJwk('ec-p256').pub
  const k2 = makeJwk('rsa-2048').pub

  it('builds a bundle whose document round-trips deterministically', () => {
    const b = SpiffeBundle.from({
      trustDomain: td,
      x509Authorities: [ec, ec2],
      jwtAuthorities: new Map([
        ['kid-1', k1],
        ['kid-2', { ...k2, use: 'jwt-svid', alg: 'RS256' }],
      ]),
      sequenceNumber: 7,
      refreshHintSeconds: 60,
    })
    const doc = b.marshal()
    expect(b.marshal()).toBe(doc)
    const parsed = SpiffeBundle.parse(td, doc)
    expect(parsed.equals(b)).toBe(true)
    expect(parsed.marshal()).toBe(doc)
    expect(parsed.x509Authorities.map(b64)).toEqual([b64(ec), b64(ec2)])
    expect([...parsed.jwtAuthorities.keys()]).toEqual(['kid-1', 'kid-2'])
    expect(parsed.jwtAuthorities.get('kid-2')).toEqual({ kty: 'RSA', n: k2.n, e: k2.e })
    expect(shape(doc)).toEqual({
      'x509-svid': [
        ['crv', 'kty', 'use', 'x', 'x5c', 'y'],
        ['crv', 'kty', 'use', 'x', 'x5c', 'y'],
      ],
      'jwt-svid': [
        ['crv', 'kid', 'kty', 'use', 'x', 'y'],
        ['e', 'kid', 'kty', 'n', 'use'],
      ],
    })
    const top = JSON.parse(doc) as Record<string, unknown>
    expect(Object.keys(top)).toEqual(['keys', 'spiffe_sequence', 'spiffe_refresh_hint'])
  })

  it('x509Bundle() and jwtBundle() expose the halves; sources check the trust domain', () => {
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [ec], jwtAuthorities: [['k', k1]] })
    expect(b.x509Bundle().authorities.map(b64)).toEqual([b64(ec)])
    expect(b.x509Bundle().trustDomain.equals(td)).toBe(true)
    expect(b.jwtBundle().keys.get('k')).toEqual(b.jwtAuthorities.get('k'))
    expect(b.getX509BundleForTrustDomain(td)).toBe(b.x509Bundle())
    expect(b.getJwtBundleForTrustDomain(td)).toBe(b.jwtBundle())
    const other = TrustDomain.fromString('other.test')
    expect(codeOf(() => b.getX509BundleForTrustDomain(other))).toBe('ERR_BUNDLE_NOT_FOUND')
    expect(codeOf(() => b.getJwtBundleForTrustDomain(other))).toBe('ERR_BUNDLE_NOT_FOUND')
  })

  it('withSequence and withRefreshHint return new bundles', () => {
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [ec] })
    const b2 = b.withSequence(3)
    expect(b.sequenceNumber).toBeUndefined()
    expect(b2.sequenceNumber).toBe(3)
    expect(b2.x509Authorities.map(b64)).toEqual([b64(ec)])
    expect(b2.equals(b)).toBe(false)
    expect(b2.withRefreshHint(30).refreshHintSeconds).toBe(30)
    expect(() => b.withSequence(-1)).toThrow(RangeError)
    expect(() => b.withSequence(1.5)).toThrow(RangeError)
    expect(() => b.withRefreshHint(-1)).toThrow(RangeError)
  })

  it.each([
    ['a certificate that does not parse', () => ({ trustDomain: td, x509Authorities: [new Uint8Array([0x30, 0x03, 1, 2, 3])] })],
    ['an empty kid', () => ({ trustDomain: td, jwtAuthorities: [['', k1]] as Array<[string, typeof k1]> })],
    [
      'a repeated kid',
      () => ({
        trustDomain: td,
        jwtAuthorities: [
          ['a', k1],
          ['a', k2],
        ] as Array<[string, typeof k1]>,
      }),
    ],
    ['a private JWK', () => ({ trustDomain: td, jwtAuthorities: [['a', makeJwk().priv]] as Array<[string, typeof k1]> })],
    [
      'a JWK that does not import',
      () => ({ trustDomain: td, jwtAuthorities: [['a', { kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }]] as Array<[string, typeof k1]> }),
    ],
  ])('from() rejects %s with ERR_BUNDLE_INVALID', (_name, init) => {
    expect(codeOf(() => SpiffeBundle.from(init()))).toBe('ERR_BUNDLE_INVALID')
  })

  it('from() rejects a bad sequence number with RangeError', () => {
    expect(() => SpiffeBundle.from({ trustDomain: td, sequenceNumber: -1 })).toThrow(RangeError)
  })

  it('fromBundles() joins halves of the same trust domain only', () => {
    const b = SpiffeBundle.from({ trustDomain: td, x509Authorities: [ec], jwtAuthorities: [['k', k1]] })
    const joined = SpiffeBundle.fromBundles(td, { x509: b.x509Bundle(), jwt: b.jwtBundle(), sequenceNumber: 2 })
    expect(joined.equals(b.withSequence(2))).toBe(true)
    const other = SpiffeBundle.from({ trustDomain: TrustDomain.fromString('other.test'), x509Authorities: [ec] })
    expect(() => SpiffeBundle.fromBundles(td, { x509: other.x509Bundle() })).toThrow(RangeError)
  })
})
