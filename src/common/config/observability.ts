/**
 * The `health_checks` and `metrics` blocks shared by server.toml
 * (`[server.health_checks]`, `[server.metrics]`) and agent.toml
 * (`[agent.health_checks]`, `[agent.metrics]`), and their typed form.
 */
import { z } from 'zod'
import { hostPort } from './refinements.js'

export const healthChecksSchema = () =>
  z
    .object({
      bind_address: hostPort(),
      live_path: z.string().startsWith('/', 'must start with /').default('/live'),
      ready_path: z.string().startsWith('/', 'must start with /').default('/ready'),
    })
    .strict()

export const metricsSchema = () => z.object({ bind_address: hostPort() }).strict()

export interface HealthEndpointConfig {
  host: string
  port: number
  livePath: string
  readyPath: string
}

export interface MetricsEndpointConfig {
  host: string
  port: number
}

/** `host:port`, `[v6]:port` or `:port` (host 127.0.0.1). */
export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':')
  const host = s.slice(0, i).replace(/^\[|\]$/g, '') || '127.0.0.1'
  return { host, port: Number(s.slice(i + 1)) }
}

export function healthEndpoint(h: z.output<ReturnType<typeof healthChecksSchema>> | undefined): HealthEndpointConfig | undefined {
  return h ? { ...splitHostPort(h.bind_address), livePath: h.live_path, readyPath: h.ready_path } : undefined
}

export function metricsEndpoint(m: z.output<ReturnType<typeof metricsSchema>> | undefined): MetricsEndpointConfig | undefined {
  return m ? splitHostPort(m.bind_address) : undefined
}
