/**
 * The agent's cache manager (SPIRE's agent `manager` + `manager/cache`):
 *
 *  - keeps the entries the server says this agent may serve (applySync), the
 *    local bundle and the federated bundles;
 *  - pre-mints X.509-SVIDs (EC P-256 keys, in memory only) for up to
 *    `x509SvidCacheMaxSize` entries, signs in batches of ≤ 500, and rotates
 *    each at half-life ±10%; failures retry with exponential backoff and
 *    jitter while valid SVIDs keep being served until they expire;
 *  - beyond the bound, SVIDs are minted when a workload asks, and SVIDs of
 *    entries nobody subscribes to are evicted least-recently-used first;
 *  - pushes full `WorkloadUpdate`s to subscribers whose selectors cover the
 *    entries' selectors, on every change that concerns them;
 *  - caches JWT-SVIDs per (SPIFFE ID, audience set), re-minted at half-life,
 *    bounded LRU; validates JWT-SVIDs against the local and federated bundles.
 *
 *  - per-instance template entries (SPIFFE ID holding `{instance}`): every
 *    process (pid + start time) that matches gets its own instance, registered
 *    at the server, its own key and X.509-SVID (rotated at half-life while the
 *    process lives) and its own JWT-SVIDs, served to that process only; when
 *    the process is gone the instance's state is dropped and its end reported
 *    to the server (queued and retried while the server is unreachable).
 *
 * Timing is driven by `tick()` and the injected Clock; with `autoTick` a timer
 * calls it, tests call it after advancing a FakeClock.
 */
import { X509Certificate } from 'node:crypto'
import { newEcPrivateKey } from '../../common/crypto/new-key.js'
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { CallOpts } from '../../plugin/contracts.js'
import { BundleSet } from '../../spiffe/bundle/bundle-set.js'
import type { JwtBundleSource } from '../../spiffe/bundle/sources.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import { validateJwtSvid } from '../../spiffe/jwt-svid/validate-jwt-svid.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import { createCsr } from '../../spiffe/x509-svid/csr.js'
import type { JwtBundle } from '../../spiffe/bundle/jwt-bundle.js'
import type {
  JwtSvidResult,
  ValidatedJwtSvid,
  WorkloadBundle,
  WorkloadIdentity,
  WorkloadCallContext,
  WorkloadManager,
  WorkloadPeer,
  WorkloadUpdate,
} from '../workload-api/manager.js'
import { readProcessStartTime, type StartTimeReader } from '../workload/peer.js'
import { MAX_X509_BATCH, type AgentEntry, type BundleDoc, type InstanceClient, type SvidSigner, type SyncMessage } from './ports.js'
import { Backoff, renewalTime } from './backoff.js'
import { jwtKey, JwtSvidCache, type CachedJwt, type MintedJwt } from './jwt-svid-cache.js'

/** A cached X.509-SVID: DER only (no parsed objects), shaped as the identity the Workload API sends. */
interface CachedSvid extends WorkloadIdentity {
  entryId: string
  revision: number
  issuedAt: number
  expiresAt: number
  rotateAt: number
  lastUsed: number
}

interface Subscriber {
  selectors: ReadonlySet<string>
  onUpdate: (u: WorkloadUpdate) => void
  matched: Set<string>
  closed: boolean
  /** The caller's process (`pid:startTime`) when known: its per-instance identities are served. */
  proc: { key: string; pid: number; startTime: string } | undefined
}

/** One workload process's instance of one template entry. Deleted (with all it holds) when the process ends. */
interface InstanceState {
  /** `${procKey}|${entryId}` */
  key: string
  procKey: string
  entryId: string
  pid: number
  startTime: string
  /** Set once the server recorded the instance. */
  instanceId: string | undefined
  spiffeId: string | undefined
  registering: Promise<void> | undefined
  svid: CachedSvid | undefined
  inflight: boolean
  failedUntil: number
  backoff: Backoff | undefined
  jwtKeys: Set<string>
  ended: boolean
}

/** A process holding instances, watched for its end. */
interface ProcState {
  pid: number
  startTime: string
  instances: Set<string>
}

/** The placeholder of per-instance template entries (as the server's `INSTANCE_PLACEHOLDER`). */

/** Claims of a federated trust domain's JWT-SVID that ValidateJWTSVID returns (the registered ones). */
const FOREIGN_JWT_CLAIMS: ReadonlySet<string> = new Set(['sub', 'aud', 'exp', 'iat', 'nbf', 'iss', 'jti'])
export const INSTANCE_PLACEHOLDER = '{instance}'

/** True for an entry whose SPIFFE ID is a per-instance template. */
export function isTemplateEntry(e: Pick<AgentEntry, 'spiffeId'>): boolean {
  return e.spiffeId.includes(INSTANCE_PLACEHOLDER)
}

/** Could `template` produce `spiffeId` (instance IDs are one path segment)? */
function templateCovers(template: string, spiffeId: string): boolean {
  const i = template.indexOf(INSTANCE_PLACEHOLDER)
  const head = template.slice(0, i)
  const tail = template.slice(i + INSTANCE_PLACEHOLDER.length)
  if (!spiffeId.startsWith(head) || !spiffeId.endsWith(tail) || spiffeId.length <= head.length + tail.length) return false
  return !spiffeId.slice(head.length, spiffeId.length - tail.length).includes('/')
}

interface FederatedState {
  doc: BundleDoc
  bundle: SpiffeBundle
  workload: WorkloadBundle
}

export interface AgentManagerOptions {
  trustDomain: TrustDomain
  signer: SvidSigner
  clock: Clock
  log: Logger
  /** Workload attestation (all workload attestors); see `attestWorkload()`. */
  attestWorkload: (peer: WorkloadPeer, opts: CallOpts) => Promise<string[]>
  x509SvidCacheMaxSize?: number
  jwtSvidCacheMaxSize?: number
  /** Random source for jitter. Default Math.random. */
  random?: () => number
  /** Calls `tick()` from a timer every `tickIntervalMs` (default 250). Default true; tests pass false. */
  autoTick?: boolean
  tickIntervalMs?: number
  retryBackoff?: { initialMs?: number; maxMs?: number }
  /** Per-instance identities (RegisterInstance/EndInstance/EndAllInstances); without it template entries are not served. */
  instances?: InstanceClient
  /** Start time of a process (`/proc/<pid>/stat` field 22), undefined when gone. Default reads /proc. */
  readStartTime?: StartTimeReader
  /** How often processes holding instances are checked for their end (default 1000 ms, by the injected clock). */
  processCheckIntervalMs?: number
  /** Bound of instance ends waiting to be reported while the server is unreachable (default 10,000; oldest dropped). */
  maxPendingEnds?: number
}

