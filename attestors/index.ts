/**
 * Built-in plugins of attestors/, listed for the composition roots (cli/).
 * Core code never imports a concrete attestor. Server node attestors receive
 * what the server lends them (ServerNodeAttestorDeps: the datastore's join
 * tokens for join_token).
 */
import type { AgentNodeAttestor, PluginDefinition, PluginDeps, ServerNodeAttestor, ServerNodeAttestorDeps, WorkloadAttestor } from '../src/plugin/contracts.js'
import { joinTokenAgentPlugin } from './node/join-token/agent.js'
import { joinTokenServerPlugin } from './node/join-token/server.js'
import { tpmAgentPlugin } from './node/tpm/agent.js'
import { tpmServerPlugin } from './node/tpm/server.js'
import { x509popAgentPlugin } from './node/x509pop/agent.js'
import { x509popServerPlugin } from './node/x509pop/server.js'
import { unixWorkloadAttestorPlugin } from './workload/unix/index.js'

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any<I, D extends PluginDeps = PluginDeps> = PluginDefinition<any, I, D>

export const serverNodeAttestors: readonly Any<ServerNodeAttestor, ServerNodeAttestorDeps>[] = [joinTokenServerPlugin, x509popServerPlugin, tpmServerPlugin]
export const agentNodeAttestors: readonly Any<AgentNodeAttestor>[] = [joinTokenAgentPlugin, x509popAgentPlugin, tpmAgentPlugin]
export const workloadAttestors: readonly Any<WorkloadAttestor>[] = [unixWorkloadAttestorPlugin]
