import { createHash, createPublicKey, type KeyObject } from 'node:crypto'
import { IdentityError } from '../errors/index.js'
import { TpmReader, TpmWriter } from './marshal.js'

/**
 * TPM 2.0 structure codecs (TCG TPM 2.0 Part 2), written from the spec as
 * summarised in docs and go-tpm / tpm2-tss. `encodeX` returns bytes (or writes
 * to a TpmWriter via `writeX`), `decodeX(reader)` reads one structure,
 * `parseX(bytes)` reads a whole buffer and rejects trailing bytes.
 * Every malformed input throws IdentityError('ERR_TPM_PAYLOAD_INVALID').
 */

// ---------------------------------------------------------------- constants

export const TPM_ALG = {
  RSA: 0x0001,
  SHA1: 0x0004,
  HMAC: 0x0005,
  AES: 0x0006,
  MGF1: 0x0007,
  KEYEDHASH: 0x0008,
  XOR: 0x000a,
  SHA256: 0x000b,
  SHA384: 0x000c,
  SHA512: 0x000d,
  NULL: 0x0010,
  SM4: 0x0013,
  RSASSA: 0x0014,
  RSAES: 0x0015,
  RSAPSS: 0x0016,
  OAEP: 0x0017,
  ECDSA: 0x0018,
  ECDH: 0x0019,
  ECDAA: 0x001a,
  KDF1_SP800_56A: 0x0020,
  KDF2: 0x0021,
  KDF1_SP800_108: 0x0022,
  ECC: 0x0023,
  SYMCIPHER: 0x0025,
  CAMELLIA: 0x0026,
  CTR: 0x0040,
  OFB: 0x0041,
  CBC: 0x0042,
  CFB: 0x0043,
  ECB: 0x0044,
} as const

export const TPM_ECC_CURVE = {
  NIST_P256: 0x0003,
  NIST_P384: 0x0004,
  NIST_P521: 0x0005,
  P256: 0x0003,
  P384: 0x0004,
  P521: 0x0005,
} as const

/** TPMA_OBJECT bits. */
export const TPMA_OBJECT = {
  fixedTPM: 1 << 1,
  stClear: 1 << 2,
  fixedParent: 1 << 4,
  sensitiveDataOrigin: 1 << 5,
  userWithAuth: 1 << 6,
  adminWithPolicy: 1 << 7,
  noDA: 1 << 10,
  encryptedDuplication: 1 << 11,
  restricted: 1 << 16,
  decrypt: 1 << 17,
  sign: 1 << 18,
} as const

/** TPMA_NV bits used by EK certificate indices. */
export const TPMA_NV = {
  ppWrite: 1 << 0,
  ownerWrite: 1 << 1,
  authWrite: 1 << 2,
  policyWrite: 1 << 3,
  policyDelete: 1 << 10,
  writeLocked: 1 << 11,
  writeAll: 1 << 12,
  writeDefine: 1 << 13,
  writeStClear: 1 << 14,
  globalLock: 1 << 15,
  ppRead: 1 << 16,
  ownerRead: 1 << 17,
  authRead: 1 << 18,
  policyRead: 1 << 19,
  noDA: 1 << 25,
  orderly: 1 << 26,
  clearStClear: 1 << 27,
  readLocked: 1 << 28,
  written: 1 << 29,
  platformCreate: 1 << 30,
  readStClear: 2 ** 31,
} as const

export const TPM_ST = {
  RSP_COMMAND: 0x00c4,
  NULL: 0x8000,
  NO_SESSIONS: 0x8001,
  SESSIONS: 0x8002,
  ATTEST_NV: 0x8014,
  ATTEST_COMMAND_AUDIT: 0x8015,
  ATTEST_SESSION_AUDIT: 0x8016,
  ATTEST_CERTIFY: 0x8017,
  ATTEST_QUOTE: 0x8018,
  ATTEST_TIME: 0x8019,
  ATTEST_CREATION: 0x801a,
  CREATION: 0x8021,
  VERIFIED: 0x8022,
  AUTH_SECRET: 0x8023,
  HASHCHECK: 0x8024,
  AUTH_SIGNED: 0x8025,
} as const

export const TPM_ST_ATTEST_QUOTE = TPM_ST.ATTEST_QUOTE
export const TPM_ST_ATTEST_CREATION = TPM_ST.ATTEST_CREATION
export const TPM_ST_ATTEST_CERTIFY = TPM_ST.ATTEST_CERTIFY
export const TPM_GENERATED_VALUE = 0xff544347

/** Permanent handles (TPM_RH / TPM_RS). */
export const TPM_RH = {
  OWNER: 0x40000001,
  NULL: 0x40000007,
  PW: 0x40000009,
  LOCKOUT: 0x4000000a,
  ENDORSEMENT: 0x4000000b,
  PLATFORM: 0x4000000c,
} as const
export const TPM_RS_PW = TPM_RH.PW

/** Handle type (most significant octet). */
export const TPM_HT = {
  PCR: 0x00,
  NV_INDEX: 0x01,
  HMAC_SESSION: 0x02,
  POLICY_SESSION: 0x03,
  PERMANENT: 0x40,
  TRANSIENT: 0x80,
  PERSISTENT: 0x81,
} as const

export const TPM_SE = { HMAC: 0x00, POLICY: 0x01, TRIAL: 0x03 } as const

