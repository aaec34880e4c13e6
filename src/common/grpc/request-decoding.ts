import type { ServiceDefinition } from '@grpc/grpc-js'
import { IdentityError } from '../../errors/identity-error.js'

/**
 * Requests whose bytes do not decode are the caller's fault. grpc-js answers
 * a deserializer that throws with INTERNAL "Error deserializing request"; a
 * guarded deserializer (`withRequestDecodeGuard`) returns this marker instead,
 * and the handler adapters (handlers.ts) answer it with INVALID_ARGUMENT
 * `ERR_REQUEST_MALFORMED` through toGrpcError, before the handler runs.
 */
export class MalformedRequest {
  readonly cause: unknown
  constructor(cause: unknown) {
    this.cause = cause
  }
}

/** The error a malformed request (or a stream that ends inside a message) is answered with. */
export function malformedRequestError(what: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_REQUEST_MALFORMED', `malformed request: ${what}`, cause === undefined ? undefined : { cause })
}

/** A copy of `service` whose request deserializers return a MalformedRequest instead of throwing. */
export function withRequestDecodeGuard(service: ServiceDefinition): ServiceDefinition {
  const out: Record<string, unknown> = {}
  for (const [name, m] of Object.entries(service)) {
    const decode = m.requestDeserialize
    out[name] = {
      ...m,
      requestDeserialize: (bytes: Buffer): unknown => {
        try {
          return decode(bytes)
        } catch (err) {
          return new MalformedRequest(err)
        }
      },
    }
  }
  return out as ServiceDefinition
}
