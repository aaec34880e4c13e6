/**
 * How failures of the PostgreSQL datastore reach callers: the store's own
 * errors (IdentityError, TypeError, RangeError) pass through; a lost or
 * refused connection is ERR_DATASTORE_UNAVAILABLE; a serialization failure
 * or deadlock left after the retries (or inside a caller's transaction,
 * which is never replayed) is ERR_DATASTORE_CONFLICT; anything else is
 * ERR_DATASTORE. Messages name the operation and the PostgreSQL error code,
 * never the values.
 */
import pg from 'pg'
import { IdentityError } from '../../../errors/index.js'

export function passThrough(err: unknown): boolean {
  return err instanceof IdentityError || err instanceof TypeError || err instanceof RangeError
}

export function isDatabaseError(err: unknown): err is pg.DatabaseError {
  return err instanceof pg.DatabaseError
}

/** SQLSTATE of a failed statement, or undefined. */
export function sqlState(err: unknown): string | undefined {
  return isDatabaseError(err) ? err.code : undefined
}

/** serialization_failure, deadlock_detected: the transaction was rolled back and may be run again. */
export function isRetryableConflict(err: unknown): boolean {
  const code = sqlState(err)
  return code === '40001' || code === '40P01'
}

const CONNECTION_ERRNOS = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ENOENT', // a Unix socket that is not there (the server is down)
  // TLS: the server's certificate does not verify (it will not on a retry either, but the database is unreachable all the same)
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'ERR_TLS_CERT_ALTNAME_INVALID',
])

const CONNECTION_MESSAGES =
  /Connection terminated|connection timeout|timeout exceeded when trying to connect|not queryable|Client was closed|Connection closed|server closed the connection|the database system is (shutting down|starting up|in recovery mode)|does not support SSL/i

/**
 * The connection to PostgreSQL failed, was refused, or was lost (the server
 * stopped, restarted, or became unreachable), as opposed to a statement error.
 */
export function isConnectionError(err: unknown): boolean {
  if (isDatabaseError(err)) {
    const code = err.code ?? ''
    // 08: connection exception; 57P01-3: admin / crash shutdown, cannot connect now; 53300: too many connections
    return code.startsWith('08') || code === '57P01' || code === '57P02' || code === '57P03' || code === '53300'
  }
  if (!(err instanceof Error)) return false
  const errno = (err as NodeJS.ErrnoException).code
  if (errno !== undefined && CONNECTION_ERRNOS.has(errno)) return true
  return CONNECTION_MESSAGES.test(err.message)
}

/** A short, value-free reason for a failure to reach PostgreSQL. */
export function reasonOf(err: unknown): string {
  if (isDatabaseError(err)) {
    const code = err.code ?? 'unknown'
    if (code.startsWith('28')) return `login refused, SQLSTATE ${code}: check the user and the password`
    if (code === '3D000') return `SQLSTATE ${code}: the database does not exist`
    if (code === '57P01' || code === '57P02' || code === '57P03') return `SQLSTATE ${code}: the server is shutting down or starting`
    return `SQLSTATE ${code}`
  }
  const errno = (err as NodeJS.ErrnoException | undefined)?.code
  if (typeof errno === 'string') return errno.startsWith('E') ? errno : `TLS: ${errno}`
  if (err instanceof Error && /does not support SSL/i.test(err.message)) return 'TLS: the server does not offer TLS'
  if (err instanceof Error && /timeout/i.test(err.message)) return 'connection timeout'
  return 'connection lost'
}

export function closedError(): IdentityError {
  return new IdentityError('ERR_DATASTORE', 'datastore is closed')
}

export function unavailableError(op: string, err: unknown, outcomeUnknown = false): IdentityError {
  const reason = reasonOf(err)
  return new IdentityError(
    'ERR_DATASTORE_UNAVAILABLE',
    outcomeUnknown
      ? `datastore: ${op}: the connection to PostgreSQL was lost while committing (${reason}); whether the write was applied is unknown`
      : `datastore: ${op} failed: PostgreSQL is unavailable (${reason})`,
    { cause: err, details: { reason, ...(outcomeUnknown ? { outcomeUnknown: true } : {}) } },
  )
}

/** Maps any failure of an operation to what the caller sees. */
export function datastoreError(op: string, err: unknown): Error {
  if (passThrough(err)) return err as Error
  if (isConnectionError(err)) return unavailableError(op, err)
  const code = sqlState(err)
  if (code === '40001' || code === '40P01') {
    return new IdentityError('ERR_DATASTORE_CONFLICT', `datastore: ${op} conflicted with a concurrent transaction (SQLSTATE ${code}); retry it`, {
      cause: err,
      details: { sqlState: code },
    })
  }
  if (code === '22021' || code === '22P05') {
    return new IdentityError('ERR_INVALID_ARGUMENT', `datastore: ${op}: a value is not valid text for PostgreSQL`, { cause: err, details: { sqlState: code } })
  }
  return new IdentityError('ERR_DATASTORE', `datastore: ${op} failed`, { cause: err, ...(code !== undefined ? { details: { sqlState: code } } : {}) })
}
