import { createHash, KeyObject, randomFillSync } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import { checkKeyAlgorithm, defaultAlgorithmFor } from '../key-signer.js'
import type { SignatureAlgorithm, Signer } from '../signer.js'
import { SpiffeId } from '../spiffe-id.js'
import { TrustDomain } from '../trust-domain.js'
import {
  DER_NULL,
  DER_TRUE,
  octetString,
  oid,
  p1363ToDerNode,
  cons,
  encode,
  timeMemo,
  unsignedIntegerNode,
  type DerNode,
  seq,
  set,
  smallInteger,
  stringValue,
  TAG,
  time,
  tlv,
  unsignedInteger,
} from './der.js'
import { keyIds, spkiOf } from './spki.js'
import { decodeBasicConstraints, decodeKeyUsage, decodeSubjectKeyId, OID, parseCertificateFields, spkiKeyBits } from './certificate-fields.js'

/**
 * Builds CA certificates and X.509-SVIDs with a small DER encoder, signing
 * only through the `Signer` interface (an HSM or TPM key works the same as an
 * in-memory key). The constant parts of a leaf (issuer name, AKI, algorithm
 * identifier, fixed extensions) are computed once per issuer certificate.
 */

/** Subject attributes we write. Each goes into its own RDN, in this order: C, O, OU, CN, serialNumber. */
export interface X509Subject {
  country?: string
  organization?: string
  organizationalUnit?: string
  commonName?: string
  serialNumber?: string
}

/** Organization written into subjects when the caller gives none (SPIRE writes `O=SPIRE`). */
export const DEFAULT_ORGANIZATION = 'warrant'
/** How far `notBefore` is backdated by default, as SPIRE does (clock skew). */
export const NOT_BEFORE_BACKDATE_MS = 10_000

export interface CreateCaCertificateOptions {
  trustDomain: TrustDomain
  /** The new CA's public key. */
  publicKey: KeyObject
  /** Signs the certificate: the new CA's own key for a root, the issuer's key for an intermediate. */
  signer: Signer
  /** Omit for a self-signed root. */
  issuer?: { certificate: Uint8Array }
  notBefore: Date
  notAfter: Date
  /** Default: `O=warrant, serialNumber=<certificate serial in hex>`. */
  subject?: X509Subject
  /** basicConstraints pathLenConstraint; omitted when undefined. */
  maxPathLength?: number
}

export interface CreateX509SvidOptions {
  spiffeId: SpiffeId
  /**
   * The workload's (or agent's) public key: a KeyObject, or its
   * SubjectPublicKeyInfo DER as `{ spki }` (e.g. from `verifyCsr`), which
   * needs no KeyObject at all. The SPKI is copied into the certificate as is;
   * only its structure is checked, so it must come from a verified source.
   */
  publicKey: KeyObject | SubjectPublicKey
  /** The issuing CA's signer; its public key must be the issuer certificate's. */
  signer: Signer
  issuer: { certificate: Uint8Array }
  /** Default: now − 10 s. */
  notBefore?: Date
  /** Clamped to the issuer's notAfter: a leaf never outlives its CA. */
  notAfter: Date
  dnsNames?: readonly string[]
  /**
   * Default: `O=warrant, CN=<first DNS name, if any>, serialNumber=<serial hex>`
   * (SPIRE-like: a per-certificate unique subject, CN from the first DNS name).
   * Pass `{}` for an empty subject; the URI SAN is then marked critical.
   */
  subject?: X509Subject
}

/** A subject public key given as SubjectPublicKeyInfo DER. */
export interface SubjectPublicKey {
  spki: Uint8Array
}

// ------------------------------------------------------------ constants

const EXT_OID = {
  ski: oid(OID.SUBJECT_KEY_ID),
  ku: oid(OID.KEY_USAGE),
  san: oid(OID.SUBJECT_ALT_NAME),
  bc: oid(OID.BASIC_CONSTRAINTS),
  aki: oid(OID.AUTHORITY_KEY_ID),
  eku: oid(OID.EXT_KEY_USAGE),
}

function extension(extOid: Buffer, critical: boolean, value: Uint8Array): Buffer {
  return critical ? seq(extOid, DER_TRUE, octetString(value)) : seq(extOid, octetString(value))
}