/** Well-known NV indices and persistent handles (TCG EK Credential Profile). */
export const TPM_NV_INDEX = {
  EK_CERT_RSA: 0x01c00002,
  EK_NONCE_RSA: 0x01c00003,
  EK_TEMPLATE_RSA: 0x01c00004,
  EK_CERT_ECC: 0x01c0000a,
  EK_NONCE_ECC: 0x01c0000b,
  EK_TEMPLATE_ECC: 0x01c0000c,
  /** swtpm 0.7 places its (high-range P-384) ECC EK certificate here. */
  EK_CERT_ECC_SWTPM: 0x01c00016,
  PLATFORM_CERT_SWTPM: 0x01c08000,
} as const

export const TPM_PERSISTENT_HANDLE = {
  EK_RSA: 0x81010001,
  EK_ECC_SWTPM: 0x81010016,
} as const

export const TPM_CAP = {
  ALGS: 0,
  HANDLES: 1,
  COMMANDS: 2,
  PP_COMMANDS: 3,
  AUDIT_COMMANDS: 4,
  PCRS: 5,
  TPM_PROPERTIES: 6,
  PCR_PROPERTIES: 7,
  ECC_CURVES: 8,
} as const

const PT_FIXED = 0x100
const PT_VAR = 0x200
export const TPM_PT = {
  FAMILY_INDICATOR: PT_FIXED + 0,
  LEVEL: PT_FIXED + 1,
  REVISION: PT_FIXED + 2,
  DAY_OF_YEAR: PT_FIXED + 3,
  YEAR: PT_FIXED + 4,
  MANUFACTURER: PT_FIXED + 5,
  VENDOR_STRING_1: PT_FIXED + 6,
  VENDOR_STRING_2: PT_FIXED + 7,
  VENDOR_STRING_3: PT_FIXED + 8,
  VENDOR_STRING_4: PT_FIXED + 9,
  VENDOR_TPM_TYPE: PT_FIXED + 10,
  FIRMWARE_VERSION_1: PT_FIXED + 11,
  FIRMWARE_VERSION_2: PT_FIXED + 12,
  INPUT_BUFFER: PT_FIXED + 13,
  HR_TRANSIENT_MIN: PT_FIXED + 14,
  HR_PERSISTENT_MIN: PT_FIXED + 15,
  HR_LOADED_MIN: PT_FIXED + 16,
  ACTIVE_SESSIONS_MAX: PT_FIXED + 17,
  PCR_COUNT: PT_FIXED + 18,
  PCR_SELECT_MIN: PT_FIXED + 19,
  CONTEXT_GAP_MAX: PT_FIXED + 20,
  NV_COUNTERS_MAX: PT_FIXED + 22,
  NV_INDEX_MAX: PT_FIXED + 23,
  MEMORY: PT_FIXED + 24,
  CLOCK_UPDATE: PT_FIXED + 25,
  CONTEXT_HASH: PT_FIXED + 26,
  CONTEXT_SYM: PT_FIXED + 27,
  CONTEXT_SYM_SIZE: PT_FIXED + 28,
  ORDERLY_COUNT: PT_FIXED + 29,
  MAX_COMMAND_SIZE: PT_FIXED + 30,
  MAX_RESPONSE_SIZE: PT_FIXED + 31,
  MAX_DIGEST: PT_FIXED + 32,
  MAX_OBJECT_CONTEXT: PT_FIXED + 33,
  MAX_SESSION_CONTEXT: PT_FIXED + 34,
  PS_FAMILY_INDICATOR: PT_FIXED + 35,
  NV_BUFFER_MAX: PT_FIXED + 44,
  PERMANENT: PT_VAR + 0,
  STARTUP_CLEAR: PT_VAR + 1,
  HR_NV_INDEX: PT_VAR + 2,
  HR_LOADED: PT_VAR + 3,
  HR_LOADED_AVAIL: PT_VAR + 4,
  HR_ACTIVE: PT_VAR + 5,
  HR_ACTIVE_AVAIL: PT_VAR + 6,
  HR_TRANSIENT_AVAIL: PT_VAR + 7,
  HR_PERSISTENT: PT_VAR + 8,
  HR_PERSISTENT_AVAIL: PT_VAR + 9,
} as const

// --------------------------------------------------------------- hash algs

export type TpmHashAlg = typeof TPM_ALG.SHA1 | typeof TPM_ALG.SHA256 | typeof TPM_ALG.SHA384 | typeof TPM_ALG.SHA512

const HASHES: Record<number, { node: string; size: number }> = {
  [TPM_ALG.SHA1]: { node: 'sha1', size: 20 },
  [TPM_ALG.SHA256]: { node: 'sha256', size: 32 },
  [TPM_ALG.SHA384]: { node: 'sha384', size: 48 },
  [TPM_ALG.SHA512]: { node: 'sha512', size: 64 },
}

export function isHashAlg(alg: number): alg is TpmHashAlg {
  return HASHES[alg] !== undefined
}

/** Digest size of a TPM hash algorithm; throws ERR_TPM_PAYLOAD_INVALID for others. */
export function hashDigestSize(alg: number): number {
  const h = HASHES[alg]
  if (h === undefined) throw invalid(`unsupported hash algorithm 0x${alg.toString(16)}`)
  return h.size
}

/** Node crypto name ('sha256', …) of a TPM hash algorithm. */
export function hashNodeName(alg: number): string {
  const h = HASHES[alg]
  if (h === undefined) throw invalid(`unsupported hash algorithm 0x${alg.toString(16)}`)
  return h.node
}

