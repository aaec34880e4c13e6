import type { SpiffeId } from '../spiffe-id.js'
import { checkAudience, checkTimes, expectedAudience, parseJwtSvidToken, timeOptions, type ParsedJwtSvid } from './parse.js'

/** Options of `JwtSvid.parseInsecure`. */
export interface ParseInsecureOptions {
  /** When set, exp / nbf / iat are checked against this time (with `leewaySeconds`); otherwise times are not checked. */
  now?: Date
  /** Clock-skew allowance in seconds when `now` is set. Default 30. */
  leewaySeconds?: number
  /** The Workload API hint that came with the token. Default ''. */
  hint?: string
}

const INSPECT = Symbol.for('nodejs.util.inspect.custom')

type JwtSvidFields = Pick<ParsedJwtSvid, 'token' | 'id' | 'audience' | 'exp' | 'iat' | 'claims' | 'kid'>
let construct: (parsed: JwtSvidFields, hint: string) => JwtSvid

/** @internal For validateJwtSvid, after the signature was verified. Not re-exported by the package index. */
export function jwtSvidFromVerified(parsed: JwtSvidFields, hint: string): JwtSvid {
  return construct(parsed, hint)
}

/**
 * A JWT-SVID: a parsed (and, unless made by `parseInsecure`, verified) token.
 *
 * The serialized token is reachable only through the `token` getter:
 * `toString()`, `toJSON()` and `util.inspect` print the SPIFFE ID and kid,
 * never the token, so logging the object cannot leak the bearer credential.
 */
export class JwtSvid {
  /** The SPIFFE ID in `sub`. */
  readonly id: SpiffeId
  /** The `aud` claim, always as a list. */
  readonly audience: readonly string[]
  /** The `exp` claim. */
  readonly expiry: Date
  /** The `iat` claim, when present. */
  readonly issuedAt: Date | undefined
  /** Every claim of the payload (frozen). */
  readonly claims: Readonly<Record<string, unknown>>
  /** The `kid` header ('' only for a token without one, which only `parseInsecure` accepts). */
  readonly kid: string
  /** The Workload API hint ('' when none). */
  readonly hint: string
  readonly #token: string
  readonly #fields: JwtSvidFields

  private constructor(parsed: JwtSvidFields, hint: string) {
    this.id = parsed.id
    this.audience = parsed.audience
    this.expiry = new Date(parsed.exp * 1000)
    this.issuedAt = parsed.iat === undefined ? undefined : new Date(parsed.iat * 1000)
    this.claims = parsed.claims
    this.kid = parsed.kid
    this.hint = hint
    this.#token = parsed.token
    this.#fields = parsed
  }

  static {
    construct = (parsed, hint) => new JwtSvid(parsed, hint)
  }

  /**
   * Parses a JWT-SVID WITHOUT verifying its signature: use it only for a token
   * that came from a trusted source (the Workload API). Applies the same
   * structural rules as `validateJwtSvid` (compact JWS, allowed headers and
   * `alg`, valid `sub`, `aud` and `exp` present; `kid` may be absent). When
   * `audience` is given, the token must name at least one of it
   * (ERR_JWT_AUDIENCE_MISMATCH); when `opts.now` is given, times are checked.
   */
  static parseInsecure(token: string, audience?: string | readonly string[], opts: ParseInsecureOptions = {}): JwtSvid {
    const expected = audience === undefined ? undefined : expectedAudience(audience)
    const time = opts.now === undefined ? undefined : timeOptions(opts)
    const hint = opts.hint ?? ''
    if (typeof hint !== 'string') throw new TypeError('hint must be a string')
    const parsed = parseJwtSvidToken(token)
    if (time) checkTimes(parsed, time.nowMs, time.leeway)
    if (expected) checkAudience(parsed, expected)
    return new JwtSvid(parsed, hint)
  }

  /** The serialized token (compact JWS), exactly as received. Treat it as a secret. */
  get token(): string {
    return this.#token
  }

  /** Same as `token` (go-spiffe's `Marshal`). */
  marshal(): string {
    return this.#token
  }

  /** A copy carrying a Workload API hint. */
  withHint(hint: string): JwtSvid {
    if (typeof hint !== 'string') throw new TypeError('hint must be a string')
    return new JwtSvid(this.#fields, hint)
  }

  toString(): string {
    return `JwtSvid(${this.id.toString()}, kid=${this.kid})`
  }

  /** Never includes the token. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id.toString(),
      kid: this.kid,
      audience: [...this.audience],
      expiry: this.expiry.toISOString(),
      ...(this.issuedAt ? { issuedAt: this.issuedAt.toISOString() } : {}),
      ...(this.hint ? { hint: this.hint } : {}),
    }
  }

  [INSPECT](): string {
    return this.toString()
  }
}
