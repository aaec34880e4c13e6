import * as grpc from '@grpc/grpc-js'
import type { ServiceDefinition } from '@grpc/grpc-js'
import { callObserver, type CallEndObserver } from '../../common/grpc/call-observer.js'
import { loadProto } from '../../common/grpc/proto.js'
import { F, type Logger } from '../../common/log/logger.js'
import { PeerTrackingServer, type PeerCred, type StartTimeReader } from '../workload/peer.js'
import { HealthService } from './health.js'
import type { WorkloadManager } from './manager.js'
import { workloadApiHandlers, workloadApiService } from './workload-api.js'
import type net from 'node:net'
import type { Registry } from 'prom-client'
import type { ConnectionGuardLimits } from '../../common/net/connection-guard.js'

export interface StartWorkloadApiOptions {
  /** Absolute path of the Unix socket, e.g. `/tmp/warrant-agent/public/api.sock`. */
  socketPath: string
  manager: WorkloadManager
  log: Logger
  /** SPIRE's `allow_unauthenticated_verifiers`. Default false. */
  allowUnauthenticatedVerifiers?: boolean
  /** Told how each call ended (metrics); adds a server interceptor only when set. */
  onCallEnd?: CallEndObserver
  /** Tests only: replaces the `/proc/<pid>/stat` start-time reader (PID-reuse guard). */
  readStartTime?: StartTimeReader
  /** Tests only: replaces SO_PEERCRED. */
  getPeerCred?: (socket: net.Socket) => PeerCred
  /** Per-uid connection cap and timeouts (defaults: DEFAULT_WORKLOAD_API_LIMITS). */
  connectionLimits?: Partial<ConnectionGuardLimits>
  /** Registry for the connection metrics (warrant_connections_*). */
  registry?: Registry
  /** See WorkloadApiHandlerOptions.attestationReuseMs. Default 0. */
  attestationReuseMs?: number
  /** Tests only: the monotonic clock (ms) of attestation reuse. */
  now?: () => number
}

export interface WorkloadApiServer {
  readonly socketPath: string
  /** Open connections (for tests and metrics). */
  readonly connectionCount: number
  /** Stops accepting, ends every stream and connection, removes the socket. */
  close(): Promise<void>
}

interface ServiceCtor {
  service: ServiceDefinition
}

/**
 * Serves the SPIFFE Workload API and grpc.health.v1.Health on a Unix socket
 * (directory 0755, socket 0777), identifying each caller by SO_PEERCRED.
 */
export async function startWorkloadApi(opts: StartWorkloadApiOptions): Promise<WorkloadApiServer> {
  const log = opts.log.child({ [F.SUBSYSTEM]: 'workload_api' })
  const workload = loadProto('spiffe/workload/workload.proto').SpiffeWorkloadAPI as unknown as ServiceCtor
  const healthPkg = loadProto('grpc/health/v1/health.proto') as unknown as { grpc: { health: { v1: { Health: ServiceCtor } } } }

  // No channelz: nothing serves it on this socket, and it costs every call
  // (counters, timestamps, a tracker object with four closures).
  const grpcServer = new grpc.Server({ 'grpc.enable_channelz': 0, ...(opts.onCallEnd ? { interceptors: [callObserver(opts.onCallEnd)] } : {}) })
  const peers = new PeerTrackingServer({
    socketPath: opts.socketPath,
    grpcServer,
    log,
    ...(opts.readStartTime ? { readStartTime: opts.readStartTime } : {}),
    ...(opts.getPeerCred ? { getPeerCred: opts.getPeerCred } : {}),
    ...(opts.connectionLimits ? { connectionLimits: opts.connectionLimits } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  })
  const health = new HealthService(['SpiffeWorkloadAPI'])
  grpcServer.addService(
    workloadApiService(workload.service),
    workloadApiHandlers({
      manager: opts.manager,
      peers,
      log,
      ...(opts.allowUnauthenticatedVerifiers !== undefined ? { allowUnauthenticatedVerifiers: opts.allowUnauthenticatedVerifiers } : {}),
      ...(opts.attestationReuseMs !== undefined ? { attestationReuseMs: opts.attestationReuseMs } : {}),
      ...(opts.now ? { now: opts.now } : {}),
    }),
  )
  grpcServer.addService(healthPkg.grpc.health.v1.Health.service, health.handlers(log))

  try {
    await peers.listen()
  } catch (err) {
    grpcServer.forceShutdown()
    throw err
  }
  log.info({ [F.PATH]: opts.socketPath }, 'Workload API listening')

  let closing: Promise<void> | undefined
  return {
    socketPath: opts.socketPath,
    get connectionCount() {
      return peers.connectionCount
    },
    close() {
      closing ??= (async () => {
        health.shutdown()
        await peers.close()
        grpcServer.forceShutdown()
        log.info({ [F.PATH]: opts.socketPath }, 'Workload API stopped')
      })()
      return closing
    },
  }
}