/** KeyUsage digitalSignature | keyEncipherment | keyAgreement (bits 0, 2, 4). */
const LEAF_KEY_USAGE = extension(EXT_OID.ku, true, Buffer.from([0x03, 0x02, 0x03, 0xa8]))
/** KeyUsage digitalSignature | keyCertSign | cRLSign (bits 0, 5, 6). */
const CA_KEY_USAGE = extension(EXT_OID.ku, true, Buffer.from([0x03, 0x02, 0x01, 0x86]))
const LEAF_EXT_KEY_USAGE = extension(EXT_OID.eku, false, seq(oid(OID.EKU_SERVER_AUTH), oid(OID.EKU_CLIENT_AUTH)))
const LEAF_BASIC_CONSTRAINTS = extension(EXT_OID.bc, true, seq())
const ZERO_BYTE = Uint8Array.of(0)
const VERSION_3 = Buffer.from([0xa0, 0x03, 0x02, 0x01, 0x02])

const SIG_ALG_ID: Readonly<Partial<Record<SignatureAlgorithm, Buffer>>> = {
  ES256: seq(oid('1.2.840.10045.4.3.2')),
  ES384: seq(oid('1.2.840.10045.4.3.3')),
  ES512: seq(oid('1.2.840.10045.4.3.4')),
  RS256: seq(oid('1.2.840.113549.1.1.11'), DER_NULL),
  RS384: seq(oid('1.2.840.113549.1.1.12'), DER_NULL),
  RS512: seq(oid('1.2.840.113549.1.1.13'), DER_NULL),
}

const ATTR = {
  C: oid('2.5.4.6'),
  O: oid('2.5.4.10'),
  OU: oid('2.5.4.11'),
  CN: oid('2.5.4.3'),
  SERIAL: oid('2.5.4.5'),
}

// ------------------------------------------------------------ caches

export interface SignerKeyInfo {
  alg: SignatureAlgorithm
  algId: Buffer
  spki: Buffer
  ecdsa: boolean
}
const signerKeyCache = new WeakMap<KeyObject, SignerKeyInfo>()

/** @internal */
export function signerKeyInfo(publicKey: KeyObject): SignerKeyInfo {
  let info = signerKeyCache.get(publicKey)
  if (!info) {
    const alg = defaultAlgorithmFor(publicKey)
    const algId = SIG_ALG_ID[alg]
    if (!algId) throw new TypeError(`signer key type is not supported for certificates (${alg})`)
    checkKeyAlgorithm(publicKey, alg)
    info = { alg, algId, spki: exportSpki(publicKey), ecdsa: alg.startsWith('ES') }
    signerKeyCache.set(publicKey, info)
  }
  return info
}

interface IssuerInfo {
  subjectRaw: Uint8Array
  notAfter: Date
  spki: Buffer
  /** The AKI extension for certificates this issuer signs (undefined when the issuer has no SKI). */
  akiExtension: Buffer | undefined
}
const issuerCache = new WeakMap<Uint8Array, IssuerInfo>()

function issuerInfo(certificate: Uint8Array): IssuerInfo {
  if (!(certificate instanceof Uint8Array)) throw new TypeError('issuer.certificate must be DER bytes (Uint8Array)')
  let info = issuerCache.get(certificate)
  if (info) return info
  let fields
  try {
    fields = parseCertificateFields(certificate)
  } catch (cause) {
    throw new TypeError('issuer.certificate is not a parsable DER certificate', { cause })
  }
  const ext = fields.extensions
  const bc = ext.get(OID.BASIC_CONSTRAINTS)
  const ku = ext.get(OID.KEY_USAGE)
  let isCa = false
  let canSign = false
  let ski: Uint8Array | undefined
  try {
    isCa = bc !== undefined && decodeBasicConstraints(bc.value).ca
    canSign = ku !== undefined && decodeKeyUsage(ku.value).keyCertSign
    const s = ext.get(OID.SUBJECT_KEY_ID)
    if (s) ski = decodeSubjectKeyId(s.value)
  } catch (cause) {
    throw new TypeError('issuer.certificate has malformed extensions', { cause })
  }
  if (!isCa || !canSign) throw new TypeError('issuer.certificate is not a CA certificate with keyCertSign')
  info = {
    subjectRaw: new Uint8Array(fields.subjectRaw),
    notAfter: fields.notAfter,
    spki: Buffer.from(fields.spkiRaw),
    akiExtension: ski ? extension(EXT_OID.aki, false, seq(tlv(0x80, ski))) : undefined,
  }
  issuerCache.set(certificate, info)
  return info
}

