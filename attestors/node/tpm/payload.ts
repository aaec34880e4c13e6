import { IdentityError, isIdentityError } from '../../../src/errors/index.js'
import { parseTpm2bPublic, type TpmtPublic } from '../../../src/tpm/structures.js'

/**
 * Wire format of the `tpm` node attestor: the only module both halves share.
 * Three versioned JSON messages with base64 (RFC 4648, canonical, padded)
 * binary fields, unknown keys rejected and every field size-capped:
 *
 *  agent → server  payload    { v, ek_cert?, ek_public, ak_public, ak_creation_data, ak_creation_attest, ak_creation_signature }
 *  server → agent  challenge  { v, credential_blob, encrypted_secret, nonce, pcr_bank, pcrs }
 *  agent → server  answer     { v, activated_secret, quote_attest, quote_signature, pcr_values }
 *
 * Anything malformed throws ERR_ATTESTATION_PAYLOAD_INVALID.
 */
export const TPM_PAYLOAD_VERSION = 1
export const MAX_MESSAGE_BYTES = 32 * 1024
export const NONCE_BYTES = 32
export const PCR_BANKS = ['sha1', 'sha256', 'sha384'] as const
export type PcrBank = (typeof PCR_BANKS)[number]
const PCR_SIZE: Record<PcrBank, number> = { sha1: 20, sha256: 32, sha384: 48 }
const MAX_PCR_INDEX = 23

export interface TpmAttestationPayload {
  /** EK certificate: DER or raw NV bytes (PC Client framing, padding). */
  ekCert?: Uint8Array
  /** TPM2B_PUBLIC of the EK. */
  ekPublic: Uint8Array
  /** TPM2B_PUBLIC of the AK. */
  akPublic: Uint8Array
  /** TPM2B_CREATION_DATA (or TPMS_CREATION_DATA) of the AK. */
  akCreationData: Uint8Array
  /** TPMS_ATTEST from TPM2_CertifyCreation of the AK by itself. */
  akCreationAttest: Uint8Array
  /** TPMT_SIGNATURE over akCreationAttest. */
  akCreationSignature: Uint8Array
}

/** The payload with its public areas decoded. */
export interface DecodedTpmAttestationPayload extends TpmAttestationPayload {
  ek: { public: TpmtPublic; bytes: Uint8Array }
  ak: { public: TpmtPublic; bytes: Uint8Array }
}

export interface TpmChallenge {
  /** TPM2B_ID_OBJECT. */
  credentialBlob: Uint8Array
  /** TPM2B_ENCRYPTED_SECRET. */
  encryptedSecret: Uint8Array
  /** 32 bytes, the quote's qualifyingData. */
  nonce: Uint8Array
  pcrBank: PcrBank
  /** PCR indices to quote, ascending. */
  pcrs: number[]
}

export interface TpmAnswer {
  /** The credential recovered by TPM2_ActivateCredential. */
  activatedSecret: Uint8Array
  /** TPMS_ATTEST of the quote. */
  quoteAttest: Uint8Array
  /** TPMT_SIGNATURE over quoteAttest. */
  quoteSignature: Uint8Array
  /** PCR index → value read in the requested bank. */
  pcrValues: Map<number, Uint8Array>
}

function bad(why: string, cause?: unknown): never {
  throw new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', `tpm: ${why}`, cause === undefined ? undefined : { cause })
}

const b64 = (b: Uint8Array): string => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('base64')

function decodeObject(bytes: Uint8Array, what: string, keys: { required: string[]; optional?: string[] }): Record<string, unknown> {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0 || bytes.length > MAX_MESSAGE_BYTES) bad(`${what} size out of range`)
  let v: unknown
  try {
    v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes))
  } catch (err) {
    bad(`${what} is not JSON`, err)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) bad(`${what} is not an object`)
  const o = v as Record<string, unknown>
  if (o.v !== TPM_PAYLOAD_VERSION) bad(`${what} has an unsupported version`)
  const allowed = new Set(['v', ...keys.required, ...(keys.optional ?? [])])
  for (const k of Object.keys(o)) if (!allowed.has(k)) bad(`${what} has an unknown field`)
  for (const k of keys.required) if (!(k in o)) bad(`${what} is missing ${k}`)
  return o
}

function bytesField(v: unknown, what: string, min: number, max: number): Uint8Array {
  if (typeof v !== 'string' || v.length > Math.ceil(max / 3) * 4 + 4 || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(v)) {
    bad(`${what} is not base64`)
  }
  const b = Buffer.from(v, 'base64')
  if (b.toString('base64') !== v) bad(`${what} is not canonical base64`)
  if (b.length < min || b.length > max) bad(`${what} size out of range`)
  return new Uint8Array(b)
}

function publicField(v: unknown, what: string): { public: TpmtPublic; bytes: Uint8Array; raw: Uint8Array } {
  const raw = bytesField(v, what, 4, 1026)
  try {
    return { ...parseTpm2bPublic(raw), raw }
  } catch (err) {
    if (isIdentityError(err)) bad(`${what} is not a TPM2B_PUBLIC`, err)
    throw err
  }
}

const json = (o: Record<string, unknown>): Uint8Array => new TextEncoder().encode(JSON.stringify({ v: TPM_PAYLOAD_VERSION, ...o }))