export function tpmHash(alg: number, ...data: Uint8Array[]): Uint8Array {
  const h = createHash(hashNodeName(alg))
  for (const d of data) h.update(d)
  return new Uint8Array(h.digest())
}

function invalid(message: string, details?: Record<string, unknown>): IdentityError {
  return new IdentityError('ERR_TPM_PAYLOAD_INVALID', message, details === undefined ? undefined : { details })
}

function readHashAlg(r: TpmReader, what: string, allowNull = false): number {
  const alg = r.u16(what)
  if (allowNull && alg === TPM_ALG.NULL) return alg
  if (!isHashAlg(alg)) throw invalid(`${what}: unsupported hash algorithm 0x${alg.toString(16)}`)
  return alg
}

function readDigest(r: TpmReader, what: string): Uint8Array {
  return r.tpm2b(what, MAX_DIGEST)
}

/** Caps applied to every variable-size field. */
const MAX_DIGEST = 64
const MAX_NAME = 2 + MAX_DIGEST
const MAX_DATA = 128
const MAX_RSA_BYTES = 512
const MAX_ECC_BYTES = 66
const MAX_SIG = 512

// --------------------------------------------------------------- TPMT_PUBLIC

export interface TpmtSymDefObject {
  /** TPM_ALG.NULL, AES, SM4 or CAMELLIA. */
  algorithm: number
  /** Present unless algorithm is NULL. */
  keyBits?: number
  mode?: number
}

export interface TpmtScheme {
  /** Scheme algorithm (RSASSA, RSAPSS, ECDSA, OAEP, …) or TPM_ALG.NULL. */
  scheme: number
  /** Present for schemes that take a hash. */
  hashAlg?: number
  /** ECDAA only. */
  count?: number
}

export interface TpmsRsaParms {
  symmetric: TpmtSymDefObject
  scheme: TpmtScheme
  keyBits: number
  /** 0 means the default 65537. */
  exponent: number
}

export interface TpmsEccParms {
  symmetric: TpmtSymDefObject
  scheme: TpmtScheme
  curveId: number
  kdf: TpmtScheme
}

export interface TpmsEccPoint {
  x: Uint8Array
  y: Uint8Array
}

interface TpmtPublicBase {
  nameAlg: number
  objectAttributes: number
  authPolicy: Uint8Array
}

export interface TpmtPublicRsa extends TpmtPublicBase {
  type: typeof TPM_ALG.RSA
  parameters: TpmsRsaParms
  /** The modulus. */
  unique: Uint8Array
}

export interface TpmtPublicEcc extends TpmtPublicBase {
  type: typeof TPM_ALG.ECC
  parameters: TpmsEccParms
  unique: TpmsEccPoint
}

export type TpmtPublic = TpmtPublicRsa | TpmtPublicEcc

const SYM_ALGS = new Set<number>([TPM_ALG.AES, TPM_ALG.SM4, TPM_ALG.CAMELLIA])
const SYM_MODES = new Set<number>([TPM_ALG.CTR, TPM_ALG.OFB, TPM_ALG.CBC, TPM_ALG.CFB, TPM_ALG.ECB, TPM_ALG.NULL])
const HASH_SCHEMES = new Set<number>([TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.OAEP, TPM_ALG.ECDSA, TPM_ALG.ECDH, TPM_ALG.HMAC])
const KDF_SCHEMES = new Set<number>([TPM_ALG.MGF1, TPM_ALG.KDF1_SP800_56A, TPM_ALG.KDF2, TPM_ALG.KDF1_SP800_108])
const RSA_KEY_BITS = new Set([1024, 2048, 3072, 4096])

export const ECC_CURVE_INFO: Record<number, { crv: 'P-256' | 'P-384' | 'P-521'; size: number; namedCurve: string }> = {
  [TPM_ECC_CURVE.P256]: { crv: 'P-256', size: 32, namedCurve: 'prime256v1' },
  [TPM_ECC_CURVE.P384]: { crv: 'P-384', size: 48, namedCurve: 'secp384r1' },
  [TPM_ECC_CURVE.P521]: { crv: 'P-521', size: 66, namedCurve: 'secp521r1' },
}

export function writeSymDefObject(w: TpmWriter, s: TpmtSymDefObject): void {
  w.u16(s.algorithm)
  if (s.algorithm === TPM_ALG.NULL) return
  if (s.keyBits === undefined || s.mode === undefined) throw new TypeError('symmetric keyBits and mode required')
  w.u16(s.keyBits).u16(s.mode)
}

export function decodeSymDefObject(r: TpmReader): TpmtSymDefObject {
  const algorithm = r.u16('symmetric.algorithm')
  if (algorithm === TPM_ALG.NULL) return { algorithm }
  if (!SYM_ALGS.has(algorithm)) throw invalid(`unsupported symmetric algorithm 0x${algorithm.toString(16)}`)
  const keyBits = r.u16('symmetric.keyBits')
  if (keyBits !== 128 && keyBits !== 192 && keyBits !== 256) throw invalid(`unsupported symmetric key size ${keyBits}`)
  const mode = r.u16('symmetric.mode')
  if (!SYM_MODES.has(mode)) throw invalid(`unsupported symmetric mode 0x${mode.toString(16)}`)
  return { algorithm, keyBits, mode }
}

