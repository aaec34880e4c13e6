import type { KeyObject } from 'node:crypto'

/** JOSE algorithm names; the same names select the X.509 signature algorithm. */
export type SignatureAlgorithm = 'ES256' | 'ES384' | 'ES512' | 'RS256' | 'RS384' | 'RS512' | 'PS256' | 'PS384' | 'PS512'

export const SIGNATURE_ALGORITHMS: readonly SignatureAlgorithm[] = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']

/**
 * Something that signs without handing out its private key: an in-memory key,
 * a key file, an HSM (PKCS#11) or a TPM.
 *
 * `sign` hashes `data` with the algorithm's hash and signs it. ECDSA signatures
 * are returned in IEEE P1363 form (raw r||s, as WebCrypto and JWS use);
 * callers that need DER (X.509) convert. RSA signatures are PKCS#1 v1.5 (RS*)
 * or PSS with salt length = hash length (PS*).
 */
export interface Signer {
  readonly publicKey: KeyObject
  sign(data: Uint8Array, alg: SignatureAlgorithm): Promise<Uint8Array>
}

export type HashName = 'sha256' | 'sha384' | 'sha512'

/** The hash each JOSE algorithm signs with. */
export const HASH_FOR_ALGORITHM: Readonly<Record<SignatureAlgorithm, HashName>> = {
  ES256: 'sha256',
  ES384: 'sha384',
  ES512: 'sha512',
  RS256: 'sha256',
  RS384: 'sha384',
  RS512: 'sha512',
  PS256: 'sha256',
  PS384: 'sha384',
  PS512: 'sha512',
}

/** Digest sizes in bytes (also the PSS salt length we use). */
export const HASH_LENGTH: Readonly<Record<HashName, number>> = { sha256: 32, sha384: 48, sha512: 64 }
