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
 * config block, and a factory. Plugins never read their config block from a
 * file themselves: the catalog (catalog.ts) hands them the block, with
 * relative paths resolved, and reports their issues under the block's path.
 * `D` is what the plugin needs from its host besides the common deps (e.g.
 * the datastore's join tokens for a server node attestor).
 */
export interface PluginDefinition<C, I, D extends PluginDeps = PluginDeps> {
  type: PluginType
  name: string
  /**
   * Keys of the block that name locations under the plugin's data dir (resolved
   * by the plugin against `deps.dataDir`), not files relative to the config file.
   */
  dataDirRelativeKeys?: readonly string[]
  /** True when the plugin keeps nothing across restarts (the memory key manager and datastore): its host then persists nothing either. */
  volatile?: boolean
  /** Validates the raw config block; returns the typed config or throws ERR_CONFIG_INVALID with issue paths (relative to the block). */
  parseConfig(raw: unknown): C
  create(config: C, deps: D): Promise<I & { close?(): Promise<void> }>
}

/** A stored single-use join token (only its SHA-256 is kept). */
export interface JoinTokenRecord {
  tokenHash: string
  expiresAt: number
  /** SPIFFE ID the operator asked to alias the node with, or ''. */
  spiffeId: string
}

/** The part of the server's datastore a join-token attestor uses. */
export interface JoinTokenRecords {
  /** Throws ERR_ALREADY_EXISTS for a tokenHash already stored. */
  create(token: JoinTokenRecord): Promise<unknown>
  /** Atomically deletes and returns the token (one use); undefined when it does not exist. */
  consume(tokenHash: string): Promise<JoinTokenRecord | undefined>
}

/** What the server lends its node attestors besides the common deps. */
export interface ServerNodeAttestorDeps extends PluginDeps {
  joinTokens: JoinTokenRecords
}

/** Result of a successful node attestation on the server. */
export interface NodeAttestationResult {
  agentId: SpiffeId
  /** Selector values without the type prefix; the catalog adds `<plugin name>:`. */
  selectorValues: string[]
  /** True when the agent may re-attest with the same proof (e.g. x509pop, tpm); false for join tokens. */
  canReattest: boolean
  /**
   * A SPIFFE ID to register as a node alias of this agent (an entry parented
   * by the server whose selectors are this agent's), e.g. the ID an operator
   * attached to a join token. Must be a non-reserved ID of the trust domain.
   */
  nodeAlias?: SpiffeId
}

/**
 * Server half of a node attestor. `challenge` sends bytes to the agent and
 * resolves with its answer; it may be called any number of times.
 * Failures throw IdentityError (ERR_NODE_ATTESTATION_FAILED / ERR_ATTESTATION_PAYLOAD_INVALID)
 * with the detailed reason; the API layer tells the agent only "attestation failed".
 * A refusal of a proof that got far enough to show whose it is (the TPM
 * attestor: after the credential activation) may name that agent ID in
 * `details.agent_id`: the server then knows an attested node failed to attest
 * again (NodeAttestationService.onReattestationRefused). Never a claim the
 * proof has not shown.
 */
export interface ServerNodeAttestor {
  attest(payload: Uint8Array, challenge: (c: Uint8Array) => Promise<Uint8Array>, opts: CallOpts): Promise<NodeAttestationResult>
}

/**
 * A server node attestor that also issues the single-use proofs it accepts
 * (join tokens): the admin API's CreateJoinToken reaches it. At most one
 * configured attestor may issue tokens.
 */
export interface TokenIssuingNodeAttestor extends ServerNodeAttestor {
  issueToken(opts: { ttlSeconds?: number; spiffeId?: string }): Promise<{ token: string; expiresAt: number }>
}

export function issuesTokens(a: ServerNodeAttestor): a is TokenIssuingNodeAttestor {
  return typeof (a as Partial<TokenIssuingNodeAttestor>).issueToken === 'function'
}

/** Agent half of a node attestor. */
export interface AgentNodeAttestor {
  /**
   * False when the proof can be presented only once (a join token): the agent
   * then renews its SVID instead of attesting again, and stops when the server
   * rejects it. Default true.
   */
  readonly canReattest?: boolean
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
  /**
   * How long, in milliseconds, the selectors this attestor returned stay true
   * for later calls on the same connection, given what the agent re-checks on
   * every call anyway (the caller's ids, groups and executable unchanged since
   * connect, the process alive). The agent then reuses them for that long
   * instead of attesting again. Absent or 0: attest on every call.
   */
  readonly selectorsStableForMs?: number
}
