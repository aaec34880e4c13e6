import type { Registry } from 'prom-client'
import type { HealthEndpointConfig, MetricsEndpointConfig } from '../../common/config/observability.js'
import { startHealthEndpoint, startMetricsEndpoint, type HttpEndpoint } from '../../common/http/http-endpoints.js'

/**
 * The server's plain-HTTP endpoints, each only when configured: /live and
 * /ready (`[server.health_checks]`) and Prometheus /metrics
 * (`[server.metrics]`). Returns the endpoints started, to close in reverse.
 */
export async function startServerHttp(
  cfg: { health: HealthEndpointConfig | undefined; metrics: MetricsEndpointConfig | undefined },
  o: { ready: () => boolean; registry: Registry },
): Promise<HttpEndpoint[]> {
  const started: HttpEndpoint[] = []
  try {
    if (cfg.health) started.push(await startHealthEndpoint(cfg.health, { ready: o.ready }))
    if (cfg.metrics) started.push(await startMetricsEndpoint(cfg.metrics, o.registry))
    return started
  } catch (err) {
    for (const ep of started.reverse()) await ep.close().catch(() => undefined)
    throw err
  }
}
