import { X509Certificate, createHash, type KeyObject } from 'node:crypto'
import * as asn1js from 'asn1js'
import * as pkijs from 'pkijs'
import { IdentityError } from '../../errors/index.js'

/**
 * Endorsement-key checks: EK certificate parsing (PC Client NV framing,
 * padding, the TCG critical SAN), chain validation to configured
 * manufacturer CAs, and the binding between certificate and EK public area.
 * Every failure throws ERR_TPM_VERIFICATION_FAILED, except bytes that are not
 * a certificate at all, which throw ERR_TPM_PAYLOAD_INVALID.
 */

const OID_SAN = '2.5.29.17'
const OID_BASIC_CONSTRAINTS = '2.5.29.19'
const OID_KEY_USAGE = '2.5.29.15'
const OID_EXT_KEY_USAGE = '2.5.29.37'
const OID_CERT_POLICIES = '2.5.29.32'
const OID_NAME_CONSTRAINTS = '2.5.29.30'
const OID_POLICY_CONSTRAINTS = '2.5.29.36'
const OID_INHIBIT_ANY_POLICY = '2.5.29.54'
/** TCG attributes carried in the EK certificate's SAN DirName (TCG EK Credential Profile §3.2.9). */
const OID_TCG_MANUFACTURER = '2.23.133.2.1'
const OID_TCG_MODEL = '2.23.133.2.2'
const OID_TCG_VERSION = '2.23.133.2.3'

/** Critical extensions we understand: SAN (TCG DirName), and those Node/OpenSSL process during the walk. */
const HANDLED_CRITICAL = new Set([OID_SAN, OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_EXT_KEY_USAGE, OID_CERT_POLICIES])
const HANDLED_CRITICAL_CA = new Set([OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, OID_CERT_POLICIES, OID_SAN, OID_EXT_KEY_USAGE])

/** Upper bound on the size of an EK certificate we accept. */
export const MAX_EK_CERT_BYTES = 8192
const MAX_CHAIN_DEPTH = 8

export interface TcgDeviceInfo {
  manufacturer?: string
  model?: string
  version?: string
}

export interface EkCertificate {
  /** The DER certificate, without NV framing or padding. */
  der: Uint8Array
  cert: X509Certificate
  /** From the SAN DirName, when present. */
  tcg: TcgDeviceInfo
}

export interface EkTrustAnchors {
  /** Self-signed manufacturer roots. */
  roots: X509Certificate[]
  /** Intermediate CAs that may appear between the EK certificate and a root. */
  intermediates: X509Certificate[]
}

function fail(message: string, details?: Record<string, unknown>): never {
  throw new IdentityError('ERR_TPM_VERIFICATION_FAILED', message, details === undefined ? undefined : { details })
}

function invalid(message: string, cause?: unknown): never {
  throw new IdentityError('ERR_TPM_PAYLOAD_INVALID', message, cause === undefined ? undefined : { cause })
}

/** Lowercase hex SHA-256 of a key's PKIX (SubjectPublicKeyInfo) DER: the EK identity used in agent IDs and allow-lists. */
export function publicKeyHash(key: KeyObject): string {
  return createHash('sha256')
    .update(key.export({ format: 'der', type: 'spki' }))
    .digest('hex')
}

/** Lowercase hex SHA-256 of a certificate's DER. */
export function certFingerprint(cert: X509Certificate): string {
  return createHash('sha256').update(cert.raw).digest('hex')
}

/**
 * Strips PC Client NV framing (`10 01 00 <len16>`) and trailing padding from
 * raw EK certificate NV bytes and returns the DER certificate.
 */
export function unwrapEkCertificateBytes(raw: Uint8Array): Uint8Array {
  let b = raw
  if (b.length > 5 && b[0] === 0x10 && b[1] === 0x01 && b[2] === 0x00) {
    const len = (b[3]! << 8) | b[4]!
    if (len === 0 || 5 + len > b.length) invalid('EK certificate NV framing has an invalid length')
    b = b.subarray(5, 5 + len)
  }
  // DER SEQUENCE header: trim anything after the encoded length (NV padding).
  if (b.length < 2 || b[0] !== 0x30) invalid('EK certificate is not a DER SEQUENCE')
  const first = b[1]!
  let total: number
  if (first < 0x80) total = 2 + first
  else {
    const n = first & 0x7f
    if (n === 0 || n > 3 || b.length < 2 + n) invalid('EK certificate has an unsupported DER length')
    let len = 0
    for (let i = 0; i < n; i++) len = (len << 8) | b[2 + i]!
    total = 2 + n + len
  }
  if (total > b.length) invalid('EK certificate is truncated')
  return b.subarray(0, total)
}

