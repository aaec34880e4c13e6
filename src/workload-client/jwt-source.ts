import { EventEmitter } from 'node:events'
import type { Clock } from '../common/clock.js'
import { nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { BundleSet } from '../spiffe/bundle/bundle-set.js'
import type { JwtBundle, JwtBundleSource } from '../spiffe/bundle/jwt-bundle.js'
import type { JwtSvid } from '../spiffe/jwt-svid/jwt-svid.js'
import type { SpiffeId } from '../spiffe/spiffe-id.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import { WorkloadApiClient, type CallOptions, type WorkloadApiClientOptions } from './workload-api-client.js'

export interface JwtSourceOptions extends WorkloadApiClientOptions {
  /** Use this client instead of opening one (the source then does not close it). */
  client?: WorkloadApiClient
  /** Abandons `create`. */
  signal?: AbortSignal
  clock?: Clock
}

export interface JwtSourceEvents {
  /** New JWT bundles arrived. */
  update: [bundles: BundleSet]
  error: [err: IdentityError]
}

/**
 * JWT-SVIDs and JWT bundles from the Workload API (go-spiffe's
 * `workloadapi.JWTSource`, plus a cache): JWT bundles are watched and always
 * current (a `JwtBundleSource` for `validateJwtSvid`); `fetchJwtSvid` caches
 * one token per (audience set, SPIFFE ID) and fetches a new one once half
 * its lifetime has passed, as SPIRE's agent re-mints them. Concurrent
 * requests for the same key share one call.
 */
export class JwtSource extends EventEmitter<JwtSourceEvents> implements JwtBundleSource {
  #bundles: BundleSet
  readonly #client: WorkloadApiClient
  readonly #ownsClient: boolean
  readonly #abort: AbortController
  readonly #watch: Promise<void>
  readonly #clock: Clock
  readonly #log: Logger
  readonly #cache = new Map<string, { svid: JwtSvid; refreshAt: number }>()
  readonly #inflight = new Map<string, Promise<JwtSvid>>()
  #closed = false

  private constructor(
    bundles: BundleSet,
    client: WorkloadApiClient,
    ownsClient: boolean,
    abort: AbortController,
    watching: Promise<void>,
    clock: Clock,
    log: Logger,
  ) {
    super()
    this.#bundles = bundles
    this.#client = client
    this.#ownsClient = ownsClient
    this.#abort = abort
    this.#clock = clock
    this.#log = log
    this.#watch = watching.catch((err: unknown) =>
      this.#report(err instanceof IdentityError ? err : new IdentityError('ERR_INTERNAL', 'workloadapi: JWT bundle watch failed', { cause: err })),
    )
  }

  static async create(opts: JwtSourceOptions = {}): Promise<JwtSource> {
    const client = opts.client ?? new WorkloadApiClient(opts)
    const ownsClient = opts.client === undefined
    const log = (opts.log ?? nullLogger).child({ subsystem: 'jwt_source' })
    const abort = new AbortController()
    let source: JwtSource | undefined
    let latest: BundleSet | undefined
    let lastError: IdentityError | undefined
    let resolveFirst!: () => void
    let rejectFirst!: (err: unknown) => void
    const first = new Promise<void>((res, rej) => {
      resolveFirst = res
      rejectFirst = rej
    })
    const watching = client.watchJwtBundles(
      {
        onUpdate: (b) => {
          if (source) source.#apply(b)
          else {
            latest = b
            resolveFirst()
          }
        },
        onError: (err) => {
          if (source) source.#report(err)
          else lastError = err
        },
      },
      { signal: abort.signal },
    )
    watching.then(
      () => rejectFirst(lastError ?? new IdentityError('ERR_UNAVAILABLE', 'workloadapi: JWT bundle watch ended')),
      (err: unknown) => rejectFirst(err),
    )
    const onAbort = () => rejectFirst(new IdentityError('ERR_UNAVAILABLE', 'workloadapi: no JWT bundles received', { cause: lastError ?? opts.signal?.reason }))
    if (opts.signal?.aborted) onAbort()
    opts.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      await first
    } catch (err) {
      abort.abort()
      await watching.catch(() => {})
      if (ownsClient) client.close()
      throw err
    } finally {
      opts.signal?.removeEventListener('abort', onAbort)
    }
    source = new JwtSource(latest!, client, ownsClient, abort, watching, opts.clock ?? { now: () => Date.now() }, log)
    return source
  }

  /** A JWT-SVID for `audience` (of `spiffeId`, else the default identity): cached until half its lifetime has passed. */
  async fetchJwtSvid(req: { audience: string | readonly string[]; spiffeId?: SpiffeId | string }, opts: CallOptions = {}): Promise<JwtSvid> {
    this.#checkOpen()
    const audience = typeof req.audience === 'string' ? [req.audience] : [...req.audience]
    const key = JSON.stringify([[...new Set(audience)].sort(), req.spiffeId === undefined ? '' : String(req.spiffeId)])
    const hit = this.#cache.get(key)
    if (hit && this.#clock.now() < hit.refreshAt) return hit.svid
    let p = this.#inflight.get(key)
    if (!p) {
      p = this.#client.fetchJwtSvid(req, opts).then(
        (svid) => {
          this.#inflight.delete(key)
          const exp = svid.expiry.getTime()
          const iat = svid.issuedAt?.getTime() ?? this.#clock.now()
          if (!this.#closed) this.#cache.set(key, { svid, refreshAt: iat + (exp - iat) / 2 })
          return svid
        },
        (err: unknown) => {
          this.#inflight.delete(key)
          throw err
        },
      )
      this.#inflight.set(key, p)
    }
    return p
  }

  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
    this.#checkOpen()
    return this.#bundles.getJwtBundleForTrustDomain(td)
  }

  getBundles(): BundleSet {
    this.#checkOpen()
    return this.#bundles
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#cache.clear()
    this.#abort.abort()
    await this.#watch
    if (this.#ownsClient) this.#client.close()
    this.removeAllListeners()
  }

  #apply(b: BundleSet): void {
    if (this.#closed) return
    this.#bundles = b
    this.emit('update', b)
  }

  #report(err: IdentityError): void {
    if (this.#closed) return
    this.#log.warn({ error_code: err.code, err: err.message }, 'JWT bundle watch error')
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }

  #checkOpen(): void {
    if (this.#closed) throw new IdentityError('ERR_UNAVAILABLE', 'workloadapi: JwtSource is closed')
  }
}
