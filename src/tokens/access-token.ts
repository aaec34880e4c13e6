/**
 * Verification of a broker access token (RFC 9068 JWT profile plus warrant's
 * task and delegation claims) by a resource server that holds the broker's
 * JWKS. Pure. Every rejection is ERR_ACCESS_TOKEN_INVALID with
 * `details.reason` naming the check, except a valid token that lacks a scope
 * the route needs, which is ERR_SCOPE_INSUFFICIENT.
 */
import { compactVerify, decodeProtectedHeader } from 'jose'
import { IdentityError } from '../errors/index.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { ACCESS_TOKEN_TYP, type AccessTokenClaims, type ActClaim, type AuthorizationDetail, type ConfirmationClaim } from './claims.js'
import type { JwksCache } from './jwks-cache.js'

/** Asymmetric algorithms accepted for access tokens unless narrowed (the broker signs ES256 by default). */
export const ACCESS_TOKEN_ALGORITHMS: readonly string[] = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512', 'EdDSA', 'Ed25519']
export const DEFAULT_MAX_DELEGATION_DEPTH = 5
export const DEFAULT_CLOCK_SKEW_SEC = 30

const MAX_TOKEN_LENGTH = 16_384
const MAX_STRING = 2048
/** RFC 9068 §4: `at+jwt`, or the full media type. */
const TYPS = new Set([ACCESS_TOKEN_TYP, `application/${ACCESS_TOKEN_TYP}`])
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const B64URL_SHA256 = /^[A-Za-z0-9_-]{43}$/

export interface VerifyAccessTokenOptions {
  /** The broker's issuer URL: `iss` must equal it. */
  issuer: string
  /** This resource server's identifier(s): `aud` must contain one of them. */
  audience?: string | readonly string[]
  keys: JwksCache
  nowSec: number
  /** Tolerance for exp / nbf / iat (default 30 s). */
  clockSkewSec?: number
  /** Scopes the caller needs, all of them (ERR_SCOPE_INSUFFICIENT otherwise). */
  requiredScopes?: readonly string[]
  /** A subset of ACCESS_TOKEN_ALGORITHMS (the default). */
  algorithms?: readonly string[]
  /** Longest delegation chain accepted (default 5). */
  maxDelegationDepth?: number
}

export function invalidToken(reason: string, extra: Record<string, unknown> = {}, cause?: unknown): IdentityError {
  return new IdentityError('ERR_ACCESS_TOKEN_INVALID', 'invalid access token', { details: { reason, ...extra }, ...(cause === undefined ? {} : { cause }) })
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function isBoundedString(v: unknown, max = MAX_STRING): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= max
}

function isNumericDate(v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
}

/**
 * SPIFFE IDs already found valid (a resource server sees the same agents and
 * delegators again and again; parsing one costs ~4 µs, a fifth of the extra
 * cost of a five-hop chain). Only valid IDs are kept, at most 4096.
 */
const VALID_IDS = new Set<string>()

function isSpiffeId(v: unknown): v is string {
  if (!isBoundedString(v)) return false
  if (VALID_IDS.has(v)) return true
  if (!SpiffeId.isValid(v)) return false
  if (VALID_IDS.size >= 4096) VALID_IDS.clear()
  VALID_IDS.add(v)
  return true
}

function checkAlgorithms(list: readonly string[] | undefined): readonly string[] {
  if (list === undefined) return ACCESS_TOKEN_ALGORITHMS
  for (const a of list) if (!ACCESS_TOKEN_ALGORITHMS.includes(a)) throw new TypeError(`access token algorithm not allowed: ${a} (asymmetric algorithms only)`)
  return list
}

/** The scopes of a `scope` claim (RFC 8693 §4.2: space-separated). */
export function scopesOf(claims: Pick<AccessTokenClaims, 'scope'>): string[] {
  return claims.scope.split(' ').filter((s) => s.length > 0)
}

/** Throws ERR_SCOPE_INSUFFICIENT unless every required scope is granted. */
export function requireScopes(claims: AccessTokenClaims, required: readonly string[]): void {
  if (required.length === 0) return
  const granted = new Set(scopesOf(claims))
  const missing = required.filter((s) => !granted.has(s))
  if (missing.length > 0) {
    throw new IdentityError('ERR_SCOPE_INSUFFICIENT', 'insufficient scope', { details: { reason: 'scope', required: [...required], missing, jti: claims.jti } })
  }
}

/**
 * Checks a delegation chain's structure: every hop an object whose `sub` is a
 * SPIFFE ID (and `iss`, when present, a string), no more than `maxDepth` hops.
 * RFC 8693 §4.1: only the outermost actor decides access; the nested ones are
 * the record of who delegated.
 */
function checkAct(act: unknown, maxDepth: number): ActClaim {
  let depth = 0
  for (let a: unknown = act; a !== undefined; a = a['act']) {
    if (++depth > maxDepth) throw invalidToken('act_depth', { max_depth: maxDepth })
    if (!isRecord(a)) throw invalidToken('act')
    if (!isSpiffeId(a['sub'])) throw invalidToken('act_sub')
    if (a['iss'] !== undefined && !isBoundedString(a['iss'])) throw invalidToken('act')
  }
  return act as ActClaim
}