/** TPMT_*_SCHEME for signing/encryption schemes and TPMT_KDF_SCHEME (`kdf: true`). */
export function writeScheme(w: TpmWriter, s: TpmtScheme): void {
  w.u16(s.scheme)
  if (s.scheme === TPM_ALG.NULL || s.scheme === TPM_ALG.RSAES) return
  if (s.hashAlg === undefined) throw new TypeError('scheme hashAlg required')
  w.u16(s.hashAlg)
  if (s.scheme === TPM_ALG.ECDAA) w.u16(s.count ?? 0)
}

export function decodeScheme(r: TpmReader, what: string, kdf = false): TpmtScheme {
  const scheme = r.u16(`${what}.scheme`)
  if (scheme === TPM_ALG.NULL) return { scheme }
  if (kdf) {
    if (!KDF_SCHEMES.has(scheme)) throw invalid(`unsupported KDF 0x${scheme.toString(16)}`)
    return { scheme, hashAlg: readHashAlg(r, `${what}.hashAlg`) }
  }
  if (scheme === TPM_ALG.RSAES) return { scheme }
  if (scheme === TPM_ALG.ECDAA) {
    const hashAlg = readHashAlg(r, `${what}.hashAlg`)
    return { scheme, hashAlg, count: r.u16(`${what}.count`) }
  }
  if (!HASH_SCHEMES.has(scheme)) throw invalid(`unsupported scheme 0x${scheme.toString(16)}`)
  return { scheme, hashAlg: readHashAlg(r, `${what}.hashAlg`) }
}

export function writeTpmtPublic(w: TpmWriter, pub: TpmtPublic): void {
  w.u16(pub.type)
    .u16(pub.nameAlg)
    .u32(pub.objectAttributes >>> 0)
    .tpm2b(pub.authPolicy)
  const p = pub.parameters
  writeSymDefObject(w, p.symmetric)
  writeScheme(w, p.scheme)
  if (pub.type === TPM_ALG.RSA) {
    w.u16(pub.parameters.keyBits).u32(pub.parameters.exponent >>> 0)
    w.tpm2b(pub.unique)
  } else if (pub.type === TPM_ALG.ECC) {
    w.u16(pub.parameters.curveId)
    writeScheme(w, pub.parameters.kdf)
    w.tpm2b(pub.unique.x).tpm2b(pub.unique.y)
  } else {
    throw new TypeError(`unsupported TPMT_PUBLIC type`)
  }
}

export function encodeTpmtPublic(pub: TpmtPublic): Uint8Array {
  const w = new TpmWriter(512)
  writeTpmtPublic(w, pub)
  return w.finish()
}

/** TPM2B_PUBLIC bytes (u16 size ‖ TPMT_PUBLIC). */
export function encodeTpm2bPublic(pub: TpmtPublic | Uint8Array): Uint8Array {
  const inner = pub instanceof Uint8Array ? pub : encodeTpmtPublic(pub)
  return new TpmWriter(inner.length + 2).tpm2b(inner).finish()
}

export function decodeTpmtPublic(r: TpmReader): TpmtPublic {
  const type = r.u16('public.type')
  const nameAlg = readHashAlg(r, 'public.nameAlg')
  const objectAttributes = r.u32('public.objectAttributes')
  const authPolicy = r.tpm2b('public.authPolicy', MAX_DIGEST)
  if (type === TPM_ALG.RSA) {
    const symmetric = decodeSymDefObject(r)
    const scheme = decodeScheme(r, 'public.scheme')
    const keyBits = r.u16('public.keyBits')
    if (!RSA_KEY_BITS.has(keyBits)) throw invalid(`unsupported RSA key size ${keyBits}`)
    const exponent = r.u32('public.exponent')
    const unique = r.tpm2b('public.unique', MAX_RSA_BYTES)
    if (unique.length !== 0 && unique.length !== keyBits / 8) {
      throw invalid('RSA modulus size does not match keyBits', { keyBits, size: unique.length })
    }
    return { type, nameAlg, objectAttributes, authPolicy, parameters: { symmetric, scheme, keyBits, exponent }, unique }
  }
  if (type === TPM_ALG.ECC) {
    const symmetric = decodeSymDefObject(r)
    const scheme = decodeScheme(r, 'public.scheme')
    const curveId = r.u16('public.curveId')
    if (ECC_CURVE_INFO[curveId] === undefined) throw invalid(`unsupported ECC curve 0x${curveId.toString(16)}`)
    const kdf = decodeScheme(r, 'public.kdf', true)
    const x = r.tpm2b('public.unique.x', MAX_ECC_BYTES)
    const y = r.tpm2b('public.unique.y', MAX_ECC_BYTES)
    return { type, nameAlg, objectAttributes, authPolicy, parameters: { symmetric, scheme, curveId, kdf }, unique: { x, y } }
  }
  throw invalid(`unsupported public key type 0x${type.toString(16)}`)
}

/** A whole buffer holding exactly one TPMT_PUBLIC. */
export function parseTpmtPublic(bytes: Uint8Array): TpmtPublic {
  const r = new TpmReader(bytes)
  const pub = decodeTpmtPublic(r)
  r.expectEnd('TPMT_PUBLIC')
  return pub
}

/** A whole buffer holding exactly one TPM2B_PUBLIC; returns the decoded structure and the inner TPMT_PUBLIC bytes. */
export function parseTpm2bPublic(bytes: Uint8Array): { public: TpmtPublic; bytes: Uint8Array } {
  const r = new TpmReader(bytes)
  const res = decodeTpm2bPublic(r)
  r.expectEnd('TPM2B_PUBLIC')
  return res
}

