import type { KeyObject } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import type { ErrorCode } from '../../errors/codes.js'
import { SIGNATURE_ALGORITHMS, type SignatureAlgorithm } from '../signer.js'
import { SpiffeId } from '../spiffe-id.js'
import { isList } from '../guards.js'

/**
 * Internal: the structural part of JWT-SVID parsing shared by
 * `validateJwtSvid` and `JwtSvid.parseInsecure`. Nothing here verifies a
 * signature. Error messages never contain the token or its segments.
 */

/** Longest token accepted (characters). JWT-SVIDs travel in HTTP headers and gRPC metadata. */
export const MAX_JWT_SVID_LENGTH = 64 * 1024

/** Default clock-skew allowance for exp / nbf / iat, in seconds. */
export const DEFAULT_LEEWAY_SECONDS = 30

const ALLOWED_ALGS: ReadonlySet<string> = new Set(SIGNATURE_ALGORITHMS)
/** JWT-SVID §2: any header not described there (alg, kid, typ), registered or private, MUST NOT be included. */
const ALLOWED_HEADERS: ReadonlySet<string> = new Set(['alg', 'kid', 'typ'])
const B64URL = /^[A-Za-z0-9_-]+$/
/** Seconds since the epoch that a JS Date can still represent. */
const MAX_NUMERIC_DATE = 8.64e12

export interface ParsedJwtSvid {
  readonly token: string
  readonly alg: SignatureAlgorithm
  /** '' when the header has none (only parseInsecure tolerates that). */
  readonly kid: string
  readonly id: SpiffeId
  /** The payload's claims, frozen. */
  readonly claims: Readonly<Record<string, unknown>>
  readonly audience: readonly string[]
  /** Seconds since the epoch, as in the token. */
  readonly exp: number
  readonly iat: number | undefined
  readonly nbf: number | undefined
}

export function fail(code: ErrorCode, message: string, cause?: unknown): never {
  throw new IdentityError(code, `jwtsvid: ${message}`, cause === undefined ? undefined : { cause })
}

const utf8 = new TextDecoder('utf-8', { fatal: true })

function decodeJsonObject(segment: string, what: string): Record<string, unknown> {
  // Buffer's base64url decoder silently skips bad characters; check the alphabet first.
  if (!B64URL.test(segment) || segment.length % 4 === 1) fail('ERR_JWT_SVID_INVALID', `malformed token: ${what} is not base64url`)
  let value: unknown
  try {
    const bytes = Buffer.from(segment, 'base64url')
    let text = bytes.toString('utf8')
    // toString is lenient; only when it produced U+FFFD re-decode strictly to reject invalid UTF-8.
    if (text.includes('\uFFFD')) text = utf8.decode(bytes)
    value = JSON.parse(text)
  } catch {
    fail('ERR_JWT_SVID_INVALID', `malformed token: ${what} is not a JSON object`)
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    fail('ERR_JWT_SVID_INVALID', `malformed token: ${what} is not a JSON object`)
  }
  return value as Record<string, unknown>
}

function numericDate(claims: Record<string, unknown>, name: string, required: boolean): number | undefined {
  const v = claims[name]
  if (v === undefined) {
    if (required) fail('ERR_JWT_SVID_INVALID', `token missing ${name} claim`)
    return undefined
  }
  if (typeof v !== 'number' || !Number.isFinite(v) || Math.abs(v) > MAX_NUMERIC_DATE) {
    fail('ERR_JWT_SVID_INVALID', `token has an invalid ${name} claim`)
  }
  return v
}

/**
 * Splits and decodes a compact JWS and checks everything that can be checked
 * without a key: header members, `alg`, `typ`, and the presence and types of
 * `sub`, `aud`, `exp` (and `iat`, `nbf`, `iss` when present).
 * Returns the parts needed for signature verification.
 */
