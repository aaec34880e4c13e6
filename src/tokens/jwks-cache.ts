/**
 * The broker's signing keys as a resource server holds them: a JWKS fetched
 * through an injected function (the I/O stays with the caller), cached by
 * `kid`, refetched when a token names a kid not seen yet (at most once per
 * `refetchIntervalSec`, so random kids cannot make us hammer the broker), and
 * refreshed in the background of lookups after `maxAgeSec`. A key that leaves
 * the JWKS stays usable for `overlapSec`, so tokens it signed just before a
 * rotation still verify while the resource server's copy catches up.
 */
import type { JsonWebKey } from 'node:crypto'
import { importJWK, type JWK } from 'jose'
import { IdentityError } from '../errors/index.js'

type VerifyKey = Awaited<ReturnType<typeof importJWK>>

export interface JwksCacheOptions {
  /** Fetches the issuer's JWKS (`{ keys: [...] }`); its errors are wrapped as ERR_UNAVAILABLE. */
  fetchJwks: () => Promise<unknown>
  /** Least time between two fetches caused by unknown kids (default 30 s). */
  refetchIntervalSec?: number
  /** Age after which a lookup refreshes the set (default 300 s). */
  maxAgeSec?: number
  /** How long a key removed from the JWKS is still accepted (default 300 s, the broker's default token lifetime). */
  overlapSec?: number
  /** Most keys kept from one JWKS (default 64); the rest are ignored. */
  maxKeys?: number
  nowSec?: () => number
}

interface Entry {
  readonly jwk: JsonWebKey
  /** Imported keys per algorithm. */
  readonly imported: Map<string, VerifyKey>
  /** Until when a key no longer in the JWKS is accepted; undefined while it is listed. */
  retiredUntil: number | undefined
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k']

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function unknownKid(kid: string): IdentityError {
  return new IdentityError('ERR_ACCESS_TOKEN_INVALID', 'invalid access token', { details: { reason: 'kid_unknown', kid: kid.slice(0, 128) } })
}

export class JwksCache {
  readonly #fetch: () => Promise<unknown>
  readonly #refetchInterval: number
  readonly #maxAge: number
  readonly #overlap: number
  readonly #maxKeys: number
  readonly #now: () => number
  readonly #keys = new Map<string, Entry>()
  #fetchedAt: number | undefined
  #attemptedAt: number | undefined
  #inflight: Promise<void> | undefined

