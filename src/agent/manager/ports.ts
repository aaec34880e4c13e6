/**
 * What the agent manager needs from the server, declared here by the manager
 * (its consumer): the entries and bundles Sync brings, signing of workload
 * SVIDs, and per-instance registration. `server-client.ts` implements them
 * over gRPC; tests implement them with fakes.
 */
import type { IdentityError } from '../../errors/identity-error.js'
import type { CallOpts } from '../../plugin/contracts.js'

/** Most CSRs in one BatchNewX509SVID call. */
export const MAX_X509_BATCH = 500

/** A registration entry as the agent keeps it. Selectors are `type:value`. */
export interface AgentEntry {
  id: string
  spiffeId: string
  parentId: string
  selectors: string[]
  /** Seconds; 0 = server default. */
  x509SvidTtl: number
  jwtSvidTtl: number
  dnsNames: string[]
  /** Trust domain names. */
  federatesWith: string[]
  hint: string
  revision: number
}

/** One trust domain's SPIFFE bundle document. */
export interface BundleDoc {
  trustDomain: string
  document: string
  sequence: number
}

/** A revoked instance (value: instance ID or SPIFFE ID) or a quarantined SPIFFE ID prefix, as Sync brings it. */
export interface AgentRevocation {
  id: number
  kind: 'instance' | 'prefix'
  value: string
  /** Epoch ms; 0 = never. */
  expiresAt: number
}

export interface SyncMessage {
  full: boolean
  entries: AgentEntry[]
  deletedEntryIds: string[]
  /** Set when the local bundle changed (always on the first message). */
  bundle: BundleDoc | undefined
  /** The full federated set, set only when it changed. */
  federatedBundles: BundleDoc[] | undefined
  /** The full set of revocations in force, set only when it changed. */
  revocations?: AgentRevocation[] | undefined
}

export interface X509SvidResultItem {
  entryId: string
  /** Undefined when signed; otherwise the failure. */
  error: IdentityError | undefined
  svidChain: Uint8Array[]
  /** Epoch ms. */
  expiresAt: number
}

export interface JwtSvidMint {
  token: string
  /** Epoch ms. */
  expiresAt: number
  issuedAt: number
}

/** One CSR to sign; `instanceId` is required for per-instance template entries, absent otherwise. */
export interface X509SvidParam {
  entryId: string
  csr: Uint8Array
  instanceId?: string
}

/** What the manager needs to sign workload SVIDs (fakes implement it in tests). */
export interface SvidSigner {
  /** Results come back in the order of `params` (one per item). */
  batchNewX509Svid(params: X509SvidParam[], opts?: CallOpts): Promise<X509SvidResultItem[]>
  newJwtSvid(entryId: string, audience: string[], opts?: CallOpts & { instanceId?: string }): Promise<JwtSvidMint>
}

/** A workload process recorded at the server for a per-instance template entry. */
export interface RegisteredInstance {
  instanceId: string
  /** The template with the instance ID substituted. */
  spiffeId: string
}

/** What the manager needs for per-instance identities (fakes implement it in tests). */
export interface InstanceClient {
  /** `startTime`: `/proc/<pid>/stat` field 22, decimal. */
  registerInstance(entryId: string, proc: { pid: number; startTime: string }, opts?: CallOpts): Promise<RegisteredInstance>
  endInstance(instanceId: string, opts?: CallOpts): Promise<void>
  /** Ends every live instance of this agent; returns how many. */
  endAllInstances(opts?: CallOpts): Promise<number>
}
