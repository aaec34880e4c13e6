/**
 * A token that renews itself (like oauth2's `TokenSource`): `getToken()`
 * answers the current token; at 75% of its lifetime a renewal (the broker's
 * token exchange with the same key) replaces it. A failed renewal is emitted
 * as 'error' (when someone listens; it is logged either way) and retried
 * with backoff (1 s doubling to 30 s) while the token is still valid; a refusal that cannot change on retry (`invalid_grant`,
 * e.g. the renewal limit, a revoked token, an ended task; `invalid_scope`,
 * `invalid_target`, `unauthorized_client`) stops the retries. Once the token
 * has expired, `getToken()` acquires a fresh one (`acquire`, by default a new
 * client_credentials request). Timers are unref'd, so a source never keeps
 * the process alive; the clock and timers are injectable for tests.
 */
import { EventEmitter } from 'node:events'
import { systemClock, type Clock } from '../common/clock.js'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { AccessToken } from './access-token.js'

export interface Timers {
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const unrefTimers: Timers = {
  setTimeout(fn, ms) {
    const t = setTimeout(fn, ms)
    t.unref()
    return t
  },
  clearTimeout(h) {
    clearTimeout(h as NodeJS.Timeout)
  },
}

export interface TokenSourceOptions {
  acquire: () => Promise<AccessToken>
  renew: (current: AccessToken) => Promise<AccessToken>
  /** Fraction of the lifetime after which to renew. Default 0.75. */
  renewAt?: number
  /** A token is not handed out when it has less than this left (ms). Default 5 s. */
  minRemainingMs?: number
  backoff?: { initialMs?: number; maxMs?: number }
  clock?: Clock
  timers?: Timers
  log?: Logger
}

export interface TokenSourceEvents {
  /** A renewal replaced the token. */
  renewed: [token: AccessToken]
  /** A renewal failed (it is retried unless `final`). */
  error: [err: IdentityError, info: { final: boolean; retryInMs?: number }]
  closed: []
}

/** Codes a retry cannot change. */
const FINAL = new Set([
  'ERR_GRANT_INVALID',
  'ERR_TASK_NOT_FOUND',
  'ERR_TASK_ENDED',
  'ERR_DELEGATION_INVALID',
  'ERR_SCOPE_INVALID',
  'ERR_TARGET_INVALID',
  'ERR_CLIENT_UNAUTHORIZED',
  'ERR_TOKEN_REQUEST_INVALID',
  'ERR_GRANT_TYPE_UNSUPPORTED',
])

/** When to renew a token: `renewAt` of the way from receipt to expiry. */
export function renewalTime(token: Pick<AccessToken, 'receivedAt' | 'expiresAt'>, renewAt = 0.75): number {
  return token.receivedAt + Math.floor((token.expiresAt - token.receivedAt) * renewAt)
}

export class TokenSource extends EventEmitter<TokenSourceEvents> {
  #token: AccessToken
  readonly #o: TokenSourceOptions
  readonly #clock: Clock
  readonly #timers: Timers
  readonly #log: Logger
  readonly #renewAt: number
  readonly #minRemaining: number
  readonly #initialBackoff: number
  readonly #maxBackoff: number
  #backoff: number
  #timer: unknown
  #inflight: Promise<AccessToken> | undefined
  #closed = false
  #renewals = 0

