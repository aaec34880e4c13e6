import { isAbsolute, join, resolve } from 'node:path'
import { z } from 'zod'
import { parseWith } from '../../../common/config/issues.js'
import type { PluginDefinition } from '../../../plugin/contracts.js'
import type { DataStore } from '../types.js'
import { openSqliteDataStore } from './sqlite-data-store.js'

const ConfigSchema = z.object({ path: z.string().min(1, 'must not be empty').optional() }).strict()
type SqliteFileConfig = z.infer<typeof ConfigSchema>

/**
 * `[plugins.datastore.sqlite]`: the server's state in one SQLite file,
 * `path` (default `datastore.sqlite3`), relative to the data directory.
 */
export const sqliteDataStorePlugin: PluginDefinition<SqliteFileConfig, DataStore> = {
  type: 'datastore',
  name: 'sqlite',
  dataDirRelativeKeys: ['path'],
  parseConfig: (raw) => parseWith(ConfigSchema, raw ?? {}),
  create: (config, deps) =>
    openSqliteDataStore({
      path: config.path === undefined ? join(deps.dataDir, 'datastore.sqlite3') : isAbsolute(config.path) ? config.path : resolve(deps.dataDir, config.path),
      log: deps.log,
      clock: deps.clock,
    }),
}
