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
  close?(): Promise<void>
}
