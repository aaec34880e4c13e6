/**
 * Subscriber delivery: who watches which entries (by selectors) and which
 * process, which of them are owed an update, and delivering full
 * `WorkloadUpdate`s once every SVID they need is at hand (starting the
 * minting of what is missing). Updates are flushed in a microtask, so a burst
 * of changes reaches a subscriber once.
 */
import { F, type Logger } from '../../common/log/logger.js'
import type { WorkloadBundle, WorkloadCallContext, WorkloadIdentity, WorkloadUpdate } from '../workload-api/manager.js'

/** A caller's process (`pid:startTime`), when both are known: its per-instance identities are served. */
export interface Proc {
  key: string
  pid: number
  startTime: string
}

export function procOf(peer: WorkloadCallContext['peer']): Proc | undefined {
  if (!peer || peer.startTime === undefined || !(peer.pid > 0)) return undefined
  return { key: `${peer.pid}:${peer.startTime}`, pid: peer.pid, startTime: peer.startTime }
}

/** A served identity with what orders it in an update. */
export interface ServedIdentity extends WorkloadIdentity {
  entryId: string
}

/** How a matched entry stands for a subscriber: served (or nothing to serve), being minted, or missing its SVID. */
export type EntryStatus = 'ready' | 'waiting' | 'missing'

/** What delivery needs from the rest of the manager (declared here, by its consumer). */
export interface DeliverySources {
  /** Nothing is delivered before the first full sync. */
  ready(): boolean
  status(proc: Proc | undefined, entryId: string, now: number): EntryStatus
  /** Starts minting the SVIDs `status` reported missing. */
  mintMissing(proc: Proc | undefined, entryIds: string[]): void
  /** The valid SVID served for a matched entry now (marked as used), if any. */
  served(proc: Proc | undefined, entryId: string, now: number): ServedIdentity | undefined
  federatesWith(entryId: string): readonly string[]
  trustDomainId(): string
  localBundle(): WorkloadBundle
  federatedBundle(name: string): { trustDomainId: string; workload: WorkloadBundle } | undefined
  now(): number
}

interface Subscriber {
  selectors: ReadonlySet<string>
  onUpdate: (u: WorkloadUpdate) => void
  matched: Set<string>
  closed: boolean
  proc: Proc | undefined
}

export class Subscribers {
  readonly #src: DeliverySources
  readonly #log: Logger
  readonly #subs = new Set<Subscriber>()
  readonly #byEntry = new Map<string, Set<Subscriber>>()
  readonly #byProc = new Map<string, Set<Subscriber>>()
  readonly #dirty = new Set<Subscriber>()
  #flushQueued = false

  constructor(opts: { sources: DeliverySources; log: Logger }) {
    this.#src = opts.sources
    this.#log = opts.log
  }

  get size(): number {
    return this.#subs.size
  }