export interface ManagerStats {
  entries: number
  cachedX509Svids: number
  cachedJwtSvids: number
  subscribers: number
  inflight: number
  /** Per-instance identities held (registered or being registered). */
  instances: number
  /** Processes watched for their end. */
  processes: number
  /** Instance ends not yet reported to the server. */
  pendingEnds: number
}

const EMPTY_BUNDLE: WorkloadBundle = { x509: new Uint8Array(0), jwks: '{"keys":[]}' }

function toMs(v: number): number {
  // Tolerates seconds from a server that sends them; the contract is epoch ms.
  return v > 0 && v < 1e11 ? v * 1000 : v
}

/** The caller's process as a map key, when both pid and start time are known. */
function procOf(peer: WorkloadPeer | undefined): Subscriber['proc'] {
  if (!peer || peer.startTime === undefined || !(peer.pid > 0)) return undefined
  return { key: `${peer.pid}:${peer.startTime}`, pid: peer.pid, startTime: peer.startTime }
}

export function workloadBundleOf(b: SpiffeBundle): WorkloadBundle {
  return { x509: b.x509Bundle().toDer(), jwks: b.jwtBundle().toJwks() }
}

export class AgentManager implements WorkloadManager {
  readonly #td: TrustDomain
  readonly #tdId: string
  readonly #signer: SvidSigner
  readonly #clock: Clock
  readonly #log: Logger
  readonly #attest: AgentManagerOptions['attestWorkload']
  readonly #maxX509: number
  readonly #random: () => number
  readonly #backoff: Backoff

  readonly #entries = new Map<string, AgentEntry>()
  readonly #bySelector = new Map<string, Set<string>>()
  readonly #svids = new Map<string, CachedSvid>()
  readonly #inflight = new Set<string>()
  readonly #failedUntil = new Map<string, number>()
  readonly #subs = new Set<Subscriber>()
  readonly #subsByEntry = new Map<string, Set<Subscriber>>()
  readonly #dirty = new Set<Subscriber>()
  readonly #jwtCache: JwtSvidCache

  #localBundle: SpiffeBundle | undefined
  #localWorkload: WorkloadBundle = EMPTY_BUNDLE
  #federated = new Map<string, FederatedState>()
  #bundleSet = new BundleSet()

  #ready = false
  #readyWaiters: (() => void)[] = []
  #flushQueued = false
  #timer: NodeJS.Timeout | undefined
  #closed = false
  #ticking: Promise<void> | undefined

  readonly #instClient: InstanceClient | undefined
  readonly #readStartTime: StartTimeReader
  readonly #procCheckMs: number
  readonly #maxPendingEnds: number
  readonly #retryOpts: { initialMs?: number; maxMs?: number }
  readonly #instances = new Map<string, InstanceState>()
  readonly #procs = new Map<string, ProcState>()
  readonly #subsByProc = new Map<string, Set<Subscriber>>()
  readonly #pendingEnds = new Set<string>()
  readonly #endBackoff: Backoff
  #endRetryAt = 0
  #ending: Promise<void> | undefined
  #lastProcCheck = Number.NEGATIVE_INFINITY
  /** EndAllInstances of a previous run: registrations wait until it succeeded. */
  #endAll: { done: boolean; retryAt: number; running: Promise<void> | undefined; waiters: (() => void)[]; backoff: Backoff } | undefined

