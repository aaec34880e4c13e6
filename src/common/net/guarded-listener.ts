import net from 'node:net'
import type * as grpc from '@grpc/grpc-js'
import type { Registry } from 'prom-client'
import type { Logger } from '../log/logger.js'
import { ConnectionGuard, type ConnectionGuardLimits } from './connection-guard.js'

export interface GuardedTcpListener {
  /** The port listened on (the one asked for, or the kernel's choice for 0). */
  readonly port: number
  readonly guard: ConnectionGuard
  /** Stops accepting new connections (those open keep going). */
  stopAccepting(): void
  /** Stops accepting and destroys every connection still open. */
  close(): Promise<void>
}

/**
 * Serves a grpc-js server on a TCP port through a connection guard instead
 * of `bindAsync`: connections are accepted here, counted per source address
 * and injected into grpc-js with `credentials` (TLS, mutual TLS and
 * certificate providers behave exactly as with `bindAsync`: grpc-js builds
 * the same `http2.createSecureServer` behind the injector). The guard adds
 * the TLS-handshake-and-preface timeout, the idle timeout and the reaping of
 * sessions Node's HTTP/2 layer gave up on (see connection-guard.ts).
 * Rejects with the listen error (EADDRINUSE, EACCES, ...).
 */
export async function listenGuardedTcp(opts: {
  grpcServer: grpc.Server
  credentials: grpc.ServerCredentials
  host: string
  port: number
  limits: ConnectionGuardLimits
  listener: string
  log: Logger
  registry?: Registry
}): Promise<GuardedTcpListener> {
  const guard = new ConnectionGuard({
    ...opts.limits,
    listener: opts.listener,
    peerKind: 'address',
    log: opts.log,
    ...(opts.registry ? { registry: opts.registry } : {}),
  })
  const injector = guard.createInjector(opts.grpcServer, opts.credentials)
  const server = net.createServer((socket) => {
    if (guard.admit(socket, socket.remoteAddress ?? 'unknown')) injector.injectConnection(socket)
  })
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject)
      server.listen(opts.port, opts.host, () => {
        server.off('error', reject)
        resolve()
      })
    })
  } catch (err) {
    guard.close()
    injector.destroy()
    throw err
  }
  server.on('error', (err) => opts.log.error({ err }, 'Listener error'))
  const port = (server.address() as net.AddressInfo).port
  let stopped: Promise<void> | undefined
  // server.close() calls back only once every accepted connection has ended:
  // stopAccepting must not wait for that (the connections end only after the
  // gRPC server has shut down); close() does, after destroying them.
  const closing = () => (stopped ??= new Promise<void>((resolve) => server.close(() => resolve())))
  const stopAccepting = (): void => void closing()
  return {
    port,
    guard,
    stopAccepting,
    async close() {
      const s = closing()
      injector.destroy()
      guard.close()
      await s
    },
  }
}
