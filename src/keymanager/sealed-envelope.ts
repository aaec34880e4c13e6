/**
 * The envelope every SealingKey produces, whatever holds the key:
 * `version (1 byte, 0x01) ‖ IV (12 bytes) ‖ ciphertext ‖ GCM tag (16 bytes)`,
 * AES-256-GCM with a fresh random IV per seal. The version byte is checked
 * exactly; the IV, ciphertext and tag are covered by the tag.
 */
import { IdentityError } from '../errors/index.js'

export const SEALED_VERSION = 0x01
export const SEALED_IV_BYTES = 12
export const SEALED_TAG_BYTES = 16
/** The largest plaintext a SealingKey seals (small secrets such as API keys, in one HSM call). */
export const MAX_SEALED_PLAINTEXT = 64 * 1024
/** Smallest possible envelope: header, one byte of ciphertext, tag. */
const MIN_ENVELOPE = 1 + SEALED_IV_BYTES + 1 + SEALED_TAG_BYTES

export interface SealedParts {
  iv: Buffer
  /** Ciphertext followed by the tag, as PKCS#11 C_Decrypt takes it. */
  ciphertextAndTag: Buffer
  ciphertext: Buffer
  tag: Buffer
}

/** TypeError unless both are Uint8Arrays; RangeError for an empty or too large plaintext. */
export function assertSealArgs(plaintext: unknown, aad: unknown): asserts plaintext is Uint8Array {
  if (!(plaintext instanceof Uint8Array)) throw new TypeError('seal: plaintext must be a Uint8Array')
  if (!(aad instanceof Uint8Array)) throw new TypeError('seal: aad must be a Uint8Array')
  if (plaintext.byteLength === 0) throw new RangeError('seal: plaintext must not be empty')
  if (plaintext.byteLength > MAX_SEALED_PLAINTEXT) throw new RangeError(`seal: plaintext is larger than ${MAX_SEALED_PLAINTEXT} bytes`)
}

export function assertOpenArgs(sealed: unknown, aad: unknown): asserts sealed is Uint8Array {
  if (!(sealed instanceof Uint8Array)) throw new TypeError('open: sealed must be a Uint8Array')
  if (!(aad instanceof Uint8Array)) throw new TypeError('open: aad must be a Uint8Array')
}

/** One message for every refusal: which part was wrong is not the caller's (or an attacker's) business. */
export function sealedDataInvalid(keyId: string, reason: 'malformed' | 'unknown_version' | 'authentication_failed', cause?: unknown): IdentityError {
  return new IdentityError('ERR_SEALED_DATA_INVALID', 'sealed data is invalid, was changed, or was sealed under another key or AAD', {
    ...(cause !== undefined ? { cause } : {}),
    details: { key_id: keyId, reason },
  })
}

export function buildEnvelope(iv: Uint8Array, ciphertextAndTag: Uint8Array): Uint8Array {
  const out = new Uint8Array(1 + iv.byteLength + ciphertextAndTag.byteLength)
  out[0] = SEALED_VERSION
  out.set(iv, 1)
  out.set(ciphertextAndTag, 1 + iv.byteLength)
  return out
}

/** Splits an envelope (views, no copies); ERR_SEALED_DATA_INVALID when it cannot be one of ours. */
export function parseEnvelope(keyId: string, sealed: Uint8Array): SealedParts {
  if (sealed.byteLength < MIN_ENVELOPE || sealed.byteLength > MIN_ENVELOPE - 1 + MAX_SEALED_PLAINTEXT) throw sealedDataInvalid(keyId, 'malformed')
  if (sealed[0] !== SEALED_VERSION) throw sealedDataInvalid(keyId, 'unknown_version')
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength)
  const ciphertextAndTag = buf.subarray(1 + SEALED_IV_BYTES)
  return {
    iv: buf.subarray(1, 1 + SEALED_IV_BYTES),
    ciphertextAndTag,
    ciphertext: ciphertextAndTag.subarray(0, ciphertextAndTag.length - SEALED_TAG_BYTES),
    tag: ciphertextAndTag.subarray(ciphertextAndTag.length - SEALED_TAG_BYTES),
  }
}