export function encodePayload(p: TpmAttestationPayload): Uint8Array {
  return json({
    ...(p.ekCert !== undefined ? { ek_cert: b64(p.ekCert) } : {}),
    ek_public: b64(p.ekPublic),
    ak_public: b64(p.akPublic),
    ak_creation_data: b64(p.akCreationData),
    ak_creation_attest: b64(p.akCreationAttest),
    ak_creation_signature: b64(p.akCreationSignature),
  })
}

export function decodePayload(bytes: Uint8Array): DecodedTpmAttestationPayload {
  const o = decodeObject(bytes, 'payload', {
    required: ['ek_public', 'ak_public', 'ak_creation_data', 'ak_creation_attest', 'ak_creation_signature'],
    optional: ['ek_cert'],
  })
  const ek = publicField(o.ek_public, 'ek_public')
  const ak = publicField(o.ak_public, 'ak_public')
  const out: DecodedTpmAttestationPayload = {
    ekPublic: ek.raw,
    akPublic: ak.raw,
    akCreationData: bytesField(o.ak_creation_data, 'ak_creation_data', 1, 1024),
    akCreationAttest: bytesField(o.ak_creation_attest, 'ak_creation_attest', 1, 1024),
    akCreationSignature: bytesField(o.ak_creation_signature, 'ak_creation_signature', 1, 1024),
    ek: { public: ek.public, bytes: ek.bytes },
    ak: { public: ak.public, bytes: ak.bytes },
  }
  if (o.ek_cert !== undefined) out.ekCert = bytesField(o.ek_cert, 'ek_cert', 1, 8192 + 5)
  return out
}

export function encodeChallenge(c: TpmChallenge): Uint8Array {
  return json({
    credential_blob: b64(c.credentialBlob),
    encrypted_secret: b64(c.encryptedSecret),
    nonce: b64(c.nonce),
    pcr_bank: c.pcrBank,
    pcrs: c.pcrs,
  })
}

function pcrList(v: unknown): number[] {
  if (!Array.isArray(v) || v.length > MAX_PCR_INDEX + 1) bad('pcrs must be a list of at most 24 indices')
  let prev = -1
  for (const i of v) {
    if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i > MAX_PCR_INDEX || i <= prev) bad('pcrs must be ascending unique indices 0..23')
    prev = i
  }
  return [...(v as number[])]
}

function pcrBank(v: unknown): PcrBank {
  if (typeof v !== 'string' || !(PCR_BANKS as readonly string[]).includes(v)) bad('pcr_bank is not supported')
  return v as PcrBank
}

export function decodeChallenge(bytes: Uint8Array): TpmChallenge {
  const o = decodeObject(bytes, 'challenge', { required: ['credential_blob', 'encrypted_secret', 'nonce', 'pcr_bank', 'pcrs'] })
  return {
    credentialBlob: bytesField(o.credential_blob, 'credential_blob', 4, 258),
    encryptedSecret: bytesField(o.encrypted_secret, 'encrypted_secret', 4, 1026),
    nonce: bytesField(o.nonce, 'nonce', NONCE_BYTES, NONCE_BYTES),
    pcrBank: pcrBank(o.pcr_bank),
    pcrs: pcrList(o.pcrs),
  }
}

export function encodeAnswer(a: TpmAnswer): Uint8Array {
  const values: Record<string, string> = {}
  for (const [i, v] of [...a.pcrValues].sort((x, y) => x[0] - y[0])) values[String(i)] = Buffer.from(v).toString('hex')
  return json({
    activated_secret: b64(a.activatedSecret),
    quote_attest: b64(a.quoteAttest),
    quote_signature: b64(a.quoteSignature),
    pcr_values: values,
  })
}

/** Decodes an answer; PCR values must have the size of `bank` when given. */
export function decodeAnswer(bytes: Uint8Array, bank?: PcrBank): TpmAnswer {
  const o = decodeObject(bytes, 'answer', { required: ['activated_secret', 'quote_attest', 'quote_signature', 'pcr_values'] })
  const pv = o.pcr_values
  if (pv === null || typeof pv !== 'object' || Array.isArray(pv)) bad('pcr_values is not an object')
  const pcrValues = new Map<number, Uint8Array>()
  const entries = Object.entries(pv as Record<string, unknown>)
  if (entries.length > MAX_PCR_INDEX + 1) bad('too many pcr_values')
  for (const [k, v] of entries) {
    if (!/^(?:0|[1-9][0-9]?)$/.test(k) || Number(k) > MAX_PCR_INDEX) bad('pcr_values key is not a PCR index')
    if (typeof v !== 'string' || !/^(?:[0-9a-f]{2}){20,64}$/.test(v)) bad('pcr_values value is not a hex digest')
    const b = new Uint8Array(Buffer.from(v, 'hex'))
    if (bank !== undefined && b.length !== PCR_SIZE[bank]) bad('pcr_values value has the wrong size for the bank')
    pcrValues.set(Number(k), b)
  }
  return {
    activatedSecret: bytesField(o.activated_secret, 'activated_secret', 1, 64),
    quoteAttest: bytesField(o.quote_attest, 'quote_attest', 1, 1024),
    quoteSignature: bytesField(o.quote_signature, 'quote_signature', 1, 1024),
    pcrValues,
  }
}
