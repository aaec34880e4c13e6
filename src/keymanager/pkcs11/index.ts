export {
  Pkcs11KeyManager,
  Pkcs11Key,
  Pkcs11SealingKey,
  DEFAULT_KEY_LABEL_PREFIX,
  DEFAULT_SESSION_POOL_SIZE,
  type Pkcs11Config,
  type SignMode,
} from './pkcs11-key-manager.js'
