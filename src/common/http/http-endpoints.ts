/**
 * Plain-HTTP operability endpoints shared by the server and the agent:
 * `/live` and `/ready` (JSON), and Prometheus `/metrics`. Both listen on the
 * configured address (loopback by default) and answer 404 to anything else.
 */
import { createServer, type Server } from 'node:http'
import type { Registry } from 'prom-client'
import { IdentityError } from '../../errors/identity-error.js'
import type { HealthEndpointConfig, MetricsEndpointConfig } from '../config/observability.js'

export interface HttpEndpoint {
  /** The bound port (the configured one, or the one the kernel chose for port 0). */
  readonly port: number
  close(): Promise<void>
}

/** Readiness with the state of each check, reported in the `/ready` body. */
export interface Readiness {
  ready: boolean
  checks?: Record<string, boolean>
}

export async function startHealthEndpoint(
  cfg: HealthEndpointConfig,
  probes: { live?: () => boolean; ready: () => boolean | Readiness },
): Promise<HttpEndpoint> {
  const srv = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0]
    let status: number
    let body: Record<string, unknown>
    try {
      if (path === cfg.livePath) {
        const live = probes.live?.() ?? true
        status = live ? 200 : 500
        body = { live }
      } else if (path === cfg.readyPath) {
        const r = probes.ready()
        const readiness: Readiness = typeof r === 'boolean' ? { ready: r } : r
        status = readiness.ready ? 200 : 500
        body = readiness.checks ? { ready: readiness.ready, checks: readiness.checks } : { ready: readiness.ready }
      } else {
        res.writeHead(404).end()
        return
      }
    } catch {
      status = 500
      body = path === cfg.livePath ? { live: false } : { ready: false }
    }
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body))
  })
  await listen(srv, cfg.host, cfg.port)
  return endpoint(srv)
}

export async function startMetricsEndpoint(cfg: MetricsEndpointConfig, registry: Registry): Promise<HttpEndpoint> {
  const srv = createServer((req, res) => {
    if ((req.url ?? '').split('?')[0] !== '/metrics') return void res.writeHead(404).end()
    registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      () => res.writeHead(500).end(),
    )
  })
  await listen(srv, cfg.host, cfg.port)
  return endpoint(srv)
}

function endpoint(srv: Server): HttpEndpoint {
  const addr = srv.address()
  const port = typeof addr === 'object' && addr !== null ? addr.port : 0
  let closing: Promise<void> | undefined
  return {
    port,
    close() {
      closing ??= new Promise<void>((resolve) => {
        srv.closeAllConnections?.()
        srv.close(() => resolve())
      })
      return closing
    },
  }
}

function listen(srv: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    srv.once('error', (err) => reject(new IdentityError('ERR_CONFIG_INVALID', `cannot listen on ${host}:${port}: ${err.message}`, { cause: err })))
    srv.listen(port, host, () => resolve())
  })
}