export function decodeTpm2bPublic(r: TpmReader): { public: TpmtPublic; bytes: Uint8Array } {
  const inner = r.tpm2b('TPM2B_PUBLIC', 1024)
  return { public: parseTpmtPublic(inner), bytes: inner }
}

/** The TPM Name of an object: nameAlg ‖ H_nameAlg(TPMT_PUBLIC). */
export function tpmtPublicName(pub: Uint8Array | TpmtPublic): Uint8Array {
  const bytes = pub instanceof Uint8Array ? pub : encodeTpmtPublic(pub)
  const decoded = pub instanceof Uint8Array ? parseTpmtPublic(pub) : pub
  const w = new TpmWriter(2 + 64)
  w.u16(decoded.nameAlg).bytes(tpmHash(decoded.nameAlg, bytes))
  return w.finish()
}

function b64u(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64url')
}

function leftPad(b: Uint8Array, size: number): Uint8Array {
  let start = 0
  while (b.length - start > size && b[start] === 0) start++
  const v = b.subarray(start)
  if (v.length > size) throw invalid('integer larger than field size')
  if (v.length === size) return v
  const out = new Uint8Array(size)
  out.set(v, size - v.length)
  return out
}
export { leftPad as leftPadBytes }

/** A node public KeyObject for an RSA (n, e) or ECC (x, y) TPMT_PUBLIC. */
export function publicKeyFromTpmtPublic(pub: TpmtPublic | Uint8Array): KeyObject {
  const p = pub instanceof Uint8Array ? parseTpmtPublic(pub) : pub
  try {
    if (p.type === TPM_ALG.RSA) {
      if (p.unique.length === 0) throw invalid('RSA public key has an empty modulus')
      const exp = p.parameters.exponent === 0 ? 65537 : p.parameters.exponent
      const e = new TpmWriter(4).u32(exp).finish()
      let i = 0
      while (i < 3 && e[i] === 0) i++
      return createPublicKey({ format: 'jwk', key: { kty: 'RSA', n: b64u(p.unique), e: b64u(e.subarray(i)) } })
    }
    const info = ECC_CURVE_INFO[p.parameters.curveId]
    if (info === undefined) throw invalid('unsupported ECC curve')
    return createPublicKey({
      format: 'jwk',
      key: { kty: 'EC', crv: info.crv, x: b64u(leftPad(p.unique.x, info.size)), y: b64u(leftPad(p.unique.y, info.size)) },
    })
  } catch (err) {
    if (err instanceof IdentityError) throw err
    throw new IdentityError('ERR_TPM_PAYLOAD_INVALID', 'TPM public area does not hold a valid public key', { cause: err })
  }
}

export function encodeTpmsEccPoint(p: TpmsEccPoint): Uint8Array {
  return new TpmWriter(4 + p.x.length + p.y.length).tpm2b(p.x).tpm2b(p.y).finish()
}

export function decodeTpmsEccPoint(r: TpmReader): TpmsEccPoint {
  return { x: r.tpm2b('point.x', MAX_ECC_BYTES), y: r.tpm2b('point.y', MAX_ECC_BYTES) }
}

// ---------------------------------------------------------- PCR selections

export interface TpmsPcrSelection {
  hash: number
  /** Bitmap; bit (i & 7) of byte (i >> 3) selects PCR i. */
  pcrSelect: Uint8Array
}
export type TpmlPcrSelection = TpmsPcrSelection[]

/** Friendly form of a selection: a bank and the PCR indices in it. */
export interface PcrBankSelection {
  hash: number
  pcrs: number[]
}

const MAX_PCR_BANKS = 16
const MAX_SIZEOF_SELECT = 8

/** Builds a TPML_PCR_SELECTION from `{hash, pcrs}` lists. `sizeofSelect` is 3 for 24-PCR TPMs. */
export function pcrSelection(banks: PcrBankSelection[], sizeofSelect = 3): TpmlPcrSelection {
  return banks.map(({ hash, pcrs }) => {
    const select = new Uint8Array(sizeofSelect)
    for (const i of pcrs) {
      if (!Number.isInteger(i) || i < 0 || i >= sizeofSelect * 8) throw new RangeError(`PCR index out of range: ${i}`)
      select[i >> 3]! |= 1 << (i & 7)
    }
    return { hash, pcrSelect: select }
  })
}

/** Indices selected in a bitmap, ascending. */
export function pcrSelectIndices(pcrSelect: Uint8Array): number[] {
  const out: number[] = []
  for (let byte = 0; byte < pcrSelect.length; byte++) {
    const v = pcrSelect[byte]!
    for (let bit = 0; bit < 8; bit++) if (v & (1 << bit)) out.push(byte * 8 + bit)
  }
  return out
}

/** Friendly form of a TPML_PCR_SELECTION. */
export function pcrSelectionToBanks(sel: TpmlPcrSelection): PcrBankSelection[] {
  return sel.map((s) => ({ hash: s.hash, pcrs: pcrSelectIndices(s.pcrSelect) }))
}

export function writeTpmlPcrSelection(w: TpmWriter, sel: TpmlPcrSelection): void {
  w.u32(sel.length)
  for (const s of sel) {
    w.u16(s.hash).u8(s.pcrSelect.length).bytes(s.pcrSelect)
  }
}

