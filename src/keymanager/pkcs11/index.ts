export { Pkcs11KeyManager, Pkcs11Key, DEFAULT_KEY_LABEL_PREFIX, DEFAULT_SESSION_POOL_SIZE, type Pkcs11Config, type SignMode } from './pkcs11-key-manager.js'
export {
  provisionSoftHsm,
  findSoftHsmModule,
  writeSoftHsmConf,
  initSoftHsmToken,
  listSoftHsmTokenLabels,
  SOFTHSM_MODULE_PATHS,
  type ProvisionedSoftHsm,
} from './softhsm.js'
