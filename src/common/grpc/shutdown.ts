import type * as grpc from '@grpc/grpc-js'

/** Lets in-flight calls finish for up to `graceMs`, then cancels the rest. */
export function shutdownGrpc(s: grpc.Server, graceMs: number): Promise<void> {
  return new Promise((resolve) => {
    const t = setTimeout(() => {
      s.forceShutdown()
      resolve()
    }, graceMs)
    s.tryShutdown(() => {
      clearTimeout(t)
      resolve()
    })
  })
}