  constructor(opts: AgentManagerOptions) {
    this.#td = opts.trustDomain
    this.#tdId = opts.trustDomain.idString()
    this.#signer = opts.signer
    this.#clock = opts.clock
    this.#log = opts.log.child({ [F.SUBSYSTEM]: 'manager' })
    this.#attest = opts.attestWorkload
    this.#maxX509 = opts.x509SvidCacheMaxSize ?? 1000
    if (!(this.#maxX509 >= 1)) throw new RangeError('cache sizes must be at least 1')
    this.#jwtCache = new JwtSvidCache({ clock: this.#clock, log: this.#log, maxSize: opts.jwtSvidCacheMaxSize ?? 1000 })
    this.#random = opts.random ?? Math.random
    this.#backoff = new Backoff({ ...opts.retryBackoff, random: this.#random })
    this.#retryOpts = { ...opts.retryBackoff }
    this.#endBackoff = new Backoff({ ...opts.retryBackoff, random: this.#random })
    this.#instClient = opts.instances
    this.#readStartTime = opts.readStartTime ?? ((pid) => readProcessStartTime(pid))
    this.#procCheckMs = opts.processCheckIntervalMs ?? 1000
    this.#maxPendingEnds = opts.maxPendingEnds ?? 10_000
    if (!(this.#maxPendingEnds >= 1)) throw new RangeError('maxPendingEnds must be at least 1')
    if (opts.autoTick ?? true) {
      this.#timer = setInterval(() => void this.tick(), opts.tickIntervalMs ?? 250)
      this.#timer.unref()
    }
  }

  // ---- state from the server -------------------------------------------------

  /** The local bundle known before the first sync (e.g. persisted); ignored for another trust domain. */
  setBundle(doc: BundleDoc): void {
    this.#applyLocalBundle(doc)
  }

  get localBundle(): SpiffeBundle | undefined {
    return this.#localBundle
  }

  /**
   * Applies one Sync message. Resolves once the SVIDs it made necessary were
   * minted (or failed). The first full message makes the manager ready.
   */
  async applySync(msg: SyncMessage): Promise<void> {
    if (this.#closed) return
    const changed = new Set<string>()
    if (msg.full) {
      const keep = new Set(msg.entries.map((e) => e.id))
      for (const id of [...this.#entries.keys()]) if (!keep.has(id)) this.#removeEntry(id, changed)
    }
    for (const id of msg.deletedEntryIds) this.#removeEntry(id, changed)
    for (const e of msg.entries) this.#putEntry(e, changed)
    let bundlesChanged = false
    if (msg.bundle) bundlesChanged = this.#applyLocalBundle(msg.bundle) || bundlesChanged
    if (msg.federatedBundles) bundlesChanged = this.#applyFederated(msg.federatedBundles) || bundlesChanged
    if (changed.size > 0) this.#rematchAll(changed)
    if (bundlesChanged) for (const s of this.#subs) this.#dirty.add(s)
    const work = this.#maintain()
    if (msg.full && !this.#ready) {
      await work
      this.#setReady()
    }
    this.#queueFlush()
    await work
  }

  #putEntry(e: AgentEntry, changed: Set<string>): void {
    const prev = this.#entries.get(e.id)
    if (prev && prev.revision === e.revision && prev.spiffeId === e.spiffeId) return
    if (prev) this.#unindex(prev)
    this.#entries.set(e.id, e)
    for (const s of e.selectors) {
      let set = this.#bySelector.get(s)
      if (!set) this.#bySelector.set(s, (set = new Set()))
      set.add(e.id)
    }
    changed.add(e.id)
    if (prev && isTemplateEntry(prev) && prev.spiffeId !== e.spiffeId) this.#endInstancesOfEntry(e.id)
    else if (prev && isTemplateEntry(e) && prev.revision !== e.revision) {
      const now = this.#clock.now()
      for (const inst of this.#instances.values()) if (inst.entryId === e.id && inst.svid) inst.svid.rotateAt = now
    }
    const svid = this.#svids.get(e.id)
    if (svid) {
      if (svid.spiffeId !== e.spiffeId) this.#svids.delete(e.id)
      else if (svid.revision !== e.revision) {
        // Same identity, other parameters (TTL, DNS names, hint): keep serving, re-mint now.
        svid.rotateAt = this.#clock.now()
        svid.hint = e.hint
      }
    }
    this.#failedUntil.delete(e.id)
  }

  #removeEntry(id: string, changed: Set<string>): void {
    const prev = this.#entries.get(id)
    if (!prev) return
    this.#unindex(prev)
    this.#entries.delete(id)
    this.#svids.delete(id)
    this.#failedUntil.delete(id)
    if (isTemplateEntry(prev)) this.#endInstancesOfEntry(id)
    changed.add(id)
  }

  #unindex(e: AgentEntry): void {
    for (const s of e.selectors) {
      const set = this.#bySelector.get(s)
      set?.delete(e.id)
      if (set?.size === 0) this.#bySelector.delete(s)
    }
  }

  #applyLocalBundle(doc: BundleDoc): boolean {
    let td: TrustDomain
    try {
      td = TrustDomain.fromString(doc.trustDomain)
    } catch {
      this.#log.warn({ [F.TRUST_DOMAIN]: doc.trustDomain }, 'Ignoring bundle with an invalid trust domain')
      return false
    }
    if (!td.equals(this.#td)) {
      this.#log.warn({ [F.TRUST_DOMAIN]: doc.trustDomain }, 'Ignoring local bundle of another trust domain')
      return false
    }
    let b: SpiffeBundle
    try {
      b = SpiffeBundle.parse(td, doc.document)
    } catch (err) {
      this.#log.error({ [F.TRUST_DOMAIN]: td.name, [F.ERR]: err }, 'Ignoring invalid local bundle')
      return false
    }
    if (this.#localBundle?.equals(b)) return false
    this.#localBundle = b
    this.#localWorkload = workloadBundleOf(b)
    this.#rebuildBundleSet()
    return true
  }

  #applyFederated(docs: BundleDoc[]): boolean {
    const next = new Map<string, FederatedState>()
    for (const doc of docs) {
      try {
        const td = TrustDomain.fromString(doc.trustDomain)
        if (td.equals(this.#td)) continue
        const prev = this.#federated.get(td.name)
        if (prev && prev.doc.document === doc.document) {
          next.set(td.name, prev)
          continue
        }
        const bundle = SpiffeBundle.parse(td, doc.document)
        next.set(td.name, { doc, bundle, workload: workloadBundleOf(bundle) })
      } catch (err) {
        this.#log.warn({ [F.TRUST_DOMAIN]: doc.trustDomain, [F.ERR]: err }, 'Ignoring invalid federated bundle')
      }
    }
    const same = next.size === this.#federated.size && [...next].every(([k, v]) => this.#federated.get(k) === v)
    this.#federated = next
    if (!same) this.#rebuildBundleSet()
    return !same
  }

  #rebuildBundleSet(): void {
    const set = new BundleSet()
    if (this.#localBundle) set.set(this.#localBundle)
    for (const f of this.#federated.values()) set.set(f.bundle)
    this.#bundleSet = set
  }

  // ---- matching and subscribers ----------------------------------------------

  /** Entry ids whose (non-empty) selectors are all within `selectors`. */
  #match(selectors: ReadonlySet<string>): Set<string> {
    const out = new Set<string>()
    for (const s of selectors) {
      const ids = this.#bySelector.get(s)
      if (!ids) continue
      for (const id of ids) {
        if (out.has(id)) continue
        const e = this.#entries.get(id)
        if (e && e.selectors.length > 0 && e.selectors.every((x) => selectors.has(x))) out.add(id)
      }
    }
    return out
  }

  #setMatched(sub: Subscriber, matched: Set<string>): void {
    for (const id of sub.matched) if (!matched.has(id)) this.#subsByEntry.get(id)?.delete(sub)
    for (const id of matched) {
      let set = this.#subsByEntry.get(id)
      if (!set) this.#subsByEntry.set(id, (set = new Set()))
      set.add(sub)
    }
    sub.matched = matched
  }

  #rematchAll(changed: Set<string>): void {
    for (const sub of this.#subs) {
      const matched = this.#match(sub.selectors)
      let touched = matched.size !== sub.matched.size
      if (!touched) for (const id of changed) if (matched.has(id) || sub.matched.has(id)) touched = true
      if (!touched) for (const id of matched) if (!sub.matched.has(id)) touched = true
      this.#setMatched(sub, matched)
      if (touched) this.#dirty.add(sub)
    }
    for (const id of changed) if (!this.#entries.has(id)) this.#subsByEntry.delete(id)
  }

  #markEntry(id: string): void {
    const subs = this.#subsByEntry.get(id)
    if (subs) for (const s of subs) this.#dirty.add(s)
  }

  attest(peer: WorkloadPeer, opts: CallOpts): Promise<string[]> {
    return this.#attest(peer, opts)
  }

  subscribe(selectors: string[], onUpdate: (update: WorkloadUpdate) => void, ctx: WorkloadCallContext = {}): () => void {
    const proc = procOf(ctx.peer)
    const sub: Subscriber = { selectors: new Set(selectors), onUpdate, matched: new Set(), closed: false, proc }
    this.#setMatched(sub, this.#match(sub.selectors))
    this.#subs.add(sub)
    if (proc) {
      let set = this.#subsByProc.get(proc.key)
      if (!set) this.#subsByProc.set(proc.key, (set = new Set()))
      set.add(sub)
    }
    if (!this.#tryDeliver(sub)) this.#dirty.add(sub)
    return () => {
      if (sub.closed) return
      sub.closed = true
      this.#subs.delete(sub)
      this.#dirty.delete(sub)
      for (const id of sub.matched) this.#subsByEntry.get(id)?.delete(sub)
      if (proc) {
        const set = this.#subsByProc.get(proc.key)
        set?.delete(sub)
        if (set?.size === 0) this.#subsByProc.delete(proc.key)
      }
    }
  }

  #queueFlush(): void {
    if (this.#flushQueued || this.#dirty.size === 0) return
    this.#flushQueued = true
    queueMicrotask(() => {
      this.#flushQueued = false
      for (const sub of [...this.#dirty]) {
        if (this.#tryDeliver(sub)) this.#dirty.delete(sub)
      }
    })
  }

  /** Sends the subscriber its state unless an SVID it needs is being minted; may start that minting. */
  #tryDeliver(sub: Subscriber): boolean {
    if (sub.closed) return true
    if (!this.#ready) return false
    const now = this.#clock.now()
    const missing: string[] = []
    const missingInstances: InstanceState[] = []
    let waiting = false
    for (const id of sub.matched) {
      const entry = this.#entries.get(id)
      if (entry && isTemplateEntry(entry)) {
        const inst = this.#instanceFor(sub.proc, entry)
        if (!inst) continue
        if (inst.inflight) waiting = true
        else if (!(inst.svid && inst.svid.expiresAt > now) && inst.failedUntil <= now) missingInstances.push(inst)
        continue
      }
      if (this.#inflight.has(id)) {
        waiting = true
        continue
      }
      const svid = this.#svids.get(id)
      if (svid && svid.expiresAt > now) continue
      if ((this.#failedUntil.get(id) ?? 0) <= now) missing.push(id)
    }
    if (missing.length > 0 || missingInstances.length > 0) {
      if (missing.length > 0) void this.#mint(missing)
      if (missingInstances.length > 0) void this.#mintInstances(missingInstances)
      return false
    }
    if (waiting) return false
    const update = this.#buildUpdate(sub, now)
    try {
      sub.onUpdate(update)
    } catch (err) {
      this.#log.warn({ [F.ERR]: err }, 'Subscriber failed to take an update')
    }
    return true
  }

  #buildUpdate(sub: Subscriber, now: number): WorkloadUpdate {
    const identities: CachedSvid[] = []
    const feds = new Set<string>()
    for (const id of sub.matched) {
      const svid = sub.proc ? (this.#instances.get(`${sub.proc.key}|${id}`)?.svid ?? this.#svids.get(id)) : this.#svids.get(id)
      if (!svid || svid.expiresAt <= now) continue
      svid.lastUsed = now
      identities.push(svid)
      const e = this.#entries.get(id)
      if (e) for (const td of e.federatesWith) feds.add(td)
    }
    identities.sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : a.entryId < b.entryId ? -1 : 1))
    const federatedBundles = new Map<string, WorkloadBundle>()
    for (const name of feds) {
      const f = this.#federated.get(name)
      if (f) federatedBundles.set(f.bundle.trustDomain.idString(), f.workload)
    }
    return { identities, trustDomainId: this.#tdId, bundle: this.#localWorkload, federatedBundles }
  }

  #setReady(): void {
    if (this.#ready) return
    this.#ready = true
    for (const w of this.#readyWaiters.splice(0)) w()
    for (const s of this.#subs) this.#dirty.add(s)
    this.#queueFlush()
    this.#log.info({ [F.COUNT]: this.#entries.size }, 'Agent cache ready')
  }

  get ready(): boolean {
    return this.#ready
  }

  /** Sizes of the cache, for metrics: entries from the server, X.509-SVIDs and JWT-SVIDs held. */
  get cacheStats(): { entries: number; x509Svids: number; jwtSvids: number } {
    return { entries: this.#entries.size, x509Svids: this.#svids.size, jwtSvids: this.#jwtCache.size }
  }

  /** Resolves when the first full sync was applied. */
  whenReady(signal?: AbortSignal): Promise<void> {
    if (this.#ready) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => reject(new IdentityError('ERR_UNAVAILABLE', 'agent not ready'))
      if (signal?.aborted) return onAbort()
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#readyWaiters.push(() => {
        signal?.removeEventListener('abort', onAbort)
        resolve()
      })
    })
  }

  // ---- X.509-SVID minting and rotation ---------------------------------------

  /**
   * One maintenance pass at `clock.now()`: drops expired SVIDs, rotates those
   * past their renewal time, mints missing ones (subscribed entries, then
   * pre-minting while the cache has room), evicts beyond the bound.
   */
  tick(): Promise<void> {
    if (this.#closed) return Promise.resolve()
    const now = this.#clock.now()
    if (this.#procs.size > 0 && now - this.#lastProcCheck >= this.#procCheckMs) {
      this.#lastProcCheck = now
      this.checkProcesses()
    }
    const work = [this.#maintain(), this.#maintainInstances(now)]
    const ea = this.#endAll
    if (ea && !ea.done && !ea.running && ea.retryAt <= now) work.push(this.#runEndAll())
    if (this.#pendingEnds.size > 0 && this.#endRetryAt <= now) work.push(this.#flushEnds())
    this.#queueFlush()
    return Promise.all(work).then(() => undefined)
  }

  #maintain(): Promise<void> {
    const now = this.#clock.now()
    for (const [id, svid] of this.#svids) {
      if (svid.expiresAt <= now) {
        this.#svids.delete(id)
        this.#markEntry(id)
        this.#log.warn({ [F.ENTRY_ID]: id, [F.SPIFFE_ID]: svid.spiffeId }, 'X509-SVID expired before it could be rotated')
      }
    }
    const due: string[] = []
    for (const [id, svid] of this.#svids) {
      if (svid.rotateAt <= now && !this.#inflight.has(id)) due.push(id)
    }
    let room = this.#maxX509 - this.#svids.size - this.#inflight.size
    for (const [id, e] of this.#entries) {
      if (this.#svids.has(id) || this.#inflight.has(id) || e.selectors.length === 0 || isTemplateEntry(e)) continue
      if ((this.#failedUntil.get(id) ?? 0) > now) continue
      const pinned = (this.#subsByEntry.get(id)?.size ?? 0) > 0
      if (pinned) due.push(id)
      else if (room > 0) {
        due.push(id)
        room--
      }
    }
    this.#evict()
    if (due.length === 0) return this.#ticking ?? Promise.resolve()
    const p = this.#mint(due)
    this.#ticking = p
    void p.finally(() => {
      if (this.#ticking === p) this.#ticking = undefined
    })
    return p
  }

  #evict(): void {
    const excess = this.#svids.size - this.#maxX509
    if (excess <= 0) return
    const candidates = [...this.#svids.values()]
      .filter((s) => (this.#subsByEntry.get(s.entryId)?.size ?? 0) === 0 && !this.#inflight.has(s.entryId))
      .sort((a, b) => a.lastUsed - b.lastUsed)
    for (const s of candidates.slice(0, excess)) this.#svids.delete(s.entryId)
  }

  async #mint(ids: string[]): Promise<void> {
    const todo = ids.filter((id) => !this.#inflight.has(id) && this.#entries.has(id) && !isTemplateEntry(this.#entries.get(id)!))
    if (todo.length === 0) return
    for (const id of todo) this.#inflight.add(id)
    try {
      for (let i = 0; i < todo.length; i += MAX_X509_BATCH) {
        if (this.#closed) return
        await this.#mintBatch(todo.slice(i, i + MAX_X509_BATCH))
      }
    } finally {
      for (const id of todo) {
        this.#inflight.delete(id)
        this.#markEntry(id)
      }
      this.#evict()
      this.#queueFlush()
    }
  }

  async #mintBatch(ids: string[]): Promise<void> {
    const items: { entry: AgentEntry; key: Uint8Array; csr: Uint8Array }[] = []
    for (const id of ids) {
      const entry = this.#entries.get(id)
      if (!entry) continue
      const privateKey = newEcPrivateKey('P-256')
      const csr = await createCsr({ privateKey })
      items.push({ entry, key: privateKey.export({ type: 'pkcs8', format: 'der' }), csr })
    }
    if (items.length === 0) return
    let results
    try {
      results = await this.#signer.batchNewX509Svid(items.map((it) => ({ entryId: it.entry.id, csr: it.csr })))
    } catch (err) {
      this.#failed(items.map((it) => it.entry.id), err)
      return
    }
    const byId = new Map(results.map((r) => [r.entryId, r]))
    const now = this.#clock.now()
    const failed: string[] = []
    let firstError: unknown
    for (const it of items) {
      const r = byId.get(it.entry.id)
      if (!r || r.error || r.svidChain.length === 0) {
        failed.push(it.entry.id)
        firstError ??= r?.error ?? new IdentityError('ERR_INTERNAL', 'server returned no X509-SVID')
        continue
      }
      const current = this.#entries.get(it.entry.id)
      if (!current || current.spiffeId !== it.entry.spiffeId) continue
      let expiresAt = toMs(r.expiresAt)
      if (!(expiresAt > 0)) {
        try {
          expiresAt = Date.parse(new X509Certificate(r.svidChain[0]!).validTo)
        } catch {
          failed.push(it.entry.id)
          continue
        }
      }
      const rotateAt = current.revision === it.entry.revision ? renewalTime(now, expiresAt, this.#random) : now
      const prev = this.#svids.get(it.entry.id)
      this.#svids.set(it.entry.id, {
        entryId: it.entry.id,
        spiffeId: it.entry.spiffeId,
        hint: current.hint,
        x509Svid: r.svidChain,
        x509SvidKey: it.key,
        revision: it.entry.revision,
        issuedAt: now,
        expiresAt,
        rotateAt,
        lastUsed: prev?.lastUsed ?? now,
      })
      this.#failedUntil.delete(it.entry.id)
    }
    if (failed.length > 0) this.#failed(failed, firstError)
    else this.#backoff.reset()
    const minted = items.length - failed.length
    if (minted > 0) this.#log.debug({ [F.COUNT]: minted }, 'X509-SVIDs minted')
  }

  #failed(ids: string[], err: unknown): void {
    const delay = this.#backoff.next()
    const until = this.#clock.now() + delay
    for (const id of ids) {
      this.#failedUntil.set(id, until)
      const svid = this.#svids.get(id)
      if (svid) svid.rotateAt = until
    }
    this.#log.warn({ [F.COUNT]: ids.length, retry_in_ms: delay, [F.ERR]: err }, 'X509-SVID signing failed; will retry')
  }

  // ---- per-instance identities -------------------------------------------------

  /**
   * Ends, at the server, every instance a previous run of this agent left
   * live (EndAllInstances), retrying until it succeeds; registrations of new
   * instances wait for it, so a restarted agent never reuses an instance ID.
   * Call once when the agent starts.
   */
  endPreviousInstances(): Promise<void> {
    if (!this.#instClient) return Promise.resolve()
    this.#endAll ??= { done: false, retryAt: 0, running: undefined, waiters: [], backoff: new Backoff({ ...this.#retryOpts, random: this.#random }) }
    return this.#endAll.running ?? (this.#endAll.done ? Promise.resolve() : this.#runEndAll())
  }

  #runEndAll(): Promise<void> {
    const ea = this.#endAll!
    if (ea.running) return ea.running
    const p = (async () => {
      try {
        const n = await this.#instClient!.endAllInstances()
        ea.done = true
        ea.backoff.reset()
        for (const w of ea.waiters.splice(0)) w()
        this.#log.info({ [F.COUNT]: n }, 'Ended the instances of a previous run')
      } catch (err) {
        const delay = ea.backoff.next()
        ea.retryAt = this.#clock.now() + delay
        this.#log.warn({ retry_in_ms: delay, [F.ERR]: err }, 'Ending the instances of a previous run failed; will retry')
      } finally {
        ea.running = undefined
      }
    })()
    ea.running = p
    return p
  }

  #instancesReady(): Promise<void> {
    const ea = this.#endAll
    if (!ea || ea.done) return Promise.resolve()
    return new Promise<void>((resolve) => ea.waiters.push(resolve))
  }

  /** The caller's instance of a template entry, created (not yet registered) on first use; undefined without a live process. */
  #instanceFor(proc: Subscriber['proc'], entry: AgentEntry): InstanceState | undefined {
    if (!proc || !this.#instClient || this.#closed) return undefined
    const key = `${proc.key}|${entry.id}`
    const existing = this.#instances.get(key)
    if (existing) return existing
    let p = this.#procs.get(proc.key)
    if (!p) {
      // A stream of a process that has already gone must not open a new instance.
      let now: string | undefined
      try {
        now = this.#readStartTime(proc.pid)
      } catch {
        now = undefined
      }
      if (now !== proc.startTime) return undefined
      p = { pid: proc.pid, startTime: proc.startTime, instances: new Set() }
      this.#procs.set(proc.key, p)
    }
    const inst: InstanceState = {
      key,
      procKey: proc.key,
      entryId: entry.id,
      pid: proc.pid,
      startTime: proc.startTime,
      instanceId: undefined,
      spiffeId: undefined,
      registering: undefined,
      svid: undefined,
      inflight: false,
      failedUntil: 0,
      backoff: undefined,
      jwtKeys: new Set(),
      ended: false,
    }
    this.#instances.set(key, inst)
    p.instances.add(key)
    return inst
  }

  /** Registers the instance at the server once (shared by concurrent callers); failures set its retry time. */
  #ensureRegistered(inst: InstanceState): Promise<void> {
    if (inst.instanceId !== undefined || inst.ended) return Promise.resolve()
    inst.registering ??= (async () => {
      try {
        await this.#instancesReady()
        if (inst.ended || this.#closed) return
        const r = await this.#instClient!.registerInstance(inst.entryId, { pid: inst.pid, startTime: inst.startTime })
        if (inst.ended) {
          // The process ended while it was being registered.
          this.#queueEnd(r.instanceId)
          return
        }
        inst.instanceId = r.instanceId
        inst.spiffeId = r.spiffeId
        this.#log.debug({ instance_id: r.instanceId, [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid }, 'Instance registered')
      } catch (err) {
        this.#instanceFailed(inst, err, 'Instance registration failed; will retry')
        throw err
      } finally {
        inst.registering = undefined
      }
    })()
    return inst.registering
  }

  #instanceFailed(inst: InstanceState, err: unknown, msg: string): void {
    inst.backoff ??= new Backoff({ ...this.#retryOpts, random: this.#random })
    const delay = inst.backoff.next()
    inst.failedUntil = this.#clock.now() + delay
    if (inst.svid) inst.svid.rotateAt = inst.failedUntil
    this.#log.warn({ [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid, retry_in_ms: delay, [F.ERR]: err }, msg)
  }

  /** Rotation and expiry of instance SVIDs. */
  #maintainInstances(now: number): Promise<void> {
    const due: InstanceState[] = []
    for (const inst of this.#instances.values()) {
      if (inst.svid && inst.svid.expiresAt <= now) {
        inst.svid = undefined
        this.#markInstance(inst)
        this.#log.warn({ [F.ENTRY_ID]: inst.entryId, instance_id: inst.instanceId }, 'Instance X509-SVID expired before it could be rotated')
      }
      if (inst.svid && inst.svid.rotateAt <= now && !inst.inflight && inst.failedUntil <= now) due.push(inst)
    }
    return due.length > 0 ? this.#mintInstances(due) : Promise.resolve()
  }

  async #mintInstances(list: InstanceState[]): Promise<void> {
    const todo = list.filter((i) => !i.inflight && !i.ended)
    if (todo.length === 0) return
    for (const i of todo) i.inflight = true
    try {
      await Promise.all(todo.map((i) => this.#ensureRegistered(i).catch(() => undefined)))
      const ready = todo.filter((i) => i.instanceId !== undefined && !i.ended && this.#entries.has(i.entryId))
      for (let k = 0; k < ready.length; k += MAX_X509_BATCH) {
        if (this.#closed) return
        await this.#mintInstanceBatch(ready.slice(k, k + MAX_X509_BATCH))
      }
    } finally {
      for (const i of todo) {
        i.inflight = false
        this.#markInstance(i)
      }
      this.#queueFlush()
    }
  }

  async #mintInstanceBatch(list: InstanceState[]): Promise<void> {
    const items: { inst: InstanceState; entry: AgentEntry; key: Uint8Array; csr: Uint8Array }[] = []
    for (const inst of list) {
      const entry = this.#entries.get(inst.entryId)
      if (!entry) continue
      const privateKey = newEcPrivateKey('P-256')
      const csr = await createCsr({ privateKey })
      items.push({ inst, entry, key: privateKey.export({ type: 'pkcs8', format: 'der' }), csr })
    }
    if (items.length === 0) return
    let results
    try {
      results = await this.#signer.batchNewX509Svid(items.map((it) => ({ entryId: it.entry.id, csr: it.csr, instanceId: it.inst.instanceId! })))
    } catch (err) {
      for (const it of items) this.#instanceFailed(it.inst, err, 'Instance X509-SVID signing failed; will retry')
      return
    }
    const now = this.#clock.now()
    for (let k = 0; k < items.length; k++) {
      const { inst, entry, key } = items[k]!
      const r = results[k]
      if (inst.ended) continue
      if (!r || r.entryId !== entry.id || r.error || r.svidChain.length === 0) {
        this.#instanceFailed(inst, r?.error ?? new IdentityError('ERR_INTERNAL', 'server returned no X509-SVID'), 'Instance X509-SVID signing failed; will retry')
        continue
      }
      let expiresAt = toMs(r.expiresAt)
      if (!(expiresAt > 0)) {
        try {
          expiresAt = Date.parse(new X509Certificate(r.svidChain[0]!).validTo)
        } catch {
          this.#instanceFailed(inst, new IdentityError('ERR_INTERNAL', 'unreadable X509-SVID'), 'Instance X509-SVID signing failed; will retry')
          continue
        }
      }
      const current = this.#entries.get(entry.id)
      inst.svid = {
        entryId: entry.id,
        spiffeId: inst.spiffeId!,
        hint: current?.hint ?? entry.hint,
        x509Svid: r.svidChain,
        x509SvidKey: key,
        revision: entry.revision,
        issuedAt: now,
        expiresAt,
        rotateAt: current && current.revision !== entry.revision ? now : renewalTime(now, expiresAt, this.#random),
        lastUsed: now,
      }
      inst.failedUntil = 0
      inst.backoff = undefined
    }
  }

  #markInstance(inst: InstanceState): void {
    const subs = this.#subsByProc.get(inst.procKey)
    if (subs) for (const s of subs) if (s.matched.has(inst.entryId)) this.#dirty.add(s)
  }

  /**
   * Checks every process holding instances (`tick()` does so every
   * `processCheckIntervalMs`); a process that is gone, or whose pid now has
   * another start time, loses its instances. Returns how many processes ended.
   */
  checkProcesses(): number {
    let ended = 0
    for (const [key, p] of [...this.#procs]) {
      let now: string | undefined
      try {
        now = this.#readStartTime(p.pid)
      } catch {
        now = undefined
      }
      if (now === p.startTime) continue
      this.#endProcess(key)
      ended++
    }
    if (ended > 0) this.#queueFlush()
    return ended
  }

  #endProcess(procKey: string): void {
    const p = this.#procs.get(procKey)
    if (!p) return
    this.#procs.delete(procKey)
    for (const key of p.instances) {
      const inst = this.#instances.get(key)
      if (inst) this.#endInstanceState(inst, 'process exited')
    }
  }

  #endInstancesOfEntry(entryId: string): void {
    for (const inst of [...this.#instances.values()]) if (inst.entryId === entryId) this.#endInstanceState(inst, 'entry changed')
  }

  /** Drops everything an instance holds, stops serving it and queues the report of its end. */
  #endInstanceState(inst: InstanceState, reason: string): void {
    if (inst.ended) return
    inst.ended = true
    this.#instances.delete(inst.key)
    const p = this.#procs.get(inst.procKey)
    if (p) {
      p.instances.delete(inst.key)
      if (p.instances.size === 0) this.#procs.delete(inst.procKey)
    }
    for (const k of inst.jwtKeys) this.#jwtCache.delete(k)
    inst.jwtKeys.clear()
    inst.svid = undefined
    this.#markInstance(inst)
    if (inst.instanceId !== undefined) {
      this.#log.info({ instance_id: inst.instanceId, [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid, [F.REASON]: reason }, 'Instance ended')
      this.#queueEnd(inst.instanceId)
    }
  }

  #queueEnd(instanceId: string): void {
    this.#pendingEnds.add(instanceId)
    while (this.#pendingEnds.size > this.#maxPendingEnds) {
      const oldest = this.#pendingEnds.values().next().value!
      this.#pendingEnds.delete(oldest)
      this.#log.warn({ instance_id: oldest }, 'Too many unreported instance ends; dropping the oldest (the next agent start ends it)')
    }
    if (this.#endRetryAt <= this.#clock.now()) void this.#flushEnds()
  }

  /** Reports queued instance ends (8 at a time) until none is left or one fails; then waits for the backoff. */
  #flushEnds(): Promise<void> {
    if (this.#ending) return this.#ending
    const client = this.#instClient
    if (!client || this.#pendingEnds.size === 0) return Promise.resolve()
    const p = (async () => {
      try {
        while (this.#pendingEnds.size > 0 && !this.#closed) {
          const batch = [...this.#pendingEnds].slice(0, 8)
          const outcomes = await Promise.all(
            batch.map((id) =>
              client.endInstance(id).then(
                () => true,
                (err: unknown) => (err instanceof IdentityError && err.code === 'ERR_NOT_FOUND' ? true : err),
              ),
            ),
          )
          let firstErr: unknown
          for (let k = 0; k < batch.length; k++) {
            if (outcomes[k] === true) this.#pendingEnds.delete(batch[k]!)
            else firstErr ??= outcomes[k]
          }
          if (firstErr !== undefined) {
            const delay = this.#endBackoff.next()
            this.#endRetryAt = this.#clock.now() + delay
            this.#log.warn({ [F.COUNT]: this.#pendingEnds.size, retry_in_ms: delay, [F.ERR]: firstErr }, 'Reporting instance ends failed; will retry')
            return
          }
          this.#endBackoff.reset()
          this.#endRetryAt = 0
        }
      } finally {
        this.#ending = undefined
      }
    })()
    this.#ending = p
    return p
  }

  /** Instance IDs of the live instances of a process (pid + start time), for diagnostics and tests. */
  instancesOf(pid: number, startTime: string): { entryId: string; instanceId: string | undefined; spiffeId: string | undefined }[] {
    const p = this.#procs.get(`${pid}:${startTime}`)
    if (!p) return []
    return [...p.instances].map((k) => this.#instances.get(k)!).map((i) => ({ entryId: i.entryId, instanceId: i.instanceId, spiffeId: i.spiffeId }))
  }

  // ---- JWT-SVIDs ---------------------------------------------------------------

  async fetchJwtSvids(selectors: string[], req: { audience: string[]; spiffeId?: string }, opts: CallOpts & WorkloadCallContext): Promise<JwtSvidResult[]> {
    const audience = [...new Set(req.audience.filter((a) => a !== ''))].sort()
    if (audience.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
    if (!this.#ready) await this.whenReady(opts.signal)
    const proc = procOf(opts.peer)
    const targets: { entry: AgentEntry; spiffeId: string; inst: InstanceState | undefined }[] = []
    for (const id of this.#match(new Set(selectors))) {
      const e = this.#entries.get(id)!
      if (!isTemplateEntry(e)) {
        if (req.spiffeId === undefined || e.spiffeId === req.spiffeId) targets.push({ entry: e, spiffeId: e.spiffeId, inst: undefined })
        continue
      }
      if (req.spiffeId !== undefined && !templateCovers(e.spiffeId, req.spiffeId)) continue
      const inst = this.#instanceFor(proc, e)
      if (!inst) continue
      if (inst.instanceId === undefined) {
        try {
          await this.#ensureRegistered(inst)
        } catch (err) {
          throw err instanceof IdentityError ? err : new IdentityError('ERR_UNAVAILABLE', 'cannot register instance', { cause: err })
        }
      }
      if (inst.ended || inst.spiffeId === undefined) continue
      if (req.spiffeId === undefined || inst.spiffeId === req.spiffeId) targets.push({ entry: e, spiffeId: inst.spiffeId, inst })
    }
    targets.sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : a.entry.id < b.entry.id ? -1 : 1))
    const seen = new Set<string>()
    const unique = targets.filter((t) => (seen.has(t.spiffeId) ? false : (seen.add(t.spiffeId), true)))
    // Fresh cached tokens are answered without a round of promises per identity.
    const fresh = unique.map((t) => this.#jwtCache.fresh(this.#jwtKey(t.entry, audience, t.inst)))
    const out = fresh.every((j) => j !== undefined)
      ? (fresh as CachedJwt[])
      : await Promise.all(unique.map((t, i) => fresh[i] ?? this.#jwtFor(t.entry, audience, opts, t.inst)))
    return out.map((j, i) => ({ spiffeId: unique[i]!.spiffeId, token: j.token, hint: unique[i]!.entry.hint }))
  }

  /** The cache key of a JWT-SVID for an entry (or instance) and a sorted audience. */
  #jwtKey(entry: AgentEntry, audience: string[], inst?: InstanceState): string {
    return jwtKey(inst ? `${inst.instanceId}` : entry.spiffeId, audience)
  }

  /** The JWT-SVID of an entry (or instance) for a sorted audience: cached, or minted by the server. */
  #jwtFor(entry: AgentEntry, audience: string[], opts: CallOpts, inst?: InstanceState): Promise<CachedJwt> {
    const mint = (): Promise<MintedJwt> => {
      const callOpts: CallOpts & { instanceId?: string } = opts.signal ? { signal: opts.signal } : {}
      if (inst) callOpts.instanceId = inst.instanceId!
      return this.#signer.newJwtSvid(entry.id, audience, callOpts).then((r) => {
        const issuedAt = r.issuedAt > 0 ? toMs(r.issuedAt) : this.#clock.now()
        return { token: r.token, issuedAt, expiresAt: toMs(r.expiresAt) }
      })
    }
    return this.#jwtCache.get(this.#jwtKey(entry, audience, inst), mint, {
      spiffeId: entry.spiffeId,
      // The process is gone: nothing of it is kept.
      keep: () => !inst?.ended,
      onKept: (key) => inst?.jwtKeys.add(key),
    })
  }

  async validateJwtSvid(selectors: string[], req: { token: string; audience: string }, opts: CallOpts): Promise<ValidatedJwtSvid> {
    if (req.audience === '') throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
    if (req.token === '') throw new IdentityError('ERR_INVALID_ARGUMENT', 'svid must be specified')
    if (!this.#localBundle) await this.whenReady(opts.signal)
    const visible = new Set<string>([this.#td.name])
    for (const id of this.#match(new Set(selectors))) for (const td of this.#entries.get(id)?.federatesWith ?? []) visible.add(td)
    const set = this.#bundleSet
    const source: JwtBundleSource = {
      getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
        if (!visible.has(td.name)) throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${td.name}"`)
        return set.getJwtBundleForTrustDomain(td)
      },
    }
    const svid = await validateJwtSvid(req.token, source, { audience: req.audience, now: new Date(this.#clock.now()) })
    if (svid.id.memberOf(this.#td)) return { spiffeId: svid.id.toString(), claims: { ...svid.claims } }
    // A foreign trust domain's token: only the registered JWT claims are passed on, as SPIRE does.
    const claims = Object.fromEntries(Object.entries(svid.claims).filter(([k]) => FOREIGN_JWT_CLAIMS.has(k)))
    return { spiffeId: svid.id.toString(), claims }
  }

  // ---- introspection and shutdown ----------------------------------------------

  stats(): ManagerStats {
    return {
      entries: this.#entries.size,
      cachedX509Svids: this.#svids.size,
      cachedJwtSvids: this.#jwtCache.size,
      subscribers: this.#subs.size,
      inflight: this.#inflight.size,
      instances: this.#instances.size,
      processes: this.#procs.size,
      pendingEnds: this.#pendingEnds.size,
    }
  }

  /** Epoch ms of the cached X.509-SVID's planned rotation, for tests and diagnostics. */
  svidTimes(entryId: string): { issuedAt: number; expiresAt: number; rotateAt: number } | undefined {
    const s = this.#svids.get(entryId)
    return s ? { issuedAt: s.issuedAt, expiresAt: s.expiresAt, rotateAt: s.rotateAt } : undefined
  }

  close(): void {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#subs.clear()
    this.#dirty.clear()
    this.#subsByProc.clear()
    for (const w of this.#endAll?.waiters.splice(0) ?? []) w()
  }
}
