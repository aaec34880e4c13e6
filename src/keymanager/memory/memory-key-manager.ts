import { IdentityError } from '../../errors/index.js'
import type { KeyManager, KeyType, ManagedKey, SealingKey } from '../key-manager.js'
import { assertKeyId, assertKeyType, generateSoftwareKey, SoftwareKey } from './software-key.js'
import { newSealingKeyBytes, SoftwareSealingKey } from './software-sealing-key.js'

/** Keys held in process memory only; they are gone when the process exits. For tests and throwaway servers. */
export class MemoryKeyManager implements KeyManager {
  readonly #keys = new Map<string, SoftwareKey>()
  readonly #sealingKeys = new Map<string, SoftwareSealingKey>()

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

  async sealingKey(id: string): Promise<SealingKey> {
    assertKeyId(id)
    let key = this.#sealingKeys.get(id)
    if (key === undefined) {
      const raw = newSealingKeyBytes()
      key = new SoftwareSealingKey(id, raw)
      raw.fill(0)
      this.#sealingKeys.set(id, key)
    }
    return key
  }

  async deleteSealingKey(id: string): Promise<void> {
    assertKeyId(id)
    this.#sealingKeys.delete(id)
  }

  async close(): Promise<void> {
    this.#keys.clear()
    this.#sealingKeys.clear()
  }
}