  constructor(opts: JwksCacheOptions) {
    this.#fetch = opts.fetchJwks
    this.#refetchInterval = opts.refetchIntervalSec ?? 30
    this.#maxAge = opts.maxAgeSec ?? 300
    this.#overlap = opts.overlapSec ?? 300
    this.#maxKeys = opts.maxKeys ?? 64
    this.#now = opts.nowSec ?? (() => Math.floor(Date.now() / 1000))
    for (const [name, v] of [
      ['refetchIntervalSec', this.#refetchInterval],
      ['maxAgeSec', this.#maxAge],
      ['overlapSec', this.#overlap],
      ['maxKeys', this.#maxKeys],
    ] as const) {
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`${name} must be a non-negative number`)
    }
  }

  /** The kids currently accepted (listed, or retired within the overlap). */
  kids(): string[] {
    const now = this.#now()
    return [...this.#keys].filter(([, e]) => e.retiredUntil === undefined || e.retiredUntil >= now).map(([k]) => k)
  }

  /**
   * The verification key for `kid` and `alg`. Unknown kids refetch the JWKS
   * (rate-limited); a kid still unknown after that, or a key whose own `alg`
   * differs, or one that cannot serve `alg`, is ERR_ACCESS_TOKEN_INVALID.
   */
  async getKey(kid: string, alg: string): Promise<VerifyKey> {
    const now = this.#now()
    const mayFetch = (): boolean => this.#inflight !== undefined || this.#attemptedAt === undefined || now - this.#attemptedAt >= this.#refetchInterval
    let fetched = false
    if (this.#fetchedAt === undefined || now - this.#fetchedAt >= this.#maxAge) {
      if (mayFetch()) {
        fetched = true
        await this.#refresh(now, this.#fetchedAt === undefined)
      } else if (this.#fetchedAt === undefined) {
        throw new IdentityError('ERR_UNAVAILABLE', 'issuer keys unavailable', { details: { reason: 'jwks_unavailable' } })
      }
    }
    let entry = this.#live(kid, now)
    if (entry === undefined && !fetched && mayFetch()) {
      await this.#refresh(now, true)
      entry = this.#live(kid, now)
    }
    if (entry === undefined) throw unknownKid(kid)
    const cached = entry.imported.get(alg)
    if (cached !== undefined) return cached
    const keyAlg = entry.jwk['alg' as keyof JsonWebKey]
    if (keyAlg !== undefined && keyAlg !== alg) {
      throw new IdentityError('ERR_ACCESS_TOKEN_INVALID', 'invalid access token', { details: { reason: 'alg_key_mismatch', kid, alg } })
    }
    let key: VerifyKey
    try {
      key = await importJWK({ ...(entry.jwk as JWK), ext: true }, alg)
    } catch (err) {
      throw new IdentityError('ERR_ACCESS_TOKEN_INVALID', 'invalid access token', { cause: err, details: { reason: 'alg_key_mismatch', kid, alg } })
    }
    entry.imported.set(alg, key)
    return key
  }

  /** Fetches the JWKS now (coalescing with a fetch under way). */
  async refresh(): Promise<void> {
    await this.#refresh(this.#now(), true)
  }

  #live(kid: string, now: number): Entry | undefined {
    const e = this.#keys.get(kid)
    if (e === undefined) return undefined
    if (e.retiredUntil !== undefined && e.retiredUntil < now) {
      this.#keys.delete(kid)
      return undefined
    }
    return e
  }

  /** `required`: a failure throws (nothing usable otherwise); else a failed background refresh keeps the keys we have. */
  async #refresh(now: number, required: boolean): Promise<void> {
    this.#inflight ??= this.#doRefresh(now).finally(() => {
      this.#inflight = undefined
    })
    try {
      await this.#inflight
    } catch (err) {
      if (required) throw err
    }
  }

  async #doRefresh(now: number): Promise<void> {
    this.#attemptedAt = now
    let doc: unknown
    try {
      doc = await this.#fetch()
    } catch (err) {
      throw new IdentityError('ERR_UNAVAILABLE', 'issuer keys unavailable', { cause: err, details: { reason: 'jwks_fetch_failed' } })
    }
    if (!isRecord(doc) || !Array.isArray(doc['keys'])) {
      throw new IdentityError('ERR_UNAVAILABLE', 'issuer keys unavailable', { details: { reason: 'jwks_invalid' } })
    }
    const listed = new Map<string, JsonWebKey>()
    for (const k of doc['keys'] as unknown[]) {
      if (listed.size >= this.#maxKeys) break
      if (!isRecord(k) || typeof k['kid'] !== 'string' || k['kid'].length === 0 || typeof k['kty'] !== 'string') continue
      if (k['use'] !== undefined && k['use'] !== 'sig') continue
      if (PRIVATE_MEMBERS.some((m) => m in k)) continue
      if (listed.has(k['kid'])) continue
      listed.set(k['kid'], k)
    }
    for (const [kid, e] of this.#keys) {
      const jwk = listed.get(kid)
      if (jwk === undefined) {
        e.retiredUntil ??= now + this.#overlap
      } else if (sameKey(jwk, e.jwk)) {
        e.retiredUntil = undefined
      } else {
        // the same kid now names another key: the new one replaces it at once
        this.#keys.delete(kid)
      }
    }
    for (const [kid, jwk] of listed) {
      if (!this.#keys.has(kid)) this.#keys.set(kid, { jwk, imported: new Map(), retiredUntil: undefined })
    }
    for (const [kid, e] of this.#keys) if (e.retiredUntil !== undefined && e.retiredUntil < now) this.#keys.delete(kid)
    this.#fetchedAt = now
  }
}

function sameKey(a: JsonWebKey, b: JsonWebKey): boolean {
  const fields = ['kty', 'crv', 'x', 'y', 'n', 'e', 'alg'] as const
  return fields.every((f) => a[f as keyof JsonWebKey] === b[f as keyof JsonWebKey])
}