  private constructor(o: TokenSourceOptions, first: AccessToken) {
    super()
    this.#o = o
    this.#token = first
    this.#clock = o.clock ?? systemClock
    this.#timers = o.timers ?? unrefTimers
    this.#log = (o.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'token_source' })
    this.#renewAt = o.renewAt ?? 0.75
    if (!(this.#renewAt > 0 && this.#renewAt < 1)) throw new RangeError('renewAt must be between 0 and 1')
    this.#minRemaining = o.minRemainingMs ?? 5000
    this.#initialBackoff = o.backoff?.initialMs ?? 1000
    this.#maxBackoff = o.backoff?.maxMs ?? 30_000
    this.#backoff = this.#initialBackoff
    this.#schedule()
  }

  /** Acquires the first token and starts the renewal schedule. */
  static async start(o: TokenSourceOptions): Promise<TokenSource> {
    return new TokenSource(o, await o.acquire())
  }

  /** The token as it is now (possibly expired): for inspection. */
  get current(): AccessToken {
    return this.#token
  }

  /** How many renewals succeeded. */
  get renewals(): number {
    return this.#renewals
  }

  /** When the next renewal (or retry) is due (ms since the epoch), or undefined when none is scheduled. */
  nextRenewalAt: number | undefined

  /** A token valid for at least a few more seconds: the current one, or a freshly acquired one after expiry. */
  async getToken(): Promise<AccessToken> {
    if (this.#closed) throw new IdentityError('ERR_UNAVAILABLE', 'broker-client: token source is closed')
    if (this.#token.expiresAt - this.#clock.now() > this.#minRemaining) return this.#token
    if (this.#inflight) return this.#inflight
    // Expired (or about to): a renewal in time was not possible; start over.
    this.#inflight = this.#o.acquire().then(
      (t) => {
        this.#inflight = undefined
        this.#replace(t)
        return t
      },
      (err: unknown) => {
        this.#inflight = undefined
        throw err
      },
    )
    return this.#inflight
  }

  /** Renews now (the scheduled renewal calls this). */
  async renewNow(): Promise<AccessToken> {
    if (this.#closed) throw new IdentityError('ERR_UNAVAILABLE', 'broker-client: token source is closed')
    if (this.#inflight) return this.#inflight
    const old = this.#token
    this.#inflight = this.#o.renew(old).then(
      (t) => {
        this.#inflight = undefined
        this.#renewals++
        this.#backoff = this.#initialBackoff
        this.#replace(t)
        this.#log.debug({ [F.JTI]: t.jti, parent_jti: old.jti }, 'Token renewed')
        this.emit('renewed', t)
        return t
      },
      (err: unknown) => {
        this.#inflight = undefined
        throw err
      },
    )
    return this.#inflight
  }

  #replace(t: AccessToken): void {
    if (this.#closed) return
    this.#token = t
    this.#schedule()
  }

  #schedule(at = renewalTime(this.#token, this.#renewAt)): void {
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer)
    this.#timer = undefined
    this.nextRenewalAt = undefined
    if (this.#closed || at >= this.#token.expiresAt) return
    this.nextRenewalAt = at
    this.#timer = this.#timers.setTimeout(() => this.#fire(), Math.max(0, at - this.#clock.now()))
  }

  #fire(): void {
    this.#timer = undefined
    this.nextRenewalAt = undefined
    if (this.#closed) return
    const token = this.#token
    this.renewNow().catch((e: unknown) => {
      if (this.#closed || this.#token !== token) return
      const err = e instanceof IdentityError ? e : new IdentityError('ERR_INTERNAL', 'broker-client: renewal failed', { cause: e })
      const retryAt = this.#clock.now() + this.#backoff
      const final = FINAL.has(err.code) || retryAt >= token.expiresAt
      this.#log.warn({ [F.ERROR_CODE]: err.code, [F.JTI]: token.jti, final }, 'Token renewal failed')
      if (!final) {
        const retryInMs = this.#backoff
        this.#backoff = Math.min(this.#maxBackoff, this.#backoff * 2)
        this.#schedule(retryAt)
        if (this.listenerCount('error') > 0) this.emit('error', err, { final, retryInMs })
      } else if (this.listenerCount('error') > 0) this.emit('error', err, { final })
    })
  }

  /** Stops renewing (the current token stays valid until it expires or is revoked). */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer !== undefined) this.#timers.clearTimeout(this.#timer)
    this.#timer = undefined
    this.nextRenewalAt = undefined
    this.emit('closed')
    this.removeAllListeners()
  }
}
