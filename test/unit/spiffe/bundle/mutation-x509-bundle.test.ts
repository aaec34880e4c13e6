import { X509Certificate } from 'node:crypto'
import { beforeAll, describe, expect, it } from 'vitest'
import { MAX_BUNDLE_BYTES } from '../../../../src/spiffe/bundle/encoding.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { makeCaCert } from './test-certs.js'
import { thrown, refusal } from '../../../helpers/thrown.js'

/*
 * X509Bundle (src/spiffe/bundle/x509-bundle.ts): each refusal by code and
 * exact message, the size limit from both sides, equality and lookups.
 * Plain test titles (the mutation run selects tests by title).
 */

const td = TrustDomain.fromString('domain.test')
const other = TrustDomain.fromString('other.test')
const cat = (...parts: Uint8Array[]) => new Uint8Array(Buffer.concat(parts))
const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const pemOf = (der: Uint8Array) => new X509Certificate(der).toString()
const block = (label: string, der: Uint8Array) => `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64')}\n-----END ${label}-----\n`
const INVALID = 'ERR_BUNDLE_INVALID'

let a: Uint8Array
let b: Uint8Array
beforeAll(async () => {
  ;[a, b] = await Promise.all([makeCaCert('ec-p256'), makeCaCert('ec-p384')])
})

describe('X509Bundle.parseDer refusals', () => {
  it('input over the size limit', () => {
    expect(refusal(() => X509Bundle.parseDer(td, new Uint8Array(MAX_BUNDLE_BYTES + 1)))).toEqual([INVALID, 'X.509 bundle exceeds 4194304 bytes'])
  })

  it('input of exactly the size limit is split, not refused for its size', () => {
    expect(refusal(() => X509Bundle.parseDer(td, new Uint8Array(MAX_BUNDLE_BYTES)))).toEqual([INVALID, 'DER element at offset 0 is not a SEQUENCE'])
  })

  it('a SEQUENCE that is not a certificate names its position', () => {
    const err = thrown(() => X509Bundle.parseDer(td, cat(a, new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]))))
    expect([err.code, err.message]).toEqual([INVALID, 'X.509 authority 1 cannot be parsed'])
    expect(err.cause).toBeInstanceOf(Error)
  })

  it('splitting errors come through', () => {
    expect(refusal(() => X509Bundle.parseDer(td, cat(a, new Uint8Array([0x00]))))).toEqual([INVALID, `DER element at offset ${a.length} is not a SEQUENCE`])
  })

  it('a value that is not bytes is a TypeError', () => {
    expect(() => X509Bundle.parseDer(td, 'abc' as unknown as Uint8Array)).toThrow(new TypeError('concatenatedDer must be a Uint8Array'))
  })
})

describe('X509Bundle.parsePem refusals', () => {
  it('text without a block', () => {
    expect(refusal(() => X509Bundle.parsePem(td, 'hello world'))).toEqual([INVALID, 'PEM bundle holds no certificate blocks'])
  })

  it('a block of another type names its position and label', () => {
    expect(refusal(() => X509Bundle.parsePem(td, pemOf(a) + block('PUBLIC KEY', a)))).toEqual([INVALID, 'PEM block 1 is "PUBLIC KEY", expected "CERTIFICATE"'])
  })

  it('a block with two certificates', () => {
    expect(refusal(() => X509Bundle.parsePem(td, pemOf(a) + block('CERTIFICATE', cat(a, b))))).toEqual([
      INVALID,
      'PEM block 1 does not hold exactly one certificate',
    ])
  })

  it('a block with a SEQUENCE that is not a certificate', () => {
    const err = thrown(() => X509Bundle.parsePem(td, pemOf(a) + block('CERTIFICATE', new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]))))
    expect([err.code, err.message]).toEqual([INVALID, 'X.509 authority 1 cannot be parsed'])
  })

  it('a block whose bytes do not split', () => {
    expect(refusal(() => X509Bundle.parsePem(td, block('CERTIFICATE', new Uint8Array([0x30, 0x05, 0x00]))))).toEqual([
      INVALID,
      'DER element at offset 0 is truncated',
    ])
  })

  it('bytes that are not UTF-8, and input over the size limit, name the PEM bundle', () => {
    expect(refusal(() => X509Bundle.parsePem(td, new Uint8Array([0xc3, 0x28])))).toEqual([INVALID, 'PEM bundle is not valid UTF-8'])
    expect(refusal(() => X509Bundle.parsePem(td, ' '.repeat(MAX_BUNDLE_BYTES + 1)))).toEqual([INVALID, 'PEM bundle exceeds 4194304 bytes'])
  })

  it('a value that is neither text nor bytes is a TypeError', () => {
    expect(() => X509Bundle.parsePem(td, 5 as unknown as string)).toThrow(new TypeError('PEM bundle must be a string or Uint8Array'))
  })
})

