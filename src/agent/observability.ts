/**
 * The agent's health and metrics surface, as the server's: `/live` and
 * `/ready` (`[agent.health_checks]`) and Prometheus `/metrics`
 * (`[agent.metrics]`), on plain HTTP at the configured address. The
 * endpoints start before node attestation, so `/live` answers (and `/ready`
 * says not ready) while the agent attests.
 *
 * Ready means: attested (the agent holds an X.509-SVID that has not expired),
 * holding a trust bundle, the first full Sync from the server applied to the
 * cache, and the Workload API socket listening. A lost Sync stream alone does
 * not make the agent unready: it keeps serving its cached identities, and
 * `warrant_agent_sync_stream_up` / `warrant_agent_last_sync_age_seconds` show it.
 */
import type { Clock } from '../common/clock.js'
import type { HealthEndpointConfig, MetricsEndpointConfig } from '../common/config/observability.js'
import type { CallEndObserver } from '../common/grpc/call-observer.js'
import { startHealthEndpoint, startMetricsEndpoint, type HttpEndpoint, type Readiness } from '../common/http/http-endpoints.js'
import { F, type Logger } from '../common/log/logger.js'
import { createAgentMetrics, type AgentMetrics } from './metrics.js'

/** What the agent hands over once it has it. */
export interface AgentParts {
  cacheStats(): { entries: number; x509Svids: number; jwtSvids: number }
  /** True once the first full Sync was applied. */
  synced(): boolean
  /** The agent SVID's notAfter (ms), undefined before attestation. */
  svidNotAfter(): number | undefined
  hasBundle(): boolean
}

export class AgentObservability {
  readonly metrics: AgentMetrics | undefined
  /** Pass to startWorkloadApi: counts calls by method and status (undefined without metrics). */
  readonly onCallEnd: CallEndObserver | undefined
  readonly #clock: Clock
  readonly #endpoints: HttpEndpoint[] = []
  readonly #workloadApiRequired: boolean
  #parts: AgentParts | undefined
  #connections: (() => number) | undefined
  #listening = false
  #stopping = false
  #lastSyncAt: number | undefined
  #streamUp = false

  private constructor(opts: { clock: Clock; metrics: boolean; workloadApiRequired: boolean }) {
    this.#clock = opts.clock
    this.#workloadApiRequired = opts.workloadApiRequired
    if (opts.metrics) {
      const m = createAgentMetrics(
        {
          cacheStats: () => this.#parts?.cacheStats() ?? { entries: 0, x509Svids: 0, jwtSvids: 0 },
          connections: () => (this.#listening ? (this.#connections?.() ?? 0) : 0),
          lastSyncAgeSeconds: () => (this.#lastSyncAt === undefined ? undefined : this.#streamUp ? 0 : (this.#clock.now() - this.#lastSyncAt) / 1000),
          syncStreamUp: () => this.#streamUp,
          svidRemainingSeconds: () => {
            const t = this.#parts?.svidNotAfter()
            return t === undefined ? 0 : Math.max(0, (t - this.#clock.now()) / 1000)
          },
        },
        { defaults: true },
      )
      this.metrics = m
      this.onCallEnd = (method, code, errorCode) => {
        m.workloadApiCalls.inc({ method, code: String(code) })
        if (errorCode === 'ERR_WORKLOAD_ATTESTATION_FAILED') m.workloadAttestationFailures.inc({ method })
      }
    }
  }

  /** Starts the configured endpoints (none when neither is configured). */
  static async start(opts: {
    health: HealthEndpointConfig | undefined
    metrics: MetricsEndpointConfig | undefined
    clock: Clock
    log: Logger
    workloadApiRequired: boolean
  }): Promise<AgentObservability> {
    const o = new AgentObservability({ clock: opts.clock, metrics: opts.metrics !== undefined, workloadApiRequired: opts.workloadApiRequired })
    const hostPort = (host: string, port: number) => (host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`)
    try {
      if (opts.health) {
        const ep = await startHealthEndpoint(opts.health, { ready: () => o.readiness() })
        o.#endpoints.push(ep)
        opts.log.info(
          { [F.ADDRESS]: hostPort(opts.health.host, ep.port), live_path: opts.health.livePath, ready_path: opts.health.readyPath },
          'Health endpoint listening',
        )
      }
      if (opts.metrics) {
        const ep = await startMetricsEndpoint(opts.metrics, o.metrics!.registry)
        o.#endpoints.push(ep)
        opts.log.info({ [F.ADDRESS]: hostPort(opts.metrics.host, ep.port) }, 'Metrics endpoint listening')
      }
    } catch (err) {
      await o.close()
      throw err
    }
    return o
  }

  /** Bound ports, in the order health, metrics (of those configured). */
  get ports(): number[] {
    return this.#endpoints.map((e) => e.port)
  }

  attach(parts: AgentParts): void {
    this.#parts = parts
  }

  workloadApiListening(connections: () => number): void {
    this.#connections = connections
    this.#listening = true
  }

  nodeAttestation(outcome: 'success' | 'failure'): void {
    this.metrics?.nodeAttestations.inc({ outcome })
  }

  /** A Sync message arrived: the stream is up and the cache current. */
  syncMessage(): void {
    this.#lastSyncAt = this.#clock.now()
    this.#streamUp = true
  }

  /** The Sync stream ended or failed. */
  syncDown(): void {
    if (this.#streamUp) this.#lastSyncAt = this.#clock.now()
    this.#streamUp = false
  }

  readiness(): Readiness {
    const p = this.#parts
    const notAfter = p?.svidNotAfter()
    const checks: Record<string, boolean> = {
      attested: notAfter !== undefined && notAfter > this.#clock.now(),
      bundle: p?.hasBundle() ?? false,
      synced: p?.synced() ?? false,
    }
    if (this.#workloadApiRequired) checks.workload_api = this.#listening
    return { ready: !this.#stopping && Object.values(checks).every(Boolean), checks }
  }

  /** Not ready from now on (the agent is stopping); endpoints stay up until close(). */
  stopping(): void {
    this.#stopping = true
    this.#listening = false
  }

  async close(): Promise<void> {
    this.#stopping = true
    await Promise.all(this.#endpoints.map((e) => e.close()))
  }
}