export function parseJwtSvidToken(token: string): ParsedJwtSvid & { readonly signingParts: readonly [string, string, string] } {
  if (typeof token !== 'string') throw new TypeError('JWT-SVID token must be a string')
  if (token.length === 0) fail('ERR_JWT_SVID_INVALID', 'token is empty')
  if (token.length > MAX_JWT_SVID_LENGTH) fail('ERR_JWT_SVID_INVALID', `token exceeds ${MAX_JWT_SVID_LENGTH} characters`)
  const d1 = token.indexOf('.')
  const d2 = d1 === -1 ? -1 : token.indexOf('.', d1 + 1)
  if (d2 === -1 || token.indexOf('.', d2 + 1) !== -1) {
    fail('ERR_JWT_SVID_INVALID', 'malformed token: expected the JWS compact serialization (three parts)')
  }
  const h = token.slice(0, d1)
  const p = token.slice(d1 + 1, d2)
  const s = token.slice(d2 + 1)
  if (s.length === 0 || !B64URL.test(s) || s.length % 4 === 1) fail('ERR_JWT_SVID_INVALID', 'malformed token: signature is not base64url')

  const { alg, kid } = parseHeader(h)

  const claims = decodeJsonObject(p, 'payload')
  const sub = claims.sub
  if (sub === undefined || sub === '') fail('ERR_JWT_SVID_INVALID', 'token missing subject claim')
  if (typeof sub !== 'string') fail('ERR_JWT_SVID_INVALID', 'token has an invalid subject claim')
  const id = subjectId(sub)
  const exp = numericDate(claims, 'exp', true) as number
  const iat = numericDate(claims, 'iat', false)
  const nbf = numericDate(claims, 'nbf', false)
  const audience = audienceOf(claims.aud)
  if (claims.iss !== undefined && typeof claims.iss !== 'string') fail('ERR_JWT_SVID_INVALID', 'token has an invalid iss claim')
  Object.freeze(claims)
  return {
    token,
    alg,
    kid,
    id,
    claims,
    audience,
    exp,
    iat,
    nbf,
    signingParts: [h, p, s],
  }
}

/*
 * Hot-path caches. Tokens from one issuer share a header segment and workloads
 * present the same `sub` again and again, so the decoded header and the parsed
 * SpiffeId are memoised by their exact input string. Both maps are bounded
 * (cleared when full), so hostile input can only make them miss.
 */
const CACHE_LIMIT = 1024
/** Longer keys are not cached, so the caches stay under ~1 MiB each. */
const CACHE_KEY_MAX = 512
const headerCache = new Map<string, { alg: SignatureAlgorithm; kid: string }>()
const subjectCache = new Map<string, SpiffeId>()

function parseHeader(segment: string): { alg: SignatureAlgorithm; kid: string } {
  const cached = headerCache.get(segment)
  if (cached) return cached
  const header = decodeJsonObject(segment, 'header')
  for (const name of Object.keys(header)) {
    if (!ALLOWED_HEADERS.has(name)) fail('ERR_JWT_SVID_INVALID', `token header member "${name.slice(0, 32)}" is not allowed`)
  }
  const alg = header.alg
  if (typeof alg !== 'string' || !ALLOWED_ALGS.has(alg)) {
    fail('ERR_JWT_SVID_INVALID', typeof alg === 'string' ? `unsupported token signature algorithm "${alg.slice(0, 16)}"` : 'token header missing alg')
  }
  const typ = header.typ
  if (typ !== undefined && typ !== 'JWT' && typ !== 'JOSE') fail('ERR_JWT_SVID_INVALID', 'token header typ must be "JWT" or "JOSE"')
  const kid = header.kid
  if (kid !== undefined && (typeof kid !== 'string' || kid.length === 0)) fail('ERR_JWT_SVID_INVALID', 'token header has an invalid key id')
  const result = Object.freeze({ alg: alg as SignatureAlgorithm, kid: typeof kid === 'string' ? kid : '' })
  if (segment.length <= CACHE_KEY_MAX) {
    if (headerCache.size >= CACHE_LIMIT) headerCache.clear()
    headerCache.set(segment, result)
  }
  return result
}

function subjectId(sub: string): SpiffeId {
  const cached = subjectCache.get(sub)
  if (cached) return cached
  let id: SpiffeId
  try {
    id = SpiffeId.fromString(sub)
  } catch (cause) {
    fail('ERR_JWT_SVID_INVALID', 'token has an invalid subject claim', cause)
  }
  if (sub.length <= CACHE_KEY_MAX) {
    if (subjectCache.size >= CACHE_LIMIT) subjectCache.clear()
    subjectCache.set(sub, id)
  }
  return id
}

