export { MIGRATIONS, type Migration, SQLITE_SCHEMA_VERSION } from './migrations.js'
export { openSqliteDataStore, type SqliteDataStoreOptions } from './sqlite-data-store.js'