/** Parses an EK certificate (raw NV bytes or DER). Rejects unknown critical extensions. */
export function parseEkCertificate(raw: Uint8Array): EkCertificate {
  if (raw.length > MAX_EK_CERT_BYTES + 5) invalid('EK certificate too large')
  const der = unwrapEkCertificateBytes(raw)
  let cert: X509Certificate
  try {
    cert = new X509Certificate(der)
  } catch (err) {
    invalid('EK certificate could not be parsed', err)
  }
  const exts = readExtensions(der)
  let tcg: TcgDeviceInfo = {}
  for (const e of exts) {
    if (e.oid === OID_SAN) tcg = parseTcgSan(e.value)
    else if (e.critical && !HANDLED_CRITICAL.has(e.oid)) fail('EK certificate has an unhandled critical extension', { oid: e.oid })
  }
  return { der: new Uint8Array(der), cert, tcg }
}

interface RawExtension {
  oid: string
  critical: boolean
  value: Uint8Array
}

function readExtensions(der: Uint8Array): RawExtension[] {
  const asn = asn1js.fromBER(der)
  if (asn.offset === -1) invalid('EK certificate is not valid BER')
  let c: pkijs.Certificate
  try {
    c = new pkijs.Certificate({ schema: asn.result })
  } catch (err) {
    invalid('EK certificate structure is invalid', err)
  }
  return (c.extensions ?? []).map((e) => ({
    oid: e.extnID,
    critical: e.critical,
    value: new Uint8Array(e.extnValue.valueBlock.valueHexView),
  }))
}

/**
 * The TCG EK SAN is a GeneralNames with one directoryName holding
 * tcg-at-tpmManufacturer / tpmModel / tpmVersion. Other general names are
 * tolerated; a SAN that does not parse is rejected (it is critical).
 */
function parseTcgSan(value: Uint8Array): TcgDeviceInfo {
  const asn = asn1js.fromBER(value)
  if (asn.offset === -1) fail('EK certificate SAN is not valid BER')
  let names: pkijs.GeneralNames
  try {
    names = new pkijs.GeneralNames({ schema: asn.result })
  } catch {
    fail('EK certificate SAN is not a GeneralNames')
  }
  const info: TcgDeviceInfo = {}
  for (const n of names.names) {
    if (n.type !== 4) continue // directoryName
    const rdn = n.value as pkijs.RelativeDistinguishedNames
    for (const tv of rdn.typesAndValues) {
      const v = String(tv.value.valueBlock.value ?? '')
      if (tv.type === OID_TCG_MANUFACTURER) info.manufacturer = v
      else if (tv.type === OID_TCG_MODEL) info.model = v
      else if (tv.type === OID_TCG_VERSION) info.version = v
    }
  }
  return info
}

/** Parses PEM text holding one or more certificates. Throws ERR_CONFIG_INVALID. */
export function parsePemCertificates(pem: string, source = 'PEM'): X509Certificate[] {
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? []
  if (blocks.length === 0) throw new IdentityError('ERR_CONFIG_INVALID', `no certificate found in ${source}`)
  return blocks.map((b) => {
    try {
      return new X509Certificate(b)
    } catch (err) {
      throw new IdentityError('ERR_CONFIG_INVALID', `invalid certificate in ${source}`, { cause: err })
    }
  })
}

/** Splits CA certificates into self-signed roots and intermediates. */
export function trustAnchorsFrom(certs: X509Certificate[]): EkTrustAnchors {
  const roots: X509Certificate[] = []
  const intermediates: X509Certificate[] = []
  for (const c of certs) {
    const selfSigned = c.subject === c.issuer && c.checkIssued(c) && c.verify(c.publicKey)
    ;(selfSigned ? roots : intermediates).push(c)
  }
  return { roots, intermediates }
}

/**
 * Walks from `leaf` to a configured root. Each step needs the issuer to be a
 * CA (basicConstraints cA), to be named and key-identified as issuer
 * (`checkIssued`), to have signed the child, and every certificate to be valid
 * at `now`. Returns the SHA-256 fingerprints of the CA certificates in the
 * chain, leaf's issuer first, root last.
 */
