import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  decodeAuthorityKeyId,
  decodeBasicConstraints,
  decodeExtKeyUsage,
  decodeKeyUsage,
  decodeSubjectAltName,
  decodeSubjectKeyId,
  parseCertificateFields,
  readSigned,
  spkiKeyBits,
} from '../../../../src/spiffe/x509-svid/certificate-fields.js'
import {
  bitString,
  DER_NULL,
  DER_TRUE,
  DerError,
  octetString,
  oid,
  seq,
  set,
  smallInteger,
  stringValue,
  TAG,
  time,
  tlv,
} from '../../../../src/spiffe/x509-svid/der.js'

// certificate-fields.ts: every refusal of the certificate, extension and
// signed-structure readers with its DerError message, the decoded fields and
// each key usage bit (test/mutation-survivors.md, x509-svid). Titles stay
// plain: Stryker's vitest runner selects tests by name.

const SPKI = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'der' })
const NB = new Date(Date.UTC(2026, 0, 1))
const NA = new Date(Date.UTC(2026, 1, 1))
const ALG = seq(oid('1.2.840.10045.4.3.2'))
const NAME = seq(set(seq(oid('2.5.4.10'), stringValue(TAG.UTF8_STRING, 'o'))))
const ISSUER = seq(set(seq(oid('2.5.4.3'), stringValue(TAG.UTF8_STRING, 'i'))))
const VERSION3 = tlv(0xa0, smallInteger(2))
const extension = (id: string, value: Uint8Array, critical = false) => seq(oid(id), ...(critical ? [DER_TRUE] : []), octetString(value))
const EXTS = tlv(0xa3, seq(extension('2.5.29.19', seq(DER_TRUE), true), extension('2.5.29.15', tlv(3, Buffer.from([0, 0x80])))))

interface Tbs {
  version?: Uint8Array | null
  serial?: Uint8Array
  alg?: Uint8Array
  issuer?: Uint8Array
  validity?: Uint8Array
  subject?: Uint8Array
  spki?: Uint8Array
  rest?: Uint8Array[]
}
function tbs(o: Tbs = {}): Buffer {
  return seq(
    ...(o.version === null ? [] : [o.version ?? VERSION3]),
    o.serial ?? smallInteger(0x1234),
    o.alg ?? ALG,
    o.issuer ?? ISSUER,
    o.validity ?? seq(time(NB), time(NA)),
    o.subject ?? NAME,
    o.spki ?? SPKI,
    ...(o.rest ?? [EXTS]),
  )
}
const cert = (o: Tbs = {}) => new Uint8Array(seq(tbs(o), ALG, bitString(Buffer.from([1, 2]))))

function derError(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(DerError)
    return (err as Error).message
  }
  throw new Error('no DerError')
}

