import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/index.js'

/** A JWT-SVID as the agent keeps it (times in ms since the epoch). */
export interface CachedJwt {
  token: string
  issuedAt: number
  expiresAt: number
  /** Half its lifetime: from then on a call mints a new one (the old one still serves if that fails). */
  refreshAt: number
}

/** A freshly minted JWT-SVID (times in ms). */
export interface MintedJwt {
  token: string
  issuedAt: number
  expiresAt: number
}

/** The cache key of a JWT-SVID: its subject (SPIFFE ID or instance ID) and its sorted audience. */
export function jwtKey(subject: string, sortedAudience: readonly string[]): string {
  return `${subject}\n${sortedAudience.join('\n')}`
}

export interface JwtSvidCacheOptions {
  clock: Clock
  log: Logger
  /** Tokens kept at most; the least recently used go first. */
  maxSize: number
}

/**
 * The agent's JWT-SVID cache: tokens by subject and audience, least recently
 * used evicted first, refreshed from half their lifetime on, one mint in
 * flight per key, and the cached token served while still valid when a
 * refresh fails.
 */
export class JwtSvidCache {
  readonly #clock: Clock
  readonly #log: Logger
  readonly #max: number
  readonly #tokens = new Map<string, CachedJwt>()
  readonly #inflight = new Map<string, Promise<CachedJwt>>()

  constructor(opts: JwtSvidCacheOptions) {
    if (!(opts.maxSize >= 1)) throw new RangeError('cache sizes must be at least 1')
    this.#clock = opts.clock
    this.#log = opts.log
    this.#max = opts.maxSize
  }

  get size(): number {
    return this.#tokens.size
  }

  /** A cached token not yet due for refresh (marked most recently used), or undefined. */
  fresh(key: string): CachedJwt | undefined {
    const cached = this.#tokens.get(key)
    if (cached === undefined || this.#clock.now() >= cached.refreshAt) return undefined
    this.#tokens.delete(key)
    this.#tokens.set(key, cached)
    return cached
  }

  /**
   * The token for `key`: cached if fresh, else minted by `mint` (callers of
   * the same key share one mint). A minted token is kept unless `keep()`
   * says no (its instance ended meanwhile); `onKept` learns each key kept.
   * When minting fails, a cached token that has not expired is served
   * (logged); otherwise the failure is thrown (ERR_UNAVAILABLE unless typed).
   */
  async get(key: string, mint: () => Promise<MintedJwt>, o: { spiffeId: string; keep?: () => boolean; onKept?: (key: string) => void }): Promise<CachedJwt> {
    const cached = this.#tokens.get(key)
    const hit = this.fresh(key)
    if (hit !== undefined) return hit
    let pending = this.#inflight.get(key)
    if (!pending) {
      pending = mint()
        .then((r) => {
          const j: CachedJwt = { ...r, refreshAt: r.issuedAt + (r.expiresAt - r.issuedAt) / 2 }
          if (o.keep && !o.keep()) return j
          o.onKept?.(key)
          this.#tokens.delete(key)
          this.#tokens.set(key, j)
          while (this.#tokens.size > this.#max) this.#tokens.delete(this.#tokens.keys().next().value!)
          return j
        })
        .finally(() => this.#inflight.delete(key))
      this.#inflight.set(key, pending)
    }
    try {
      return await pending
    } catch (err) {
      if (cached && this.#clock.now() < cached.expiresAt) {
        this.#log.warn({ [F.SPIFFE_ID]: o.spiffeId, [F.ERR]: err }, 'JWT-SVID refresh failed; serving the cached one')
        return cached
      }
      throw err instanceof IdentityError ? err : new IdentityError('ERR_UNAVAILABLE', 'cannot mint JWT-SVID', { cause: err })
    }
  }

  delete(key: string): void {
    this.#tokens.delete(key)
  }

  /** Drops every token of a subject (SPIFFE ID or instance ID); returns how many. */
  deleteSubject(subject: string): number {
    let n = 0
    for (const key of [...this.#tokens.keys()]) {
      if (key.startsWith(`${subject}\n`)) {
        this.#tokens.delete(key)
        n++
      }
    }
    return n
  }
}
