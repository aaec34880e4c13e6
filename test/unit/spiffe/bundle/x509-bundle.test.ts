import { X509Certificate } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { MAX_BUNDLE_BYTES } from '../../../../src/spiffe/bundle/encoding.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeCaCert } from './test-certs.js'

const td = TrustDomain.fromString('domain.test')
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts))

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    if (err instanceof IdentityError) return err.code
    throw err
  }
  return undefined
}

let a: Uint8Array
let b: Uint8Array
let rsa: Uint8Array
beforeAll(async () => {
  ;[a, b, rsa] = await Promise.all([makeCaCert('ec-p256'), makeCaCert('ec-p384'), makeCaCert('rsa-2048')])
})

describe('X509Bundle.parseDer (Workload API form: concatenated DER)', () => {
  it('splits concatenated certificates in order and round-trips through toDer', () => {
    const der = cat(a, rsa, b)
    const bundle = X509Bundle.parseDer(td, der)
    expect(bundle.authorities.map(hex)).toEqual([a, rsa, b].map(hex))
    expect(hex(bundle.toDer())).toBe(hex(der))
    expect(bundle.trustDomain.equals(td)).toBe(true)
    expect(bundle.certificates().every((c) => c.ca)).toBe(true)
  })

  it('accepts a single certificate and an empty input (no authorities)', () => {
    expect(X509Bundle.parseDer(td, a).authorities).toHaveLength(1)
    const empty = X509Bundle.parseDer(td, new Uint8Array())
    expect(empty.isEmpty()).toBe(true)
    expect(empty.toDer()).toHaveLength(0)
  })

  it('accepts a subarray view of a larger buffer', () => {
    const big = cat(new Uint8Array([9, 9, 9]), a, new Uint8Array([9]))
    const view = big.subarray(3, 3 + a.length)
    expect(hex(X509Bundle.parseDer(td, view).authorities[0]!)).toBe(hex(a))
  })

  it('drops a repeated certificate', () => {
    expect(X509Bundle.parseDer(td, cat(a, a, b)).authorities.map(hex)).toEqual([a, b].map(hex))
  })

  const bad: Array<[string, () => Uint8Array]> = [
    ['trailing garbage', () => cat(a, new Uint8Array([0x00]))],
    ['trailing partial certificate', () => cat(a, b.subarray(0, 10))],
    ['truncated certificate', () => a.subarray(0, a.length - 1)],
    ['truncated length octets', () => new Uint8Array([0x30, 0x82, 0x01])],
    ['lone tag byte', () => new Uint8Array([0x30])],
    ['not a SEQUENCE', () => new Uint8Array([0x04, 0x01, 0x00])],
    ['indefinite length', () => new Uint8Array([0x30, 0x80, 0x00, 0x00])],
    ['over-long length (5 octets)', () => new Uint8Array([0x30, 0x85, 0, 0, 0, 0, 1, 0])],
    ['non-minimal length (0x81 for < 128)', () => new Uint8Array([0x30, 0x81, 0x01, 0x00])],
    ['non-minimal length (leading zero octet)', () => cat(new Uint8Array([0x30, 0x82, 0x00, 0x81]), new Uint8Array(0x81))],
    ['a SEQUENCE that is not a certificate', () => new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])],
    ['PEM text as bytes', () => new TextEncoder().encode(new X509Certificate(a).toString())],
    ['input over the size cap', () => new Uint8Array(MAX_BUNDLE_BYTES + 1)],
  ]
  it.each(bad)('rejects %s with ERR_BUNDLE_INVALID', (_name, make) => {
    expect(codeOf(() => X509Bundle.parseDer(td, make()))).toBe('ERR_BUNDLE_INVALID')
  })

  it('throws TypeError for a non-Uint8Array', () => {
    expect(() => X509Bundle.parseDer(td, 'abc' as unknown as Uint8Array)).toThrow(TypeError)
  })
})

describe('X509Bundle.parsePem / toPem', () => {
  it('round-trips several certificates', () => {
    const bundle = new X509Bundle(td, [a, b, rsa])
    const pem = bundle.toPem()
    expect(pem.match(/-----BEGIN CERTIFICATE-----/g)).toHaveLength(3)
    expect(pem.split('\n').every((l) => l.length <= 64)).toBe(true)
    const back = X509Bundle.parsePem(td, pem)
    expect(back.equals(bundle)).toBe(true)
    expect(back.toPem()).toBe(pem)
  })

  it('reads the PEM that node:crypto writes, with CRLF line ends and text between blocks', () => {
    const pemA = new X509Certificate(a).toString()
    const pemB = new X509Certificate(b).toString().replace(/\n/g, '\r\n')
    const text = `# root CA A\n${pemA}\nsubject=O=SPIFFE\n${pemB}`
    const bundle = X509Bundle.parsePem(td, text)
    expect(bundle.authorities.map(hex)).toEqual([a, b].map(hex))
    expect(X509Bundle.parsePem(td, new TextEncoder().encode(text)).authorities).toHaveLength(2)
  })

  it('accepts empty or whitespace-only input as an empty bundle', () => {
    expect(X509Bundle.parsePem(td, '').isEmpty()).toBe(true)
    expect(X509Bundle.parsePem(td, ' \n\t\n').isEmpty()).toBe(true)
    expect(new X509Bundle(td, []).toPem()).toBe('')
  })

  const pemA = () => new X509Certificate(a).toString()
  const bad: Array<[string, () => string]> = [
    ['text without any block', () => 'hello world'],
    ['a non-CERTIFICATE block', () => pemA().replace(/CERTIFICATE/g, 'PUBLIC KEY')],
    ['a private key block', () => `${pemA()}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n`],
    ['BEGIN without END', () => pemA().replace('-----END CERTIFICATE-----', '')],
    ['mismatched END label', () => pemA().replace('END CERTIFICATE', 'END X509 CRL')],
    ['invalid base64 body', () => '-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n'],
    ['empty body', () => '-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n'],
    [
      'a body that is not a certificate',
      () => `-----BEGIN CERTIFICATE-----\n${Buffer.from([0x30, 3, 2, 1, 1]).toString('base64')}\n-----END CERTIFICATE-----\n`,
    ],
    ['two certificates in one block', () => `-----BEGIN CERTIFICATE-----\n${Buffer.from(cat(a, b)).toString('base64')}\n-----END CERTIFICATE-----\n`],
    ['a block with headers', () => pemA().replace('-----\n', '-----\nProc-Type: 4,ENCRYPTED\n\n')],
    ['input over the size cap', () => ' '.repeat(MAX_BUNDLE_BYTES + 1)],
  ]
  it.each(bad)('rejects %s with ERR_BUNDLE_INVALID', (_name, make) => {
    expect(codeOf(() => X509Bundle.parsePem(td, make()))).toBe('ERR_BUNDLE_INVALID')
  })
})

describe('X509Bundle as a source', () => {
  it('answers for its own trust domain only', () => {
    const bundle = new X509Bundle(td, [a])
    expect(bundle.getX509BundleForTrustDomain(td)).toBe(bundle)
    expect(codeOf(() => bundle.getX509BundleForTrustDomain(TrustDomain.fromString('other.test')))).toBe('ERR_BUNDLE_NOT_FOUND')
    expect(bundle.hasAuthority(a)).toBe(true)
    expect(bundle.hasAuthority(b)).toBe(false)
  })
})
