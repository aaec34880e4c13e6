/**
 * The X.509-SVID cache of shared (non-template) entries: pre-minted for up to
 * `maxSize` entries, minted on demand beyond that, signed in batches of at
 * most MAX_X509_BATCH, renewed as `rotation.ts` decides, retried with
 * exponential backoff after failures (valid SVIDs keep being served until
 * they expire), and evicted least-recently-used first when nobody watches
 * them. Keys stay in memory only.
 */
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { WorkloadIdentity } from '../workload-api/manager.js'
import { Backoff } from './backoff.js'
import { isTemplateEntry, type EntryIndex } from './entry-index.js'
import { MAX_X509_BATCH, type AgentEntry, type SvidSigner } from './ports.js'
import { isDue, isExpired, retryAt, rotateNow, scheduleRenewal } from './rotation.js'
import { expiryOf, newKeyAndCsr } from './svid-mint.js'

/** A cached X.509-SVID: DER only (no parsed objects), shaped as the identity the Workload API sends. */
export interface CachedSvid extends WorkloadIdentity {
  entryId: string
  revision: number
  issuedAt: number
  expiresAt: number
  rotateAt: number
  lastUsed: number
}

export interface X509SvidsOptions {
  entries: EntryIndex
  signer: SvidSigner
  clock: Clock
  log: Logger
  random: () => number
  retryBackoff: { initialMs?: number; maxMs?: number }
  maxSize: number
  /** Is the entry watched by a subscriber (kept and minted regardless of the bound)? */
  pinned(entryId: string): boolean
  /** The entry's SVID changed or its minting ended: its subscribers are owed an update. */
  settled(entryId: string): void
  /** Deliver what is owed. */
  flush(): void
  closed(): boolean
  /** Is the entry's identity revoked (its SVID is then neither minted, renewed nor kept)? Default: never. */
  revoked?(e: AgentEntry): boolean
}

export class X509Svids {
  readonly #o: X509SvidsOptions
  readonly #svids = new Map<string, CachedSvid>()
  readonly #inflight = new Set<string>()
  readonly #failedUntil = new Map<string, number>()
  readonly #backoff: Backoff
  #ticking: Promise<void> | undefined

  constructor(opts: X509SvidsOptions) {
    if (!(opts.maxSize >= 1)) throw new RangeError('cache sizes must be at least 1')
    this.#o = opts
    this.#backoff = new Backoff({ ...opts.retryBackoff, random: opts.random })
  }

  get size(): number {
    return this.#svids.size
  }

  get inflightCount(): number {
    return this.#inflight.size
  }

  get(entryId: string): CachedSvid | undefined {
    return this.#svids.get(entryId)
  }

  isInflight(entryId: string): boolean {
    return this.#inflight.has(entryId)
  }