describe('parseCertificateFields', () => {
  it('reads every field of a v3 certificate', () => {
    const der = cert()
    const f = parseCertificateFields(der)
    expect(f.der).toBe(der)
    expect(Buffer.from(f.tbs)).toEqual(tbs())
    expect(f.version).toBe(3)
    expect(Buffer.from(f.serial)).toEqual(Buffer.from([0x12, 0x34]))
    expect(f.signatureAlgorithm).toBe('1.2.840.10045.4.3.2')
    expect(Buffer.from(f.issuerRaw)).toEqual(ISSUER)
    expect(Buffer.from(f.subjectRaw)).toEqual(NAME)
    expect(f.subjectEmpty).toBe(false)
    expect([f.notBefore, f.notAfter]).toEqual([NB, NA])
    expect(Buffer.from(f.spkiRaw)).toEqual(SPKI)
    expect([...f.extensions.keys()]).toEqual(['2.5.29.19', '2.5.29.15'])
    expect(f.extensions.get('2.5.29.19')).toEqual({ critical: true, value: new Uint8Array(seq(DER_TRUE)) })
    expect(f.extensions.get('2.5.29.15')).toEqual({ critical: false, value: new Uint8Array(tlv(3, Buffer.from([0, 0x80]))) })
  })

  it('reads v1 without the version field, and an empty subject', () => {
    const f = parseCertificateFields(cert({ version: null, rest: [], subject: seq() }))
    expect([f.version, f.subjectEmpty, f.extensions.size]).toEqual([1, true, 0])
    expect(parseCertificateFields(cert({ version: tlv(0xa0, smallInteger(1)), rest: [] })).version).toBe(2)
  })

  it('skips issuer and subject unique IDs', () => {
    const f = parseCertificateFields(cert({ rest: [tlv(0x81, Buffer.from([0, 1])), tlv(0x82, Buffer.from([0, 2])), EXTS] }))
    expect(f.extensions.size).toBe(2)
    expect(parseCertificateFields(cert({ rest: [tlv(0x82, Buffer.from([0, 2]))] })).extensions.size).toBe(0)
  })

  const refusals: Array<[Uint8Array, string]> = [
    [new Uint8Array(seq(tbs(), ALG)), 'certificate must have 3 elements'],
    [new Uint8Array(seq(tbs(), ALG, bitString(Buffer.from([1])), DER_NULL)), 'certificate must have 3 elements'],
    [new Uint8Array(seq(set(), ALG, bitString(Buffer.from([1])))), 'tbsCertificate: unexpected or missing element'],
    [new Uint8Array(seq(seq(), ALG, bitString(Buffer.from([1])))), 'serialNumber: unexpected or missing element'],
    [new Uint8Array(seq(tbs(), set(), bitString(Buffer.from([1])))), 'signatureAlgorithm: unexpected or missing element'],
    [new Uint8Array(seq(tbs(), ALG, octetString(Buffer.from([1])))), 'signatureValue: unexpected or missing element'],
    [cert({ version: tlv(0xa0, smallInteger(2), smallInteger(2)) }), 'bad version'],
    [cert({ version: tlv(0xa0) }), 'bad version'],
    [cert({ serial: octetString(Buffer.from([1])) }), 'serialNumber: unexpected or missing element'],
    [cert({ alg: set() }), 'signature: unexpected or missing element'],
    [cert({ alg: seq() }), 'empty AlgorithmIdentifier'],
    [cert({ issuer: set() }), 'issuer: unexpected or missing element'],
    [cert({ validity: set() }), 'validity: unexpected or missing element'],
    [cert({ subject: set() }), 'subject: unexpected or missing element'],
    [cert({ spki: set() }), 'subjectPublicKeyInfo: unexpected or missing element'],
    [cert({ validity: seq(time(NB)) }), 'bad validity'],
    [cert({ validity: seq(time(NB), time(NA), time(NA)) }), 'bad validity'],
    [cert({ rest: [EXTS, tlv(0x81, Buffer.from([0]))] }), 'unexpected element in tbsCertificate'],
    [cert({ rest: [tlv(0xa4, seq())] }), 'unexpected element in tbsCertificate'],
    [cert({ rest: [EXTS, EXTS] }), 'unexpected element in tbsCertificate'],
    [cert({ version: null }), 'extensions require version 3'],
    [cert({ version: tlv(0xa0, smallInteger(1)) }), 'extensions require version 3'],
    [cert({ rest: [tlv(0xa3, seq(), seq())] }), 'bad extensions'],
    [cert({ rest: [tlv(0xa3)] }), 'bad extensions'],
    [cert({ rest: [tlv(0xa3, set())] }), 'extensions: unexpected or missing element'],
    [cert({ subject: seq(seq()) }), 'RDN: unexpected or missing element'],
    [cert({ subject: seq(set(set())) }), 'AttributeTypeAndValue: unexpected or missing element'],
    [cert({ subject: seq(set(seq(oid('2.5.4.3')))) }), 'bad AttributeTypeAndValue'],
    [cert({ subject: seq(set(seq(oid('2.5.4.3'), DER_NULL, DER_NULL))) }), 'bad AttributeTypeAndValue'],
    [cert({ subject: seq(set(seq(DER_NULL, DER_NULL))) }), 'expected OID'],
    [cert({ subject: seq(set(seq(oid('2.5.4.3'), DER_NULL)), set(seq(DER_NULL, DER_NULL))) }), 'expected OID'],
  ]
  it.each(refusals)('certificate refusal case %#', (der, message) => {
    expect(derError(() => parseCertificateFields(der))).toBe(message)
  })
})

