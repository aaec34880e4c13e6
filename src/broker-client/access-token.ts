/**
 * A token the broker issued, as the client holds it. The serialized token is
 * reachable only through `value`: `toJSON()`, `toString()` and inspection show
 * its `jti`, scopes and expiry, never the token, so logging the object cannot
 * leak the credential.
 */
import { inspect } from 'node:util'
import { decodeJwt } from 'jose'
import { IdentityError } from '../errors/identity-error.js'

export type IssuedTokenType = 'DPoP' | 'Bearer' | 'N_A'

export interface TokenFields {
  /** The `token_type` (RFC 6749 §5.1): 'DPoP' (bound to the client's DPoP key), 'Bearer' (mTLS-bound or unbound), 'N_A' (a delegation grant). */
  tokenType: IssuedTokenType
  /** The `issued_token_type` (RFC 8693 §2.2.1). */
  issuedTokenType: string
  /** Granted scopes. */
  scopes: readonly string[]
  /** When the client received it (ms since the epoch, client clock). */
  receivedAt: number
  /** receivedAt + expires_in (ms, client clock): what renewal is scheduled from. */
  expiresAt: number
}

export class AccessToken implements TokenFields {
  readonly #value: string
  readonly tokenType: IssuedTokenType
  readonly issuedTokenType: string
  readonly scopes: readonly string[]
  readonly receivedAt: number
  readonly expiresAt: number
  /** Unverified claims (the broker verified them; the client only reads `jti`, `sub`, `act`, `cnf`, `task_id`). */
  readonly claims: Readonly<Record<string, unknown>>

  constructor(value: string, f: TokenFields) {
    if (typeof value !== 'string' || value === '') throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'broker-client: empty token')
    this.#value = value
    this.tokenType = f.tokenType
    this.issuedTokenType = f.issuedTokenType
    this.scopes = [...f.scopes]
    this.receivedAt = f.receivedAt
    this.expiresAt = f.expiresAt
    let claims: Record<string, unknown> = {}
    try {
      claims = decodeJwt(value)
    } catch {
      // not a JWT: the client needs no claims
    }
    this.claims = claims
  }

  /** The serialized token (to send, or to store in a 0600 file). */
  get value(): string {
    return this.#value
  }

  get jti(): string | undefined {
    return typeof this.claims.jti === 'string' ? this.claims.jti : undefined
  }

  /** Lifetime the broker granted (ms). */
  get ttlMs(): number {
    return this.expiresAt - this.receivedAt
  }

  /** A delegation grant (to hand to the sub-agent named in `may_act`), not an access token. */
  get isGrant(): boolean {
    return this.tokenType === 'N_A'
  }

  toJSON(): Record<string, unknown> {
    return { jti: this.jti, token_type: this.tokenType, scope: this.scopes.join(' '), expires_at: new Date(this.expiresAt).toISOString() }
  }

  toString(): string {
    return `AccessToken(${this.jti ?? '?'})`
  }

  [inspect.custom](): string {
    return this.toString()
  }
}