export function encodeTpmlPcrSelection(sel: TpmlPcrSelection): Uint8Array {
  const w = new TpmWriter(64)
  writeTpmlPcrSelection(w, sel)
  return w.finish()
}

export function decodeTpmlPcrSelection(r: TpmReader): TpmlPcrSelection {
  const count = r.u32('pcrSelection.count')
  if (count > MAX_PCR_BANKS) throw invalid('too many PCR banks in selection', { count })
  const out: TpmlPcrSelection = []
  for (let i = 0; i < count; i++) {
    const hash = readHashAlg(r, 'pcrSelection.hash')
    const size = r.u8('pcrSelection.sizeofSelect')
    if (size > MAX_SIZEOF_SELECT) throw invalid('PCR select bitmap too large', { size })
    out.push({ hash, pcrSelect: r.bytes(size, 'pcrSelection.pcrSelect') })
  }
  return out
}

export function parseTpmlPcrSelection(bytes: Uint8Array): TpmlPcrSelection {
  const r = new TpmReader(bytes)
  const v = decodeTpmlPcrSelection(r)
  r.expectEnd('TPML_PCR_SELECTION')
  return v
}

/** TPML_DIGEST. */
export function decodeTpmlDigest(r: TpmReader): Uint8Array[] {
  const count = r.u32('digests.count')
  if (count > 8) throw invalid('too many digests in TPML_DIGEST', { count })
  const out: Uint8Array[] = []
  for (let i = 0; i < count; i++) out.push(readDigest(r, 'digest'))
  return out
}

export function writeTpmlDigest(w: TpmWriter, digests: Uint8Array[]): void {
  w.u32(digests.length)
  for (const d of digests) w.tpm2b(d)
}

// --------------------------------------------------------------- TPMS_ATTEST

export interface TpmsClockInfo {
  clock: bigint
  resetCount: number
  restartCount: number
  safe: boolean
}

export interface TpmsQuoteInfo {
  type: typeof TPM_ST.ATTEST_QUOTE
  pcrSelect: TpmlPcrSelection
  pcrDigest: Uint8Array
}

export interface TpmsCreationInfo {
  type: typeof TPM_ST.ATTEST_CREATION
  objectName: Uint8Array
  creationHash: Uint8Array
}

export interface TpmsCertifyInfo {
  type: typeof TPM_ST.ATTEST_CERTIFY
  name: Uint8Array
  qualifiedName: Uint8Array
}

export type TpmuAttest = TpmsQuoteInfo | TpmsCreationInfo | TpmsCertifyInfo

export interface TpmsAttest {
  magic: number
  type: TpmuAttest['type']
  qualifiedSigner: Uint8Array
  /** The caller's qualifyingData (nonce). */
  extraData: Uint8Array
  clockInfo: TpmsClockInfo
  firmwareVersion: bigint
  attested: TpmuAttest
}

export function decodeTpmsAttest(r: TpmReader): TpmsAttest {
  const magic = r.u32('attest.magic')
  if (magic !== TPM_GENERATED_VALUE) throw invalid('attestation was not generated by a TPM (bad magic)')
  const type = r.u16('attest.type')
  const qualifiedSigner = r.tpm2b('attest.qualifiedSigner', MAX_NAME)
  const extraData = r.tpm2b('attest.extraData', MAX_DATA)
  const clockInfo: TpmsClockInfo = {
    clock: r.u64('clockInfo.clock'),
    resetCount: r.u32('clockInfo.resetCount'),
    restartCount: r.u32('clockInfo.restartCount'),
    safe: false,
  }
  const safe = r.u8('clockInfo.safe')
  if (safe > 1) throw invalid('clockInfo.safe is not a boolean')
  clockInfo.safe = safe === 1
  const firmwareVersion = r.u64('attest.firmwareVersion')
  let attested: TpmuAttest
  if (type === TPM_ST.ATTEST_QUOTE) {
    attested = { type, pcrSelect: decodeTpmlPcrSelection(r), pcrDigest: readDigest(r, 'quote.pcrDigest') }
  } else if (type === TPM_ST.ATTEST_CREATION) {
    attested = { type, objectName: r.tpm2b('creation.objectName', MAX_NAME), creationHash: readDigest(r, 'creation.creationHash') }
  } else if (type === TPM_ST.ATTEST_CERTIFY) {
    attested = { type, name: r.tpm2b('certify.name', MAX_NAME), qualifiedName: r.tpm2b('certify.qualifiedName', MAX_NAME) }
  } else {
    throw invalid(`unsupported attestation type 0x${type.toString(16)}`)
  }
  return { magic, type, qualifiedSigner, extraData, clockInfo, firmwareVersion, attested }
}

/** A whole buffer holding exactly one TPMS_ATTEST (the content of TPM2B_ATTEST). */
export function parseTpmsAttest(bytes: Uint8Array): TpmsAttest {
  const r = new TpmReader(bytes)
  const v = decodeTpmsAttest(r)
  r.expectEnd('TPMS_ATTEST')
  return v
}

