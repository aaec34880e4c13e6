import { Counter, Gauge, type Registry } from 'prom-client'
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import type { FederatedBundles } from '../bundle/federated.js'
import { fetchBundle as defaultFetchBundle, type FetchBundleOptions } from './client.js'
import { DEFAULT_REFRESH_HINT_SECONDS } from './endpoint.js'
import { MAX_REFRESH_SECONDS, MIN_REFRESH_SECONDS, type FederationRelationship, type RelationshipStore } from './relationships.js'

/** Timer functions, injected so tests drive polling with a fake clock. */
export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const systemTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms)
    t.unref()
    return t
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

/** The first retry after a failure; doubles per consecutive failure, capped at the refresh interval. */
export const INITIAL_BACKOFF_MS = 5_000

export interface RefreshStatus {
  trustDomain: string
  /** Epoch ms; 0 = never. */
  lastAttemptAt: number
  lastSuccessAt: number
  /** '' after a success. */
  lastError: string
  lastErrorCode: string
  consecutiveFailures: number
  /** Epoch ms of the next scheduled poll; 0 = none scheduled. */
  nextAttemptAt: number
  /** spiffe_sequence of the last accepted bundle (undefined if it had none). */
  lastSequence: number | undefined
}

/** Reads a text file named in configuration; throws ERR_CONFIG_INVALID when it cannot. */
export type ReadText = (path: string) => string

export interface FederationRefresherOptions {
  relationships: RelationshipStore
  federated: FederatedBundles
  clock: Clock
  log: Logger
  /** prom-client registry for the refresh counters. */
  registry: Registry
  timers?: Timers
  /**
   * Reads a relationship's `web_ca_file` (the composition root decides how
   * files are read; an unreadable file is ERR_CONFIG_INVALID, a failed fetch).
   */
  readText: ReadText
  /** Replaceable for tests. */
  fetchBundle?: (o: FetchBundleOptions) => Promise<SpiffeBundle>
  /** In [0, 1); jitter source. */
  random?: () => number
  fetchTimeoutMs?: number
  maxBundleBytes?: number
}

interface Slot {
  rel: FederationRelationship
  status: RefreshStatus
  timer: unknown
  running: Promise<void> | undefined
  abort: AbortController | undefined
}

/**
 * Polls each federation relationship's bundle endpoint at the bundle's
 * `spiffe_refresh_hint` (or the relationship's override; default 300 s, at
 * least 5 s), backing off with jitter after failures (capped at that
 * interval). An accepted bundle is stored through `FederatedBundles.put` only
 * when it changed, which pushes it to agents. A failed fetch changes nothing:
 * the previous bundle stays, the error is logged with the relationship's name
 * and counted in `warrant_server_federation_refresh_failures_total`. A bundle
 * whose `spiffe_sequence` is older than the stored one is refused the same way
 * (and also counted in `warrant_server_federation_bundle_rollbacks_refused_total`).
 */
export class FederationRefresher {
  readonly #o: FederationRefresherOptions
  readonly #log: Logger
  readonly #timers: Timers
  readonly #fetch: (o: FetchBundleOptions) => Promise<SpiffeBundle>
  readonly #random: () => number
  readonly #slots = new Map<string, Slot>()
  readonly #failures: Counter<'relationship' | 'error_code'>
  readonly #successes: Counter<'relationship'>
  readonly #updates: Counter<'relationship'>
  readonly #rollbacks: Counter<'relationship'>
  readonly #lastSuccess: Gauge<'relationship'>
  #started = false
  #unsubscribe: (() => void) | undefined
  #syncing: Promise<void> = Promise.resolve()

