import { status as Status, type ServiceError } from '@grpc/grpc-js'
import { ERROR_CODES, type ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'

/** The code a status means when the server sent no `x-error-code` trailer (SPIFFE Workload API, Appendix A). */
const BY_STATUS: Partial<Record<number, ErrorCode>> = {
  [Status.INVALID_ARGUMENT]: 'ERR_INVALID_ARGUMENT',
  [Status.PERMISSION_DENIED]: 'ERR_NO_IDENTITY_ISSUED',
  [Status.UNAVAILABLE]: 'ERR_UNAVAILABLE',
  [Status.DEADLINE_EXCEEDED]: 'ERR_UNAVAILABLE',
  [Status.CANCELLED]: 'ERR_UNAVAILABLE',
  [Status.UNIMPLEMENTED]: 'ERR_UNSUPPORTED',
  [Status.NOT_FOUND]: 'ERR_NOT_FOUND',
  [Status.RESOURCE_EXHAUSTED]: 'ERR_RESOURCE_EXHAUSTED',
  [Status.UNAUTHENTICATED]: 'ERR_UNAUTHENTICATED',
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as { code?: unknown }).code === 'number' && 'metadata' in err
}

/**
 * A Workload API call's failure as an IdentityError: the code from the
 * agent's `x-error-code` trailer when it names one of ours, else from the
 * status. `details.grpc_code` keeps the status, which decides retries.
 */
export function fromWorkloadApiError(err: unknown, what: string): IdentityError {
  if (err instanceof IdentityError) return err
  if (!isServiceError(err)) return new IdentityError('ERR_INTERNAL', `workloadapi: ${what} failed`, { cause: err })
  const trailer = err.metadata?.get('x-error-code')?.[0]
  const named = typeof trailer === 'string' && Object.hasOwn(ERROR_CODES, trailer) ? (trailer as ErrorCode) : undefined
  const code = named ?? BY_STATUS[err.code] ?? 'ERR_INTERNAL'
  return new IdentityError(code, `workloadapi: ${what}: ${err.details || 'failed'}`, { cause: err, details: { grpc_code: err.code } })
}

/**
 * Whether a watch should retry after `err` (Workload API spec, Appendix A):
 * not after InvalidArgument (the request is wrong; go-spiffe cancels the
 * watch) or Unimplemented; after anything else (Unavailable, PermissionDenied
 * while the identity is not issued yet, a malformed response, a dropped connection).
 */
export function isRetryable(err: IdentityError): boolean {
  const g = err.details?.grpc_code
  return g !== Status.INVALID_ARGUMENT && g !== Status.UNIMPLEMENTED
}
