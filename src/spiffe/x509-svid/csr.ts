import { createPublicKey, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import { KeyObjectSigner } from '../key-signer.js'
import type { Signer } from '../signer.js'
import { SpiffeId } from '../spiffe-id.js'
import { rememberSpki } from './spki.js'
import { exportSpki, signerKeyInfo, signTbs } from './certificate-builder.js'
import { decodeSubjectAltName, OID, readExtensions, readSigned, type Extension } from './certificate-fields.js'
import { children, DerError, expect, octetString, oid, readBitString, readOid, readRoot, readSmallInteger, seq, set, TAG, tlv, whole } from './der.js'

/** Largest CSR `parseCsr` reads. */
export const MAX_CSR_BYTES = 16 * 1024

export interface ParsedCsr {
  publicKey: KeyObject
  /** The URI SAN, when the CSR carries one. */
  spiffeId: SpiffeId | undefined
  dnsNames: string[]
}

type Hash = 'sha256' | 'sha384' | 'sha512'
const SIG_HASH: Readonly<Record<string, { hash: Hash; kty: 'ec' | 'rsa' }>> = {
  '1.2.840.10045.4.3.2': { hash: 'sha256', kty: 'ec' },
  '1.2.840.10045.4.3.3': { hash: 'sha384', kty: 'ec' },
  '1.2.840.10045.4.3.4': { hash: 'sha512', kty: 'ec' },
  '1.2.840.113549.1.1.11': { hash: 'sha256', kty: 'rsa' },
  '1.2.840.113549.1.1.12': { hash: 'sha384', kty: 'rsa' },
  '1.2.840.113549.1.1.13': { hash: 'sha512', kty: 'rsa' },
}
const CURVES = new Set(['prime256v1', 'secp384r1'])
const MIN_RSA_BITS = 2048
const MAX_RSA_BITS = 8192

function csrError(reason: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_CSR_INVALID', `invalid CSR: ${reason}`, cause === undefined ? undefined : { cause })
}

/**
 * Parses a PKCS#10 certificate request (DER) as the server receives it from
 * an agent: checks its self-signature, accepts EC P-256/P-384 and RSA ≥ 2048
 * keys, and reads the URI and DNS SANs of its extensionRequest. Throws
 * ERR_CSR_INVALID with a reason for anything else.
 */
export function parseCsr(der: Uint8Array): ParsedCsr {
  const c = checkCsr(der)
  rememberSpki(c.publicKey, c.spki)
  return { publicKey: c.publicKey, spiffeId: c.spiffeId, dnsNames: c.dnsNames }
}

/**
 * A CSR that passed every check of `parseCsr`, as plain data that can cross a
 * worker-thread boundary (structured clone): the subject public key as SPKI
 * DER, the URI SAN as a string, the DNS SANs.
 */
export interface VerifiedCsr {
  /** SubjectPublicKeyInfo DER of the requested key (pass it to `createX509Svid` as `{ spki }`). */
  spki: Uint8Array
  /** The URI SAN (a valid SPIFFE ID) when the CSR carries one. */
  spiffeId: string | undefined
  dnsNames: string[]
}

/**
 * Same checks as `parseCsr` (size cap, DER, key type and size, self-signature,
 * SANs; ERR_CSR_INVALID for anything wrong) without handing back a KeyObject:
 * for verifying CSRs on worker threads.
 */
export function verifyCsr(der: Uint8Array, opts: VerifyCsrOptions = {}): VerifiedCsr {
  const c = checkCsr(der, opts.ecdsa)
  return { spki: c.spki, spiffeId: c.spiffeId?.toString(), dnsNames: c.dnsNames }
}

/**
 * An ECDSA verification done outside node:crypto (the server passes a native
 * OpenSSL binding that skips the per-key import cost): `point` is the
 * uncompressed public point, `signature` the DER Ecdsa-Sig-Value, which must
 * be strict DER. Answers 'bad-key' when the point is not on the curve.
 */
export type EcdsaVerify = (curve: 'P-256' | 'P-384', point: Uint8Array, hash: Hash, data: Uint8Array, signature: Uint8Array) => 'valid' | 'invalid' | 'bad-key'

export interface VerifyCsrOptions {
  /** Checks EC signatures on P-256/P-384 keys with uncompressed points; other keys still go through node:crypto. */
  ecdsa?: EcdsaVerify
}

interface CheckedCsr<K> {
  publicKey: K
  spki: Uint8Array
  spiffeId: SpiffeId | undefined
  dnsNames: string[]
}

function checkCsr(der: Uint8Array): CheckedCsr<KeyObject>
function checkCsr(der: Uint8Array, ecdsa: EcdsaVerify | undefined): CheckedCsr<KeyObject | undefined>
function checkCsr(der: Uint8Array, ecdsa?: EcdsaVerify): CheckedCsr<KeyObject | undefined> {
  if (!(der instanceof Uint8Array)) throw new TypeError('CSR must be a Uint8Array')
  if (der.length > MAX_CSR_BYTES) throw csrError(`exceeds ${MAX_CSR_BYTES} bytes`)
  let signed: ReturnType<typeof readSigned>
  let spkiRaw: Uint8Array
  const extensions = new Map<string, Extension>()
  try {
    signed = readSigned(der)
    const info = children(der, signed.tbs)
    if (info.length !== 4) throw new DerError('CertificationRequestInfo must have 4 elements')
    if (readSmallInteger(der, expect(info[0], TAG.INTEGER, 'version')) !== 0) throw new DerError('unsupported version')
    expect(info[1], TAG.SEQUENCE, 'subject')
    spkiRaw = whole(der, expect(info[2], TAG.SEQUENCE, 'subjectPKInfo'))
    const attrs = expect(info[3], 0xa0, 'attributes')
    for (const attr of children(der, attrs)) {
      const parts = children(der, expect(attr, TAG.SEQUENCE, 'Attribute'))
      if (parts.length !== 2) throw new DerError('bad Attribute')
      const type = readOid(der, parts[0]!)
      const values = children(der, expect(parts[1], TAG.SET, 'Attribute values'))
      if (type !== OID.EXTENSION_REQUEST) continue
      if (values.length !== 1) throw new DerError('extensionRequest must have one value')
      readExtensions(der, expect(values[0], TAG.SEQUENCE, 'Extensions'), extensions)
    }
  } catch (cause) {
    if (cause instanceof IdentityError) throw cause
    throw csrError('malformed DER', cause)
  }
  const alg = SIG_HASH[signed.algorithm]
  if (!alg) throw csrError('unsupported signature algorithm')
  const ec = ecdsa && alg.kty === 'ec' ? ecPointOf(spkiRaw) : undefined
  const publicKey = ec ? checkWith(ecdsa!, ec, alg.hash, der, signed) : checkWithNode(alg, spkiRaw, der, signed)
  let spiffeId: SpiffeId | undefined
  let dnsNames: string[] = []
  const sanExt = extensions.get(OID.SUBJECT_ALT_NAME)
  if (sanExt) {
    let san
    try {
      san = decodeSubjectAltName(sanExt.value)
    } catch (cause) {
      throw csrError('subjectAltName is malformed', cause)
    }
    if (san.uris.length > 1) throw csrError('more than one URI SAN')
    if (san.uris[0] !== undefined) {
      try {
        spiffeId = SpiffeId.fromString(san.uris[0])
      } catch (cause) {
        throw csrError('URI SAN is not a valid SPIFFE ID', cause)
      }
    }
    dnsNames = san.dnsNames
  }
  return { publicKey, spki: new Uint8Array(spkiRaw), spiffeId, dnsNames }
}

type Signed = ReturnType<typeof readSigned>

/** The signature check by an outside ECDSA implementation (see `EcdsaVerify`). */
function checkWith(ecdsa: EcdsaVerify, ec: EcPoint, hash: Hash, der: Uint8Array, signed: Signed): undefined {
  let r: ReturnType<EcdsaVerify>
  try {
    r = ecdsa(ec.crv, ec.point, hash, whole(der, signed.tbs), signed.signature)
  } catch (cause) {
    throw csrError('signature cannot be checked', cause)
  }
  if (r === 'bad-key') throw csrError('public key cannot be parsed')
  if (r !== 'valid') throw csrError('signature verification failed')
  return undefined
}

/** Key import, key type and size checks and the signature check with node:crypto. */
function checkWithNode(alg: { hash: Hash; kty: 'ec' | 'rsa' }, spkiRaw: Uint8Array, der: Uint8Array, signed: Signed): KeyObject {
  let publicKey: KeyObject
  try {
    publicKey = importSpki(spkiRaw)
  } catch (cause) {
    throw csrError('public key cannot be parsed', cause)
  }
  const details = publicKey.asymmetricKeyDetails
  if (publicKey.asymmetricKeyType === 'ec') {
    if (!CURVES.has(details?.namedCurve ?? '')) throw csrError('unsupported EC curve (P-256 or P-384 required)')
  } else if (publicKey.asymmetricKeyType === 'rsa') {
    const bits = details?.modulusLength ?? 0
    if (bits < MIN_RSA_BITS || bits > MAX_RSA_BITS) throw csrError(`RSA key must be ${MIN_RSA_BITS} to ${MAX_RSA_BITS} bits`)
  } else {
    throw csrError('unsupported public key type')
  }
  if (alg.kty !== publicKey.asymmetricKeyType) throw csrError('signature algorithm does not match the public key')
  let ok = false
  try {
    ok = cryptoVerify(alg.hash, whole(der, signed.tbs), { key: publicKey, dsaEncoding: 'der' }, signed.signature)
  } catch (cause) {
    throw csrError('signature cannot be checked', cause)
  }
  if (!ok) throw csrError('signature verification failed')
  return publicKey
}

const EC_PUBLIC_KEY_OID = '1.2.840.10045.2.1'
const JWK_CURVES: Readonly<Record<string, { crv: 'P-256' | 'P-384'; len: number }>> = {
  '1.2.840.10045.3.1.7': { crv: 'P-256', len: 32 },
  '1.3.132.0.34': { crv: 'P-384', len: 48 },
}

/**
 * A public KeyObject from SPKI DER. An EC key on P-256/P-384 with an
 * uncompressed point is imported as a JWK built from its coordinates: OpenSSL
 * 3's SPKI decoder costs about twice that (and more than the ECDSA
 * verification itself). OpenSSL still checks the point is on the curve.
 * Anything else goes through the SPKI decoder.
 */
function importSpki(spki: Uint8Array): KeyObject {
  const jwk = ecJwkOf(spki)
  if (jwk) return createPublicKey({ key: jwk, format: 'jwk' })
  return createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' })
}

interface EcPoint {
  crv: 'P-256' | 'P-384'
  /** Coordinate length in bytes. */
  len: number
  /** The uncompressed point (0x04 || X || Y). */
  point: Uint8Array
}

/** The curve and uncompressed point of an EC SPKI on P-256/P-384; undefined for anything else. */
function ecPointOf(spki: Uint8Array): EcPoint | undefined {
  try {
    const top = children(spki, readRoot(spki, TAG.SEQUENCE))
    if (top.length !== 2) return undefined
    const algParts = children(spki, expect(top[0], TAG.SEQUENCE, 'AlgorithmIdentifier'))
    if (algParts.length !== 2 || readOid(spki, algParts[0]!) !== EC_PUBLIC_KEY_OID || spki[algParts[1]!.start] !== TAG.OID) return undefined
    const curve = JWK_CURVES[readOid(spki, algParts[1]!)]
    if (!curve) return undefined
    const bits = readBitString(spki, expect(top[1], TAG.BIT_STRING, 'subjectPublicKey'))
    const p = bits.bytes
    if (bits.unused !== 0 || p.length !== 1 + 2 * curve.len || p[0] !== 0x04) return undefined
    return { crv: curve.crv, len: curve.len, point: p }
  } catch {
    return undefined
  }
}

function ecJwkOf(spki: Uint8Array): { kty: 'EC'; crv: string; x: string; y: string } | undefined {
  const ec = ecPointOf(spki)
  if (!ec) return undefined
  const b = Buffer.from(ec.point.buffer, ec.point.byteOffset, ec.point.byteLength)
  return { kty: 'EC', crv: ec.crv, x: b.toString('base64url', 1, 1 + ec.len), y: b.toString('base64url', 1 + ec.len) }
}

export type CreateCsrOptions = ({ privateKey: KeyObject } | { signer: Signer }) & {
  spiffeId?: SpiffeId
  dnsNames?: readonly string[]
}

/** Builds a PKCS#10 request (DER) with an empty subject and the SPIFFE ID / DNS names as SANs. */
export async function createCsr(opts: CreateCsrOptions): Promise<Uint8Array> {
  const signer: Signer = 'signer' in opts ? opts.signer : new KeyObjectSigner(opts.privateKey)
  const keyInfo = signerKeyInfo(signer.publicKey)
  const spki = exportSpki(signer.publicKey)
  const names: Buffer[] = []
  if (opts.spiffeId !== undefined) {
    if (!(opts.spiffeId instanceof SpiffeId)) throw new TypeError('spiffeId must be a SpiffeId')
    names.push(tlv(0x86, Buffer.from(opts.spiffeId.toString(), 'latin1')))
  }
  for (const d of opts.dnsNames ?? []) {
    if (typeof d !== 'string' || !/^[\x21-\x7e]{1,253}$/.test(d)) throw new TypeError('invalid DNS name')
    names.push(tlv(0x82, Buffer.from(d, 'latin1')))
  }
  const attrs: Buffer[] = []
  if (names.length > 0) {
    const san = seq(oid(OID.SUBJECT_ALT_NAME), octetString(seq(...names)))
    attrs.push(seq(oid(OID.EXTENSION_REQUEST), set(seq(san))))
  }
  const info = seq(Buffer.from([0x02, 0x01, 0x00]), seq(), spki, tlv(0xa0, ...attrs))
  return signTbs(info, signer, keyInfo)
}
