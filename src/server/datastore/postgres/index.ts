export { MIGRATIONS, type Migration, POSTGRES_SCHEMA_VERSION } from './migrations.js'
export { openPostgresDataStore, type PostgresDataStoreOptions } from './postgres-data-store.js'
export { postgresDataStorePlugin, type PostgresFileConfig } from './plugin.js'
