import { IdentityError } from '../../errors/index.js'
import type { KeyManager, KeyType, ManagedKey } from '../key-manager.js'
import { assertKeyId, assertKeyType, generateSoftwareKey, SoftwareKey } from './software-key.js'

/** Keys held in process memory only; they are gone when the process exits. For tests and throwaway servers. */
export class MemoryKeyManager implements KeyManager {
  readonly #keys = new Map<string, SoftwareKey>()

  async generateKey(id: string, type: KeyType): Promise<ManagedKey> {
    assertKeyId(id)
    assertKeyType(type)
    const key = new SoftwareKey(id, type, await generateSoftwareKey(type))
    this.#keys.set(id, key)
    return key
  }

  async getKey(id: string): Promise<ManagedKey> {
    assertKeyId(id)
    const key = this.#keys.get(id)
    if (key === undefined) throw new IdentityError('ERR_KEY_NOT_FOUND', `key "${id}" not found`, { details: { key_id: id } })
    return key
  }

  async listKeys(): Promise<ManagedKey[]> {
    return [...this.#keys.values()]
  }

  async deleteKey(id: string): Promise<void> {
    assertKeyId(id)
    this.#keys.delete(id)
  }

  async close(): Promise<void> {
    this.#keys.clear()
  }
}
