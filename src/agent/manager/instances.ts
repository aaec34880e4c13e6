/**
 * Per-instance lifecycles of template entries (SPIFFE ID holding
 * `{instance}`): every process (pid + start time) that matches gets its own
 * instance, registered at the server, with its own key and X.509-SVID
 * (renewed as `rotation.ts` decides while the process lives) and its own
 * JWT-SVIDs. When the process is gone, or the entry changes identity, the
 * instance's state is dropped and its end reported through the end queue.
 * At start, the instances a previous run left live are ended first
 * (EndAllInstances, retried until it succeeds); registrations wait for it,
 * so a restarted agent never reuses an instance ID.
 */
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { StartTimeReader } from '../workload/peer.js'
import { Backoff } from './backoff.js'
import { EndQueue } from './end-queue.js'
import type { EntryIndex } from './entry-index.js'
import { MAX_X509_BATCH, type AgentEntry, type InstanceClient, type SvidSigner } from './ports.js'
import { isDue, isExpired, rotateNow, retryAt, scheduleRenewal } from './rotation.js'
import type { Proc } from './subscribers.js'
import { expiryOf, newKeyAndCsr } from './svid-mint.js'
import type { CachedSvid } from './x509-svids.js'

/** One workload process's instance of one template entry. Deleted (with all it holds) when the process ends. */
export interface InstanceState {
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

export interface InstancesOptions {
  client: InstanceClient
  entries: EntryIndex
  signer: SvidSigner
  clock: Clock
  log: Logger
  random: () => number
  retryBackoff: { initialMs?: number; maxMs?: number }
  readStartTime: StartTimeReader
  /** How often processes holding instances are checked for their end (ms, by the injected clock). */
  processCheckIntervalMs: number
  maxPendingEnds: number
  /** Drops a cached JWT-SVID of an ended instance. */
  dropJwt(key: string): void
  /** The instance's SVID changed or its minting ended: its process's subscribers are owed an update. */
  changed(inst: InstanceState): void
  flush(): void
  closed(): boolean
  /** Is the instance's identity revoked (its SVIDs are then neither minted, renewed nor kept)? Default: never. */
  revoked?(inst: InstanceState): boolean
}

export class Instances {
  readonly #o: InstancesOptions
  readonly #instances = new Map<string, InstanceState>()
  readonly #procs = new Map<string, ProcState>()
  readonly #ends: EndQueue
  #lastProcCheck = Number.NEGATIVE_INFINITY
  /** EndAllInstances of a previous run: registrations wait until it succeeded. */
  #endAll: { done: boolean; retryAt: number; running: Promise<void> | undefined; waiters: (() => void)[]; backoff: Backoff } | undefined

