import { constants, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { IdentityError, isIdentityError } from '../../errors/index.js'
import {
  TPM_ALG,
  ecdsaSignatureP1363,
  hashNodeName,
  parseTpmsAttest,
  parseTpmtSignature,
  type TpmsAttest,
  type TpmtPublic,
  type TpmtSignature,
} from '../structures.js'

/** Throws ERR_TPM_VERIFICATION_FAILED with a detailed reason (never key material). */
export function verificationFailed(message: string, details?: Record<string, unknown>, cause?: unknown): never {
  const opts: { cause?: unknown; details?: Record<string, unknown> } = {}
  if (details !== undefined) opts.details = details
  if (cause !== undefined) opts.cause = cause
  throw new IdentityError('ERR_TPM_VERIFICATION_FAILED', message, opts)
}

/** Runs a parser, turning its ERR_TPM_PAYLOAD_INVALID into ERR_TPM_VERIFICATION_FAILED. */
export function parseOrFail<T>(what: string, fn: () => T): T {
  try {
    return fn()
  } catch (err) {
    if (isIdentityError(err) || err instanceof RangeError || err instanceof TypeError) {
      verificationFailed(`${what} is malformed`, undefined, err)
    }
    throw err
  }
}

/** Constant-time comparison that tolerates different lengths. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  return timingSafeEqual(a, b)
}

const STRONG_HASHES = new Set<number>([TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512])

/**
 * Verifies a TPMT_SIGNATURE over `message` with the key of `signer`. The
 * signature algorithm must fit the key type (and the key's own scheme when it
 * has one), and its hash must be SHA-256 or stronger. Returns the decoded
 * signature.
 */
export function verifyTpmSignature(
  signer: { public: TpmtPublic; key: KeyObject },
  message: Uint8Array,
  signature: Uint8Array | TpmtSignature,
  what: string,
): TpmtSignature {
  const sig = signature instanceof Uint8Array ? parseOrFail(`${what} signature`, () => parseTpmtSignature(signature)) : signature
  const pub = signer.public
  if (!STRONG_HASHES.has(sig.hash)) verificationFailed(`${what} signature uses a weak or unsupported hash`, { hash: sig.hash })
  const scheme = pub.parameters.scheme
  if (scheme.scheme !== TPM_ALG.NULL && (scheme.scheme !== sig.sigAlg || scheme.hashAlg !== sig.hash)) {
    verificationFailed(`${what} signature scheme does not match the signing key's scheme`, { sigAlg: sig.sigAlg, keyScheme: scheme.scheme })
  }
  const hash = hashNodeName(sig.hash)
  let ok: boolean
  try {
    if (sig.sigAlg === TPM_ALG.ECDSA) {
      if (pub.type !== TPM_ALG.ECC) verificationFailed(`${what} ECDSA signature from a non-ECC key`)
      ok = cryptoVerify(hash, message, { key: signer.key, dsaEncoding: 'ieee-p1363' }, ecdsaSignatureP1363(sig, pub.parameters.curveId))
    } else {
      if (pub.type !== TPM_ALG.RSA) verificationFailed(`${what} RSA signature from a non-RSA key`)
      const padding = sig.sigAlg === TPM_ALG.RSAPSS ? constants.RSA_PKCS1_PSS_PADDING : constants.RSA_PKCS1_PADDING
      ok = cryptoVerify(
        hash,
        message,
        sig.sigAlg === TPM_ALG.RSAPSS ? { key: signer.key, padding, saltLength: constants.RSA_PSS_SALTLEN_AUTO } : { key: signer.key, padding },
        sig.sig,
      )
    }
  } catch (err) {
    if (isIdentityError(err)) throw err
    verificationFailed(`${what} signature could not be verified`, undefined, err)
  }
  if (!ok) verificationFailed(`${what} signature is invalid`)
  return sig
}

/** Parses a TPMS_ATTEST (the content of TPM2B_ATTEST), mapping parse errors to verification failures. */
export function parseAttest(attest: Uint8Array, what: string): TpmsAttest {
  return parseOrFail(what, () => parseTpmsAttest(attest))
}