function checkCnf(cnf: unknown): ConfirmationClaim {
  if (!isRecord(cnf)) throw invalidToken('cnf')
  const jkt = cnf['jkt']
  const x5t = cnf['x5t#S256']
  if (jkt === undefined && x5t === undefined) throw invalidToken('cnf')
  if (jkt !== undefined && (typeof jkt !== 'string' || !B64URL_SHA256.test(jkt))) throw invalidToken('cnf')
  if (x5t !== undefined && (typeof x5t !== 'string' || !B64URL_SHA256.test(x5t))) throw invalidToken('cnf')
  return cnf
}

/**
 * Verifies an access token: shape, `typ`, `alg`, `kid`, signature by the
 * issuer's key, then the claims (RFC 9068 §4 order: iss, aud, time, required
 * claims and their types, delegation, binding shape), and finally the scopes.
 * The binding itself (DPoP or mTLS) is checked by verifyResourceRequest.
 */
export async function verifyAccessToken(token: string, opts: VerifyAccessTokenOptions): Promise<AccessTokenClaims> {
  const algorithms = checkAlgorithms(opts.algorithms)
  const skew = opts.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC
  const maxDepth = opts.maxDelegationDepth ?? DEFAULT_MAX_DELEGATION_DEPTH
  const now = opts.nowSec

  if (typeof token !== 'string' || token.length === 0) throw invalidToken('missing')
  if (token.length > MAX_TOKEN_LENGTH) throw invalidToken('too_large')
  if (!COMPACT_JWS.test(token)) throw invalidToken('malformed')
  let header: Record<string, unknown>
  try {
    header = decodeProtectedHeader(token)
  } catch (err) {
    throw invalidToken('malformed', {}, err)
  }
  if (!isRecord(header)) throw invalidToken('malformed')
  if (typeof header['typ'] !== 'string' || !TYPS.has(header['typ'].toLowerCase())) throw invalidToken('typ')
  const alg = header['alg']
  if (typeof alg !== 'string' || !algorithms.includes(alg)) throw invalidToken('alg', { alg: typeof alg === 'string' ? alg.slice(0, 32) : undefined })
  const kid = header['kid']
  if (!isBoundedString(kid, 256)) throw invalidToken('kid')
  if (header['jwk'] !== undefined || header['jku'] !== undefined || header['x5u'] !== undefined || header['x5c'] !== undefined) {
    // keys come from the issuer's JWKS only, never from the token
    throw invalidToken('header_key')
  }

  const key = await opts.keys.getKey(kid, alg)
  let payload: Uint8Array
  try {
    payload = (await compactVerify(token, key, { algorithms: [alg] })).payload
  } catch (err) {
    throw invalidToken('signature', { kid }, err)
  }
  let c: unknown
  try {
    c = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch (err) {
    throw invalidToken('payload', { kid }, err)
  }
  if (!isRecord(c)) throw invalidToken('payload', { kid })

  if (c['iss'] !== opts.issuer) throw invalidToken('iss')
  const aud = c['aud']
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) && aud.length > 0 && aud.every((a) => isBoundedString(a)) ? aud : undefined
  if (auds === undefined) throw invalidToken('aud')
  if (opts.audience !== undefined) {
    const want = typeof opts.audience === 'string' ? [opts.audience] : opts.audience
    if (!auds.some((a) => want.includes(a))) throw invalidToken('aud')
  }
  const { exp, nbf, iat } = c
  if (!isNumericDate(exp)) throw invalidToken('exp')
  if (!isNumericDate(iat)) throw invalidToken('iat')
  if (!isNumericDate(nbf)) throw invalidToken('nbf')
  if (now >= exp + skew) throw invalidToken('expired', { exp, now })
  if (nbf > now + skew) throw invalidToken('not_yet_valid', { nbf, now })
  if (iat > now + skew) throw invalidToken('iat_future', { iat, now })
  if (!isBoundedString(c['jti'], 256)) throw invalidToken('jti')
  if (!isSpiffeId(c['sub'])) throw invalidToken('sub')
  if (typeof c['scope'] !== 'string' || c['scope'].length > 8192) throw invalidToken('scope')
  if (!isBoundedString(c['client_id'])) throw invalidToken('client_id')
  for (const f of ['task_id', 'orchestration_id'] as const) {
    if (c[f] !== undefined && !isBoundedString(c[f], 256)) throw invalidToken(f)
  }
  const ad = c['authorization_details']
  if (ad !== undefined && !(Array.isArray(ad) && ad.every((d) => isRecord(d) && isBoundedString(d['type'], 256)))) throw invalidToken('authorization_details')
  if (c['act'] !== undefined) checkAct(c['act'], maxDepth)
  if (c['cnf'] !== undefined) checkCnf(c['cnf'])

  const claims = c as unknown as AccessTokenClaims & { authorization_details?: readonly AuthorizationDetail[] }
  if (opts.requiredScopes !== undefined) requireScopes(claims, opts.requiredScopes)
  return claims
}
