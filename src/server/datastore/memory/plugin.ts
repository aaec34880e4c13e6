import { z } from 'zod'
import { parseWith } from '../../../common/config/issues.js'
import type { PluginDefinition } from '../../../plugin/contracts.js'
import type { DataStore } from '../types.js'
import { createMemoryDataStore } from './memory-data-store.js'

const ConfigSchema = z.object({}).strict()

/** `[plugins.datastore.memory]`: state kept in memory only, lost on restart (tests, demos). */
export const memoryDataStorePlugin: PluginDefinition<Record<string, never>, DataStore> = {
  type: 'datastore',
  name: 'memory',
  volatile: true,
  parseConfig: (raw) => parseWith<Record<string, never>>(ConfigSchema, raw ?? {}),
  create: async (_config, deps) => createMemoryDataStore({ clock: deps.clock }),
}
