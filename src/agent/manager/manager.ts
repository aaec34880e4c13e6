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
 * Timing is driven by `tick()` and the injected Clock; with `autoTick` a timer
 * calls it, tests call it after advancing a FakeClock.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
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
  WorkloadManager,
  WorkloadPeer,
  WorkloadUpdate,
} from '../workload-api/manager.js'
import { MAX_X509_BATCH, type AgentEntry, type BundleDoc, type SvidSigner, type SyncMessage } from '../server-client.js'
import { Backoff, renewalTime } from './backoff.js'

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
}

interface CachedJwt {
  token: string
  issuedAt: number
  expiresAt: number
  refreshAt: number
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
}

export interface ManagerStats {
  entries: number
  cachedX509Svids: number
  cachedJwtSvids: number
  subscribers: number
  inflight: number
}

const EMPTY_BUNDLE: WorkloadBundle = { x509: new Uint8Array(0), jwks: '{"keys":[]}' }

function toMs(v: number): number {
  // Tolerates seconds from a server that sends them; the contract is epoch ms.
  return v > 0 && v < 1e11 ? v * 1000 : v
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
  readonly #maxJwt: number
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
  readonly #jwts = new Map<string, CachedJwt>()
  readonly #jwtInflight = new Map<string, Promise<CachedJwt>>()

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

  constructor(opts: AgentManagerOptions) {
    this.#td = opts.trustDomain
    this.#tdId = opts.trustDomain.idString()
    this.#signer = opts.signer
    this.#clock = opts.clock
    this.#log = opts.log.child({ [F.SUBSYSTEM]: 'manager' })
    this.#attest = opts.attestWorkload
    this.#maxX509 = opts.x509SvidCacheMaxSize ?? 1000
    this.#maxJwt = opts.jwtSvidCacheMaxSize ?? 1000
    if (!(this.#maxX509 >= 1) || !(this.#maxJwt >= 1)) throw new RangeError('cache sizes must be at least 1')
    this.#random = opts.random ?? Math.random
    this.#backoff = new Backoff({ ...opts.retryBackoff, random: this.#random })
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

  subscribe(selectors: string[], onUpdate: (update: WorkloadUpdate) => void): () => void {
    const sub: Subscriber = { selectors: new Set(selectors), onUpdate, matched: new Set(), closed: false }
    this.#setMatched(sub, this.#match(sub.selectors))
    this.#subs.add(sub)
    if (!this.#tryDeliver(sub)) this.#dirty.add(sub)
    return () => {
      if (sub.closed) return
      sub.closed = true
      this.#subs.delete(sub)
      this.#dirty.delete(sub)
      for (const id of sub.matched) this.#subsByEntry.get(id)?.delete(sub)
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
    let waiting = false
    for (const id of sub.matched) {
      if (this.#inflight.has(id)) {
        waiting = true
        continue
      }
      const svid = this.#svids.get(id)
      if (svid && svid.expiresAt > now) continue
      if ((this.#failedUntil.get(id) ?? 0) <= now) missing.push(id)
    }
    if (missing.length > 0) {
      void this.#mint(missing)
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
      const svid = this.#svids.get(id)
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
    const p = this.#maintain()
    this.#queueFlush()
    return p
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
      if (this.#svids.has(id) || this.#inflight.has(id) || e.selectors.length === 0) continue
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
    const todo = ids.filter((id) => !this.#inflight.has(id) && this.#entries.has(id))
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
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
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

  // ---- JWT-SVIDs ---------------------------------------------------------------

  async fetchJwtSvids(selectors: string[], req: { audience: string[]; spiffeId?: string }, opts: CallOpts): Promise<JwtSvidResult[]> {
    const audience = [...new Set(req.audience.filter((a) => a !== ''))].sort()
    if (audience.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
    await this.whenReady(opts.signal)
    const entries = [...this.#match(new Set(selectors))]
      .map((id) => this.#entries.get(id)!)
      .filter((e) => req.spiffeId === undefined || e.spiffeId === req.spiffeId)
      .sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : a.id < b.id ? -1 : 1))
    const seen = new Set<string>()
    const unique = entries.filter((e) => (seen.has(e.spiffeId) ? false : (seen.add(e.spiffeId), true)))
    const out = await Promise.all(unique.map((e) => this.#jwtFor(e, audience, opts)))
    return out.map((j, i) => ({ spiffeId: unique[i]!.spiffeId, token: j.token, hint: unique[i]!.hint }))
  }

  async #jwtFor(entry: AgentEntry, audience: string[], opts: CallOpts): Promise<CachedJwt> {
    const key = `${entry.spiffeId}\n${audience.join('\n')}`
    const now = this.#clock.now()
    const cached = this.#jwts.get(key)
    if (cached && now < cached.refreshAt) {
      this.#jwts.delete(key)
      this.#jwts.set(key, cached)
      return cached
    }
    let pending = this.#jwtInflight.get(key)
    if (!pending) {
      pending = this.#signer
        .newJwtSvid(entry.id, audience, opts.signal ? { signal: opts.signal } : {})
        .then((r) => {
          const t = this.#clock.now()
          const issuedAt = r.issuedAt > 0 ? toMs(r.issuedAt) : t
          const expiresAt = toMs(r.expiresAt)
          const j: CachedJwt = { token: r.token, issuedAt, expiresAt, refreshAt: issuedAt + (expiresAt - issuedAt) / 2 }
          this.#jwts.delete(key)
          this.#jwts.set(key, j)
          while (this.#jwts.size > this.#maxJwt) this.#jwts.delete(this.#jwts.keys().next().value!)
          return j
        })
        .finally(() => this.#jwtInflight.delete(key))
      this.#jwtInflight.set(key, pending)
    }
    try {
      return await pending
    } catch (err) {
      if (cached && this.#clock.now() < cached.expiresAt) {
        this.#log.warn({ [F.SPIFFE_ID]: entry.spiffeId, [F.ERR]: err }, 'JWT-SVID refresh failed; serving the cached one')
        return cached
      }
      throw err instanceof IdentityError ? err : new IdentityError('ERR_UNAVAILABLE', 'cannot mint JWT-SVID', { cause: err })
    }
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
    return { spiffeId: svid.id.toString(), claims: { ...svid.claims } }
  }

  // ---- introspection and shutdown ----------------------------------------------

  stats(): ManagerStats {
    return {
      entries: this.#entries.size,
      cachedX509Svids: this.#svids.size,
      cachedJwtSvids: this.#jwts.size,
      subscribers: this.#subs.size,
      inflight: this.#inflight.size,
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
  }
}
