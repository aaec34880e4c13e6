export { DiskKeyManager } from './disk-key-manager.js'