export function writeTpmsAttest(w: TpmWriter, a: TpmsAttest): void {
  w.u32(a.magic).u16(a.attested.type).tpm2b(a.qualifiedSigner).tpm2b(a.extraData)
  w.u64(a.clockInfo.clock)
    .u32(a.clockInfo.resetCount)
    .u32(a.clockInfo.restartCount)
    .u8(a.clockInfo.safe ? 1 : 0)
  w.u64(a.firmwareVersion)
  const at = a.attested
  if (at.type === TPM_ST.ATTEST_QUOTE) {
    writeTpmlPcrSelection(w, at.pcrSelect)
    w.tpm2b(at.pcrDigest)
  } else if (at.type === TPM_ST.ATTEST_CREATION) {
    w.tpm2b(at.objectName).tpm2b(at.creationHash)
  } else {
    w.tpm2b(at.name).tpm2b(at.qualifiedName)
  }
}

export function encodeTpmsAttest(a: TpmsAttest): Uint8Array {
  const w = new TpmWriter(256)
  writeTpmsAttest(w, a)
  return w.finish()
}

// ------------------------------------------------------------ TPMT_SIGNATURE

export interface TpmsSignatureRsa {
  sigAlg: typeof TPM_ALG.RSASSA | typeof TPM_ALG.RSAPSS
  hash: number
  sig: Uint8Array
}

export interface TpmsSignatureEcc {
  sigAlg: typeof TPM_ALG.ECDSA
  hash: number
  r: Uint8Array
  s: Uint8Array
}

export type TpmtSignature = TpmsSignatureRsa | TpmsSignatureEcc

export function decodeTpmtSignature(r: TpmReader): TpmtSignature {
  const sigAlg = r.u16('signature.sigAlg')
  if (sigAlg === TPM_ALG.RSASSA || sigAlg === TPM_ALG.RSAPSS) {
    const hash = readHashAlg(r, 'signature.hash')
    return { sigAlg, hash, sig: r.tpm2b('signature.sig', MAX_SIG) }
  }
  if (sigAlg === TPM_ALG.ECDSA) {
    const hash = readHashAlg(r, 'signature.hash')
    return { sigAlg, hash, r: r.tpm2b('signature.r', MAX_ECC_BYTES), s: r.tpm2b('signature.s', MAX_ECC_BYTES) }
  }
  throw invalid(`unsupported signature algorithm 0x${sigAlg.toString(16)}`)
}

export function parseTpmtSignature(bytes: Uint8Array): TpmtSignature {
  const r = new TpmReader(bytes)
  const v = decodeTpmtSignature(r)
  r.expectEnd('TPMT_SIGNATURE')
  return v
}

export function writeTpmtSignature(w: TpmWriter, s: TpmtSignature): void {
  w.u16(s.sigAlg).u16(s.hash)
  if (s.sigAlg === TPM_ALG.ECDSA) w.tpm2b(s.r).tpm2b(s.s)
  else w.tpm2b(s.sig)
}

export function encodeTpmtSignature(s: TpmtSignature): Uint8Array {
  const w = new TpmWriter(300)
  writeTpmtSignature(w, s)
  return w.finish()
}

/**
 * ECDSA r ‖ s left-padded to the curve size (IEEE P1363), as node's
 * `crypto.verify(..., { dsaEncoding: 'ieee-p1363' })` expects.
 */
export function ecdsaSignatureP1363(sig: TpmsSignatureEcc, curveId: number): Uint8Array {
  const info = ECC_CURVE_INFO[curveId]
  if (info === undefined) throw invalid('unsupported ECC curve')
  const out = new Uint8Array(info.size * 2)
  out.set(leftPad(sig.r, info.size), 0)
  out.set(leftPad(sig.s, info.size), info.size)
  return out
}

// --------------------------------------------------- creation data & ticket

export interface TpmtTkCreation {
  tag: number
  hierarchy: number
  digest: Uint8Array
}

export function decodeTpmtTkCreation(r: TpmReader): TpmtTkCreation {
  const tag = r.u16('ticket.tag')
  if (tag !== TPM_ST.CREATION) throw invalid(`unexpected creation ticket tag 0x${tag.toString(16)}`)
  return { tag, hierarchy: r.u32('ticket.hierarchy'), digest: readDigest(r, 'ticket.digest') }
}

export function writeTpmtTkCreation(w: TpmWriter, t: TpmtTkCreation): void {
  w.u16(t.tag)
    .u32(t.hierarchy >>> 0)
    .tpm2b(t.digest)
}

export function encodeTpmtTkCreation(t: TpmtTkCreation): Uint8Array {
  const w = new TpmWriter(80)
  writeTpmtTkCreation(w, t)
  return w.finish()
}

export function parseTpmtTkCreation(bytes: Uint8Array): TpmtTkCreation {
  const r = new TpmReader(bytes)
  const v = decodeTpmtTkCreation(r)
  r.expectEnd('TPMT_TK_CREATION')
  return v
}

export interface TpmsCreationData {
  pcrSelect: TpmlPcrSelection
  pcrDigest: Uint8Array
  locality: number
  parentNameAlg: number
  parentName: Uint8Array
  parentQualifiedName: Uint8Array
  outsideInfo: Uint8Array
}

export function decodeTpmsCreationData(r: TpmReader): TpmsCreationData {
  return {
    pcrSelect: decodeTpmlPcrSelection(r),
    pcrDigest: readDigest(r, 'creationData.pcrDigest'),
    locality: r.u8('creationData.locality'),
    parentNameAlg: readHashAlg(r, 'creationData.parentNameAlg', true),
    parentName: r.tpm2b('creationData.parentName', MAX_NAME),
    parentQualifiedName: r.tpm2b('creationData.parentQualifiedName', MAX_NAME),
    outsideInfo: r.tpm2b('creationData.outsideInfo', MAX_DATA),
  }
}

