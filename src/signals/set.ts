/**
 * Security Event Tokens (RFC 8417) as the Shared Signals Framework 1.0
 * profiles them (§4.1): `typ` `secevent+jwt`; `iss`, `iat`, `jti`, `aud`;
 * exactly one event in `events`; the subject in a top-level `sub_id`
 * (RFC 9493); no `sub` and no `exp`. `buildSet` makes the claims (checked by
 * the same rules the verifier applies, so warrant never sends what it would
 * refuse), `signSet` signs them with a key in hand, and `verifySet` checks a
 * received SET: shape, `typ`, `alg`, `kid` from the transmitter's JWKS only,
 * signature, `iss`, `aud`, the `iat` window, the claims, the event and its
 * subject, then `jti` replay. Pure (jose and node:crypto; the JWKS comes
 * through the caller's `JwksCache`).
 *
 * Refusals are IdentityErrors whose code says which RFC 8935 §2.4 `err` a
 * receiver answers (`setDeliveryError` in src/errors/oauth.ts):
 * ERR_SET_INVALID (`invalid_request`), ERR_SET_KEY_INVALID (`invalid_key`),
 * ERR_SET_ISSUER_INVALID (`invalid_issuer`), ERR_SET_AUDIENCE_INVALID
 * (`invalid_audience`), ERR_SET_REPLAYED (a `jti` seen before; a receiver
 * acknowledges it and does nothing), with `details.reason`. A JWKS that
 * cannot be fetched is ERR_UNAVAILABLE: nothing is decided, try again.
 */
import { randomUUID, type KeyObject, type webcrypto } from 'node:crypto'
import { CompactSign, compactVerify, decodeProtectedHeader } from 'jose'
import { IdentityError, isIdentityError } from '../errors/identity-error.js'
import { ACCESS_TOKEN_ALGORITHMS, DEFAULT_CLOCK_SKEW_SEC } from '../tokens/access-token.js'
import { MemoryReplayCache } from '../tokens/dpop.js'
import type { JwksCache } from '../tokens/jwks-cache.js'
import {
  checkEvent,
  invalidSet,
  isBoundedString,
  isRecord,
  isSupportedEventType,
  STREAM_EVENT_TYPES,
  type CommonEventClaims,
  type SetEventType,
} from './event-types.js'
import { agentSubject, checkSubject, type AgentSubject, type SubjectIdentifier } from './subject.js'

/** JOSE `typ` of a SET (RFC 8417 §2.3; media type `application/secevent+jwt`). */
export const SET_TYP = 'secevent+jwt'
/** Default oldest `iat` accepted: a day, since poll delivery keeps unacknowledged events while a receiver is away. */
export const DEFAULT_SET_MAX_AGE_SEC = 86_400

const MAX_SET_LENGTH = 16_384
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const TYPS = new Set([SET_TYP, `application/${SET_TYP}`])
const MAX_AUDIENCES = 16

/** The payload of an SSF SET. */
export interface SetClaims {
  readonly iss: string
  readonly aud: string | readonly string[]
  readonly iat: number
  readonly jti: string
  readonly sub_id: SubjectIdentifier
  /** Exactly one member: event type URI → event object. */
  readonly events: Readonly<Record<string, Readonly<Record<string, unknown>>>>
  /** The underlying cause; the same across SETs of one cause (SSF 1.0 §4.1.8). */
  readonly txn?: string
  /** Time of the event (RFC 8417 §2.2). */
  readonly toe?: number
  readonly [k: string]: unknown
}

/** A verified SET, read. */
export interface VerifiedSet {
  readonly claims: SetClaims
  readonly eventType: SetEventType
  readonly event: CommonEventClaims
  readonly subject: SubjectIdentifier
  /** warrant's view of the subject (SPIFFE ID, instance, task, token, stream). */
  readonly agent: AgentSubject
  /** The transmitter key that signed it. */
  readonly kid: string
}

export interface SetReplayCache {
  /** false when `key` was already seen (and has not expired); remembers it until `expiresAtSec`. */
  remember(key: string, expiresAtSec: number): boolean
}

/** The replay-cache key of a SET: its issuer and `jti` (a receiver that failed to apply a SET forgets it, so the retransmission is processed). */
export function setReplayKey(c: Pick<SetClaims, 'iss' | 'jti'>): string {
  return `${c.iss}\n${c.jti}`
}