  /** Does anyone watch this entry (its SVID is then kept and minted regardless of the cache bound)? */
  pinned(entryId: string): boolean {
    return (this.#byEntry.get(entryId)?.size ?? 0) > 0
  }

  /** Adds a subscriber matching `matched` now; delivers at once when it can. Returns the unsubscribe function. */
  add(selectors: ReadonlySet<string>, matched: Set<string>, onUpdate: (u: WorkloadUpdate) => void, proc: Proc | undefined): () => void {
    const sub: Subscriber = { selectors, onUpdate, matched: new Set(), closed: false, proc }
    this.#setMatched(sub, matched)
    this.#subs.add(sub)
    if (proc) {
      let set = this.#byProc.get(proc.key)
      if (!set) this.#byProc.set(proc.key, (set = new Set()))
      set.add(sub)
    }
    if (!this.#tryDeliver(sub)) this.#dirty.add(sub)
    return () => {
      if (sub.closed) return
      sub.closed = true
      this.#subs.delete(sub)
      this.#dirty.delete(sub)
      for (const id of sub.matched) this.#byEntry.get(id)?.delete(sub)
      if (proc) {
        const set = this.#byProc.get(proc.key)
        set?.delete(sub)
        if (set?.size === 0) this.#byProc.delete(proc.key)
      }
    }
  }

  /** Re-matches every subscriber after entries changed; those concerned are owed an update. */
  rematch(match: (selectors: ReadonlySet<string>) => Set<string>, changed: ReadonlySet<string>, exists: (entryId: string) => boolean): void {
    for (const sub of this.#subs) {
      const matched = match(sub.selectors)
      let touched = matched.size !== sub.matched.size
      if (!touched) for (const id of changed) if (matched.has(id) || sub.matched.has(id)) touched = true
      if (!touched) for (const id of matched) if (!sub.matched.has(id)) touched = true
      this.#setMatched(sub, matched)
      if (touched) this.#dirty.add(sub)
    }
    for (const id of changed) if (!exists(id)) this.#byEntry.delete(id)
  }

  /** Subscribers of an entry are owed an update. */
  markEntry(entryId: string): void {
    const subs = this.#byEntry.get(entryId)
    if (subs) for (const s of subs) this.#dirty.add(s)
  }

  /** Subscribers of a process that match an entry (its instance changed) are owed an update. */
  markInstance(procKey: string, entryId: string): void {
    const subs = this.#byProc.get(procKey)
    if (subs) for (const s of subs) if (s.matched.has(entryId)) this.#dirty.add(s)
  }

  /** Every subscriber is owed an update (bundles changed, or the manager became ready). */
  markAll(): void {
    for (const s of this.#subs) this.#dirty.add(s)
  }

  /** Delivers, in a microtask, to the subscribers owed an update that can be served. */
  queueFlush(): void {
    if (this.#flushQueued || this.#dirty.size === 0) return
    this.#flushQueued = true
    queueMicrotask(() => {
      this.#flushQueued = false
      for (const sub of [...this.#dirty]) {
        if (this.#tryDeliver(sub)) this.#dirty.delete(sub)
      }
    })
  }

  /** Forgets every subscriber (shutdown). */
  clear(): void {
    this.#subs.clear()
    this.#dirty.clear()
    this.#byProc.clear()
  }

  #setMatched(sub: Subscriber, matched: Set<string>): void {
    for (const id of sub.matched) if (!matched.has(id)) this.#byEntry.get(id)?.delete(sub)
    for (const id of matched) {
      let set = this.#byEntry.get(id)
      if (!set) this.#byEntry.set(id, (set = new Set()))
      set.add(sub)
    }
    sub.matched = matched
  }

  /** Sends the subscriber its state unless an SVID it needs is being minted; may start that minting. */
  #tryDeliver(sub: Subscriber): boolean {
    if (sub.closed) return true
    const src = this.#src
    if (!src.ready()) return false
    const now = src.now()
    const missing: string[] = []
    let waiting = false
    for (const id of sub.matched) {
      const status = src.status(sub.proc, id, now)
      if (status === 'waiting') waiting = true
      else if (status === 'missing') missing.push(id)
    }
    if (missing.length > 0) {
      src.mintMissing(sub.proc, missing)
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
    const src = this.#src
    const identities: ServedIdentity[] = []
    const feds = new Set<string>()
    for (const id of sub.matched) {
      const svid = src.served(sub.proc, id, now)
      if (!svid) continue
      identities.push(svid)
      for (const td of src.federatesWith(id)) feds.add(td)
    }
    identities.sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : a.entryId < b.entryId ? -1 : 1))
    const federatedBundles = new Map<string, WorkloadBundle>()
    for (const name of feds) {
      const f = src.federatedBundle(name)
      if (f) federatedBundles.set(f.trustDomainId, f.workload)
    }
    return { identities, trustDomainId: src.trustDomainId(), bundle: src.localBundle(), federatedBundles }
  }
}