// ------------------------------------------------------------ helpers

export function exportSpki(publicKey: KeyObject): Buffer {
  return spkiOf(publicKey)
}

/** RFC 5280 §4.2.1.2 method (1): SHA-1 of the subjectPublicKey bits. */
function subjectKeyId(spki: Uint8Array): Buffer {
  return createHash('sha1').update(spkiKeyBits(spki)).digest()
}

const serialPool = Buffer.alloc(16 * 256)
let serialOffset = serialPool.length

/** A random positive serial of up to 128 bits (never zero). */
function randomSerial(): Buffer {
  for (;;) {
    if (serialOffset >= serialPool.length) {
      randomFillSync(serialPool)
      serialOffset = 0
    }
    const bytes = serialPool.subarray(serialOffset, serialOffset + 16)
    serialOffset += 16
    if (bytes.some((b) => b !== 0)) return Buffer.from(bytes)
  }
}

const PRINTABLE = /^[A-Za-z0-9 '()+,\-./:=?]*$/

function encodeName(s: X509Subject): Buffer {
  const rdns: Buffer[] = []
  const add = (type: Buffer, tag: number, value: string | undefined, what: string): void => {
    if (value === undefined) return
    if (typeof value !== 'string' || value.length === 0) throw new TypeError(`subject ${what} must be a non-empty string`)
    if (tag === TAG.PRINTABLE_STRING && !PRINTABLE.test(value)) throw new TypeError(`subject ${what} must be a PrintableString`)
    rdns.push(set(seq(type, stringValue(tag, value))))
  }
  if (s.country !== undefined && s.country.length !== 2) throw new TypeError('subject country must be a 2-letter code')
  add(ATTR.C, TAG.PRINTABLE_STRING, s.country, 'country')
  add(ATTR.O, TAG.UTF8_STRING, s.organization, 'organization')
  add(ATTR.OU, TAG.UTF8_STRING, s.organizationalUnit, 'organizationalUnit')
  add(ATTR.CN, TAG.UTF8_STRING, s.commonName, 'commonName')
  add(ATTR.SERIAL, TAG.PRINTABLE_STRING, s.serialNumber, 'serialNumber')
  return seq(...rdns)
}

const DNS_NAME = /^(\*\.)?([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*$/

function checkDnsName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 253 || !DNS_NAME.test(name)) {
    throw new TypeError(`invalid DNS name ${JSON.stringify(String(name).slice(0, 64))}`)
  }
}

function checkDate(d: unknown, what: string): Date {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new TypeError(`${what} must be a valid Date`)
  return d
}

/** Signs `tbs` with `signer` and wraps it into a Certificate. */
/** @internal */
export async function signTbs(tbs: Buffer, signer: Signer, key: SignerKeyInfo): Promise<Uint8Array> {
  return assembleCertificate(tbs, await signer.sign(tbs, key.alg), key)
}

/** The certificate of a TBS and the signer's raw signature over it (P1363 for ECDSA). */
function assembleCertificate(tbs: Buffer, raw: Uint8Array, key: SignerKeyInfo): Uint8Array {
  let sig: DerNode
  if (key.ecdsa) {
    try {
      sig = p1363ToDerNode(raw)
    } catch (cause) {
      throw new IdentityError('ERR_INTERNAL', 'signer returned a malformed ECDSA signature', { cause })
    }
  } else {
    sig = raw
  }
  const cert = encode(cons(TAG.SEQUENCE, tbs, key.algId, cons(TAG.BIT_STRING, ZERO_BYTE, sig)))
  return new Uint8Array(cert.buffer, cert.byteOffset, cert.byteLength)
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0
}

const matchedSigners = new WeakMap<Uint8Array, WeakSet<KeyObject>>()

/** Makes sure the signer's key is the issuer certificate's key (checked once per pair). */
function checkSignerMatchesIssuer(issuerDer: Uint8Array, issuer: IssuerInfo, signerKey: KeyObject, info: SignerKeyInfo): void {
  let ok = matchedSigners.get(issuerDer)
  if (ok?.has(signerKey)) return
  if (!sameBytes(issuer.spki, info.spki)) throw new TypeError("signer's public key does not match the issuer certificate")
  if (!ok) {
    ok = new WeakSet()
    matchedSigners.set(issuerDer, ok)
  }
  ok.add(signerKey)
}

function validity(notBefore: Date, notAfter: Date): Buffer {
  if (notAfter.getTime() <= notBefore.getTime()) throw new RangeError('notAfter must be later than notBefore')
  return seq(time(notBefore), time(notAfter))
}

function uriSan(uri: string, dnsNames: readonly string[] | undefined): Buffer {
  const names: Buffer[] = [tlv(0x86, Buffer.from(uri, 'latin1'))]
  if (dnsNames) for (const d of dnsNames) names.push(tlv(0x82, Buffer.from(d, 'latin1')))
  return seq(...names)
}

// ------------------------------------------------------------ CA certificates

/** Builds a CA certificate (self-signed root without `issuer`, intermediate with it). Returns DER. */
export async function createCaCertificate(opts: CreateCaCertificateOptions): Promise<Uint8Array> {
  if (!(opts.trustDomain instanceof TrustDomain)) throw new TypeError('trustDomain must be a TrustDomain')
  const notBefore = checkDate(opts.notBefore, 'notBefore')
  let notAfter = checkDate(opts.notAfter, 'notAfter')
  if (opts.maxPathLength !== undefined && (!Number.isInteger(opts.maxPathLength) || opts.maxPathLength < 0)) {
    throw new RangeError('maxPathLength must be a non-negative integer')
  }
  const spki = exportSpki(opts.publicKey)
  const keyInfo = signerKeyInfo(opts.signer.publicKey)
  const serial = randomSerial()
  const subject = encodeName(opts.subject ?? { organization: DEFAULT_ORGANIZATION, serialNumber: serial.toString('hex') })
  const ski = subjectKeyId(spki)
  let issuerName: Uint8Array
  let aki: Buffer | undefined
  if (opts.issuer) {
    const issuer = issuerInfo(opts.issuer.certificate)
    checkSignerMatchesIssuer(opts.issuer.certificate, issuer, opts.signer.publicKey, keyInfo)
    issuerName = issuer.subjectRaw
    aki = issuer.akiExtension
    if (notAfter.getTime() > issuer.notAfter.getTime()) notAfter = issuer.notAfter
  } else {
    if (!sameBytes(spki, keyInfo.spki)) throw new TypeError("a self-signed CA's signer must hold the CA's own key")
    issuerName = subject
  }
  const bc = seq(DER_TRUE, ...(opts.maxPathLength === undefined ? [] : [smallInteger(opts.maxPathLength)]))
  const exts: Buffer[] = [extension(EXT_OID.bc, true, bc), CA_KEY_USAGE, extension(EXT_OID.ski, false, octetString(ski))]
  if (aki) exts.push(aki)
  exts.push(extension(EXT_OID.san, false, uriSan(opts.trustDomain.idString(), undefined)))
  const tbs = seq(VERSION_3, unsignedInteger(serial), keyInfo.algId, issuerName, validity(notBefore, notAfter), subject, spki, tlv(0xa3, seq(...exts)))
  return signTbs(tbs, opts.signer, keyInfo)
}

// ------------------------------------------------------------ X.509-SVIDs

const SKI_OID = oid(OID.SUBJECT_KEY_ID)
const SAN_OID = oid(OID.SUBJECT_ALT_NAME)
const SERIAL_NUMBER_HEADER = Uint8Array.of(0x31, 0x29, 0x30, 0x27, 0x06, 0x03, 0x55, 0x04, 0x05, 0x13, 0x20)
const DEFAULT_O_RDN = encodeName({ organization: DEFAULT_ORGANIZATION })

/** SPKI DER and SKI of a KeyObject (memoised per key) or of `{ spki }` bytes. */
function subjectKeyIds(key: KeyObject | SubjectPublicKey): { spki: Uint8Array; ski: Buffer } {
  if (!(key instanceof KeyObject) && key !== null && typeof key === 'object' && 'spki' in key) {
    const spki: unknown = key.spki
    if (!(spki instanceof Uint8Array)) throw new TypeError('publicKey.spki must be DER bytes (Uint8Array)')
    let bits: Uint8Array
    try {
      bits = spkiKeyBits(spki)
    } catch (cause) {
      throw new TypeError('publicKey.spki is not a DER SubjectPublicKeyInfo', { cause })
    }
    return { spki, ski: createHash('sha1').update(bits).digest() }
  }
  return keyIds(key)
}

/** Builds and signs an X.509-SVID leaf certificate. Returns DER. */
export async function createX509Svid(opts: CreateX509SvidOptions): Promise<Uint8Array> {
  const { tbs, keyInfo } = leafTbs(opts)
  return signTbs(tbs, opts.signer, keyInfo)
}

/** A signer that can also sign synchronously (an in-process key, e.g. `KeyObjectSigner`). */
export interface SyncSigner extends Signer {
  signSync(data: Uint8Array, alg: SignatureAlgorithm): Uint8Array
}

/**
 * `createX509Svid` for a signer that signs synchronously: the same
 * certificate, with no promise per leaf (the CSR workers sign thousands of
 * leaves a second this way).
 */
export function createX509SvidSync(opts: CreateX509SvidOptions & { signer: SyncSigner }): Uint8Array {
  const { tbs, keyInfo } = leafTbs(opts)
  return assembleCertificate(tbs, opts.signer.signSync(tbs, keyInfo.alg), keyInfo)
}

/** The TBSCertificate of a leaf, and the signer's key facts to sign it with. */
function leafTbs(opts: CreateX509SvidOptions): { tbs: Buffer; keyInfo: SignerKeyInfo } {
  const id = opts.spiffeId
  if (!(id instanceof SpiffeId)) throw new TypeError('spiffeId must be a SpiffeId')
  if (id.isTrustDomainId()) throw new TypeError('an X.509-SVID needs a SPIFFE ID with a path')
  const keyInfo = signerKeyInfo(opts.signer.publicKey)
  const issuer = issuerInfo(opts.issuer.certificate)
  checkSignerMatchesIssuer(opts.issuer.certificate, issuer, opts.signer.publicKey, keyInfo)
  const notBefore = opts.notBefore === undefined ? new Date(Date.now() - NOT_BEFORE_BACKDATE_MS) : checkDate(opts.notBefore, 'notBefore')
  let notAfter = checkDate(opts.notAfter, 'notAfter')
  if (notAfter.getTime() > issuer.notAfter.getTime()) notAfter = issuer.notAfter
  if (Math.floor(notAfter.getTime() / 1000) <= Math.floor(notBefore.getTime() / 1000)) throw new RangeError('notAfter must be later than notBefore')
  const dnsNames = opts.dnsNames
  if (dnsNames) for (const d of dnsNames) checkDnsName(d)
  const { spki, ski } = subjectKeyIds(opts.publicKey)
  const serial = randomSerial()

  let subject: DerNode
  if (opts.subject === undefined) {
    // O=warrant[, CN=<first DNS name>], serialNumber=<32 hex digits> (the serial is always 16 bytes)
    const rdns: DerNode[] = [DEFAULT_O_RDN.subarray(2)]
    if (dnsNames && dnsNames[0] !== undefined) rdns.push(encodeName({ commonName: dnsNames[0] }).subarray(2))
    rdns.push(SERIAL_NUMBER_HEADER, Buffer.from(serial.toString('hex'), 'latin1'))
    subject = cons(TAG.SEQUENCE, ...rdns)
  } else {
    subject = encodeName(opts.subject)
  }
  const subjectEmpty = opts.subject !== undefined && (subject as Buffer).length === 2

  const names: DerNode[] = [cons(0x86, Buffer.from(id.toString(), 'latin1'))]
  if (dnsNames) for (const d of dnsNames) names.push(cons(0x82, Buffer.from(d, 'latin1')))
  const sanValue = cons(TAG.OCTET_STRING, cons(TAG.SEQUENCE, ...names))
  const san = subjectEmpty ? cons(TAG.SEQUENCE, SAN_OID, DER_TRUE, sanValue) : cons(TAG.SEQUENCE, SAN_OID, sanValue)
  const exts: DerNode[] = [
    LEAF_KEY_USAGE,
    LEAF_EXT_KEY_USAGE,
    LEAF_BASIC_CONSTRAINTS,
    cons(TAG.SEQUENCE, SKI_OID, cons(TAG.OCTET_STRING, cons(TAG.OCTET_STRING, ski))),
  ]
  if (issuer.akiExtension) exts.push(issuer.akiExtension)
  exts.push(san)
  const tbs = encode(
    cons(
      TAG.SEQUENCE,
      VERSION_3,
      unsignedIntegerNode(serial),
      keyInfo.algId,
      issuer.subjectRaw,
      cons(TAG.SEQUENCE, timeMemo(notBefore), timeMemo(notAfter)),
      subject,
      spki,
      cons(0xa3, cons(TAG.SEQUENCE, ...exts)),
    ),
  )
  return { tbs, keyInfo }
}
