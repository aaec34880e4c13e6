import { Metadata, status as Status, type ServiceError } from '@grpc/grpc-js'
import { ERROR_CODES, GrpcStatus, type ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { F, type Logger } from '../log/logger.js'

/**
 * Codes whose reason the caller must not learn: the real reason is logged,
 * the caller gets a fixed generic message.
 */
const GENERIC_MESSAGES: Partial<Record<ErrorCode, string>> = {
  ERR_NODE_ATTESTATION_FAILED: 'attestation failed',
  ERR_JOIN_TOKEN_INVALID: 'attestation failed',
  ERR_ATTESTATION_PAYLOAD_INVALID: 'attestation failed',
  ERR_TPM_VERIFICATION_FAILED: 'attestation failed',
  ERR_TPM_PAYLOAD_INVALID: 'attestation failed',
  ERR_AGENT_BANNED: 'permission denied',
  ERR_AGENT_EVICTED: 'permission denied',
  ERR_UNAUTHENTICATED: 'unauthenticated',
  ERR_NO_IDENTITY_ISSUED: 'no identity issued',
  ERR_WORKLOAD_ATTESTATION_FAILED: 'workload attestation failed',
  ERR_WORKLOAD_CREDENTIALS_CHANGED: 'permission denied',
  ERR_ID_NOT_AUTHORIZED: 'permission denied',
  ERR_X509_SVID_UNTRUSTED: 'permission denied',
}

export interface GrpcErrorObject extends Partial<ServiceError> {
  code: number
  details: string
  metadata: Metadata
}

/** What the caller of a failed call (or of one failed item of a batch) is told. */
interface Shown {
  /** The gRPC status code. */
  code: number
  /** The stable error code (`x-error-code`, a batch item's `error_code`). */
  errorCode: string
  message: string
}

/**
 * Decides what the caller learns of `err` and logs it once, with `fields`:
 * the one mapping behind `toGrpcError` (whole calls) and `toItemStatus`
 * (items of a batch). `event` names the log line when the caller has a more
 * precise one than "Request denied/failed".
 */
function shown(err: unknown, log: Logger, fields: Record<string, unknown>, event?: string): Shown & { metadata?: Metadata } {
  if (err instanceof IdentityError) {
    const code = ERROR_CODES[err.code]
    const generic = GENERIC_MESSAGES[err.code] ?? infrastructureMessage(err, code)
    const level = code === GrpcStatus.INTERNAL ? 'error' : generic ? 'warn' : 'info'
    log[level]({ ...fields, [F.ERROR_CODE]: err.code, [F.ERR]: describe(err) }, event ?? (GENERIC_MESSAGES[err.code] ? 'Request denied' : 'Request failed'))
    return { code, errorCode: err.code, message: generic ?? err.message }
  }
  if (isStatusLike(err)) {
    log.info({ ...fields, grpc_code: err.code, [F.ERR]: err.details }, event ?? 'Request failed')
    return { code: err.code, errorCode: '', message: err.details, ...(err.metadata ? { metadata: err.metadata } : {}) }
  }
  log.error({ ...fields, [F.ERR]: describe(err) }, event ?? 'Internal error')
  return { code: Status.INTERNAL, errorCode: 'ERR_INTERNAL', message: 'internal error' }
}

/**
 * The one boundary between our errors and gRPC statuses (SPIRE's MakeErr):
 * logs once with fields, maps the code to a status, sets the `x-error-code`
 * trailer, hides attestation/authorization reasons, and turns anything
 * unexpected into INTERNAL "internal error".
 */
export function toGrpcError(err: unknown, log: Logger, fields: Record<string, unknown> = {}): GrpcErrorObject {
  const s = shown(err, log, fields)
  if (s.metadata) return { code: s.code, details: s.message, metadata: s.metadata, message: s.message }
  const metadata = new Metadata()
  if (s.errorCode) metadata.set('x-error-code', s.errorCode)
  return { code: s.code, details: s.message, metadata, message: s.message }
}

/** A batch item's status on the wire (`warrant.types.v1.Status`). */
export interface ItemStatus {
  code: number
  error_code: string
  message: string
}

/** The status of a batch item that succeeded. */
export const OK_ITEM_STATUS: Readonly<ItemStatus> = Object.freeze({ code: Status.OK, error_code: '', message: '' })

/**
 * `toGrpcError` for one item of a batch call, whose own status stays OK: the
 * same mapping, generic messages and single log line (with `event` as its
 * message when given), as the item's `{ code, error_code, message }`.
 */
export function toItemStatus(err: unknown, log: Logger, fields: Record<string, unknown> = {}, event?: string): ItemStatus {
  const s = shown(err, log, fields, event)
  return { code: s.code, error_code: s.errorCode, message: s.message }
}

/**
 * The fixed message of an error about our own infrastructure, or undefined:
 * INTERNAL ones (their message is for the operator), and UNAVAILABLE ones
 * relayed from a call we made to another gRPC service (the agent's calls to
 * the server): grpc-js words those itself, with the peer's address ("No
 * connection established. Last error: connect ECONNREFUSED 10.0.0.5:8081",
 * "remote_addr=..."), which a caller must not learn. The log keeps it all.
 */
function infrastructureMessage(err: IdentityError, code: number): string | undefined {
  if (code === GrpcStatus.INTERNAL) return 'internal error'
  if (code === GrpcStatus.UNAVAILABLE && relayedGrpcError(err)) return 'service unavailable'
  return undefined
}

/** True when `err` was caused (at some depth) by a gRPC client call's error (a ServiceError: numeric code and Metadata). */
function relayedGrpcError(err: Error): boolean {
  let c: unknown = err.cause
  for (let depth = 0; depth < 8 && c instanceof Error; depth++) {
    if (typeof (c as { code?: unknown }).code === 'number' && (c as { metadata?: unknown }).metadata instanceof Metadata) return true
    c = c.cause
  }
  return false
}

/** A gRPC status to throw from a handler when no IdentityError fits (e.g. header checks). */
export class GrpcStatusError extends Error {
  readonly code: number
  readonly details: string
  readonly metadata: Metadata | undefined
  constructor(code: number, details: string) {
    super(details)
    this.code = code
    this.details = details
    this.metadata = undefined
  }
}

function isStatusLike(e: unknown): e is { code: number; details: string; metadata?: Metadata } {
  return e instanceof GrpcStatusError
}

function describe(err: unknown): Record<string, unknown> | string {
  if (err instanceof Error) {
    const out: Record<string, unknown> = { type: err.name, message: err.message }
    if (err instanceof IdentityError && err.details) out.details = err.details
    if (err.cause instanceof Error) out.cause = `${err.cause.name}: ${err.cause.message}`
    if (!(err instanceof IdentityError) && err.stack) out.stack = err.stack
    return out
  }
  return String(err)
}