export function verifyEkChain(leaf: X509Certificate, anchors: EkTrustAnchors, now: number): string[] {
  if (anchors.roots.length === 0) fail('no EK root CA configured')
  const rootFps = new Set(anchors.roots.map(certFingerprint))
  const candidates = [...anchors.intermediates, ...anchors.roots]
  const chain: string[] = []
  checkValidity(leaf, now, 'EK certificate')
  let current = leaf
  for (let depth = 0; depth < MAX_CHAIN_DEPTH; depth++) {
    const issuer = candidates.find((c) => c.ca && current.checkIssued(c) && !chain.includes(certFingerprint(c)) && current.verify(c.publicKey))
    if (!issuer) fail('EK certificate does not chain to a configured CA', { depth, issuer: current.issuer })
    checkValidity(issuer, now, 'EK CA certificate')
    if (depth > 0) checkCaCritical(current)
    const fp = certFingerprint(issuer)
    chain.push(fp)
    if (rootFps.has(fp)) {
      checkCaCritical(issuer)
      return chain
    }
    current = issuer
  }
  fail('EK certificate chain is too long')
}

function checkCaCritical(ca: X509Certificate): void {
  for (const e of readExtensions(new Uint8Array(ca.raw))) {
    if (
      e.critical &&
      !HANDLED_CRITICAL_CA.has(e.oid) &&
      e.oid !== OID_NAME_CONSTRAINTS &&
      e.oid !== OID_POLICY_CONSTRAINTS &&
      e.oid !== OID_INHIBIT_ANY_POLICY
    ) {
      fail('EK CA certificate has an unhandled critical extension', { oid: e.oid })
    }
  }
}

function checkValidity(c: X509Certificate, now: number, what: string): void {
  const from = Date.parse(c.validFrom)
  const to = Date.parse(c.validTo)
  if (!(from <= now && now <= to)) fail(`${what} is not valid at the current time`, { validFrom: c.validFrom, validTo: c.validTo })
}

export interface VerifyEkParams {
  /** The EK public key from the EK public area (TPMT_PUBLIC) the agent will use. */
  ekPublicKey: KeyObject
  /** The EK certificate, DER or raw NV bytes. */
  ekCert?: Uint8Array
  anchors?: EkTrustAnchors
  /** Lowercase hex SHA-256 hashes of EK PKIX public keys that are accepted without a certificate. */
  allowList?: Iterable<string>
  now: number
}

export interface VerifiedEk {
  /** Lowercase hex SHA-256 of the EK PKIX public key. */
  ekHash: string
  /** SHA-256 fingerprints of the CA certificates the EK certificate chains through (empty when allow-listed). */
  caFingerprints: string[]
  /** 'chain' when the EK certificate chained to a configured CA, 'allow_list' otherwise. */
  method: 'chain' | 'allow_list'
  tcg: TcgDeviceInfo
}

/**
 * Accepts the EK when its certificate chains to a configured CA and carries
 * the same key as the EK public area, or when its public-key hash is
 * allow-listed. A certificate whose key is not the EK is always rejected.
 */
export function verifyEk(p: VerifyEkParams): VerifiedEk {
  const ekHash = publicKeyHash(p.ekPublicKey)
  const allow = new Set([...(p.allowList ?? [])].map((h) => h.toLowerCase()))
  let chainError: unknown
  if (p.ekCert !== undefined && p.ekCert.length > 0) {
    const parsed = parseEkCertificate(p.ekCert)
    const certKey = parsed.cert.publicKey
    if (!certKey.equals(p.ekPublicKey)) fail('EK certificate public key does not match the EK public area')
    if (p.anchors && p.anchors.roots.length > 0) {
      try {
        const caFingerprints = verifyEkChain(parsed.cert, p.anchors, p.now)
        return { ekHash, caFingerprints, method: 'chain', tcg: parsed.tcg }
      } catch (err) {
        chainError = err
      }
    }
    if (allow.has(ekHash)) return { ekHash, caFingerprints: [], method: 'allow_list', tcg: parsed.tcg }
  } else if (allow.has(ekHash)) {
    return { ekHash, caFingerprints: [], method: 'allow_list', tcg: {} }
  }
  if (chainError) throw chainError as Error
  if (p.ekCert === undefined || p.ekCert.length === 0) fail('no EK certificate and the EK is not allow-listed')
  fail('EK certificate cannot be verified: no EK CA configured and the EK is not allow-listed')
}