  constructor(opts: InstancesOptions) {
    this.#o = opts
    this.#ends = new EndQueue({
      client: opts.client,
      clock: opts.clock,
      log: opts.log,
      backoff: new Backoff({ ...opts.retryBackoff, random: opts.random }),
      maxPending: opts.maxPendingEnds,
      closed: opts.closed,
    })
  }

  get size(): number {
    return this.#instances.size
  }

  get processes(): number {
    return this.#procs.size
  }

  get pendingEnds(): number {
    return this.#ends.size
  }

  /** Ends, at the server, every instance a previous run left live; call once when the agent starts. */
  endPrevious(): Promise<void> {
    this.#endAll ??= { done: false, retryAt: 0, running: undefined, waiters: [], backoff: new Backoff({ ...this.#o.retryBackoff, random: this.#o.random }) }
    return this.#endAll.running ?? (this.#endAll.done ? Promise.resolve() : this.#runEndAll())
  }

  /** Checks the processes when their interval has passed (before minting, so ended ones are not renewed). */
  checkIfDue(now: number): void {
    if (this.#procs.size > 0 && now - this.#lastProcCheck >= this.#o.processCheckIntervalMs) {
      this.#lastProcCheck = now
      this.checkProcesses()
    }
  }

  /** Renewals of instance SVIDs, and the retries (ending a previous run's instances, reporting ends) now due. */
  maintain(now: number): Promise<void>[] {
    const work = [this.#maintainSvids(now)]
    const ea = this.#endAll
    if (ea && !ea.done && !ea.running && ea.retryAt <= now) work.push(this.#runEndAll())
    if (this.#ends.due(now)) work.push(this.#ends.flush())
    return work
  }

  /** The process's instance of a template entry, created (not yet registered) on first use; undefined without a live process. */
  instanceFor(proc: Proc | undefined, entry: AgentEntry): InstanceState | undefined {
    if (!proc || this.#o.closed()) return undefined
    const key = `${proc.key}|${entry.id}`
    const existing = this.#instances.get(key)
    if (existing) return existing
    let p = this.#procs.get(proc.key)
    if (!p) {
      // A stream of a process that has already gone must not open a new instance.
      if (this.#startTimeOf(proc.pid) !== proc.startTime) return undefined
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

  /** The SVID of a process's instance of an entry, if it has one. */
  svidOf(procKey: string, entryId: string): CachedSvid | undefined {
    return this.#instances.get(`${procKey}|${entryId}`)?.svid
  }

  /** The instance ID of a process's instance of an entry, if registered. */
  instanceIdOf(procKey: string | undefined, entryId: string): string | undefined {
    return procKey === undefined ? undefined : this.#instances.get(`${procKey}|${entryId}`)?.instanceId
  }

  /** Registers the instance at the server once (shared by concurrent callers); failures set its retry time. */
  ensureRegistered(inst: InstanceState): Promise<void> {
    if (inst.instanceId !== undefined || inst.ended) return Promise.resolve()
    inst.registering ??= (async () => {
      try {
        await this.#previousRunEnded()
        if (inst.ended || this.#o.closed()) return
        const r = await this.#o.client.registerInstance(inst.entryId, { pid: inst.pid, startTime: inst.startTime })
        if (inst.ended) {
          // The process ended while it was being registered.
          this.#ends.add(r.instanceId)
          return
        }
        inst.instanceId = r.instanceId
        inst.spiffeId = r.spiffeId
        this.#o.log.debug({ instance_id: r.instanceId, [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid }, 'Instance registered')
      } catch (err) {
        this.#failed(inst, err, 'Instance registration failed; will retry')
        throw err
      } finally {
        inst.registering = undefined
      }
    })()
    return inst.registering
  }

  /** Registers (as needed) and mints the SVIDs of instances, in batches. */
  async mint(list: InstanceState[]): Promise<void> {
    const todo = list.filter((i) => !i.inflight && !i.ended && !this.#o.revoked?.(i))
    if (todo.length === 0) return
    for (const i of todo) i.inflight = true
    try {
      await Promise.all(todo.map((i) => this.ensureRegistered(i).catch(() => undefined)))
      const ready = todo.filter((i) => i.instanceId !== undefined && !i.ended && this.#o.entries.has(i.entryId) && !this.#o.revoked?.(i))
      for (let k = 0; k < ready.length; k += MAX_X509_BATCH) {
        if (this.#o.closed()) return
        await this.#mintBatch(ready.slice(k, k + MAX_X509_BATCH))
      }
    } finally {
      for (const i of todo) {
        i.inflight = false
        this.#o.changed(i)
      }
      this.#o.flush()
    }
  }

  /**
   * Drops what revoked instances hold (X.509-SVID, cached JWT-SVIDs); they
   * stay recorded, so their processes get no fresh instance, and are not
   * renewed. Returns how many instances lost something.
   */
  dropRevoked(): number {
    let n = 0
    for (const inst of this.#instances.values()) {
      if (!this.#o.revoked?.(inst)) continue
      if (inst.svid === undefined && inst.jwtKeys.size === 0) continue
      for (const k of inst.jwtKeys) this.#o.dropJwt(k)
      inst.jwtKeys.clear()
      inst.svid = undefined
      this.#o.changed(inst)
      this.#o.log.info({ instance_id: inst.instanceId, [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid }, 'Revoked instance no longer served')
      n++
    }
    return n
  }

  /** A template entry changed parameters (same template): its instances renew now. */
  rotateEntryNow(entryId: string, now: number): void {
    for (const inst of this.#instances.values()) if (inst.entryId === entryId && inst.svid) rotateNow(inst.svid, now)
  }

  /** A template entry was deleted or its template changed: its instances end. */
  endOfEntry(entryId: string): void {
    for (const inst of [...this.#instances.values()]) if (inst.entryId === entryId) this.#end(inst, 'entry changed')
  }

  /**
   * Checks every process holding instances; a process that is gone, or whose
   * pid now has another start time, loses its instances. Returns how many
   * processes ended.
   */
  checkProcesses(): number {
    let ended = 0
    for (const [key, p] of [...this.#procs]) {
      if (this.#startTimeOf(p.pid) === p.startTime) continue
      this.#endProcess(key)
      ended++
    }
    if (ended > 0) this.#o.flush()
    return ended
  }

  /** The live instances of a process (pid + start time). */
  instancesOf(pid: number, startTime: string): { entryId: string; instanceId: string | undefined; spiffeId: string | undefined }[] {
    const p = this.#procs.get(`${pid}:${startTime}`)
    if (!p) return []
    return [...p.instances].map((k) => this.#instances.get(k)!).map((i) => ({ entryId: i.entryId, instanceId: i.instanceId, spiffeId: i.spiffeId }))
  }

  /** Releases registrations waiting for the previous run's end (shutdown). */
  close(): void {
    for (const w of this.#endAll?.waiters.splice(0) ?? []) w()
  }

  #startTimeOf(pid: number): string | undefined {
    try {
      return this.#o.readStartTime(pid)
    } catch {
      return undefined
    }
  }

  #runEndAll(): Promise<void> {
    const ea = this.#endAll!
    if (ea.running) return ea.running
    const p = (async () => {
      try {
        const n = await this.#o.client.endAllInstances()
        ea.done = true
        ea.backoff.reset()
        for (const w of ea.waiters.splice(0)) w()
        this.#o.log.info({ [F.COUNT]: n }, 'Ended the instances of a previous run')
      } catch (err) {
        const delay = ea.backoff.next()
        ea.retryAt = this.#o.clock.now() + delay
        this.#o.log.warn({ retry_in_ms: delay, [F.ERR]: err }, 'Ending the instances of a previous run failed; will retry')
      } finally {
        ea.running = undefined
      }
    })()
    ea.running = p
    return p
  }

  #previousRunEnded(): Promise<void> {
    const ea = this.#endAll
    if (!ea || ea.done) return Promise.resolve()
    return new Promise<void>((resolve) => ea.waiters.push(resolve))
  }

  #failed(inst: InstanceState, err: unknown, msg: string): void {
    inst.backoff ??= new Backoff({ ...this.#o.retryBackoff, random: this.#o.random })
    const delay = inst.backoff.next()
    inst.failedUntil = this.#o.clock.now() + delay
    if (inst.svid) retryAt(inst.svid, inst.failedUntil)
    this.#o.log.warn({ [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid, retry_in_ms: delay, [F.ERR]: err }, msg)
  }

  #maintainSvids(now: number): Promise<void> {
    this.dropRevoked()
    const due: InstanceState[] = []
    for (const inst of this.#instances.values()) {
      if (inst.svid && isExpired(inst.svid, now)) {
        inst.svid = undefined
        this.#o.changed(inst)
        this.#o.log.warn({ [F.ENTRY_ID]: inst.entryId, instance_id: inst.instanceId }, 'Instance X509-SVID expired before it could be rotated')
      }
      if (inst.svid && isDue(inst.svid, now) && !inst.inflight && inst.failedUntil <= now) due.push(inst)
    }
    return due.length > 0 ? this.mint(due) : Promise.resolve()
  }

  async #mintBatch(list: InstanceState[]): Promise<void> {
    const { entries, signer, clock, random } = this.#o
    const items: { inst: InstanceState; entry: AgentEntry; key: Uint8Array; csr: Uint8Array }[] = []
    for (const inst of list) {
      const entry = entries.get(inst.entryId)
      if (!entry) continue
      items.push({ inst, entry, ...(await newKeyAndCsr()) })
    }
    if (items.length === 0) return
    let results
    try {
      results = await signer.batchNewX509Svid(items.map((it) => ({ entryId: it.entry.id, csr: it.csr, instanceId: it.inst.instanceId! })))
    } catch (err) {
      for (const it of items) this.#failed(it.inst, err, 'Instance X509-SVID signing failed; will retry')
      return
    }
    const now = clock.now()
    for (let k = 0; k < items.length; k++) {
      const { inst, entry, key } = items[k]!
      const r = results[k]
      if (inst.ended || this.#o.revoked?.(inst)) continue
      if (!r || r.entryId !== entry.id || r.error || r.svidChain.length === 0) {
        this.#failed(inst, r?.error ?? new IdentityError('ERR_INTERNAL', 'server returned no X509-SVID'), 'Instance X509-SVID signing failed; will retry')
        continue
      }
      const expiresAt = expiryOf(r)
      if (expiresAt === undefined) {
        this.#failed(inst, new IdentityError('ERR_INTERNAL', 'unreadable X509-SVID'), 'Instance X509-SVID signing failed; will retry')
        continue
      }
      const current = entries.get(entry.id)
      inst.svid = {
        entryId: entry.id,
        spiffeId: inst.spiffeId!,
        hint: current?.hint ?? entry.hint,
        x509Svid: r.svidChain,
        x509SvidKey: key,
        revision: entry.revision,
        issuedAt: now,
        expiresAt,
        rotateAt: scheduleRenewal(now, expiresAt, current !== undefined && current.revision !== entry.revision, random),
        lastUsed: now,
      }
      inst.failedUntil = 0
      inst.backoff = undefined
    }
  }

  #endProcess(procKey: string): void {
    const p = this.#procs.get(procKey)
    if (!p) return
    this.#procs.delete(procKey)
    for (const key of p.instances) {
      const inst = this.#instances.get(key)
      if (inst) this.#end(inst, 'process exited')
    }
  }

  /** Drops everything an instance holds, stops serving it and queues the report of its end. */
  #end(inst: InstanceState, reason: string): void {
    if (inst.ended) return
    inst.ended = true
    this.#instances.delete(inst.key)
    const p = this.#procs.get(inst.procKey)
    if (p) {
      p.instances.delete(inst.key)
      if (p.instances.size === 0) this.#procs.delete(inst.procKey)
    }
    for (const k of inst.jwtKeys) this.#o.dropJwt(k)
    inst.jwtKeys.clear()
    inst.svid = undefined
    this.#o.changed(inst)
    if (inst.instanceId !== undefined) {
      this.#o.log.info({ instance_id: inst.instanceId, [F.ENTRY_ID]: inst.entryId, [F.PID]: inst.pid, [F.REASON]: reason }, 'Instance ended')
      this.#ends.add(inst.instanceId)
    }
  }
}