/** A whole buffer holding one TPMS_CREATION_DATA (the content of TPM2B_CREATION_DATA). */
export function parseTpmsCreationData(bytes: Uint8Array): TpmsCreationData {
  const r = new TpmReader(bytes)
  const v = decodeTpmsCreationData(r)
  r.expectEnd('TPMS_CREATION_DATA')
  return v
}

export function encodeTpmsCreationData(c: TpmsCreationData): Uint8Array {
  const w = new TpmWriter(200)
  writeTpmlPcrSelection(w, c.pcrSelect)
  w.tpm2b(c.pcrDigest).u8(c.locality).u16(c.parentNameAlg).tpm2b(c.parentName).tpm2b(c.parentQualifiedName).tpm2b(c.outsideInfo)
  return w.finish()
}

// ------------------------------------------- credential activation blobs

/** TPM2B_ID_OBJECT content (integrityHMAC TPM2B ‖ encIdentity); carried as bytes. */
export type Tpm2bIdObject = Uint8Array
/** TPM2B_ENCRYPTED_SECRET content; carried as bytes. */
export type Tpm2bEncryptedSecret = Uint8Array

export function encodeTpm2bIdObject(content: Tpm2bIdObject): Uint8Array {
  return new TpmWriter(content.length + 2).tpm2b(content).finish()
}

export function decodeTpm2bIdObject(r: TpmReader): Tpm2bIdObject {
  return r.tpm2b('TPM2B_ID_OBJECT', 2 + MAX_DIGEST + 2 + MAX_DIGEST + 64)
}

export function encodeTpm2bEncryptedSecret(content: Tpm2bEncryptedSecret): Uint8Array {
  return new TpmWriter(content.length + 2).tpm2b(content).finish()
}

export function decodeTpm2bEncryptedSecret(r: TpmReader): Tpm2bEncryptedSecret {
  return r.tpm2b('TPM2B_ENCRYPTED_SECRET', MAX_RSA_BYTES + 4)
}

/** Parses a file or message made of TPM2B_ID_OBJECT ‖ TPM2B_ENCRYPTED_SECRET. */
export function parseCredentialBlob(bytes: Uint8Array): { credentialBlob: Tpm2bIdObject; encryptedSecret: Tpm2bEncryptedSecret } {
  const r = new TpmReader(bytes)
  const credentialBlob = decodeTpm2bIdObject(r)
  const encryptedSecret = decodeTpm2bEncryptedSecret(r)
  r.expectEnd('credential blob')
  return { credentialBlob, encryptedSecret }
}

// -------------------------------------------------------------- TPMS_NV_PUBLIC

export interface TpmsNvPublic {
  nvIndex: number
  nameAlg: number
  attributes: number
  authPolicy: Uint8Array
  dataSize: number
}

export function decodeTpmsNvPublic(r: TpmReader): TpmsNvPublic {
  const nvIndex = r.u32('nvPublic.nvIndex')
  if (nvIndex >>> 24 !== TPM_HT.NV_INDEX) throw invalid('NV public area has a non-NV handle')
  return {
    nvIndex,
    nameAlg: readHashAlg(r, 'nvPublic.nameAlg'),
    attributes: r.u32('nvPublic.attributes'),
    authPolicy: r.tpm2b('nvPublic.authPolicy', MAX_DIGEST),
    dataSize: r.u16('nvPublic.dataSize'),
  }
}

export function writeTpmsNvPublic(w: TpmWriter, n: TpmsNvPublic): void {
  w.u32(n.nvIndex >>> 0)
    .u16(n.nameAlg)
    .u32(n.attributes >>> 0)
    .tpm2b(n.authPolicy)
    .u16(n.dataSize)
}

export function encodeTpmsNvPublic(n: TpmsNvPublic): Uint8Array {
  const w = new TpmWriter(80)
  writeTpmsNvPublic(w, n)
  return w.finish()
}

export function parseTpm2bNvPublic(bytes: Uint8Array): TpmsNvPublic {
  const r = new TpmReader(bytes)
  const v = r.sized('TPM2B_NV_PUBLIC', decodeTpmsNvPublic)
  r.expectEnd('TPM2B_NV_PUBLIC')
  return v
}

/** The Name of an NV index: nameAlg ‖ H(TPMS_NV_PUBLIC). */
export function nvPublicName(n: TpmsNvPublic): Uint8Array {
  return new TpmWriter(66)
    .u16(n.nameAlg)
    .bytes(tpmHash(n.nameAlg, encodeTpmsNvPublic(n)))
    .finish()
}

// ------------------------------------------------------------ misc encoders

/** TPMT_SIG_SCHEME as used by Quote/Certify*: NULL means "the key's own scheme". */
export function writeSigScheme(w: TpmWriter, s: TpmtScheme = { scheme: TPM_ALG.NULL }): void {
  writeScheme(w, s)
}

/** TPM2B_SENSITIVE_CREATE { TPM2B userAuth, TPM2B data }. */
export function encodeTpm2bSensitiveCreate(userAuth: Uint8Array = new Uint8Array(0), data: Uint8Array = new Uint8Array(0)): Uint8Array {
  return new TpmWriter(8 + userAuth.length + data.length).sized((w) => w.tpm2b(userAuth).tpm2b(data)).finish()
}