  /** Still in the backoff after a failed signing. */
  retryBlocked(entryId: string, now: number): boolean {
    return (this.#failedUntil.get(entryId) ?? 0) > now
  }

  /** An entry was stored or changed: a changed identity is never served again; changed parameters renew now. */
  entryChanged(e: AgentEntry): void {
    const svid = this.#svids.get(e.id)
    if (svid) {
      if (svid.spiffeId !== e.spiffeId) this.#svids.delete(e.id)
      else if (svid.revision !== e.revision) {
        // Same identity, other parameters (TTL, DNS names, hint): keep serving, re-mint now.
        rotateNow(svid, this.#o.clock.now())
        svid.hint = e.hint
      }
    }
    this.#failedUntil.delete(e.id)
  }

  /** Drops the cached SVIDs of revoked identities; returns their entry ids. */
  dropRevoked(): string[] {
    const dropped: string[] = []
    for (const id of [...this.#svids.keys()]) {
      const e = this.#o.entries.get(id)
      if (e && this.#o.revoked?.(e)) {
        this.#svids.delete(id)
        dropped.push(id)
      }
    }
    return dropped
  }

  entryRemoved(entryId: string): void {
    this.#svids.delete(entryId)
    this.#failedUntil.delete(entryId)
  }

  /**
   * One maintenance pass at `clock.now()`: drops expired SVIDs, rotates those
   * due, mints missing ones (watched entries, then pre-minting while the
   * cache has room), evicts beyond the bound.
   */
  maintain(): Promise<void> {
    const { clock, entries, log } = this.#o
    const now = clock.now()
    for (const [id, svid] of this.#svids) {
      if (isExpired(svid, now)) {
        this.#svids.delete(id)
        this.#o.settled(id)
        log.warn({ [F.ENTRY_ID]: id, [F.SPIFFE_ID]: svid.spiffeId }, 'X509-SVID expired before it could be rotated')
      }
    }
    for (const id of this.dropRevoked()) this.#o.settled(id)
    const due: string[] = []
    for (const [id, svid] of this.#svids) {
      if (isDue(svid, now) && !this.#inflight.has(id)) due.push(id)
    }
    let room = this.#o.maxSize - this.#svids.size - this.#inflight.size
    for (const [id, e] of entries.entries()) {
      if (this.#svids.has(id) || this.#inflight.has(id) || e.selectors.length === 0 || isTemplateEntry(e) || this.#o.revoked?.(e)) continue
      if (this.retryBlocked(id, now)) continue
      if (this.#o.pinned(id)) due.push(id)
      else if (room > 0) {
        due.push(id)
        room--
      }
    }
    this.#evict()
    if (due.length === 0) return this.#ticking ?? Promise.resolve()
    const p = this.mint(due)
    this.#ticking = p
    void p.finally(() => {
      if (this.#ticking === p) this.#ticking = undefined
    })
    return p
  }

  /** Mints SVIDs for `ids` (those known, not template entries and not already being minted), in batches. */
  async mint(ids: string[]): Promise<void> {
    const { entries } = this.#o
    const todo = ids.filter((id) => !this.#inflight.has(id) && entries.has(id) && !isTemplateEntry(entries.get(id)!) && !this.#o.revoked?.(entries.get(id)!))
    if (todo.length === 0) return
    for (const id of todo) this.#inflight.add(id)
    try {
      for (let i = 0; i < todo.length; i += MAX_X509_BATCH) {
        if (this.#o.closed()) return
        await this.#mintBatch(todo.slice(i, i + MAX_X509_BATCH))
      }
    } finally {
      for (const id of todo) {
        this.#inflight.delete(id)
        this.#o.settled(id)
      }
      this.#evict()
      this.#o.flush()
    }
  }

  /** Epoch ms of the cached SVID's issue, expiry and planned rotation. */
  times(entryId: string): { issuedAt: number; expiresAt: number; rotateAt: number } | undefined {
    const s = this.#svids.get(entryId)
    return s ? { issuedAt: s.issuedAt, expiresAt: s.expiresAt, rotateAt: s.rotateAt } : undefined
  }

  #evict(): void {
    const excess = this.#svids.size - this.#o.maxSize
    if (excess <= 0) return
    const candidates = [...this.#svids.values()]
      .filter((s) => !this.#o.pinned(s.entryId) && !this.#inflight.has(s.entryId))
      .sort((a, b) => a.lastUsed - b.lastUsed)
    for (const s of candidates.slice(0, excess)) this.#svids.delete(s.entryId)
  }

  async #mintBatch(ids: string[]): Promise<void> {
    const { entries, signer, clock, log, random } = this.#o
    const items: { entry: AgentEntry; key: Uint8Array; csr: Uint8Array }[] = []
    for (const id of ids) {
      const entry = entries.get(id)
      if (!entry) continue
      items.push({ entry, ...(await newKeyAndCsr()) })
    }
    if (items.length === 0) return
    let results
    try {
      results = await signer.batchNewX509Svid(items.map((it) => ({ entryId: it.entry.id, csr: it.csr })))
    } catch (err) {
      this.#failed(
        items.map((it) => it.entry.id),
        err,
      )
      return
    }
    const byId = new Map(results.map((r) => [r.entryId, r]))
    const now = clock.now()
    const failed: string[] = []
    let firstError: unknown
    for (const it of items) {
      const r = byId.get(it.entry.id)
      if (!r || r.error || r.svidChain.length === 0) {
        failed.push(it.entry.id)
        firstError ??= r?.error ?? new IdentityError('ERR_INTERNAL', 'server returned no X509-SVID')
        continue
      }
      const current = entries.get(it.entry.id)
      // Gone, changed identity, or revoked while it was being signed: not kept.
      if (!current || current.spiffeId !== it.entry.spiffeId || this.#o.revoked?.(current)) continue
      const expiresAt = expiryOf(r)
      if (expiresAt === undefined) {
        failed.push(it.entry.id)
        continue
      }
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
        rotateAt: scheduleRenewal(now, expiresAt, current.revision !== it.entry.revision, random),
        lastUsed: prev?.lastUsed ?? now,
      })
      this.#failedUntil.delete(it.entry.id)
    }
    if (failed.length > 0) this.#failed(failed, firstError)
    else this.#backoff.reset()
    const minted = items.length - failed.length
    if (minted > 0) log.debug({ [F.COUNT]: minted }, 'X509-SVIDs minted')
  }

  #failed(ids: string[], err: unknown): void {
    const delay = this.#backoff.next()
    const until = this.#o.clock.now() + delay
    for (const id of ids) {
      this.#failedUntil.set(id, until)
      const svid = this.#svids.get(id)
      if (svid) retryAt(svid, until)
    }
    this.#o.log.warn({ [F.COUNT]: ids.length, retry_in_ms: delay, [F.ERR]: err }, 'X509-SVID signing failed; will retry')
  }
}
