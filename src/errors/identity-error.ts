import { ERROR_CODES, type ErrorCode, type GrpcStatusCode } from './codes.js'

/**
 * The one error class for expected failures. Branch on `code`, never on the
 * message. Programmer errors throw TypeError / RangeError instead.
 */
export class IdentityError extends Error {
  readonly code: ErrorCode
  readonly details: Readonly<Record<string, unknown>> | undefined

  constructor(code: ErrorCode, message: string, opts?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, opts?.cause === undefined ? undefined : { cause: opts.cause })
    this.name = 'IdentityError'
    this.code = code
    this.details = opts?.details
  }

  get grpcStatus(): GrpcStatusCode {
    return ERROR_CODES[this.code]
  }
}

export function isIdentityError(err: unknown, code?: ErrorCode): err is IdentityError {
  return err instanceof IdentityError && (code === undefined || err.code === code)
}
