import type * as grpc from '@grpc/grpc-js'
import { status as Status } from '@grpc/grpc-js'
import { fromStruct } from './struct.js'
import { nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { BundleSet } from '../spiffe/bundle/bundle-set.js'
import { JwtSvid } from '../spiffe/jwt-svid/jwt-svid.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { resolveWorkloadApiTarget } from './address.js'
import { abortError, Backoff, delay, type BackoffOptions } from './backoff.js'
import { fromWorkloadApiError, isRetryable } from './errors.js'
import { securityHeader, workloadStub, type JwtSvidResponseMsg, type ValidateJwtSvidResponseMsg, type WorkloadStub } from './wire.js'
import { parseJwtBundles, parseX509Bundles, parseX509Context, type X509Context } from './x509-context.js'

export interface WorkloadApiClientOptions {
  /**
   * The Workload API address: `unix:///path`, `unix:/path`, `tcp://IP:port`
   * or an absolute socket path. Default: SPIFFE_ENDPOINT_SOCKET from `env`.
   */
  socketPath?: string
  /** Where SPIFFE_ENDPOINT_SOCKET is read when `socketPath` is absent. Default `process.env`. */
  env?: NodeJS.ProcessEnv
  /** Delays between a watch's reconnection attempts. */
  backoff?: BackoffOptions
  /** Deadline of each unary call and one-shot fetch when the caller gives none. Default 10 s. */
  timeoutMs?: number
  log?: Logger
}

/** Options of one call: abort it with `signal`; `timeoutMs` overrides the client's default deadline. */
export interface CallOptions {
  signal?: AbortSignal
  timeoutMs?: number
}

/** Receives a watch's updates (each the full state) and its errors; the watch retries what the spec says to retry. */
export interface Watcher<T> {
  onUpdate(value: T): void
  onError?(err: IdentityError): void
}

/** The claims ValidateJWTSVID returned and the token parsed (the agent verified it). */
export interface ValidatedJwtSvid {
  svid: JwtSvid
  claims: Record<string, unknown>
}

/**
 * A client of the SPIFFE Workload API (go-spiffe's `workloadapi.Client`):
 * one gRPC channel over the agent's socket, every call with the
 * `workload.spiffe.io: true` header, failures as IdentityErrors (code from
 * the agent's `x-error-code` trailer, else from the status).
 *
 * Watches (`watchX509Context`, `watchJwtBundles`, `watchX509Bundles`) run until
 * their signal aborts: after a failure they report it to `onError` and
 * reconnect with backoff, except after InvalidArgument or Unimplemented, which
 * end the watch by rejecting. A malformed message is reported and skipped.
 */
export class WorkloadApiClient {
  readonly target: string
  readonly #stub: WorkloadStub
  readonly #backoff: BackoffOptions
  readonly #timeoutMs: number
  readonly #log: Logger
  #closed = false

  constructor(opts: WorkloadApiClientOptions = {}) {
    this.target = resolveWorkloadApiTarget(opts.socketPath, opts.env)
    this.#backoff = opts.backoff ?? {}
    new Backoff(this.#backoff) // validates the options now
    this.#timeoutMs = opts.timeoutMs ?? 10_000
    this.#log = (opts.log ?? nullLogger).child({ subsystem: 'workload_api_client' })
    this.#stub = workloadStub(this.target, {
      'grpc.initial_reconnect_backoff_ms': 100,
      'grpc.max_reconnect_backoff_ms': 5000,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
    })
  }

  /** Closes the channel; calls in flight fail, watches end. */
  close(): void {
    this.#closed = true
    this.#stub.close()
  }

  /** The first FetchX509SVID message: the caller's SVIDs and bundles. */
  async fetchX509Context(opts: CallOptions = {}): Promise<X509Context> {
    return this.#first('FetchX509SVID', parseX509Context, opts)
  }

  /** The X.509 bundles (FetchX509Bundles), by trust domain. */
  async fetchX509Bundles(opts: CallOptions = {}): Promise<BundleSet> {
    return this.#first('FetchX509Bundles', parseX509Bundles, opts)
  }

  /** The JWT bundles (FetchJWTBundles), by trust domain. */
  async fetchJwtBundles(opts: CallOptions = {}): Promise<BundleSet> {
    return this.#first('FetchJWTBundles', parseJwtBundles, opts)
  }

  watchX509Context(watcher: Watcher<X509Context>, opts: { signal: AbortSignal }): Promise<void> {
    return this.#watch('FetchX509SVID', parseX509Context, watcher, opts.signal)
  }

  watchX509Bundles(watcher: Watcher<BundleSet>, opts: { signal: AbortSignal }): Promise<void> {
    return this.#watch('FetchX509Bundles', parseX509Bundles, watcher, opts.signal)
  }

  watchJwtBundles(watcher: Watcher<BundleSet>, opts: { signal: AbortSignal }): Promise<void> {
    return this.#watch('FetchJWTBundles', parseJwtBundles, watcher, opts.signal)
  }

  /**
   * A JWT-SVID for `audience` (one or more): of `spiffeId` when given, else
   * the default (first) identity. The token is parsed without verification
   * (it came from the agent) but its audience is checked.
   */
  async fetchJwtSvid(req: { audience: string | readonly string[]; spiffeId?: SpiffeId | string }, opts: CallOptions = {}): Promise<JwtSvid> {
    const svids = await this.fetchJwtSvids(req, opts)
    return svids[0]!
  }

  /** Every JWT-SVID the caller is entitled to for `audience` (or only `spiffeId`'s). */
  async fetchJwtSvids(req: { audience: string | readonly string[]; spiffeId?: SpiffeId | string }, opts: CallOptions = {}): Promise<JwtSvid[]> {
    const audience = typeof req.audience === 'string' ? [req.audience] : [...req.audience]
    if (audience.length === 0 || audience.some((a) => typeof a !== 'string' || a === '')) throw new TypeError('audience must be one or more non-empty strings')
    const wanted = req.spiffeId === undefined ? undefined : typeof req.spiffeId === 'string' ? SpiffeId.fromString(req.spiffeId) : req.spiffeId
    const res = await this.#unary<JwtSvidResponseMsg>(
      'FetchJWTSVID',
      (md, co, cb) => this.#stub.FetchJWTSVID({ audience, ...(wanted ? { spiffe_id: wanted.toString() } : {}) }, md, co, cb),
      opts,
    )
    if (!res.svids || res.svids.length === 0) throw new IdentityError('ERR_JWT_SVID_INVALID', 'workloadapi: FetchJWTSVID returned no JWT-SVIDs')
    return res.svids.map((s) => {
      const svid = JwtSvid.parseInsecure(s.svid, audience, { hint: s.hint ?? '' })
      if (svid.id.toString() !== s.spiffe_id || (wanted && !svid.id.equals(wanted))) {
        throw new IdentityError('ERR_JWT_SVID_INVALID', 'workloadapi: JWT-SVID subject differs from the announced SPIFFE ID')
      }
      return svid
    })
  }

  /**
   * Asks the agent to validate `token` for `audience` (ValidateJWTSVID). An
   * invalid token is refused by the agent (InvalidArgument → ERR_INVALID_ARGUMENT,
   * or the agent's own code from its trailer).
   */
  async validateJwtSvid(token: string, audience: string, opts: CallOptions = {}): Promise<ValidatedJwtSvid> {
    if (typeof token !== 'string' || token === '') throw new TypeError('token must be a non-empty string')
    if (typeof audience !== 'string' || audience === '') throw new TypeError('audience must be a non-empty string')
    const res = await this.#unary<ValidateJwtSvidResponseMsg>(
      'ValidateJWTSVID',
      (md, co, cb) => this.#stub.ValidateJWTSVID({ audience, svid: token }, md, co, cb),
      opts,
    )
    const svid = JwtSvid.parseInsecure(token, audience)
    if (svid.id.toString() !== res.spiffe_id) throw new IdentityError('ERR_JWT_SVID_INVALID', 'workloadapi: validated SPIFFE ID differs from the token subject')
    return { svid, claims: fromStruct(res.claims) }
  }

  #deadline(opts: CallOptions): grpc.CallOptions {
    return { deadline: Date.now() + (opts.timeoutMs ?? this.#timeoutMs) }
  }

  #unary<T>(
    method: string,
    call: (md: grpc.Metadata, co: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: T) => void) => grpc.ClientUnaryCall,
    opts: CallOptions,
  ): Promise<T> {
    const signal = opts.signal
    if (signal?.aborted) return Promise.reject(abortError(signal))
    return new Promise<T>((resolve, reject) => {
      const onAbort = () => c.cancel()
      const c = call(securityHeader(), this.#deadline(opts), (err, res) => {
        signal?.removeEventListener('abort', onAbort)
        if (err) reject(signal?.aborted ? abortError(signal) : fromWorkloadApiError(err, method))
        else resolve(res!)
      })
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  #open<M>(method: 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles', co: grpc.CallOptions): grpc.ClientReadableStream<M> {
    if (this.#closed) throw new IdentityError('ERR_UNAVAILABLE', 'workloadapi: client is closed')
    return this.#stub[method]({}, securityHeader(), co) as unknown as grpc.ClientReadableStream<M>
  }

  /** Opens a stream, parses its first message, cancels it. */
  #first<M, T>(method: 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles', parse: (m: M) => T, opts: CallOptions): Promise<T> {
    const signal = opts.signal
    if (signal?.aborted) return Promise.reject(abortError(signal))
    return new Promise<T>((resolve, reject) => {
      let done = false
      const call = this.#open<M>(method, this.#deadline(opts))
      const finish = (err: unknown, v?: T) => {
        if (done) return
        done = true
        signal?.removeEventListener('abort', onAbort)
        call.cancel()
        if (err === undefined) resolve(v as T)
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the call's own error, passed on
        else reject(err)
      }
      const onAbort = () => finish(abortError(signal!))
      signal?.addEventListener('abort', onAbort, { once: true })
      call.on('data', (m: M) => {
        try {
          finish(undefined, parse(m))
        } catch (err) {
          finish(err)
        }
      })
      call.on('error', (err: grpc.ServiceError) => finish(fromWorkloadApiError(err, method)))
      call.on('end', () => finish(new IdentityError('ERR_UNAVAILABLE', `workloadapi: ${method} stream ended without a message`)))
    })
  }

  async #watch<M, T>(
    method: 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles',
    parse: (m: M) => T,
    watcher: Watcher<T>,
    signal: AbortSignal,
  ): Promise<void> {
    if (!(signal instanceof AbortSignal)) throw new TypeError('a watch needs an AbortSignal to end it')
    const backoff = new Backoff(this.#backoff)
    const report = (err: IdentityError) => {
      try {
        watcher.onError?.(err)
      } catch (cause) {
        this.#log.warn({ method, err: String(cause) }, 'Watcher onError threw')
      }
    }
    while (!signal.aborted && !this.#closed) {
      try {
        await this.#streamOnce(method, parse, watcher, signal, backoff, report)
        if (signal.aborted || this.#closed) return
        report(new IdentityError('ERR_UNAVAILABLE', `workloadapi: ${method} stream ended`, { details: { grpc_code: Status.OK } }))
      } catch (err) {
        if (signal.aborted || this.#closed) return
        const e = fromWorkloadApiError(err, method)
        this.#log.debug({ method, error_code: e.code }, 'Workload API watch failed')
        report(e)
        if (!isRetryable(e)) throw e
      }
      try {
        await delay(backoff.next(), signal)
      } catch {
        return
      }
    }
  }

  /** One stream: resolves when it ends, rejects with its error; parse failures are reported and skipped. */
  #streamOnce<M, T>(
    method: 'FetchX509SVID' | 'FetchX509Bundles' | 'FetchJWTBundles',
    parse: (m: M) => T,
    watcher: Watcher<T>,
    signal: AbortSignal,
    backoff: Backoff,
    report: (err: IdentityError) => void,
  ): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const call = this.#open<M>(method, {})
      let settled = false
      const settle = (err?: unknown) => {
        if (settled) return
        settled = true
        signal.removeEventListener('abort', onAbort)
        if (err === undefined) resolve()
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- the call's own error, passed on
        else reject(err)
      }
      const onAbort = () => {
        call.cancel()
        settle()
      }
      signal.addEventListener('abort', onAbort, { once: true })
      call.on('data', (m: M) => {
        if (settled) return
        let v: T
        try {
          v = parse(m)
        } catch (err) {
          report(err instanceof IdentityError ? err : new IdentityError('ERR_INTERNAL', `workloadapi: ${method} response cannot be parsed`, { cause: err }))
          return
        }
        backoff.reset()
        try {
          watcher.onUpdate(v)
        } catch (cause) {
          this.#log.warn({ method, err: String(cause) }, 'Watcher onUpdate threw')
        }
      })
      call.on('error', (err: grpc.ServiceError) => settle(err))
      call.on('end', () => settle())
    })
  }
}
