import { EventEmitter } from 'node:events'
import type { KeyObject } from 'node:crypto'
import { nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { BundleSet } from '../spiffe/bundle/bundle-set.js'
import type { X509Bundle, X509BundleSource } from '../spiffe/bundle/x509-bundle.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { WorkloadApiClient, type WorkloadApiClientOptions } from './workload-api-client.js'
import type { X509Context } from './x509-context.js'

/** The SVID a source holds, when the workload has several: default the first (the Workload API's default identity). */
export type SvidPicker = (svids: readonly X509Svid[]) => X509Svid

export interface X509SourceOptions extends WorkloadApiClientOptions {
  /** Use this client instead of opening one (the source then does not close it). */
  client?: WorkloadApiClient
  picker?: SvidPicker
  /** Abandons `create` (it rejects with the last watch error as cause); has no effect once created. */
  signal?: AbortSignal
}

export interface X509SourceEvents {
  /** A new X.509 context arrived (rotation, bundle change); the source already holds it. */
  update: [ctx: X509Context]
  /** A watch error (the watch retries unless the error is final; the source keeps its last context). */
  error: [err: IdentityError]
}

/**
 * The workload's current X.509 identity and trust from the Workload API, kept
 * up to date (go-spiffe's `workloadapi.X509Source`): `create` waits for the
 * first context, then a watch replaces it on every update (rotation, bundle
 * or federation changes) and emits 'update'. `getX509Svid()` is always the
 * current SVID (chain and private key as a KeyObject); the source is an
 * `X509BundleSource` over the local and federated bundles, each looked up
 * by its own trust domain.
 *
 * 'error' is emitted only when someone listens (a watch error is otherwise
 * logged); a final error (InvalidArgument, Unimplemented) ends the watch and
 * the source keeps serving its last context until `close()`.
 */
export class X509Source extends EventEmitter<X509SourceEvents> implements X509BundleSource {
  #ctx: X509Context
  readonly #client: WorkloadApiClient
  readonly #ownsClient: boolean
  readonly #picker: SvidPicker
  readonly #abort: AbortController
  readonly #watch: Promise<void>
  readonly #log: Logger
  #closed = false

  private constructor(
    ctx: X509Context,
    client: WorkloadApiClient,
    ownsClient: boolean,
    picker: SvidPicker,
    abort: AbortController,
    watch: (src: X509Source) => Promise<void>,
    log: Logger,
  ) {
    super()
    this.#ctx = ctx
    this.#client = client
    this.#ownsClient = ownsClient
    this.#picker = picker
    this.#abort = abort
    this.#log = log
    this.#watch = watch(this)
  }

  /** Connects, waits for the first X.509 context (retrying what the spec says to retry), and starts following updates. */
  static async create(opts: X509SourceOptions = {}): Promise<X509Source> {
    const client = opts.client ?? new WorkloadApiClient(opts)
    const ownsClient = opts.client === undefined
    const picker: SvidPicker = opts.picker ?? ((svids) => svids[0]!)
    const log = (opts.log ?? nullLogger).child({ subsystem: 'x509_source' })
    const abort = new AbortController()
    let lastError: IdentityError | undefined
    let latest: X509Context | undefined
    let source: X509Source | undefined
    let resolveFirst!: (ctx: X509Context) => void
    let rejectFirst!: (err: unknown) => void
    const first = new Promise<X509Context>((res, rej) => {
      resolveFirst = res
      rejectFirst = rej
    })
    const watching = client.watchX509Context(
      {
        onUpdate: (ctx) => {
          try {
            picker(ctx.svids)
          } catch (cause) {
            const err = new IdentityError('ERR_X509_SVID_INVALID', 'workloadapi: the SVID picker refused the update', { cause })
            if (source) source.#report(err)
            else lastError = err
            return
          }
          if (source) source.#apply(ctx)
          else {
            latest = ctx
            resolveFirst(ctx)
          }
        },
        onError: (err) => {
          if (source) source.#report(err)
          else {
            lastError = err
            log.debug({ error_code: err.code }, 'Waiting for the first X.509 context')
          }
        },
      },
      { signal: abort.signal },
    )
    // A final error before the first context fails `create`.
    watching.then(
      () => rejectFirst(lastError ?? new IdentityError('ERR_UNAVAILABLE', 'workloadapi: X.509 context watch ended')),
      (err: unknown) => rejectFirst(err),
    )
    const onAbort = () =>
      rejectFirst(new IdentityError('ERR_UNAVAILABLE', 'workloadapi: no X.509 context received', { cause: lastError ?? opts.signal?.reason }))
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
    source = new X509Source(
      latest!,
      client,
      ownsClient,
      picker,
      abort,
      () =>
        watching.then(
          () => undefined,
          (err: unknown) => {
            if (source) source.#final(err)
          },
        ),
      log,
    )
    log.info({ spiffe_id: source.getX509Svid().id.toString() }, 'X.509 source ready')
    return source
  }

  /** The current X.509-SVID (chain leaf first, private key). */
  getX509Svid(): X509Svid {
    this.#checkOpen()
    return this.#picker(this.#ctx.svids)
  }

  /** The current private key of the SVID (a KeyObject; never exported by this library). */
  get privateKey(): KeyObject {
    return this.getX509Svid().privateKey!
  }

  /** Every SVID of the current context. */
  getX509Svids(): readonly X509Svid[] {
    this.#checkOpen()
    return this.#ctx.svids
  }

  /** The bundles of the current context (local and federated), by trust domain. */
  getBundles(): BundleSet {
    this.#checkOpen()
    return this.#ctx.bundles
  }

  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
    this.#checkOpen()
    return this.#ctx.bundles.getX509BundleForTrustDomain(td)
  }

  /** The whole current context. */
  get context(): X509Context {
    this.#checkOpen()
    return this.#ctx
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Stops following updates and closes the client it opened. Getters throw afterwards. */
  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    this.#abort.abort()
    await this.#watch
    if (this.#ownsClient) this.#client.close()
    this.removeAllListeners()
  }

  #apply(ctx: X509Context): void {
    if (this.#closed) return
    this.#ctx = ctx
    const svid = this.#picker(ctx.svids)
    this.#log.debug({ spiffe_id: svid.id.toString(), not_after: svid.notAfter.toISOString() }, 'X.509 context updated')
    this.emit('update', ctx)
  }

  #report(err: IdentityError): void {
    if (this.#closed) return
    this.#log.warn({ error_code: err.code, err: err.message }, 'X.509 context watch error')
    if (this.listenerCount('error') > 0) this.emit('error', err)
  }

  #final(err: unknown): void {
    this.#report(err instanceof IdentityError ? err : new IdentityError('ERR_INTERNAL', 'workloadapi: X.509 context watch failed', { cause: err }))
  }

  #checkOpen(): void {
    if (this.#closed) throw new IdentityError('ERR_UNAVAILABLE', 'workloadapi: X509Source is closed')
  }
}