describe('X509Bundle.parsePem reading', () => {
  it('keeps order and drops a repeated certificate', () => {
    const bundle = X509Bundle.parsePem(td, pemOf(b) + pemOf(a) + pemOf(b))
    expect(bundle.authorities.map(hex)).toEqual([b, a].map(hex))
  })

  it('whitespace alone is an empty bundle', () => {
    expect(X509Bundle.parsePem(td, '\n').authorities).toEqual([])
  })
})

describe('X509Bundle output and state', () => {
  it('toPem is the blocks one after the other, nothing between', () => {
    expect(new X509Bundle(td, [a, b]).toPem()).toBe(pemOf(a) + pemOf(b))
  })

  it('toDer is the certificates one after the other', () => {
    expect(hex(new X509Bundle(td, [a, b]).toDer())).toBe(hex(cat(a, b)))
  })

  it('certificates are parsed once', () => {
    const bundle = new X509Bundle(td, [a, b])
    const first = bundle.certificates()
    expect(first.map((c) => hex(c.raw))).toEqual([a, b].map(hex))
    expect(bundle.certificates()).toBe(first)
  })

  it('a certificate given to the constructor that cannot be parsed fails at certificates, with the cause kept', () => {
    const bundle = new X509Bundle(td, [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01])])
    const err = thrown(() => bundle.certificates())
    expect([err.code, err.message]).toEqual([INVALID, 'bundle holds a certificate that cannot be parsed'])
    expect(err.cause).toBeInstanceOf(Error)
  })

  it('isEmpty', () => {
    expect(new X509Bundle(td, [a]).isEmpty()).toBe(false)
    expect(new X509Bundle(td, []).isEmpty()).toBe(true)
  })

  it('hasAuthority finds one authority among several, and a view of it', () => {
    const bundle = new X509Bundle(td, [a, b])
    expect(bundle.hasAuthority(a)).toBe(true)
    expect(bundle.hasAuthority(b)).toBe(true)
    expect(bundle.hasAuthority(cat(new Uint8Array([1]), b).subarray(1))).toBe(true)
    expect(bundle.hasAuthority(a.subarray(1))).toBe(false)
    expect(new X509Bundle(td, []).hasAuthority(a)).toBe(false)
  })

  it('the constructor copies the certificates', () => {
    const der = new Uint8Array(a)
    const bundle = new X509Bundle(td, [der])
    der[0] = 0
    expect(hex(bundle.authorities[0]!)).toBe(hex(a))
  })
})

describe('X509Bundle equality and lookup', () => {
  it('equal: same trust domain, same certificates in the same order', () => {
    expect(new X509Bundle(td, [a, b]).equals(new X509Bundle(td, [new Uint8Array(a), new Uint8Array(b)]))).toBe(true)
    expect(new X509Bundle(td, []).equals(new X509Bundle(td, []))).toBe(true)
  })

  it('another trust domain with the same certificates', () => {
    expect(new X509Bundle(td, [a]).equals(new X509Bundle(other, [a]))).toBe(false)
  })

  it('one certificate more', () => {
    expect(new X509Bundle(td, [a]).equals(new X509Bundle(td, [a, b]))).toBe(false)
    expect(new X509Bundle(td, [a, b]).equals(new X509Bundle(td, [a]))).toBe(false)
  })

  it('another certificate, or the same in another order', () => {
    expect(new X509Bundle(td, [a]).equals(new X509Bundle(td, [b]))).toBe(false)
    expect(new X509Bundle(td, [a, b]).equals(new X509Bundle(td, [b, a]))).toBe(false)
  })

  it('the source answers for its own trust domain and names the one asked for', () => {
    const bundle = new X509Bundle(td, [a])
    expect(bundle.getX509BundleForTrustDomain(TrustDomain.fromString('domain.test'))).toBe(bundle)
    expect(refusal(() => bundle.getX509BundleForTrustDomain(other))).toEqual(['ERR_BUNDLE_NOT_FOUND', 'no X.509 bundle for trust domain "other.test"'])
  })
})