  constructor(o: FederationRefresherOptions) {
    this.#o = o
    this.#log = o.log.child({ [F.SUBSYSTEM]: 'federation' })
    this.#timers = o.timers ?? systemTimers
    this.#fetch = o.fetchBundle ?? defaultFetchBundle
    this.#random = o.random ?? Math.random
    const r = { registers: [o.registry] }
    this.#failures = new Counter({
      name: 'warrant_server_federation_refresh_failures_total',
      help: 'Failed bundle endpoint refreshes, by federation relationship and error code',
      labelNames: ['relationship', 'error_code'] as const,
      ...r,
    })
    this.#successes = new Counter({
      name: 'warrant_server_federation_refresh_successes_total',
      help: 'Successful bundle endpoint refreshes, by federation relationship',
      labelNames: ['relationship'] as const,
      ...r,
    })
    this.#updates = new Counter({
      name: 'warrant_server_federation_bundle_updates_total',
      help: 'Fetched bundles that differed from the stored one and were stored',
      labelNames: ['relationship'] as const,
      ...r,
    })
    this.#rollbacks = new Counter({
      name: 'warrant_server_federation_bundle_rollbacks_refused_total',
      help: 'Fetched bundles refused because their spiffe_sequence was older than the stored one',
      labelNames: ['relationship'] as const,
      ...r,
    })
    this.#lastSuccess = new Gauge({
      name: 'warrant_server_federation_last_success_timestamp_seconds',
      help: 'Time of the last successful refresh, by federation relationship',
      labelNames: ['relationship'] as const,
      ...r,
    })
  }

  /** Loads the relationships, polls each one now, and follows later changes of the store. */
  async start(): Promise<void> {
    if (this.#started) return
    this.#started = true
    this.#unsubscribe = this.#o.relationships.onChange(() => void this.sync())
    await this.sync()
  }

  /** Cancels timers and in-flight fetches; waits for them to settle. */
  async stop(): Promise<void> {
    this.#started = false
    this.#unsubscribe?.()
    this.#unsubscribe = undefined
    await this.#syncing
    const running: Promise<void>[] = []
    for (const s of this.#slots.values()) {
      this.#cancel(s)
      if (s.running) running.push(s.running)
    }
    await Promise.allSettled(running)
  }

  /** Re-reads the relationships: new or changed ones are polled now, deleted ones are dropped. */
  sync(): Promise<void> {
    this.#syncing = this.#syncing
      .then(() => this.#sync())
      .catch((err: unknown) => {
        this.#log.error({ [F.ERR]: describe(err) }, 'Federation relationships cannot be loaded')
      })
    return this.#syncing
  }

  async #sync(): Promise<void> {
    if (!this.#started) return
    const rels = await this.#o.relationships.list()
    const seen = new Set<string>()
    for (const rel of rels) {
      seen.add(rel.trustDomain)
      const slot = this.#slots.get(rel.trustDomain)
      if (slot && JSON.stringify({ ...slot.rel, updatedAt: 0 }) === JSON.stringify({ ...rel, updatedAt: 0 })) continue
      if (slot) this.#cancel(slot)
      const next: Slot = slot ?? { rel, status: emptyStatus(rel.trustDomain), timer: undefined, running: undefined, abort: undefined }
      next.rel = rel
      next.status.consecutiveFailures = 0
      this.#slots.set(rel.trustDomain, next)
      this.#schedule(next, 0)
    }
    for (const [td, slot] of this.#slots) {
      if (!seen.has(td)) {
        this.#cancel(slot)
        this.#slots.delete(td)
        for (const m of [this.#successes, this.#updates, this.#rollbacks, this.#lastSuccess]) m.remove({ relationship: td })
      }
    }
  }

  /** Resolves once no poll is in flight (tests, graceful shutdown). */
  async idle(): Promise<void> {
    await this.#syncing
    for (;;) {
      const running = [...this.#slots.values()].flatMap((s) => (s.running ? [s.running] : []))
      if (running.length === 0) return
      await Promise.allSettled(running)
    }
  }

  /** Status of one relationship (undefined when the refresher does not know it). */
  status(trustDomain: string): RefreshStatus | undefined {
    const s = this.#slots.get(TrustDomain.fromString(trustDomain).name)
    return s ? { ...s.status } : undefined
  }

  statuses(): RefreshStatus[] {
    return [...this.#slots.values()].map((s) => ({ ...s.status }))
  }

  /**
   * Fetches one relationship's bundle now (`warrant federation refresh`), then
   * reschedules polling. Resolves with the new status; rejects with the fetch
   * error (the previous bundle stays). Throws ERR_NOT_FOUND for an unknown relationship.
   */
  async refresh(trustDomain: string): Promise<RefreshStatus> {
    const rel = await this.#o.relationships.get(trustDomain)
    let slot = this.#slots.get(rel.trustDomain)
    if (!slot) {
      slot = { rel, status: emptyStatus(rel.trustDomain), timer: undefined, running: undefined, abort: undefined }
      this.#slots.set(rel.trustDomain, slot)
    }
    slot.rel = rel
    if (slot.running) await slot.running.catch(() => undefined)
    if (slot.timer !== undefined) this.#timers.clearTimeout(slot.timer)
    slot.timer = undefined
    const err = await this.#run(slot)
    if (err) throw err
    return { ...slot.status }
  }

  #schedule(slot: Slot, delayMs: number): void {
    if (slot.timer !== undefined) this.#timers.clearTimeout(slot.timer)
    slot.status.nextAttemptAt = this.#o.clock.now() + delayMs
    slot.timer = this.#timers.setTimeout(() => {
      slot.timer = undefined
      if (this.#started && this.#slots.get(slot.rel.trustDomain) === slot) void this.#run(slot)
    }, delayMs)
  }

  #cancel(slot: Slot): void {
    if (slot.timer !== undefined) this.#timers.clearTimeout(slot.timer)
    slot.timer = undefined
    slot.abort?.abort()
    slot.status.nextAttemptAt = 0
  }

  /** One poll; resolves with the error (already logged and counted) or undefined. */
  #run(slot: Slot): Promise<IdentityError | undefined> {
    let result: IdentityError | undefined
    const p = (async () => {
      const ac = new AbortController()
      slot.abort = ac
      const rel = slot.rel
      const log = this.#log.child({ [F.RELATIONSHIP]: rel.trustDomain, [F.TRUST_DOMAIN]: rel.trustDomain })
      slot.status.lastAttemptAt = this.#o.clock.now()
      let stored: SpiffeBundle | undefined
      try {
        stored = await this.#stored(rel.trustDomain)
        const fetched = await this.#fetch({
          trustDomain: TrustDomain.fromString(rel.trustDomain),
          url: rel.bundleEndpointUrl,
          profile: await this.#profile(rel, stored),
          signal: ac.signal,
          now: () => new Date(this.#o.clock.now()),
          ...(this.#o.fetchTimeoutMs !== undefined ? { timeoutMs: this.#o.fetchTimeoutMs } : {}),
          ...(this.#o.maxBundleBytes !== undefined ? { maxBytes: this.#o.maxBundleBytes } : {}),
        })
        if (ac.signal.aborted) return
        if (!fetched.trustDomain.equals(TrustDomain.fromString(rel.trustDomain))) {
          throw new IdentityError('ERR_BUNDLE_INVALID', 'fetched bundle belongs to another trust domain')
        }
        if (stored && fetched.sequenceNumber !== undefined && stored.sequenceNumber !== undefined && fetched.sequenceNumber < stored.sequenceNumber) {
          // A rollback (a replayed or stale document) would bring back authorities the partner has retired: the stored
          // bundle stays. Only an operator can go back (`warrant bundle set`, which does not pass through here).
          this.#rollbacks.inc({ relationship: rel.trustDomain })
          log.warn(
            { sequence: fetched.sequenceNumber, stored_sequence: stored.sequenceNumber },
            'Bundle endpoint served an older spiffe_sequence; keeping the stored bundle',
          )
          throw new IdentityError(
            'ERR_BUNDLE_INVALID',
            `bundle endpoint served spiffe_sequence ${fetched.sequenceNumber}, older than the stored ${stored.sequenceNumber}`,
            { details: { sequence: fetched.sequenceNumber, stored_sequence: stored.sequenceNumber } },
          )
        }
        if (!fetched.equals(stored)) {
          await this.#o.federated.put(fetched)
          this.#updates.inc({ relationship: rel.trustDomain })
          log.info({ sequence: fetched.sequenceNumber }, 'Federated bundle updated from bundle endpoint')
        } else {
          log.debug({ sequence: fetched.sequenceNumber }, 'Federated bundle unchanged')
        }
        const now = this.#o.clock.now()
        Object.assign(slot.status, { lastSuccessAt: now, lastError: '', lastErrorCode: '', consecutiveFailures: 0, lastSequence: fetched.sequenceNumber })
        this.#successes.inc({ relationship: rel.trustDomain })
        this.#lastSuccess.set({ relationship: rel.trustDomain }, Math.floor(now / 1000))
        this.#reschedule(slot, this.#intervalMs(rel, fetched))
      } catch (err) {
        if (ac.signal.aborted) return // stopped or superseded by a changed relationship
        const e = asIdentityError(err)
        result = e
        slot.status.lastError = e.message
        slot.status.lastErrorCode = e.code
        slot.status.consecutiveFailures++
        this.#failures.inc({ relationship: rel.trustDomain, error_code: e.code })
        const interval = this.#intervalMs(rel, stored)
        const backoff = Math.min(interval, INITIAL_BACKOFF_MS * 2 ** Math.min(slot.status.consecutiveFailures - 1, 30))
        const delay = Math.max(1000, Math.round(backoff * (0.8 + 0.2 * this.#random())))
        log.warn(
          { [F.ERROR_CODE]: e.code, [F.ERR]: describe(e), failures: slot.status.consecutiveFailures, retry_in_ms: delay },
          'Federated bundle refresh failed; keeping the previous bundle',
        )
        this.#reschedule(slot, delay)
      } finally {
        if (slot.abort === ac) slot.abort = undefined
      }
    })()
    const running = p.finally(() => {
      if (slot.running === running) slot.running = undefined
    })
    slot.running = running
    return running.then(() => result)
  }

  #reschedule(slot: Slot, delayMs: number): void {
    if (this.#started && this.#slots.get(slot.rel.trustDomain) === slot) this.#schedule(slot, delayMs)
    else slot.status.nextAttemptAt = 0
  }

  #intervalMs(rel: FederationRelationship, bundle: SpiffeBundle | undefined): number {
    const s = rel.refreshHintSeconds || bundle?.refreshHintSeconds || DEFAULT_REFRESH_HINT_SECONDS
    return Math.min(MAX_REFRESH_SECONDS, Math.max(MIN_REFRESH_SECONDS, s)) * 1000
  }

  async #stored(td: string): Promise<SpiffeBundle | undefined> {
    try {
      const rec = await this.#o.federated.get(td)
      return SpiffeBundle.parse(TrustDomain.fromString(td), rec.document)
    } catch (err) {
      if (err instanceof IdentityError && err.code === 'ERR_BUNDLE_NOT_FOUND') return undefined
      throw err
    }
  }

  async #profile(rel: FederationRelationship, stored: SpiffeBundle | undefined): Promise<FetchBundleOptions['profile']> {
    if (rel.profile === 'https_web') return { kind: 'https_web', ca: rel.webCaFile ? this.#o.readText(rel.webCaFile) : undefined }
    const endpointSpiffeId = SpiffeId.fromString(rel.endpointSpiffeId)
    const endpointTd = endpointSpiffeId.trustDomain
    // The endpoint's SVID is checked against the last stored bundle of its trust
    // domain: the bootstrap bundle (`warrant bundle set`) first, then each fetched one.
    const trust = endpointTd.name === rel.trustDomain ? stored : await this.#stored(endpointTd.name)
    if (!trust || trust.x509Authorities.length === 0) {
      throw new IdentityError('ERR_NOT_CONFIGURED', `no bundle for "${endpointTd.name}" to authenticate the bundle endpoint: set a bootstrap bundle`)
    }
    return { kind: 'https_spiffe', endpointSpiffeId, trustBundle: trust.x509Bundle() }
  }
}

function emptyStatus(trustDomain: string): RefreshStatus {
  return {
    trustDomain,
    lastAttemptAt: 0,
    lastSuccessAt: 0,
    lastError: '',
    lastErrorCode: '',
    consecutiveFailures: 0,
    nextAttemptAt: 0,
    lastSequence: undefined,
  }
}

function asIdentityError(err: unknown): IdentityError {
  if (err instanceof IdentityError) return err
  return new IdentityError('ERR_INTERNAL', 'federated bundle refresh failed', { cause: err })
}

function describe(err: unknown): Record<string, unknown> | string {
  if (err instanceof IdentityError) {
    const out: Record<string, unknown> = { code: err.code, message: err.message }
    if (err.cause instanceof Error) out.cause = `${err.cause.name}: ${err.cause.message}`
    return out
  }
  if (err instanceof Error) return { type: err.name, message: err.message }
  return String(err)
}
