/**
 * Revocation of per-instance identities and quarantine of SPIFFE ID prefixes
 * (the SVID side): records kept in the datastore, an in-memory view that
 * issuance checks synchronously on every item, listeners (each agent's Sync
 * stream) told of every change, and a sweep of expired records.
 */
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import { isoTime, type ServerAudit, type ServerAuditEvent } from '../audit/server-audit.js'
import type { DataStore, Revocation, RevocationKind } from '../datastore/types.js'
import type { InstanceRecord, InstanceService } from '../instances/instance-service.js'

const INSTANCE_ID_RE = /^i[0-9a-z]{25}$/
const MAX_VALUE = 2048
const MAX_REASON = 1024
/** How often the in-memory view is checked for expired records (they stop applying at once; this only sweeps and tells the agents). */
const SWEEP_CHECK_MS = 1000
/** How often the datastore is swept regardless. */
const SWEEP_MS = 60_000

export interface RevokeRequest {
  kind: string
  value: string
  reason?: string
  /** Epoch ms; only for a prefix. */
  notAfter?: number
}

export interface RevocationServiceDeps {
  ds: DataStore
  instances: Pick<InstanceService, 'find' | 'list' | 'end'>
  trustDomain: TrustDomain
  clock: Clock
  log: Logger
  /** The TTLs of entries that set none (ms): an instance's longest SVID lifetime bounds its record's expiry. */
  defaultX509TtlMs: number
  defaultJwtTtlMs: number
  /**
   * Each new record and each deletion is appended (`instance.revoked`, `prefix.quarantined`, `revocation.deleted`;
   * never the free-text reason) and durable before the caller is answered; a lost event is logged and counted.
   */
  audit?: Pick<ServerAudit, 'durable'>
}

const invalid = (msg: string): IdentityError => new IdentityError('ERR_REVOCATION_INVALID', msg)

/** Does the path prefix `prefix` (a SPIFFE ID) cover `id`: the same ID, or one below it at a segment boundary? */
export function prefixCovers(prefix: string, id: string): boolean {
  if (!id.startsWith(prefix)) return false
  return id.length === prefix.length || prefix.endsWith('/') || id.charCodeAt(prefix.length) === 0x2f
}

export class RevocationService {
  readonly #d: RevocationServiceDeps
  readonly #log: Logger
  readonly #listeners = new Set<() => void>()
  #active: Revocation[] = []
  #byInstanceId = new Map<string, Revocation>()
  #bySpiffeId = new Map<string, Revocation>()
  #prefixes: Revocation[] = []
  #timer: NodeJS.Timeout | undefined
  #lastSweep = 0

  constructor(deps: RevocationServiceDeps) {
    this.#d = deps
    this.#log = deps.log.child({ [F.SUBSYSTEM]: 'revocation' })
  }

