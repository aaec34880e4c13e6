/**
 * The agent's cache manager (SPIRE's agent `manager` + `manager/cache`): a
 * façade that implements what the Workload API consumes (`WorkloadManager`,
 * declared in `workload-api/manager.ts`) and what the agent drives (Sync
 * messages, the tick, start and shutdown), over its parts:
 *
 *  - `entry-index.ts`: the synced entries and their selector index;
 *  - `trust-bundles.ts`: the local and federated bundles;
 *  - `subscribers.ts`: who watches what, and delivery of full updates;
 *  - `x509-svids.ts`: the X.509-SVID cache, pre-minting and batch signing;
 *  - `rotation.ts`: every decision of when an SVID is renewed;
 *  - `instances.ts` and `end-queue.ts`: per-instance lifecycles of template
 *    entries and the queue of their ends;
 *  - `jwt-svids.ts`, `jwt-svid-cache.ts`, `jwt-validator.ts`: JWT-SVIDs.
 *
 * `ports.ts` declares what the manager needs from the server. Timing is
 * driven by `tick()` and the injected Clock; with `autoTick` a timer calls
 * it, tests call it after advancing a FakeClock.
 */
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { CallOpts } from '../../plugin/contracts.js'
import type { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import type { JwtSvidResult, ValidatedJwtSvid, WorkloadCallContext, WorkloadManager, WorkloadPeer, WorkloadUpdate } from '../workload-api/manager.js'
import { readProcessStartTime, type StartTimeReader } from '../workload/peer.js'
import { EntryIndex, isTemplateEntry } from './entry-index.js'
import { Instances, type InstanceState } from './instances.js'
import { JwtSvidCache } from './jwt-svid-cache.js'
import { audienceOf, JwtSvids } from './jwt-svids.js'
import { checkValidateRequest, validateVisible } from './jwt-validator.js'
import type { AgentEntry, BundleDoc, InstanceClient, SvidSigner, SyncMessage } from './ports.js'
import { Revocations } from './revocations.js'
import { isExpired } from './rotation.js'
import { procOf, Subscribers, type DeliverySources, type EntryStatus, type Proc, type ServedIdentity } from './subscribers.js'
import { TrustBundles } from './trust-bundles.js'
import { X509Svids } from './x509-svids.js'

export { INSTANCE_PLACEHOLDER, isTemplateEntry } from './entry-index.js'
export { workloadBundleOf } from './trust-bundles.js'

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

export class AgentManager implements WorkloadManager {
  readonly #td: TrustDomain
  readonly #clock: Clock
  readonly #log: Logger
  readonly #attest: AgentManagerOptions['attestWorkload']

  readonly #entries = new EntryIndex()
  readonly #bundles: TrustBundles
  readonly #subs: Subscribers
  readonly #x509: X509Svids
  readonly #instances: Instances | undefined
  readonly #jwtCache: JwtSvidCache
  readonly #jwt: JwtSvids
  readonly #revocations = new Revocations()

  #ready = false
  #readyWaiters: (() => void)[] = []
  #timer: NodeJS.Timeout | undefined
  #closed = false

  constructor(opts: AgentManagerOptions) {
    this.#td = opts.trustDomain
    this.#clock = opts.clock
    this.#log = opts.log.child({ [F.SUBSYSTEM]: 'manager' })
    this.#attest = opts.attestWorkload
    const random = opts.random ?? Math.random
    const retryBackoff = { ...opts.retryBackoff }
    const maxPendingEnds = opts.maxPendingEnds ?? 10_000
    if (!(maxPendingEnds >= 1)) throw new RangeError('maxPendingEnds must be at least 1')
    const closed = (): boolean => this.#closed
    const flush = (): void => this.#subs.queueFlush()

    this.#bundles = new TrustBundles({ trustDomain: opts.trustDomain, log: this.#log })
    this.#subs = new Subscribers({ sources: this.#deliverySources(opts.trustDomain.idString()), log: this.#log })
    this.#x509 = new X509Svids({
      entries: this.#entries,
      signer: opts.signer,
      clock: opts.clock,
      log: this.#log,
      random,
      retryBackoff,
      maxSize: opts.x509SvidCacheMaxSize ?? 1000,
      pinned: (id) => this.#subs.pinned(id),
      settled: (id) => this.#subs.markEntry(id),
      flush,
      closed,
      revoked: (e) => this.#revocations.covers(e.spiffeId, undefined, this.#clock.now()),
    })
    this.#jwtCache = new JwtSvidCache({ clock: opts.clock, log: this.#log, maxSize: opts.jwtSvidCacheMaxSize ?? 1000 })
    this.#instances = opts.instances
      ? new Instances({
          client: opts.instances,
          entries: this.#entries,
          signer: opts.signer,
          clock: opts.clock,
          log: this.#log,
          random,
          retryBackoff,
          readStartTime: opts.readStartTime ?? ((pid) => readProcessStartTime(pid)),
          processCheckIntervalMs: opts.processCheckIntervalMs ?? 1000,
          maxPendingEnds,
          dropJwt: (key) => this.#jwtCache.delete(key),
          changed: (inst) => this.#subs.markInstance(inst.procKey, inst.entryId),
          flush,
          closed,
          revoked: (inst) => this.#instanceRevoked(inst),
        })
      : undefined
    this.#jwt = new JwtSvids({
      entries: this.#entries,
      instances: this.#instances,
      cache: this.#jwtCache,
      signer: opts.signer,
      clock: opts.clock,
      revoked: (spiffeId, instanceId) => this.#revocations.covers(spiffeId, instanceId, this.#clock.now()),
    })
    if (opts.autoTick ?? true) {
      this.#timer = setInterval(() => void this.tick(), opts.tickIntervalMs ?? 250)
      this.#timer.unref()
    }
  }

  // ---- state from the server -------------------------------------------------

  /** The local bundle known before the first sync (e.g. persisted); ignored for another trust domain. */
  setBundle(doc: BundleDoc): void {
    this.#bundles.applyLocal(doc)
  }

  get localBundle(): SpiffeBundle | undefined {
    return this.#bundles.local
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
      for (const id of this.#entries.ids()) if (!keep.has(id)) this.#removeEntry(id, changed)
    }
    for (const id of msg.deletedEntryIds) this.#removeEntry(id, changed)
    for (const e of msg.entries) this.#putEntry(e, changed)
    let bundlesChanged = false
    if (msg.bundle) bundlesChanged = this.#bundles.applyLocal(msg.bundle) || bundlesChanged
    if (msg.federatedBundles) bundlesChanged = this.#bundles.applyFederated(msg.federatedBundles) || bundlesChanged
    if (msg.revocations && this.#revocations.set(msg.revocations)) this.#applyRevocations()
    if (changed.size > 0)
      this.#subs.rematch(
        (s) => this.#entries.match(s),
        changed,
        (id) => this.#entries.has(id),
      )
    if (bundlesChanged) this.#subs.markAll()
    const work = this.#x509.maintain()
    if (msg.full && !this.#ready) {
      await work
      this.#setReady()
    }
    this.#subs.queueFlush()
    await work
  }

  /**
   * The revocations changed: what they cover is dropped at once (cached
   * X.509-SVIDs, JWT-SVIDs) and every subscriber gets an update without it;
   * what they no longer cover is minted again on delivery.
   */
  #applyRevocations(): void {
    const now = this.#clock.now()
    for (const id of this.#x509.dropRevoked()) this.#subs.markEntry(id)
    for (const id of this.#entries.ids()) {
      const e = this.#entries.get(id)
      if (e && !isTemplateEntry(e) && this.#revocations.covers(e.spiffeId, undefined, now)) this.#jwtCache.deleteSubject(e.spiffeId)
    }
    this.#instances?.dropRevoked()
    this.#subs.markAll()
    this.#subs.queueFlush()
    this.#log.info({ [F.COUNT]: this.#revocations.size }, 'Revocations applied')
  }

  #instanceRevoked(inst: InstanceState): boolean {
    if (inst.instanceId === undefined) return false
    return this.#revocations.covers(inst.spiffeId, inst.instanceId, this.#clock.now())
  }

  #putEntry(e: AgentEntry, changed: Set<string>): void {
    const put = this.#entries.put(e)
    if (!put.changed) return
    const prev = put.prev
    changed.add(e.id)
    if (prev && isTemplateEntry(prev) && prev.spiffeId !== e.spiffeId) this.#instances?.endOfEntry(e.id)
    else if (prev && isTemplateEntry(e) && prev.revision !== e.revision) this.#instances?.rotateEntryNow(e.id, this.#clock.now())
    this.#x509.entryChanged(e)
  }

  #removeEntry(id: string, changed: Set<string>): void {
    const prev = this.#entries.remove(id)
    if (!prev) return
    this.#x509.entryRemoved(id)
    if (isTemplateEntry(prev)) this.#instances?.endOfEntry(id)
    changed.add(id)
  }

  // ---- the Workload API ------------------------------------------------------

  attest(peer: WorkloadPeer, opts: CallOpts): Promise<string[]> {
    return this.#attest(peer, opts)
  }

  subscribe(selectors: string[], onUpdate: (update: WorkloadUpdate) => void, ctx: WorkloadCallContext = {}): () => void {
    const set = new Set(selectors)
    return this.#subs.add(set, this.#entries.match(set), onUpdate, procOf(ctx.peer))
  }

  async fetchJwtSvids(selectors: string[], req: { audience: string[]; spiffeId?: string }, opts: CallOpts & WorkloadCallContext): Promise<JwtSvidResult[]> {
    const audience = audienceOf(req.audience)
    if (!this.#ready) await this.whenReady(opts.signal)
    return this.#jwt.fetch(this.#entries.match(new Set(selectors)), audience, req.spiffeId, procOf(opts.peer), opts)
  }

  async validateJwtSvid(selectors: string[], req: { token: string; audience: string }, opts: CallOpts): Promise<ValidatedJwtSvid> {
    checkValidateRequest(req)
    if (!this.#bundles.local) await this.whenReady(opts.signal)
    const federatesWith: string[] = []
    for (const id of this.#entries.match(new Set(selectors))) federatesWith.push(...(this.#entries.get(id)?.federatesWith ?? []))
    return validateVisible(req, { trustDomain: this.#td, federatesWith, bundles: this.#bundles.set, clock: this.#clock })
  }

  /** How delivery sees the entries, the SVID caches and the bundles. */
  #deliverySources(trustDomainId: string): DeliverySources {
    return {
      ready: () => this.#ready,
      now: () => this.#clock.now(),
      status: (proc, id, now) => this.#status(proc, id, now),
      mintMissing: (proc, ids) => this.#mintMissing(proc, ids),
      served: (proc, id, now) => this.#served(proc, id, now),
      federatesWith: (id) => this.#entries.get(id)?.federatesWith ?? [],
      trustDomainId: () => trustDomainId,
      localBundle: () => this.#bundles.localWorkload,
      federatedBundle: (name) => this.#bundles.federated(name),
    }
  }

  #status(proc: Proc | undefined, id: string, now: number): EntryStatus {
    const entry = this.#entries.get(id)
    if (entry && isTemplateEntry(entry)) {
      const inst = this.#instances?.instanceFor(proc, entry)
      if (!inst || this.#instanceRevoked(inst)) return 'ready'
      if (inst.inflight) return 'waiting'
      return !(inst.svid && !isExpired(inst.svid, now)) && inst.failedUntil <= now ? 'missing' : 'ready'
    }
    if (entry && this.#revocations.covers(entry.spiffeId, undefined, now)) return 'ready' // nothing is served for it
    if (this.#x509.isInflight(id)) return 'waiting'
    const svid = this.#x509.get(id)
    if (svid && !isExpired(svid, now)) return 'ready'
    return this.#x509.retryBlocked(id, now) ? 'ready' : 'missing'
  }

  #mintMissing(proc: Proc | undefined, ids: string[]): void {
    const shared: string[] = []
    const instances: InstanceState[] = []
    for (const id of ids) {
      const entry = this.#entries.get(id)
      const inst = entry && isTemplateEntry(entry) ? this.#instances?.instanceFor(proc, entry) : undefined
      if (inst) instances.push(inst)
      else shared.push(id)
    }
    if (shared.length > 0) void this.#x509.mint(shared)
    if (instances.length > 0) void this.#instances?.mint(instances)
  }

  #served(proc: Proc | undefined, id: string, now: number): ServedIdentity | undefined {
    const svid = proc ? (this.#instances?.svidOf(proc.key, id) ?? this.#x509.get(id)) : this.#x509.get(id)
    if (!svid || isExpired(svid, now)) return undefined
    if (this.#revocations.covers(svid.spiffeId, this.#instances?.instanceIdOf(proc?.key, id), now)) return undefined
    svid.lastUsed = now
    return svid
  }

  // ---- readiness ---------------------------------------------------------------

  #setReady(): void {
    if (this.#ready) return
    this.#ready = true
    for (const w of this.#readyWaiters.splice(0)) w()
    this.#subs.markAll()
    this.#subs.queueFlush()
    this.#log.info({ [F.COUNT]: this.#entries.size }, 'Agent cache ready')
  }

  get ready(): boolean {
    return this.#ready
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

  // ---- time --------------------------------------------------------------------

  /**
   * One maintenance pass at `clock.now()`: ended processes lose their
   * instances, then the X.509 cache and the instances renew what is due and
   * the retries that are due run.
   */
  tick(): Promise<void> {
    if (this.#closed) return Promise.resolve()
    const now = this.#clock.now()
    // A quarantine that ended: what it covered is minted and served again.
    if (this.#revocations.expire(now)) {
      this.#subs.markAll()
      this.#log.info({ [F.COUNT]: this.#revocations.size }, 'Revocations expired')
    }
    this.#instances?.checkIfDue(now)
    const work = [this.#x509.maintain(), ...(this.#instances?.maintain(now) ?? [])]
    this.#subs.queueFlush()
    return Promise.all(work).then(() => undefined)
  }

  // ---- per-instance identities -------------------------------------------------

  /**
   * Ends, at the server, every instance a previous run of this agent left
   * live (EndAllInstances), retrying until it succeeds; registrations of new
   * instances wait for it, so a restarted agent never reuses an instance ID.
   * Call once when the agent starts.
   */
  endPreviousInstances(): Promise<void> {
    return this.#instances?.endPrevious() ?? Promise.resolve()
  }

  /**
   * Checks every process holding instances (`tick()` does so every
   * `processCheckIntervalMs`); a process that is gone, or whose pid now has
   * another start time, loses its instances. Returns how many processes ended.
   */
  checkProcesses(): number {
    return this.#instances?.checkProcesses() ?? 0
  }

  /** Instance IDs of the live instances of a process (pid + start time), for diagnostics and tests. */
  instancesOf(pid: number, startTime: string): { entryId: string; instanceId: string | undefined; spiffeId: string | undefined }[] {
    return this.#instances?.instancesOf(pid, startTime) ?? []
  }

  // ---- introspection and shutdown ----------------------------------------------

  /** Sizes of the cache, for metrics: entries from the server, X.509-SVIDs and JWT-SVIDs held. */
  get cacheStats(): { entries: number; x509Svids: number; jwtSvids: number } {
    return { entries: this.#entries.size, x509Svids: this.#x509.size, jwtSvids: this.#jwtCache.size }
  }

  stats(): ManagerStats {
    return {
      entries: this.#entries.size,
      cachedX509Svids: this.#x509.size,
      cachedJwtSvids: this.#jwtCache.size,
      subscribers: this.#subs.size,
      inflight: this.#x509.inflightCount,
      instances: this.#instances?.size ?? 0,
      processes: this.#instances?.processes ?? 0,
      pendingEnds: this.#instances?.pendingEnds ?? 0,
    }
  }

  /** Epoch ms of the cached X.509-SVID's planned rotation, for tests and diagnostics. */
  svidTimes(entryId: string): { issuedAt: number; expiresAt: number; rotateAt: number } | undefined {
    return this.#x509.times(entryId)
  }

  close(): void {
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    this.#subs.clear()
    this.#instances?.close()
  }
}
