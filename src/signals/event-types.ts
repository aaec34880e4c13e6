/**
 * The Shared Signals event types warrant sends and understands, and the
 * checks of each event object (the value under the event type's URI in a
 * SET's `events` claim): CAEP 1.0 `session-revoked`, `credential-change`,
 * `token-claims-change`, `assurance-level-change`; RISC 1.0
 * `credential-compromise`; SSF 1.0 `verification` and `stream-updated`.
 * Members an event type does not define are kept and ignored (SSF 1.0 §4.2.3:
 * receivers MUST ignore fields they do not understand). Pure.
 */
import { IdentityError } from '../errors/identity-error.js'

const CAEP = 'https://schemas.openid.net/secevent/caep/event-type/'
const RISC = 'https://schemas.openid.net/secevent/risc/event-type/'
const SSF = 'https://schemas.openid.net/secevent/ssf/event-type/'

export const EVENT_TYPES = {
  sessionRevoked: `${CAEP}session-revoked`,
  credentialChange: `${CAEP}credential-change`,
  tokenClaimsChange: `${CAEP}token-claims-change`,
  assuranceLevelChange: `${CAEP}assurance-level-change`,
  credentialCompromise: `${RISC}credential-compromise`,
  verification: `${SSF}verification`,
  streamUpdated: `${SSF}stream-updated`,
} as const

export type SetEventType = (typeof EVENT_TYPES)[keyof typeof EVENT_TYPES]

export const SUPPORTED_EVENT_TYPES: readonly SetEventType[] = Object.values(EVENT_TYPES)

/** Event types about a stream, whose subject is the stream itself (`opaque`, `id` = stream ID). */
export const STREAM_EVENT_TYPES: readonly SetEventType[] = [EVENT_TYPES.verification, EVENT_TYPES.streamUpdated]

export function isSupportedEventType(v: string): v is SetEventType {
  return (SUPPORTED_EVENT_TYPES as readonly string[]).includes(v)
}

/** CAEP 1.0 §2: who caused the event. */
export const INITIATING_ENTITIES = ['admin', 'user', 'policy', 'system'] as const
/** CAEP 1.0 §3.3.1. */
export const CHANGE_TYPES = ['create', 'revoke', 'update', 'delete'] as const
/** SSF 1.0 §8.1.2: stream status. */
export const STREAM_STATUSES = ['enabled', 'paused', 'disabled'] as const

/** The optional claims every CAEP and RISC event may carry (CAEP 1.0 §2). */
export interface CommonEventClaims {
  readonly event_timestamp?: number
  readonly initiating_entity?: (typeof INITIATING_ENTITIES)[number]
  /** BCP 47 language tag → message. */
  readonly reason_admin?: Readonly<Record<string, string>>
  readonly reason_user?: Readonly<Record<string, string>>
  /**
   * warrant's extension (SSF 1.0 §4.2.3 allows additional fields): how sure
   * the transmitter is, from 0 to 1. Response policies may require a minimum.
   */
  readonly confidence?: number
  readonly [k: string]: unknown
}

const MAX_STRING = 2048
const MAX_REASONS = 32

export function invalidSet(reason: string, extra: Record<string, unknown> = {}, cause?: unknown): IdentityError {
  return new IdentityError('ERR_SET_INVALID', 'invalid security event token', {
    details: { reason, ...extra },
    ...(cause === undefined ? {} : { cause }),
  })
}

export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function isBoundedString(v: unknown, max = MAX_STRING): v is string {
  return typeof v === 'string' && v.length > 0 && v.length <= max
}

function optional(e: Record<string, unknown>, k: string, ok: (v: unknown) => boolean, type: string): void {
  if (e[k] !== undefined && !ok(e[k])) throw invalidSet('event_claim', { event_claim: k, expected: type })
}

function required(e: Record<string, unknown>, k: string, ok: (v: unknown) => boolean, type: string): void {
  if (e[k] === undefined) throw invalidSet('event_claim_missing', { event_claim: k })
  optional(e, k, ok, type)
}

const oneOf =
  (values: readonly string[]) =>
  (v: unknown): boolean =>
    typeof v === 'string' && values.includes(v)

function isLocalizedText(v: unknown): boolean {
  if (!isRecord(v)) return false
  const entries = Object.entries(v)
  return entries.length > 0 && entries.length <= MAX_REASONS && entries.every(([k, s]) => k.length > 0 && k.length <= 64 && isBoundedString(s))
}

const isTimestamp = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v >= 0
const isConfidence = (v: unknown): boolean => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1
const isString = (v: unknown): boolean => isBoundedString(v)

/**
 * Checks an event object against its type's definition; throws
 * ERR_SET_INVALID (`details.reason`: `event`, `event_claim`,
 * `event_claim_missing`).
 */
export function checkEvent(type: SetEventType, e: unknown): CommonEventClaims {
  if (!isRecord(e)) throw invalidSet('event')
  if (type !== EVENT_TYPES.verification && type !== EVENT_TYPES.streamUpdated) {
    optional(e, 'event_timestamp', isTimestamp, 'number')
    optional(e, 'initiating_entity', oneOf(INITIATING_ENTITIES), INITIATING_ENTITIES.join('|'))
    optional(e, 'reason_admin', isLocalizedText, 'object')
    optional(e, 'reason_user', isLocalizedText, 'object')
    optional(e, 'confidence', isConfidence, 'number in [0, 1]')
  }
  switch (type) {
    case EVENT_TYPES.sessionRevoked:
      break
    case EVENT_TYPES.credentialChange:
      required(e, 'credential_type', isString, 'string')
      required(e, 'change_type', oneOf(CHANGE_TYPES), CHANGE_TYPES.join('|'))
      for (const k of ['friendly_name', 'x509_issuer', 'x509_serial', 'fido2_aaguid']) optional(e, k, isString, 'string')
      break
    case EVENT_TYPES.tokenClaimsChange:
      required(e, 'claims', (v) => isRecord(v) && Object.keys(v).length > 0, 'non-empty object')
      break
    case EVENT_TYPES.assuranceLevelChange:
      required(e, 'namespace', isString, 'string')
      required(e, 'current_level', isString, 'string')
      optional(e, 'previous_level', isString, 'string')
      optional(e, 'change_direction', oneOf(['increase', 'decrease']), 'increase|decrease')
      break
    case EVENT_TYPES.credentialCompromise:
      required(e, 'credential_type', isString, 'string')
      break
    case EVENT_TYPES.verification:
      optional(e, 'state', isString, 'string')
      break
    case EVENT_TYPES.streamUpdated:
      required(e, 'status', oneOf(STREAM_STATUSES), STREAM_STATUSES.join('|'))
      optional(e, 'reason', isString, 'string')
      break
  }
  return e
}
