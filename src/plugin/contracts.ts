import type { SpiffeId } from '../spiffe/spiffe-id.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import type { Logger } from '../common/log/logger.js'
import type { Clock } from '../common/clock.js'

export type PluginType = 'node_attestor' | 'workload_attestor' | 'key_manager' | 'datastore'

export interface CallOpts {
  signal?: AbortSignal
}

export interface PluginDeps {
  log: Logger
  clock: Clock
  trustDomain: TrustDomain
  /** Directory for the plugin's own state (resolved, absolute). */
  dataDir: string
}

/**
 * Declares a plugin: its name (also its selector type), a validator for its
 * config block, and a factory. Plugins never parse config themselves.
 */
export interface PluginDefinition<C, I> {
  type: PluginType
  name: string
  /** Validates the raw config block; returns the typed config or throws ERR_CONFIG_INVALID with issue paths. */
  parseConfig(raw: unknown): C
  create(config: C, deps: PluginDeps): Promise<I & { close?(): Promise<void> }>
}

/** Result of a successful node attestation on the server. */
export interface NodeAttestationResult {
  agentId: SpiffeId
  /** Selector values without the type prefix; the catalog adds `<plugin name>:`. */
  selectorValues: string[]
  /** True when the agent may re-attest with the same proof (e.g. x509pop, tpm); false for join tokens. */
  canReattest: boolean
}

/**
 * Server half of a node attestor. `challenge` sends bytes to the agent and
 * resolves with its answer; it may be called any number of times.
 * Failures throw IdentityError (ERR_NODE_ATTESTATION_FAILED / ERR_ATTESTATION_PAYLOAD_INVALID)
 * with the detailed reason; the API layer tells the agent only "attestation failed".
 */
export interface ServerNodeAttestor {
  attest(
    payload: Uint8Array,
    challenge: (c: Uint8Array) => Promise<Uint8Array>,
    opts: CallOpts,
  ): Promise<NodeAttestationResult>
}

/** Agent half of a node attestor. */
export interface AgentNodeAttestor {
  payload(opts: CallOpts): Promise<Uint8Array>
  answer(challenge: Uint8Array, opts: CallOpts): Promise<Uint8Array>
}

/**
 * The caller of a Workload API call as the kernel recorded it when its
 * connection was made (SO_PEERCRED, SO_PEERGROUPS): the connecting process
 * and its effective ids and supplementary groups then. Attestors derive
 * identity selectors from these, never from a later read of `/proc`; the
 * agent refuses the call when the process's ids or executable changed since.
 */
export interface WorkloadCaller {
  readonly pid: number
  readonly uid: number
  readonly gid: number
  readonly groups: readonly number[]
}

/** Returns selector values (no type prefix) for the caller. */
export interface WorkloadAttestor {
  attest(caller: WorkloadCaller, opts: CallOpts): Promise<string[]>
}
