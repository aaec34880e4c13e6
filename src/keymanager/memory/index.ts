export { MemoryKeyManager } from './memory-key-manager.js'
export {
  SoftwareKey,
  assertKeyId,
  assertKeyType,
  algorithmsForKeyType,
  hashForAlgorithm,
  keyTypeOf,
  generateSoftwareKey,
  parsePrivateKeyPem,
  signWithKeyObject,
  HASH_LENGTH,
  type HashName,
} from './software-key.js'
export { SoftwareSealingKey, SEALING_KEY_BYTES } from './software-sealing-key.js'
