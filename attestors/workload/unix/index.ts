import type { PluginDefinition, WorkloadAttestor } from '../../../src/plugin/contracts.js'
import { parseUnixAttestorConfig, type UnixAttestorConfig } from './config.js'
import { UnixWorkloadAttestor } from './unix-attestor.js'

export { parseUnixAttestorConfig, DEFAULT_WORKLOAD_SIZE_LIMIT, type UnixAttestorConfig } from './config.js'
export { UnixWorkloadAttestor, type UnixAttestorOptions } from './unix-attestor.js'

/** The `unix` workload attestor (Linux): selectors from the caller's uid/gid/groups and executable. */
export const unixWorkloadAttestorPlugin: PluginDefinition<UnixAttestorConfig, WorkloadAttestor> = {
  type: 'workload_attestor',
  name: 'unix',
  parseConfig: parseUnixAttestorConfig,
  async create(config, deps) {
    return new UnixWorkloadAttestor({ ...config, log: deps.log })
  },
}
