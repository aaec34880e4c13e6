export type * from './types.js'
export { createMemoryDataStore, type MemoryDataStoreOptions } from './memory/index.js'
export { openSqliteDataStore, SQLITE_SCHEMA_VERSION, type SqliteDataStoreOptions } from './sqlite/index.js'