  /** Loads the active records and starts the sweep. */
  async start(): Promise<void> {
    await this.#reload()
    this.#timer = setInterval(() => void this.#sweepIfDue(), SWEEP_CHECK_MS)
    this.#timer.unref()
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer)
    this.#listeners.clear()
  }

  /** Calls `fn` after every change of the active set; returns the unsubscribe function. */
  onChange(fn: () => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** The records in force now, by id. */
  active(): Revocation[] {
    const now = this.#d.clock.now()
    return this.#active.filter((r) => r.expiresAt === null || r.expiresAt > now)
  }

  /** The record in force that covers an SVID for `spiffeId` (and, for a per-instance identity, `instanceId`), if any. */
  covering(spiffeId: string | undefined, instanceId: string | undefined): Revocation | undefined {
    if (this.#active.length === 0) return undefined
    const now = this.#d.clock.now()
    const live = (r: Revocation | undefined): Revocation | undefined => (r && (r.expiresAt === null || r.expiresAt > now) ? r : undefined)
    let hit = instanceId ? live(this.#byInstanceId.get(instanceId)) : undefined
    if (!hit && spiffeId !== undefined) {
      hit = live(this.#bySpiffeId.get(spiffeId))
      if (!hit) for (const p of this.#prefixes) if ((hit = live(prefixCovers(p.value, spiffeId) ? p : undefined))) break
    }
    return hit
  }

  /** Throws ERR_REVOKED (PermissionDenied; the record and its reason only in the details, which the server logs) when a record covers the SVID. */
  refuse(spiffeId: string | undefined, instanceId: string | undefined): void {
    const r = this.covering(spiffeId, instanceId)
    if (!r) return
    throw new IdentityError('ERR_REVOKED', 'identity revoked', {
      details: { revocation_id: r.id, kind: r.kind, value: r.value, reason: r.reason, ...(spiffeId ? { spiffe_id: spiffeId } : {}) },
    })
  }

  /**
   * Revokes an instance (by instance ID or SPIFFE ID) or quarantines a prefix.
   * ERR_REVOCATION_INVALID for bad input (nothing changes). Idempotent: the
   * same kind and value again returns the record in force. A known instance
   * is also ended at the server, so it never gets an SVID again after its
   * record expires.
   */
  async revoke(req: RevokeRequest): Promise<{ revocation: Revocation; created: boolean }> {
    const now = this.#d.clock.now()
    const kind = this.#kind(req.kind)
    const value = typeof req.value === 'string' ? req.value.trim() : ''
    if (value === '' || value.length > MAX_VALUE) throw invalid('value must be 1-2048 characters')
    const reason = req.reason ?? ''
    // eslint-disable-next-line no-control-regex -- control characters are what is refused
    if (typeof reason !== 'string' || reason.length > MAX_REASON || /[\u0000-\u001f\u007f]/.test(reason))
      throw invalid('reason must be at most 1024 printable characters')
    let notAfter: number | null = null
    if (req.notAfter !== undefined && req.notAfter !== 0) {
      if (kind !== 'prefix') throw invalid('not_after is only for a prefix quarantine')
      if (!Number.isSafeInteger(req.notAfter) || req.notAfter <= now) throw invalid('not_after must be in the future')
      notAfter = req.notAfter
    }
    let instance: InstanceRecord | undefined
    if (kind === 'prefix') this.#ownId(value, 'prefix')
    else if (!INSTANCE_ID_RE.test(value)) {
      this.#ownId(value, 'value')
      instance = (await this.#d.instances.list()).find((i) => i.spiffeId === value)
    } else instance = await this.#d.instances.find(value)
    const expiresAt = kind === 'prefix' ? notAfter : now + (await this.#longestTtlMs(instance))
    const out = await this.#d.ds.revocations.create({ kind, value, reason, notAfter, expiresAt })
    if (out.created) {
      this.#log.warn(
        { revocation_id: out.revocation.id, kind, value, [F.REASON]: reason, not_after: notAfter, expires_at: expiresAt, instance_id: instance?.instanceId },
        kind === 'prefix' ? 'SPIFFE ID prefix quarantined' : 'Instance revoked',
      )
      await this.#changed()
      await this.#d.audit?.durable(this.#event(out.revocation, instance))
    }
    if (instance && instance.endedAt === null) {
      await this.#d.instances.end(instance.agentId, instance.instanceId, 'revoked').catch((err: unknown) => {
        this.#log.warn({ instance_id: instance.instanceId, [F.ERR]: err }, 'Ending a revoked instance failed')
      })
    }
    return out
  }

  /** Every record (with `includeExpired`, those not yet swept too), by id. */
  async list(opts: { includeExpired?: boolean } = {}): Promise<Revocation[]> {
    return this.#d.ds.revocations.list(opts.includeExpired ? {} : { now: this.#d.clock.now() })
  }

  /** Deletes a record (a mistaken or finished quarantine); ERR_NOT_FOUND when absent, ERR_REVOCATION_INVALID for a malformed id. */
  async delete(id: number): Promise<Revocation> {
    if (!Number.isSafeInteger(id) || id < 1) throw invalid('id must be a positive integer')
    const r = await this.#d.ds.revocations.delete(id)
    this.#log.warn({ revocation_id: r.id, kind: r.kind, value: r.value, [F.REASON]: r.reason }, 'Revocation deleted')
    await this.#changed()
    await this.#d.audit?.durable({ ...this.#event(r, undefined), type: 'revocation.deleted' })
    return r
  }

  /** A record's event: its SPIFFE ID (of the instance, or the prefix) or instance ID, its id and end; never its reason (free text). */
  #event(r: Revocation, instance: InstanceRecord | undefined): ServerAuditEvent {
    const byInstanceId = r.kind === 'instance' && INSTANCE_ID_RE.test(r.value)
    const subject = byInstanceId ? instance?.spiffeId : r.value
    const instanceId = byInstanceId ? r.value : instance?.instanceId
    return {
      type: r.kind === 'prefix' ? 'prefix.quarantined' : 'instance.revoked',
      outcome: 'success',
      ...(subject !== undefined ? { subject } : {}),
      ...(instance ? { node: instance.agentId } : {}),
      attributes: {
        via: 'admin',
        kind: r.kind,
        revocation_id: r.id,
        ...(instanceId !== undefined ? { instance_id: instanceId } : {}),
        ...(r.notAfter !== null ? { not_after: isoTime(r.notAfter) } : {}),
        ...(r.expiresAt !== null ? { expires_at: isoTime(r.expiresAt) } : {}),
      },
    }
  }

  /** Drops expired records from the datastore and tells the listeners; returns how many. */
  async sweep(): Promise<number> {
    this.#lastSweep = this.#d.clock.now()
    const gone = await this.#d.ds.revocations.pruneExpired(this.#lastSweep)
    const stale = this.#active.length !== this.active().length
    if (gone.length > 0) this.#log.info({ [F.COUNT]: gone.length }, 'Expired revocations swept')
    if (gone.length > 0 || stale) await this.#changed()
    return gone.length
  }

  async #sweepIfDue(): Promise<void> {
    const now = this.#d.clock.now()
    if (this.#active.length === this.active().length && now - this.#lastSweep < SWEEP_MS) return
    await this.sweep().catch((err: unknown) => this.#log.warn({ [F.ERR]: err }, 'Sweeping revocations failed'))
  }

  #kind(k: string): RevocationKind {
    if (k !== 'instance' && k !== 'prefix') throw invalid("kind must be 'instance' or 'prefix'")
    return k
  }

  #ownId(value: string, what: string): void {
    let id: SpiffeId
    try {
      id = SpiffeId.fromString(value)
    } catch {
      throw invalid(`${what} must be an instance ID or a SPIFFE ID`)
    }
    if (!id.trustDomain.equals(this.#d.trustDomain)) throw invalid(`${what} must be in trust domain ${this.#d.trustDomain.name}`)
    if (id.path === '') throw invalid(`${what} must have a path (the whole trust domain cannot be revoked)`)
  }

  /** The longest lifetime an SVID of the instance may have: its entry's TTLs, or for an unknown instance every entry's and the defaults. */
  async #longestTtlMs(instance: InstanceRecord | undefined): Promise<number> {
    const { ds, defaultX509TtlMs, defaultJwtTtlMs } = this.#d
    const ttl = (s: number, dflt: number): number => (s > 0 ? s * 1000 : dflt)
    const entries = instance ? [await ds.entries.find(instance.entryId)].filter((e) => e !== undefined) : (await ds.entries.list()).entries
    let max = entries.length === 0 || !instance ? Math.max(defaultX509TtlMs, defaultJwtTtlMs) : 0
    for (const e of entries) max = Math.max(max, ttl(e.x509SvidTtl, defaultX509TtlMs), ttl(e.jwtSvidTtl, defaultJwtTtlMs))
    return max
  }

  /**
   * Reads the records again (another server sharing the datastore revoked, quarantined or deleted one: its
   * change feed) and tells the listeners when the set in force changed; the echo of this server's own change
   * changes nothing and tells no one.
   */
  async reload(): Promise<boolean> {
    const before = fingerprint(this.#active)
    await this.#reload()
    if (fingerprint(this.#active) === before) return false
    this.#log.info({ [F.COUNT]: this.#active.length }, 'Revocations changed by another server')
    this.#notify()
    return true
  }

  async #reload(): Promise<void> {
    const list = await this.#d.ds.revocations.list({ now: this.#d.clock.now() })
    const byInstanceId = new Map<string, Revocation>()
    const bySpiffeId = new Map<string, Revocation>()
    const prefixes: Revocation[] = []
    for (const r of list) {
      if (r.kind === 'prefix') prefixes.push(r)
      else if (INSTANCE_ID_RE.test(r.value)) byInstanceId.set(r.value, r)
      else bySpiffeId.set(r.value, r)
    }
    this.#active = list
    this.#byInstanceId = byInstanceId
    this.#bySpiffeId = bySpiffeId
    this.#prefixes = prefixes
  }

  async #changed(): Promise<void> {
    await this.#reload()
    this.#notify()
  }

  #notify(): void {
    for (const fn of [...this.#listeners]) {
      try {
        fn()
      } catch (err) {
        this.#log.warn({ [F.ERR]: err }, 'Revocation listener failed')
      }
    }
  }
}

function fingerprint(list: readonly Revocation[]): string {
  return list.map((r) => `${r.id}:${r.expiresAt ?? ''}`).join(',')
}
