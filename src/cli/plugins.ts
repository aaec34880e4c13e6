/**
 * The plugin catalog registration: every built-in plugin each process may
 * use, and the blocks a file that leaves a type out gets. This and each
 * plugin's own module are the only places that name a concrete plugin
 * (test/unit/architecture.test.ts).
 */
import { agentNodeAttestors, serverNodeAttestors, workloadAttestors } from '../../attestors/index.js'
import { keyManagerPlugins } from '../keymanager/index.js'
import type { AgentPluginRegistry } from '../agent/config.js'
import type { AgentNodeAttestor, WorkloadAttestor } from '../plugin/contracts.js'
import type { KeyManager } from '../keymanager/key-manager.js'
import type { ServerPluginRegistry } from '../server/config.js'
import { memoryDataStorePlugin } from '../server/datastore/memory/plugin.js'
import { postgresDataStorePlugin } from '../server/datastore/postgres/plugin.js'
import { sqliteDataStorePlugin } from '../server/datastore/sqlite/plugin.js'

export const serverPlugins: ServerPluginRegistry = {
  keyManagers: keyManagerPlugins,
  datastores: [sqliteDataStorePlugin, postgresDataStorePlugin, memoryDataStorePlugin],
  nodeAttestors: serverNodeAttestors,
  defaults: {
    key_manager: { disk: { keys_path: 'keys' } },
    datastore: { sqlite: {} },
    node_attestor: { join_token: {} },
  },
}

export const agentPlugins: AgentPluginRegistry<AgentNodeAttestor, WorkloadAttestor, KeyManager> = {
  nodeAttestors: agentNodeAttestors,
  workloadAttestors,
  keyManagers: keyManagerPlugins,
}