/** The in-memory, bounded replay cache (the DPoP proofs' one), named `SET` in its error. */
export class MemorySetReplayCache extends MemoryReplayCache implements SetReplayCache {
  constructor(opts: { maxEntries?: number; nowSec?: () => number } = {}) {
    super({ ...opts, what: 'SET' })
  }
}

export interface BuildSetOptions {
  readonly issuer: string
  readonly audience: string | readonly string[]
  readonly eventType: SetEventType
  readonly event?: Readonly<Record<string, unknown>>
  readonly subject: SubjectIdentifier
  readonly nowSec: number
  /** Default: a random UUID. */
  readonly jti?: string
  readonly txn?: string
  readonly toe?: number
}

/** The claims of a SET, checked as `verifySet` would check them (throws ERR_SET_INVALID). */
export function buildSet(o: BuildSetOptions): SetClaims {
  const claims: Record<string, unknown> = {
    iss: o.issuer,
    aud: typeof o.audience === 'string' ? o.audience : [...o.audience],
    iat: Math.floor(o.nowSec),
    jti: o.jti ?? randomUUID(),
    sub_id: o.subject,
    events: { [o.eventType]: { ...(o.event ?? {}) } },
    ...(o.txn !== undefined ? { txn: o.txn } : {}),
    ...(o.toe !== undefined ? { toe: o.toe } : {}),
  }
  checkSetClaims(claims)
  return claims as SetClaims
}

export interface SignSetOptions {
  readonly key: KeyObject | webcrypto.CryptoKey | Uint8Array
  readonly kid: string
  readonly alg: string
}

/** Signs SET claims as a compact JWS with header `{alg, kid, typ: secevent+jwt}`. The broker signs through its Signer instead (`signJwt` with `typ` SET_TYP). */
export function signSet(claims: SetClaims, o: SignSetOptions): Promise<string> {
  return new CompactSign(new TextEncoder().encode(JSON.stringify(claims))).setProtectedHeader({ alg: o.alg, kid: o.kid, typ: SET_TYP }).sign(o.key)
}

export interface CheckSetClaimsOptions {
  /** Event types accepted (default: every supported one). */
  readonly eventTypes?: readonly SetEventType[]
  /** The transmitter's `critical_subject_members`. */
  readonly criticalSubjectMembers?: readonly string[]
}

/**
 * The claim checks that need no key, issuer or clock: required claims and
 * their types, no `sub`, no `exp`, exactly one supported event and its
 * definition, the subject. Returns the event type. Throws ERR_SET_INVALID.
 */
export function checkSetClaims(c: Record<string, unknown>, o: CheckSetClaimsOptions = {}): SetEventType {
  if (!isBoundedString(c['iss'])) throw invalidSet('iss')
  const aud = c['aud']
  if (!(isBoundedString(aud) || (Array.isArray(aud) && aud.length > 0 && aud.length <= MAX_AUDIENCES && aud.every((a) => isBoundedString(a)))))
    throw invalidSet('aud')
  if (typeof c['iat'] !== 'number' || !Number.isFinite(c['iat']) || c['iat'] < 0) throw invalidSet('iat')
  if (!isBoundedString(c['jti'], 256)) throw invalidSet('jti')
  if (c['sub'] !== undefined) throw invalidSet('sub_present')
  if (c['exp'] !== undefined) throw invalidSet('exp_present')
  if (c['txn'] !== undefined && !isBoundedString(c['txn'], 256)) throw invalidSet('txn')
  if (c['toe'] !== undefined && (typeof c['toe'] !== 'number' || !Number.isFinite(c['toe']) || c['toe'] < 0)) throw invalidSet('toe')
  const events = c['events']
  if (!isRecord(events)) throw invalidSet('events')
  const types = Object.keys(events)
  if (types.length !== 1) throw invalidSet('events_count', { count: types.length })
  const type = types[0]!
  const accepted = o.eventTypes ?? undefined
  if (!isSupportedEventType(type) || (accepted !== undefined && !accepted.includes(type))) throw invalidSet('event_type', { event_type: type.slice(0, 256) })
  checkEvent(type, events[type])
  const subject = checkSubject(c['sub_id'], o.criticalSubjectMembers ? { criticalMembers: o.criticalSubjectMembers } : {})
  if (STREAM_EVENT_TYPES.includes(type) && subject.format !== 'opaque')
    throw invalidSet('sub_id', { path: 'sub_id', why: 'a stream event names its stream as opaque' })
  return type
}

