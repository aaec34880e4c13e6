import {
  children,
  contents,
  DerError,
  expect,
  integerBytes,
  readBitString,
  readBoolean,
  readOid,
  readRoot,
  readSmallInteger,
  readTime,
  readTlv,
  TAG,
  whole,
  type Tlv,
} from './der.js'

/** Internal: the fields of one DER certificate that SVID rules and the builder need. */

export const OID = {
  SUBJECT_KEY_ID: '2.5.29.14',
  KEY_USAGE: '2.5.29.15',
  SUBJECT_ALT_NAME: '2.5.29.17',
  BASIC_CONSTRAINTS: '2.5.29.19',
  AUTHORITY_KEY_ID: '2.5.29.35',
  EXT_KEY_USAGE: '2.5.29.37',
  EKU_SERVER_AUTH: '1.3.6.1.5.5.7.3.1',
  EKU_CLIENT_AUTH: '1.3.6.1.5.5.7.3.2',
  EXTENSION_REQUEST: '1.2.840.113549.1.9.14',
} as const

export interface Extension {
  readonly critical: boolean
  /** The extnValue OCTET STRING contents. */
  readonly value: Uint8Array
}

export interface CertificateFields {
  readonly der: Uint8Array
  readonly tbs: Uint8Array
  readonly version: number
  readonly serial: Uint8Array
  readonly signatureAlgorithm: string
  readonly issuerRaw: Uint8Array
  readonly subjectRaw: Uint8Array
  readonly subjectEmpty: boolean
  readonly notBefore: Date
  readonly notAfter: Date
  readonly spkiRaw: Uint8Array
  readonly extensions: ReadonlyMap<string, Extension>
}

export function parseCertificateFields(der: Uint8Array): CertificateFields {
  const root = readRoot(der, TAG.SEQUENCE)
  const top = children(der, root)
  if (top.length !== 3) throw new DerError('certificate must have 3 elements')
  const tbsT = expect(top[0], TAG.SEQUENCE, 'tbsCertificate')
  expect(top[1], TAG.SEQUENCE, 'signatureAlgorithm')
  expect(top[2], TAG.BIT_STRING, 'signatureValue')
  const t = children(der, tbsT)
  let i = 0
  let version = 1
  if (t[0]?.tag === 0xa0) {
    const inner = children(der, t[0])
    if (inner.length !== 1) throw new DerError('bad version')
    version = readSmallInteger(der, inner[0]!) + 1
    i++
  }
  const serial = integerBytes(der, expect(t[i++], TAG.INTEGER, 'serialNumber'))
  const sigAlgT = expect(t[i++], TAG.SEQUENCE, 'signature')
  const sigAlgChildren = children(der, sigAlgT)
  if (!sigAlgChildren[0]) throw new DerError('empty AlgorithmIdentifier')
  const signatureAlgorithm = readOid(der, sigAlgChildren[0])
  const issuerT = expect(t[i++], TAG.SEQUENCE, 'issuer')
  const validityT = expect(t[i++], TAG.SEQUENCE, 'validity')
  const subjectT = expect(t[i++], TAG.SEQUENCE, 'subject')
  const spkiT = expect(t[i++], TAG.SEQUENCE, 'subjectPublicKeyInfo')
  const validity = children(der, validityT)
  if (validity.length !== 2) throw new DerError('bad validity')
  const notBefore = readTime(der, validity[0]!)
  const notAfter = readTime(der, validity[1]!)
  const extensions = new Map<string, Extension>()
  for (; i < t.length; i++) {
    const el = t[i]!
    if (el.tag === 0x81 || el.tag === 0x82) continue // issuer/subject unique IDs
    if (el.tag !== 0xa3 || i !== t.length - 1) throw new DerError('unexpected element in tbsCertificate')
    if (version !== 3) throw new DerError('extensions require version 3')
    const inner = children(der, el)
    if (inner.length !== 1) throw new DerError('bad extensions')
    readExtensions(der, expect(inner[0], TAG.SEQUENCE, 'extensions'), extensions)
  }
  // Validate subject structure (SET OF SEQUENCE { OID, value }).
  const rdns = children(der, subjectT)
  for (const rdn of rdns) {
    expect(rdn, TAG.SET, 'RDN')
    for (const atv of children(der, rdn)) {
      const parts = children(der, expect(atv, TAG.SEQUENCE, 'AttributeTypeAndValue'))
      if (parts.length !== 2) throw new DerError('bad AttributeTypeAndValue')
      readOid(der, parts[0]!)
    }
  }
  return {
    der,
    tbs: whole(der, tbsT),
    version,
    serial,
    signatureAlgorithm,
    issuerRaw: whole(der, issuerT),
    subjectRaw: whole(der, subjectT),
    subjectEmpty: rdns.length === 0,
    notBefore,
    notAfter,
    spkiRaw: whole(der, spkiT),
    extensions,
  }
}