describe('readExtensions through parseCertificateFields', () => {
  const withExts = (...exts: Uint8Array[]) => cert({ rest: [tlv(0xa3, seq(...exts))] })
  const refusals: Array<[Uint8Array, string]> = [
    [withExts(seq(oid('2.5.29.15'))), 'bad Extension'],
    [withExts(seq(oid('2.5.29.15'), DER_TRUE, octetString(Buffer.from([1])), DER_NULL)), 'bad Extension'],
    [withExts(set(oid('2.5.29.15'), octetString(Buffer.from([1])))), 'Extension: unexpected or missing element'],
    [withExts(seq(oid('2.5.29.15'), Buffer.from([1, 1, 0]), octetString(Buffer.from([1])))), 'critical FALSE must be omitted in DER'],
    [withExts(seq(oid('2.5.29.15'), DER_NULL, octetString(Buffer.from([1])))), 'bad BOOLEAN'],
    [withExts(seq(oid('2.5.29.15'), DER_NULL)), 'extnValue: unexpected or missing element'],
    [withExts(seq(oid('2.5.29.15'), DER_TRUE, DER_NULL)), 'extnValue: unexpected or missing element'],
    [withExts(extension('2.5.29.15', Buffer.from([1])), extension('2.5.29.15', Buffer.from([2]), true)), 'duplicate extension 2.5.29.15'],
  ]
  it.each(refusals)('extension refusal case %#', (der, message) => {
    expect(derError(() => parseCertificateFields(der))).toBe(message)
  })

  it('reads an empty extension list', () => {
    expect(parseCertificateFields(withExts()).extensions.size).toBe(0)
  })
})

describe('extension decoders', () => {
  it('SubjectAltName: URIs and DNS names in order, other names skipped', () => {
    const value = seq(
      tlv(0x82, Buffer.from('a.example')),
      tlv(0x81, Buffer.from('x@y')),
      tlv(0x86, Buffer.from('spiffe://a/b')),
      tlv(0x87, Buffer.from([1, 2, 3, 4])),
      tlv(0x86, Buffer.from(' ~')),
    )
    expect(decodeSubjectAltName(value)).toEqual({ uris: ['spiffe://a/b', ' ~'], dnsNames: ['a.example'] })
    expect(decodeSubjectAltName(seq(tlv(0x81, Buffer.from('\u0001'))))).toEqual({ uris: [], dnsNames: [] })
  })

  it('SubjectAltName refusals', () => {
    expect(derError(() => decodeSubjectAltName(seq()))).toBe('empty SubjectAltName')
    expect(derError(() => decodeSubjectAltName(set(tlv(0x86, Buffer.from('a')))))).toBe('unexpected tag')
    for (const bad of [[0x1f], [0x7f], [0x80], [0x41, 0x0a]]) {
      expect(derError(() => decodeSubjectAltName(seq(tlv(0x86, Buffer.from(bad)))))).toBe('SAN is not printable IA5String')
      expect(derError(() => decodeSubjectAltName(seq(tlv(0x82, Buffer.from(bad)))))).toBe('SAN is not printable IA5String')
    }
  })

  it('BasicConstraints', () => {
    expect(decodeBasicConstraints(seq())).toEqual({ ca: false, pathLen: undefined })
    expect(decodeBasicConstraints(seq(DER_TRUE))).toEqual({ ca: true, pathLen: undefined })
    expect(decodeBasicConstraints(seq(DER_TRUE, smallInteger(0)))).toEqual({ ca: true, pathLen: 0 })
    expect(decodeBasicConstraints(seq(smallInteger(5)))).toEqual({ ca: false, pathLen: 5 })
    expect(derError(() => decodeBasicConstraints(seq(Buffer.from([1, 1, 0]))))).toBe('cA FALSE must be omitted in DER')
    expect(derError(() => decodeBasicConstraints(seq(smallInteger(1), DER_TRUE)))).toBe('bad BasicConstraints')
    expect(derError(() => decodeBasicConstraints(seq(DER_TRUE, smallInteger(1), smallInteger(1))))).toBe('bad BasicConstraints')
    expect(derError(() => decodeBasicConstraints(seq(DER_NULL)))).toBe('bad BasicConstraints')
    expect(derError(() => decodeBasicConstraints(seq(DER_TRUE, DER_TRUE)))).toBe('bad BasicConstraints')
  })

  it('KeyUsage: each bit on its own', () => {
    const ku = (...b: number[]) => decodeKeyUsage(tlv(3, Buffer.from([0, ...b])))
    const none = { digitalSignature: false, keyEncipherment: false, keyAgreement: false, keyCertSign: false, cRLSign: false }
    expect(ku()).toEqual(none)
    expect(ku(0)).toEqual(none)
    expect(ku(0x80)).toEqual({ ...none, digitalSignature: true })
    expect(ku(0x40)).toEqual(none)
    expect(ku(0x20)).toEqual({ ...none, keyEncipherment: true })
    expect(ku(0x10)).toEqual(none)
    expect(ku(0x08)).toEqual({ ...none, keyAgreement: true })
    expect(ku(0x04)).toEqual({ ...none, keyCertSign: true })
    expect(ku(0x02)).toEqual({ ...none, cRLSign: true })
    expect(ku(0x01, 0x80)).toEqual(none)
    expect(ku(0xff)).toEqual({ digitalSignature: true, keyEncipherment: true, keyAgreement: true, keyCertSign: true, cRLSign: true })
    expect(derError(() => decodeKeyUsage(octetString(Buffer.from([0, 0x80]))))).toBe('unexpected tag')
  })

  it('ExtKeyUsage, SubjectKeyIdentifier, AuthorityKeyIdentifier', () => {
    expect(decodeExtKeyUsage(seq(oid('1.3.6.1.5.5.7.3.2'), oid('1.3.6.1.5.5.7.3.1')))).toEqual(['1.3.6.1.5.5.7.3.2', '1.3.6.1.5.5.7.3.1'])
    expect(decodeExtKeyUsage(seq())).toEqual([])
    expect(Buffer.from(decodeSubjectKeyId(octetString(Buffer.from([1, 2]))))).toEqual(Buffer.from([1, 2]))
    expect(derError(() => decodeSubjectKeyId(seq()))).toBe('unexpected tag')
    const aki = decodeAuthorityKeyId(seq(tlv(0xa1, seq()), tlv(0x80, Buffer.from([7, 8])), tlv(0x82, Buffer.from([9]))))
    expect(Buffer.from(aki!)).toEqual(Buffer.from([7, 8]))
    expect(decodeAuthorityKeyId(seq(tlv(0x82, Buffer.from([9]))))).toBeUndefined()
    expect(decodeAuthorityKeyId(seq())).toBeUndefined()
  })
})

