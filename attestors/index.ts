/**
 * Built-in plugins of attestors/, listed for the composition roots (cli/).
 * Core code never imports a concrete attestor. The server's join_token half is
 * built into the server (it needs the datastore), as in SPIRE.
 */
import type { AgentNodeAttestor, PluginDefinition, ServerNodeAttestor, WorkloadAttestor } from '../src/plugin/contracts.js'
import { joinTokenAgentPlugin } from './node/join-token/agent.js'
import { tpmAgentPlugin } from './node/tpm/agent.js'
import { tpmServerPlugin } from './node/tpm/server.js'
import { x509popAgentPlugin } from './node/x509pop/agent.js'
import { x509popServerPlugin } from './node/x509pop/server.js'
import { unixWorkloadAttestorPlugin } from './workload/unix/index.js'

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any<I> = PluginDefinition<any, I>

export const serverNodeAttestors: readonly Any<ServerNodeAttestor>[] = [x509popServerPlugin, tpmServerPlugin]
export const agentNodeAttestors: readonly Any<AgentNodeAttestor>[] = [joinTokenAgentPlugin, x509popAgentPlugin, tpmAgentPlugin]
export const workloadAttestors: readonly Any<WorkloadAttestor>[] = [unixWorkloadAttestorPlugin]