/** Reads `Extensions ::= SEQUENCE OF Extension` into `out`; rejects duplicates. */
export function readExtensions(der: Uint8Array, seqT: Tlv, out: Map<string, Extension>): void {
  for (const ext of children(der, seqT)) {
    const parts = children(der, expect(ext, TAG.SEQUENCE, 'Extension'))
    if (parts.length < 2 || parts.length > 3) throw new DerError('bad Extension')
    const id = readOid(der, parts[0]!)
    let critical = false
    let valueT = parts[1]!
    if (parts.length === 3) {
      critical = readBoolean(der, parts[1]!)
      if (!critical) throw new DerError('critical FALSE must be omitted in DER')
      valueT = parts[2]!
    }
    expect(valueT, TAG.OCTET_STRING, 'extnValue')
    if (out.has(id)) throw new DerError(`duplicate extension ${id}`)
    out.set(id, { critical, value: contents(der, valueT) })
  }
}

function rootOf(value: Uint8Array, tag: number): Tlv {
  return readRoot(value, tag)
}

export interface SubjectAltNames {
  readonly uris: string[]
  readonly dnsNames: string[]
}

const IA5 = /^[\x20-\x7e]*$/

export function decodeSubjectAltName(value: Uint8Array): SubjectAltNames {
  const names = children(value, rootOf(value, TAG.SEQUENCE))
  if (names.length === 0) throw new DerError('empty SubjectAltName')
  const uris: string[] = []
  const dnsNames: string[] = []
  for (const n of names) {
    if (n.tag === 0x86 || n.tag === 0x82) {
      const s = Buffer.from(contents(value, n)).toString('latin1')
      if (!IA5.test(s)) throw new DerError('SAN is not printable IA5String')
      ;(n.tag === 0x86 ? uris : dnsNames).push(s)
    }
  }
  return { uris, dnsNames }
}

export function decodeBasicConstraints(value: Uint8Array): { ca: boolean; pathLen: number | undefined } {
  const parts = children(value, rootOf(value, TAG.SEQUENCE))
  let ca = false
  let pathLen: number | undefined
  let i = 0
  if (parts[i]?.tag === TAG.BOOLEAN) {
    ca = readBoolean(value, parts[i]!)
    if (!ca) throw new DerError('cA FALSE must be omitted in DER')
    i++
  }
  if (parts[i]?.tag === TAG.INTEGER) {
    pathLen = readSmallInteger(value, parts[i]!)
    i++
  }
  if (i !== parts.length) throw new DerError('bad BasicConstraints')
  return { ca, pathLen }
}

export interface KeyUsage {
  digitalSignature: boolean
  keyEncipherment: boolean
  keyAgreement: boolean
  keyCertSign: boolean
  cRLSign: boolean
}

export function decodeKeyUsage(value: Uint8Array): KeyUsage {
  const { bytes } = readBitString(value, rootOf(value, TAG.BIT_STRING))
  const b0 = bytes[0] ?? 0
  return {
    digitalSignature: (b0 & 0x80) !== 0,
    keyEncipherment: (b0 & 0x20) !== 0,
    keyAgreement: (b0 & 0x08) !== 0,
    keyCertSign: (b0 & 0x04) !== 0,
    cRLSign: (b0 & 0x02) !== 0,
  }
}

export function decodeExtKeyUsage(value: Uint8Array): string[] {
  return children(value, rootOf(value, TAG.SEQUENCE)).map((t) => readOid(value, t))
}

export function decodeSubjectKeyId(value: Uint8Array): Uint8Array {
  return contents(value, rootOf(value, TAG.OCTET_STRING))
}

export function decodeAuthorityKeyId(value: Uint8Array): Uint8Array | undefined {
  const parts = children(value, rootOf(value, TAG.SEQUENCE))
  const k = parts.find((p) => p.tag === 0x80)
  return k ? contents(value, k) : undefined
}

/** The subjectPublicKey BIT STRING contents of a SubjectPublicKeyInfo (the SKI input, RFC 5280 §4.2.1.2 (1)). */
export function spkiKeyBits(spki: Uint8Array): Uint8Array {
  const parts = children(spki, readRoot(spki, TAG.SEQUENCE))
  if (parts.length !== 2) throw new DerError('bad SubjectPublicKeyInfo')
  expect(parts[0], TAG.SEQUENCE, 'algorithm')
  return readBitString(spki, expect(parts[1], TAG.BIT_STRING, 'subjectPublicKey')).bytes
}

/** Reads the signature BIT STRING and algorithm OID of a signed structure (Certificate or CSR). */
export function readSigned(der: Uint8Array): { tbs: Tlv; algorithm: string; signature: Uint8Array; top: Tlv[] } {
  const root = readRoot(der, TAG.SEQUENCE)
  const top = children(der, root)
  if (top.length !== 3) throw new DerError('signed structure must have 3 elements')
  const tbs = expect(top[0], TAG.SEQUENCE, 'to-be-signed')
  const alg = children(der, expect(top[1], TAG.SEQUENCE, 'signatureAlgorithm'))
  if (!alg[0]) throw new DerError('empty AlgorithmIdentifier')
  const algorithm = readOid(der, alg[0])
  const { bytes, unused } = readBitString(der, expect(top[2], TAG.BIT_STRING, 'signature'))
  if (unused !== 0) throw new DerError('signature has unused bits')
  return { tbs, algorithm, signature: bytes, top }
}

export { readTlv }