describe('spkiKeyBits and readSigned', () => {
  it('spkiKeyBits returns the key bits and refuses other shapes', () => {
    expect(Buffer.from(spkiKeyBits(SPKI))).toEqual(SPKI.subarray(-65))
    expect(derError(() => spkiKeyBits(seq(seq(), bitString(Buffer.from([1])), DER_NULL)))).toBe('bad SubjectPublicKeyInfo')
    expect(derError(() => spkiKeyBits(seq(seq())))).toBe('bad SubjectPublicKeyInfo')
    expect(derError(() => spkiKeyBits(seq(set(), bitString(Buffer.from([1])))))).toBe('algorithm: unexpected or missing element')
    expect(derError(() => spkiKeyBits(seq(seq(), octetString(Buffer.from([1])))))).toBe('subjectPublicKey: unexpected or missing element')
  })

  it('readSigned returns the parts and refuses other shapes', () => {
    const inner = seq(DER_NULL)
    const der = seq(inner, ALG, bitString(Buffer.from([5, 6])))
    const r = readSigned(der)
    expect(r.tbs).toEqual({ tag: 0x30, start: 2, body: 4, end: 2 + inner.length })
    expect(r.algorithm).toBe('1.2.840.10045.4.3.2')
    expect(Buffer.from(r.signature)).toEqual(Buffer.from([5, 6]))
    expect(r.top).toHaveLength(3)
    const cases: Array<[Uint8Array, string]> = [
      [seq(inner, ALG), 'signed structure must have 3 elements'],
      [seq(inner, ALG, bitString(Buffer.from([1])), DER_NULL), 'signed structure must have 3 elements'],
      [seq(set(), ALG, bitString(Buffer.from([1]))), 'to-be-signed: unexpected or missing element'],
      [seq(inner, set(), bitString(Buffer.from([1]))), 'signatureAlgorithm: unexpected or missing element'],
      [seq(inner, seq(), bitString(Buffer.from([1]))), 'empty AlgorithmIdentifier'],
      [seq(inner, ALG, octetString(Buffer.from([1]))), 'signature: unexpected or missing element'],
      [seq(inner, ALG, tlv(3, Buffer.from([1, 0x80]))), 'signature has unused bits'],
    ]
    for (const [d, msg] of cases) expect(derError(() => readSigned(d))).toBe(msg)
  })
})