export interface VerifySetOptions extends CheckSetClaimsOptions {
  /** The transmitter's issuer: `iss` must equal it (and the stream's `iss`). */
  readonly issuer: string
  /** This receiver's audience value(s): `aud` must contain one of them. */
  readonly audience: string | readonly string[]
  /** The transmitter's keys (its `jwks_uri`). */
  readonly keys: JwksCache
  readonly replay: SetReplayCache
  readonly nowSec: number
  /** Oldest `iat` accepted, in seconds before now (default a day). */
  readonly maxAgeSec?: number
  readonly clockSkewSec?: number
  /** A subset of the access-token allow-list (default all of it: asymmetric only). */
  readonly algorithms?: readonly string[]
}

function keyInvalid(reason: string, extra: Record<string, unknown> = {}, cause?: unknown): IdentityError {
  return new IdentityError('ERR_SET_KEY_INVALID', 'invalid security event token key', {
    details: { reason, ...extra },
    ...(cause === undefined ? {} : { cause }),
  })
}

/** Verifies a received SET; see the module comment for the checks and refusals. */
export async function verifySet(token: string, o: VerifySetOptions): Promise<VerifiedSet> {
  const algorithms = o.algorithms ?? ACCESS_TOKEN_ALGORITHMS
  if (algorithms.some((a) => !ACCESS_TOKEN_ALGORITHMS.includes(a))) throw new RangeError('algorithms must be asymmetric JWS algorithms')
  const skew = o.clockSkewSec ?? DEFAULT_CLOCK_SKEW_SEC
  const maxAge = o.maxAgeSec ?? DEFAULT_SET_MAX_AGE_SEC
  const now = o.nowSec
  if (typeof token !== 'string' || token.length === 0) throw invalidSet('missing')
  if (token.length > MAX_SET_LENGTH) throw invalidSet('too_large')
  if (!COMPACT_JWS.test(token)) throw invalidSet('malformed')
  let header: Record<string, unknown>
  try {
    header = decodeProtectedHeader(token)
  } catch (err) {
    throw invalidSet('malformed', {}, err)
  }
  if (typeof header['typ'] !== 'string' || !TYPS.has(header['typ'].toLowerCase())) throw invalidSet('typ')
  const alg = header['alg']
  if (typeof alg !== 'string' || !algorithms.includes(alg)) throw keyInvalid('alg')
  const kid = header['kid']
  if (!isBoundedString(kid, 256)) throw keyInvalid('kid')
  if (header['jwk'] !== undefined || header['jku'] !== undefined || header['x5u'] !== undefined || header['x5c'] !== undefined) throw keyInvalid('header_key')
  let key: Awaited<ReturnType<JwksCache['getKey']>>
  try {
    key = await o.keys.getKey(kid, alg)
  } catch (err) {
    if (isIdentityError(err, 'ERR_UNAVAILABLE')) throw err
    throw keyInvalid('kid_unknown', { kid: kid.slice(0, 128) }, err)
  }
  let payload: Uint8Array
  try {
    payload = (await compactVerify(token, key, { algorithms: [alg] })).payload
  } catch (err) {
    throw keyInvalid('signature', { kid }, err)
  }
  let c: unknown
  try {
    c = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(payload))
  } catch (err) {
    throw invalidSet('payload', {}, err)
  }
  if (!isRecord(c)) throw invalidSet('payload')
  if (c['iss'] !== o.issuer) throw new IdentityError('ERR_SET_ISSUER_INVALID', 'invalid security event token issuer', { details: { reason: 'iss' } })
  const want = typeof o.audience === 'string' ? [o.audience] : o.audience
  const aud = c['aud']
  const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : []
  if (!auds.some((a) => typeof a === 'string' && want.includes(a)))
    throw new IdentityError('ERR_SET_AUDIENCE_INVALID', 'invalid security event token audience', { details: { reason: 'aud' } })
  const eventType = checkSetClaims(c, o)
  const iat = c['iat'] as number
  if (iat > now + skew) throw invalidSet('iat_future', { iat, now })
  if (iat < now - maxAge) throw invalidSet('iat_too_old', { iat, now, max_age: maxAge })
  const claims = c as SetClaims
  if (!o.replay.remember(setReplayKey(claims), Math.floor(iat) + maxAge + skew))
    throw new IdentityError('ERR_SET_REPLAYED', 'security event token already received', { details: { reason: 'replay', jti: claims.jti } })
  const subject = claims.sub_id
  return {
    claims,
    eventType,
    event: claims.events[eventType] as CommonEventClaims,
    subject,
    agent: agentSubject(subject, STREAM_EVENT_TYPES.includes(eventType)),
    kid,
  }
}
