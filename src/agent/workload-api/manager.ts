/**
 * What the Workload API needs from the agent, declared by the consumer (as
 * SPIRE's workload handler declares its own small Manager/Attestor). The
 * agent manager implements it; tests use fakes.
 */
import type { CallOpts } from '../../plugin/contracts.js'

/** Kernel-reported caller of a Workload API connection. */
export interface WorkloadPeer {
  pid: number
  /** Effective uid and gid, and the supplementary groups, at connect (from the kernel). */
  uid: number
  gid: number
  groups: readonly number[]
  /**
   * `/proc/<pid>/stat` start time of the caller (clock ticks since boot), read
   * when its connection was accepted: with `pid` it names one process, which
   * per-instance template entries are bound to. Absent for callers the
   * transport could not identify that precisely.
   */
  startTime?: string
}

/** Who is calling: lets the manager bind per-instance identities to the caller's process. */
export interface WorkloadCallContext {
  peer?: WorkloadPeer
}

/** One X509-SVID a workload is entitled to. */
export interface WorkloadIdentity {
  /** e.g. `spiffe://example.org/web` */
  spiffeId: string
  /** DER certificates, leaf first. */
  x509Svid: Uint8Array[]
  /** PKCS#8 DER private key of the leaf (unencrypted). */
  x509SvidKey: Uint8Array
  /** Optional operator hint (unique within a response, ≤ 1024 bytes); '' for none. */
  hint: string
}

/** A trust domain's bundle in both Workload API encodings. */
export interface WorkloadBundle {
  /** Concatenated DER of the X.509 authorities. */
  x509: Uint8Array
  /** Standard JWKS JSON of the JWT authorities (no `use`, JWT keys only). */
  jwks: string
}

/**
 * Everything a caller with given selectors may see, always complete: each
 * update replaces the previous one (the Workload API sends full state).
 */
export interface WorkloadUpdate {
  /** Entitled identities; the first is the default. Empty means "no identity issued". */
  identities: WorkloadIdentity[]
  /** Trust domain ID of the local trust domain, e.g. `spiffe://example.org`. */
  trustDomainId: string
  /** The local trust domain's bundle (the `bundle` of every X509SVID). */
  bundle: WorkloadBundle
  /** Bundles of the trust domains the caller's entries federate with, keyed by trust domain ID; never the local one. */
  federatedBundles: ReadonlyMap<string, WorkloadBundle>
}

export interface JwtSvidResult {
  spiffeId: string
  /** Compact JWS. Never log it. */
  token: string
  hint: string
}

export interface ValidatedJwtSvid {
  spiffeId: string
  /** All claims to return (already filtered for foreign trust domains); `aud` may be a string or an array. */
  claims: Record<string, unknown>
}

export interface WorkloadManager {
  /**
   * Runs workload attestation (all attestors) for the caller and returns full
   * selectors such as `unix:uid:1000`. Throws on failure; the API answers
   * Unavailable "workload attestation failed". `attestWorkload()` in
   * `agent/workload/attest-workload.ts` is the ready-made implementation.
   */
  attest(peer: WorkloadPeer, opts: CallOpts): Promise<string[]>

  /**
   * Calls `onUpdate` with the current state for `selectors` — synchronously
   * during `subscribe` or soon after — and again on every change (SVID
   * rotation, entry or bundle change). Returns the unsubscribe function.
   * `ctx.peer` (pid and start time) selects the caller's own per-instance
   * identities; without it, per-instance template entries are not served.
   */
  subscribe(selectors: string[], onUpdate: (update: WorkloadUpdate) => void, ctx?: WorkloadCallContext): () => void

  /**
   * JWT-SVIDs for `audience` (non-empty) for every identity of `selectors`,
   * or only `spiffeId` if given. An empty result means "no identity issued".
   * `opts.peer` as for `subscribe` (per-instance JWT-SVIDs).
   */
  fetchJwtSvids(selectors: string[], req: { audience: string[]; spiffeId?: string }, opts: CallOpts & WorkloadCallContext): Promise<JwtSvidResult[]>

  /**
   * Validates `token` for `audience` against the bundles visible to
   * `selectors`. Any failure is answered InvalidArgument with its message, so
   * messages must not contain the token.
   */
  validateJwtSvid(selectors: string[], req: { token: string; audience: string }, opts: CallOpts): Promise<ValidatedJwtSvid>
}
