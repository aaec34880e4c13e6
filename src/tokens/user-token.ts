/**
 * Verification of a user's access token from a trusted external issuer (an
 * IdP), presented to the broker as the subject of a Txn-Token request on the
 * user's behalf. Pure: the keys come from a JwksCache per issuer. Accepts a
 * JWT access token (RFC 9068 `at+jwt`, or `JWT`/absent `typ`) whose `iss` is
 * configured, signed by that issuer's key (asymmetric algorithms only), with
 * `aud` naming the broker, unexpired, with a string `sub`; returns the user,
 * the scopes and the expiry. Every refusal is ERR_GRANT_INVALID with the
 * check in `details.reason`.
 */
import { compactVerify, decodeJwt, decodeProtectedHeader } from 'jose'
import { IdentityError } from '../errors/index.js'
import { ACCESS_TOKEN_ALGORITHMS, DEFAULT_CLOCK_SKEW_SEC } from './access-token.js'
import type { JwksCache } from './jwks-cache.js'

export interface UserToken {
  readonly iss: string
  readonly sub: string
  readonly scopes: readonly string[]
  readonly exp: number
}

export interface UserTokenIssuers {
  /** Trusted issuers by `iss`, each with its keys. */
  readonly issuers: ReadonlyMap<string, JwksCache>
  /** `aud` must contain this (the broker's issuer URL). */
  readonly audience: string
  readonly clockSkewSec?: number
}

const TYPS = new Set(['at+jwt', 'application/at+jwt', 'jwt'])

function refuse(reason: string): IdentityError {
  return new IdentityError('ERR_GRANT_INVALID', 'invalid subject_token', { details: { reason } })
}

/** The `iss` of a JWT, unverified (for routing only), or undefined. */
export function unverifiedIssuer(token: string): string | undefined {
  try {
    const iss = decodeJwt(token).iss
    return typeof iss === 'string' ? iss : undefined
  } catch {
    return undefined
  }
}

export async function verifyUserToken(token: string, trust: UserTokenIssuers, nowSec: number): Promise<UserToken> {
  const skew = trust.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC
  let header: ReturnType<typeof decodeProtectedHeader>
  try {
    header = decodeProtectedHeader(token)
  } catch {
    throw refuse('malformed')
  }
  if (header.typ !== undefined && !TYPS.has(String(header.typ).toLowerCase())) throw refuse('typ')
  const alg = header.alg
  if (typeof alg !== 'string' || !ACCESS_TOKEN_ALGORITHMS.includes(alg)) throw refuse('alg')
  if (typeof header.kid !== 'string' || header.kid.length === 0) throw refuse('kid')
  if (header.jwk !== undefined || header.jku !== undefined || header.x5u !== undefined || header.x5c !== undefined) throw refuse('header_key')
  const iss = unverifiedIssuer(token)
  const keys = iss === undefined ? undefined : trust.issuers.get(iss)
  if (keys === undefined) throw refuse('issuer_untrusted')
  let key: Awaited<ReturnType<JwksCache['getKey']>>
  try {
    key = await keys.getKey(header.kid, alg)
  } catch {
    throw refuse('kid_unknown')
  }
  let c: Record<string, unknown>
  try {
    const r = await compactVerify(token, key, { algorithms: [alg] })
    c = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.payload)) as Record<string, unknown>
  } catch {
    throw refuse('signature')
  }
  if (c === null || typeof c !== 'object' || Array.isArray(c) || c['iss'] !== iss) throw refuse('iss')
  const aud = c['aud']
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : []
  if (!auds.includes(trust.audience)) throw refuse('aud')
  const exp = c['exp']
  if (typeof exp !== 'number' || !Number.isFinite(exp) || nowSec >= exp + skew) throw refuse('expired')
  if (typeof c['nbf'] === 'number' && c['nbf'] > nowSec + skew) throw refuse('not_yet_valid')
  const sub = c['sub']
  if (typeof sub !== 'string' || sub.length === 0 || sub.length > 256) throw refuse('sub')
  const scope = c['scope']
  if (scope !== undefined && typeof scope !== 'string') throw refuse('scope')
  return { iss: iss!, sub, scopes: (scope ?? '').split(' ').filter((s) => s.length > 0), exp }
}
