import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'

/** What the agent's gauges read when scraped. */
export interface AgentMetricSources {
  cacheStats(): { entries: number; x509Svids: number; jwtSvids: number }
  /** Open Workload API connections (0 without the socket). */
  connections(): number
  /** Seconds since the agent's cache was last known current (see `warrant_agent_last_sync_age_seconds`), or undefined before the first sync. */
  lastSyncAgeSeconds(): number | undefined
  syncStreamUp(): boolean
  /** Seconds until the agent's own X.509-SVID expires. */
  svidRemainingSeconds(): number
}

/** The agent's Prometheus metrics, on their own registry (no global state). */
export function createAgentMetrics(sources: AgentMetricSources, opts: { defaults?: boolean } = {}) {
  const registry = new Registry()
  if (opts.defaults) collectDefaultMetrics({ register: registry, prefix: 'warrant_agent_' })
  const r = { registers: [registry] }
  const gauge = (name: string, help: string, read: () => number | undefined) =>
    new Gauge({
      name,
      help,
      ...r,
      collect() {
        const v = read()
        if (v === undefined) this.reset()
        else this.set(v)
      },
    })
  gauge('warrant_agent_workload_api_connections', 'Open Workload API connections', () => sources.connections())
  gauge('warrant_agent_entries', 'Registration entries the agent holds from the server', () => sources.cacheStats().entries)
  gauge('warrant_agent_x509_svids_cached', 'X.509-SVIDs held in the agent cache', () => sources.cacheStats().x509Svids)
  gauge('warrant_agent_jwt_svids_cached', 'JWT-SVIDs held in the agent cache', () => sources.cacheStats().jwtSvids)
  gauge(
    'warrant_agent_last_sync_age_seconds',
    'Seconds since the cache was last known current: 0 while the Sync stream is up (the server pushes every change), else since its last message; absent before the first sync',
    () => sources.lastSyncAgeSeconds(),
  )
  gauge('warrant_agent_sync_stream_up', '1 while the Sync stream to the server is open', () => (sources.syncStreamUp() ? 1 : 0))
  gauge('warrant_agent_svid_remaining_seconds', "Seconds until the agent's own X.509-SVID expires", () => sources.svidRemainingSeconds())
  return {
    registry,
    workloadApiCalls: new Counter({
      name: 'warrant_agent_workload_api_calls_total',
      help: 'Workload API calls, by method and gRPC status code (CANCELLED = 1 is how a client ends a stream)',
      labelNames: ['method', 'code'] as const,
      ...r,
    }),
    workloadAttestationFailures: new Counter({
      name: 'warrant_agent_workload_attestation_failures_total',
      help: 'Workload API calls refused because the caller could not be attested, by method',
      labelNames: ['method'] as const,
      ...r,
    }),
    nodeAttestations: new Counter({
      name: 'warrant_agent_node_attestations_total',
      help: 'Node attestations of this agent to the server, by outcome (success, failure)',
      labelNames: ['outcome'] as const,
      ...r,
    }),
  }
}

export type AgentMetrics = ReturnType<typeof createAgentMetrics>
