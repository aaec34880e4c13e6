export { createMemoryDataStore, type MemoryDataStoreOptions } from './memory-data-store.js'
