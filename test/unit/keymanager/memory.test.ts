import { describe, expect, it } from 'vitest'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { keyManagerConformance } from '../../conformance/key-manager.js'

keyManagerConformance('memory', {
  create: async () => ({ km: new MemoryKeyManager(), cleanup: () => {} }),
  keyTypes: ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'],
})

describe('MemoryKeyManager', () => {
  it('does not reveal the private key through JSON', async () => {
    const km = new MemoryKeyManager()
    const key = await km.generateKey('k', 'ec-p256')
    expect(JSON.parse(JSON.stringify(key))).toEqual({ id: 'k', type: 'ec-p256' })
  })

  it('rejects an unknown key type with TypeError', async () => {
    const km = new MemoryKeyManager()
    await expect(km.generateKey('k', 'ec-p521' as never)).rejects.toThrow(TypeError)
  })
})
