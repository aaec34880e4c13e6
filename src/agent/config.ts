/**
 * agent.toml: a strict file schema (unknown keys are errors), then the typed
 * runtime config. Every problem of the core block and of every plugin block
 * is reported together, with its path. Relative paths resolve against the
 * config file's directory.
 */
import { dirname, isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { configError, type ConfigIssue } from '../common/config/issues.js'
import {
  healthChecksSchema,
  healthEndpoint,
  metricsEndpoint,
  metricsSchema,
  type HealthEndpointConfig,
  type MetricsEndpointConfig,
} from '../common/config/observability.js'
import { hostPort, logLevel, trustDomain } from '../common/config/refinements.js'
import { readTomlFile } from '../common/config/toml.js'
import { ConnectionLimitsSchema, toConnectionLimits } from '../common/config/connection-limits.js'
import type { ConnectionGuardLimits } from '../common/net/connection-guard.js'
import { errorPrefixing, selectPlugins, type AnyPlugin, type ConfiguredPlugin } from '../plugin/catalog.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'

export const DEFAULT_X509_SVID_CACHE_MAX_SIZE = 1000
export const DEFAULT_JWT_SVID_CACHE_MAX_SIZE = 1000

const AgentBlockSchema = z
  .object({
    trust_domain: trustDomain(),
    // One server, or several of one trust domain (failover in list order); a name may resolve to several addresses.
    server_address: z.union([hostPort(), z.array(hostPort()).min(1, 'must name at least one server').max(64)]),
    socket_path: z.string().min(1, 'must not be empty'),
    data_dir: z.string().min(1, 'must not be empty'),
    log_level: logLevel().optional(),
    trust_bundle_path: z.string().min(1, 'must not be empty').optional(),
    insecure_bootstrap: z.boolean().optional(),
    x509_svid_cache_max_size: z.number().int('must be an integer').min(1, 'must be at least 1').max(1_000_000).optional(),
    jwt_svid_cache_max_size: z.number().int('must be an integer').min(1, 'must be at least 1').max(1_000_000).optional(),
    health_checks: healthChecksSchema().optional(),
    metrics: metricsSchema().optional(),
    connection_limits: ConnectionLimitsSchema.optional(),
  })
  .strict()

// The plugins table is the catalog's to check (selectPlugins), block by block.
const FileSchema = z.object({ agent: AgentBlockSchema, plugins: z.unknown().optional() }).strict()

export type { AnyPlugin, ConfiguredPlugin }

/** The plugin definitions the agent may use, registered by the composition root (src/cli/plugins.ts). */
export interface AgentPluginRegistry<NA, WA, KM> {
  nodeAttestors: readonly AnyPlugin<NA>[]
  workloadAttestors: readonly AnyPlugin<WA>[]
  keyManagers: readonly AnyPlugin<KM>[]
}

/**
 * The agent's plugin types and their cardinality: exactly one node attestor,
 * at least one workload attestor, at most one key manager (none: the agent
 * key is kept in a 0600 file in data_dir). Attestor failures are labelled
 * by the catalog (`workloadattestor(unix): ...`).
 */
export function agentCatalog<NA, WA, KM>(r: AgentPluginRegistry<NA, WA, KM>) {
  return {
    node_attestor: {
      cardinality: 'exactly_one' as const,
      plugins: r.nodeAttestors,
      adapt: errorPrefixing<NA & object>(['payload', 'answer'], 'ERR_NODE_ATTESTATION_FAILED') as unknown as (i: NA, label: string) => NA,
    },
    workload_attestor: {
      cardinality: 'at_least_one' as const,
      plugins: r.workloadAttestors,
      adapt: errorPrefixing<WA & object>(['attest'], 'ERR_WORKLOAD_ATTESTATION_FAILED') as unknown as (i: WA, label: string) => WA,
    },
    key_manager: { cardinality: 'at_most_one' as const, plugins: r.keyManagers },
  }
}

export interface AgentConfig<NA = unknown, WA = unknown, KM = unknown> {
  trustDomain: TrustDomain
  /** `host:port` of the server's agent API: the first of `serverAddresses`. */
  serverAddress: string
  /** Every configured server (`server_address`, a string or a list), in the order the agent tries them. */
  serverAddresses: string[]
  socketPath: string
  dataDir: string
  logLevel: 'debug' | 'info' | 'warn' | 'error'
  /** PEM or SPIFFE bundle document used to trust the server on the first connection. */
  trustBundlePath: string | undefined
  insecureBootstrap: boolean
  x509SvidCacheMaxSize: number
  jwtSvidCacheMaxSize: number
  /** `[agent.health_checks]`: /live and /ready over HTTP. */
  health: HealthEndpointConfig | undefined
  /** `[agent.metrics]`: Prometheus /metrics over HTTP. */
  metrics: MetricsEndpointConfig | undefined
  /** Workload API connection limits that were configured (per uid); the rest are defaults. */
  connectionLimits: Partial<ConnectionGuardLimits>
  nodeAttestor: ConfiguredPlugin<NA>
  workloadAttestors: ConfiguredPlugin<WA>[]
  /** Undefined: no key manager block (the agent key is kept in a 0600 file in data_dir). */
  keyManager: ConfiguredPlugin<KM> | undefined
}

function issuesOf(err: z.ZodError, prefix: string): ConfigIssue[] {
  const out: ConfigIssue[] = []
  for (const i of err.issues) {
    const base = [prefix, ...i.path.map(String)].filter((p) => p !== '')
    if (i.code === 'unrecognized_keys') {
      for (const k of i.keys) out.push({ path: [...base, k].join('.'), message: 'unknown key' })
    } else {
      out.push({ path: base.join('.') || '(root)', message: i.message })
    }
  }
  return out
}

/**
 * Validates a parsed agent.toml. `baseDir` is the config file's directory.
 * Throws ERR_CONFIG_INVALID listing every issue (core and plugins).
 */
export function parseAgentConfig<NA, WA, KM>(raw: unknown, opts: { baseDir: string; plugins: AgentPluginRegistry<NA, WA, KM> }): AgentConfig<NA, WA, KM> {
  const issues: ConfigIssue[] = []
  const r = FileSchema.safeParse(raw)
  if (!r.success) issues.push(...issuesOf(r.error, ''))
  const rawPlugins = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>).plugins : undefined
  const { selection, issues: pluginIssues } = selectPlugins(agentCatalog(opts.plugins), rawPlugins, { baseDir: opts.baseDir })
  issues.push(...pluginIssues)

  const a = r.success ? r.data.agent : undefined
  if (a) {
    if (a.trust_bundle_path === undefined && a.insecure_bootstrap !== true) {
      issues.push({ path: 'agent.trust_bundle_path', message: 'set trust_bundle_path or insecure_bootstrap = true' })
    }
    if (a.trust_bundle_path !== undefined && a.insecure_bootstrap === true) {
      issues.push({ path: 'agent.insecure_bootstrap', message: 'cannot be combined with trust_bundle_path' })
    }
  }
  if (issues.length > 0 || !a) throw configError(issues, 'agent configuration')

  const abs = (p: string) => (isAbsolute(p) ? p : resolve(opts.baseDir, p))
  return {
    trustDomain: a.trust_domain,
    serverAddress: typeof a.server_address === 'string' ? a.server_address : a.server_address[0]!,
    serverAddresses: typeof a.server_address === 'string' ? [a.server_address] : [...new Set(a.server_address)],
    socketPath: abs(a.socket_path),
    dataDir: abs(a.data_dir),
    logLevel: a.log_level ?? 'info',
    trustBundlePath: a.trust_bundle_path === undefined ? undefined : abs(a.trust_bundle_path),
    insecureBootstrap: a.insecure_bootstrap ?? false,
    x509SvidCacheMaxSize: a.x509_svid_cache_max_size ?? DEFAULT_X509_SVID_CACHE_MAX_SIZE,
    jwtSvidCacheMaxSize: a.jwt_svid_cache_max_size ?? DEFAULT_JWT_SVID_CACHE_MAX_SIZE,
    health: healthEndpoint(a.health_checks),
    metrics: metricsEndpoint(a.metrics),
    connectionLimits: toConnectionLimits(a.connection_limits),
    nodeAttestor: selection.node_attestor[0]!,
    workloadAttestors: selection.workload_attestor,
    keyManager: selection.key_manager[0],
  }
}

/** Reads and validates an agent.toml file. */
export function loadAgentConfig<NA, WA, KM>(path: string, plugins: AgentPluginRegistry<NA, WA, KM>): AgentConfig<NA, WA, KM> {
  const abs = resolve(path)
  return parseAgentConfig(readTomlFile(abs), { baseDir: dirname(abs), plugins })
}
