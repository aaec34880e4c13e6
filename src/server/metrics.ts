import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

/** The server's Prometheus metrics, on their own registry (no global state). */
export function createServerMetrics(opts: { defaults?: boolean; countEntries?: () => Promise<number>; countAgents?: () => Promise<number> } = {}) {
  const registry = new Registry()
  if (opts.defaults) collectDefaultMetrics({ register: registry, prefix: 'warrant_server_' })
  const r = { registers: [registry] }
  return {
    registry,
    requests: new Counter({
      name: 'warrant_server_rpc_requests_total',
      help: 'RPCs handled, by service, method and gRPC code',
      labelNames: ['method', 'code'] as const,
      ...r,
    }),
    signings: new Counter({ name: 'warrant_server_svid_signed_total', help: 'SVIDs signed, by kind', labelNames: ['kind'] as const, ...r }),
    signLatency: new Histogram({
      name: 'warrant_server_svid_sign_seconds',
      help: 'Time to sign one SVID',
      labelNames: ['kind'] as const,
      buckets: [0.0002, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
      ...r,
    }),
    attestations: new Counter({
      name: 'warrant_server_node_attestations_total',
      help: 'Node attestations, by attestor and outcome',
      labelNames: ['attestor', 'outcome'] as const,
      ...r,
    }),
    attestationsInFlight: new Gauge({
      name: 'warrant_server_attestations_in_flight',
      help: 'Attest calls in flight (unauthenticated; capped by max_concurrent_attestations)',
      ...r,
    }),
    attestationsRefused: new Counter({
      name: 'warrant_server_attestations_refused_total',
      help: 'Attest calls refused before any of their request was read, by reason (global or per_address cap)',
      labelNames: ['reason'] as const,
      ...r,
    }),
    entries: new Gauge({
      name: 'warrant_server_entries',
      help: 'Registration entries',
      ...r,
      async collect() {
        if (opts.countEntries) this.set(await opts.countEntries())
      },
    }),
    agents: new Gauge({
      name: 'warrant_server_agents',
      help: 'Attested agents',
      ...r,
      async collect() {
        if (opts.countAgents) this.set(await opts.countAgents())
      },
    }),
    bundleSequence: new Gauge({ name: 'warrant_server_bundle_sequence', help: 'spiffe_sequence of the local bundle', ...r }),
  }
}

export type Metrics = ReturnType<typeof createServerMetrics>
