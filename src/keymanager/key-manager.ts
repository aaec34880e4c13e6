import type { KeyObject } from 'node:crypto'
import type { Signer } from '../spiffe/signer.js'

export type KeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096'
export const KEY_TYPES: readonly KeyType[] = ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096']

/** A key held by a KeyManager. It signs; it never reveals its private half. */
export interface ManagedKey extends Signer {
  readonly id: string
  readonly type: KeyType
  /**
   * Software keys only (memory, disk): the private key as a node:crypto
   * KeyObject, so that this process's worker threads can sign with it (a
   * KeyObject posted to a worker shares the key, it is never exported). HSM
   * keys have no such handle: their signatures stay behind `sign`.
   */
  inProcessKey?(): KeyObject
}

/**
 * Holds the server's (or agent's) private keys. Implementations: memory, disk,
 * pkcs11. Key ids are short strings chosen by the caller (`x509-ca-a`, `jwt-b`).
 */
export interface KeyManager {
  /** Generates a new key under `id`, replacing (and destroying) any existing key with that id. */
  generateKey(id: string, type: KeyType): Promise<ManagedKey>
  /** Throws IdentityError ERR_KEY_NOT_FOUND. */
  getKey(id: string): Promise<ManagedKey>
  listKeys(): Promise<ManagedKey[]>
  /** Destroys the key; a no-op when it does not exist. */
  deleteKey(id: string): Promise<void>
  /**
   * Optional capability: the AES-256-GCM sealing key `id`, created on first
   * use and the same key afterwards (also after a restart, for disk and
   * pkcs11). Sealing keys live apart from signing keys: `listKeys`,
   * `getKey` and `deleteKey` never see them. ERR_KEY_INVALID for a stored key
   * that is unusable or (pkcs11) not kept secret by the token.
   */
  sealingKey?(id: string): Promise<SealingKey>
  /** Destroys the sealing key (everything sealed under it is lost); a no-op when it does not exist. */
  deleteSealingKey?(id: string): Promise<void>
  close?(): Promise<void>
}

/**
 * A symmetric key that seals small secrets (AES-256-GCM, a fresh random
 * 96-bit IV per seal). The key never leaves its KeyManager (for pkcs11, the
 * token). `aad` is authenticated, not stored: `open` needs the same bytes.
 */
export interface SealingKey {
  readonly id: string
  /**
   * Returns the envelope `version (0x01) ‖ IV (12) ‖ ciphertext ‖ tag (16)`.
   * RangeError for an empty plaintext or one over MAX_SEALED_PLAINTEXT bytes.
   */
  seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
  /**
   * The plaintext, or IdentityError ERR_SEALED_DATA_INVALID when the envelope
   * is malformed, was changed, or was sealed under another key or AAD; never
   * any part of the plaintext in that case.
   */
  open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
}

/** A KeyManager that has the sealing capability. */
export type SealingKeyManager = KeyManager & Required<Pick<KeyManager, 'sealingKey' | 'deleteSealingKey'>>

/** True when `km` implements sealingKey and deleteSealingKey. */
export function canSeal(km: KeyManager): km is SealingKeyManager {
  return typeof km.sealingKey === 'function' && typeof km.deleteSealingKey === 'function'
}
