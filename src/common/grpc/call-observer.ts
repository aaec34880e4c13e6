import * as grpc from '@grpc/grpc-js'

/** Called once per call when it ends: its method name, gRPC status code and `x-error-code` trailer (if any). */
export type CallEndObserver = (method: string, code: grpc.status, errorCode: string | undefined) => void

/**
 * A server interceptor that reports how every call ended: with the status the
 * server sent (including the `x-error-code` trailer set by `toGrpcError`), or
 * CANCELLED when the client went away first (a Workload API stream normally
 * ends that way).
 */
export function callObserver(onEnd: CallEndObserver): grpc.ServerInterceptor {
  return (def, call) => {
    const path = def.path
    const method = path.slice(path.lastIndexOf('/') + 1)
    let ended = false
    const end = (code: grpc.status, errorCode: string | undefined) => {
      if (ended) return
      ended = true
      onEnd(method, code, errorCode)
    }
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          // grpc-js calls the next listener's onCancel itself.
          onCancel() {
            end(grpc.status.CANCELLED, undefined)
          },
        })
      },
      sendStatus(status, next) {
        const ec = status.metadata?.get('x-error-code')[0]
        end(status.code, typeof ec === 'string' ? ec : undefined)
        next(status)
      },
    })
  }
}