function audienceOf(aud: unknown): readonly string[] {
  if (aud === undefined) fail('ERR_JWT_SVID_INVALID', 'token missing aud claim')
  if (typeof aud === 'string') {
    if (aud.length === 0) fail('ERR_JWT_SVID_INVALID', 'token has an empty aud claim')
    return Object.freeze([aud])
  }
  if (!Array.isArray(aud) || aud.length === 0) fail('ERR_JWT_SVID_INVALID', 'token has an invalid aud claim')
  for (const a of aud) {
    if (typeof a !== 'string') fail('ERR_JWT_SVID_INVALID', 'token has an invalid aud claim')
  }
  return Object.freeze([...(aud as string[])])
}

/** Normalises the caller's expected audience; an empty expectation is a programming error. */
export function expectedAudience(audience: string | readonly string[]): readonly string[] {
  const list = typeof audience === 'string' ? [audience] : audience
  if (!isList(list) || list.length === 0) throw new TypeError('expected audience must be a non-empty string or list')
  for (const a of list) {
    if (typeof a !== 'string' || a.length === 0) throw new TypeError('expected audience values must be non-empty strings')
  }
  return list
}

/** SPIRE semantics (go-jose `AnyAudience`): the token must name at least one expected audience. */
export function checkAudience(parsed: ParsedJwtSvid, expected: readonly string[]): void {
  for (const a of expected) {
    if (parsed.audience.includes(a)) return
  }
  fail('ERR_JWT_AUDIENCE_MISMATCH', `token audience does not contain any expected audience (expected ${JSON.stringify(expected).slice(0, 256)})`)
}

/** exp with leeway → ERR_JWT_SVID_EXPIRED; nbf / iat in the future beyond leeway → ERR_JWT_SVID_INVALID. */
export function checkTimes(parsed: ParsedJwtSvid, nowMs: number, leewaySeconds: number): void {
  const now = nowMs / 1000
  if (now - leewaySeconds > parsed.exp) fail('ERR_JWT_SVID_EXPIRED', 'token has expired')
  if (parsed.nbf !== undefined && now + leewaySeconds < parsed.nbf) fail('ERR_JWT_SVID_INVALID', 'token is not valid yet (nbf)')
  if (parsed.iat !== undefined && now + leewaySeconds < parsed.iat) fail('ERR_JWT_SVID_INVALID', 'token was issued in the future (iat)')
}

export function timeOptions(opts: { now?: Date | undefined; leewaySeconds?: number | undefined }): { nowMs: number; leeway: number } {
  let nowMs: number
  if (opts.now === undefined) nowMs = Date.now()
  else {
    if (!(opts.now instanceof Date) || Number.isNaN(opts.now.getTime())) throw new TypeError('now must be a valid Date')
    nowMs = opts.now.getTime()
  }
  const leeway = opts.leewaySeconds ?? DEFAULT_LEEWAY_SECONDS
  if (typeof leeway !== 'number' || !Number.isFinite(leeway) || leeway < 0) throw new RangeError('leewaySeconds must be a finite number >= 0')
  return { nowMs, leeway }
}

/** The algorithms a key can verify or sign with: EC keys by curve, RSA keys RS* and PS*. Cached per KeyObject. */
const keyAlgCache = new WeakMap<KeyObject, ReadonlySet<SignatureAlgorithm>>()

export function algorithmsForKey(key: KeyObject): ReadonlySet<SignatureAlgorithm> {
  let algs = keyAlgCache.get(key)
  if (algs) return algs
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = key.asymmetricKeyDetails?.namedCurve
      const alg: SignatureAlgorithm | undefined =
        curve === 'prime256v1' ? 'ES256' : curve === 'secp384r1' ? 'ES384' : curve === 'secp521r1' ? 'ES512' : undefined
      algs = new Set(alg ? [alg] : [])
      break
    }
    case 'rsa':
      algs = new Set<SignatureAlgorithm>(['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'])
      break
    case 'rsa-pss':
      algs = new Set<SignatureAlgorithm>(['PS256', 'PS384', 'PS512'])
      break
    default:
      algs = new Set()
  }
  keyAlgCache.set(key, algs)
  return algs
}

/** The default JWS algorithm for a signer's public key (P-256 ES256, P-384 ES384, P-521 ES512, RSA RS256, RSA-PSS PS256). */
export function defaultAlgorithmForKey(key: KeyObject): SignatureAlgorithm | undefined {
  if (key.asymmetricKeyType === 'rsa') return 'RS256'
  if (key.asymmetricKeyType === 'rsa-pss') return 'PS256'
  const [first] = algorithmsForKey(key)
  return first
}
