import { existsSync } from 'node:fs'
import { dirname, isAbsolute, join, resolve } from 'node:path'
import { z } from 'zod'
import { duration } from '../common/config/duration.js'
import { configError, zodIssues, type ConfigIssue } from '../common/config/issues.js'
import {
  healthChecksSchema,
  healthEndpoint,
  metricsEndpoint,
  metricsSchema,
  splitHostPort,
  type HealthEndpointConfig,
  type MetricsEndpointConfig,
} from '../common/config/observability.js'
import { hostPort, logLevel, trustDomain } from '../common/config/refinements.js'
import { ConnectionLimitsSchema, toConnectionLimits } from '../common/config/connection-limits.js'
import type { ConnectionGuardLimits } from '../common/net/connection-guard.js'
import { federationConfigSchema, type FederationFileConfig } from './federation/config.js'
import { BoundsConfigSchema, boundsFromConfig } from './bounds/config.js'
import type { BoundsSet } from '../spiffe/bounds/index.js'
import { IdentityError } from '../errors/identity-error.js'
import type { KeyManager, KeyType } from '../keymanager/key-manager.js'
import { errorPrefixing, selectPlugins, type AnyPlugin, type ConfiguredPlugin } from '../plugin/catalog.js'
import type { ServerNodeAttestor, ServerNodeAttestorDeps } from '../plugin/contracts.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import type { DataStore } from './datastore/types.js'

const KEY_TYPE = z.enum(['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'])

const ServerSection = z
  .object({
    trust_domain: trustDomain(),
    // This server among several on one datastore (its CA journal and keys); default: kept in data_dir/server-id.
    server_id: z
      .string()
      .regex(/^[a-z0-9][a-z0-9-]{0,31}$/, 'must be 1-32 of [a-z0-9-], starting with a letter or digit')
      .optional(),
    bind_address: hostPort().default('127.0.0.1:8081'),
    socket_path: z.string().min(1).optional(),
    data_dir: z.string().min(1).default('./.warrant/server'),
    log_level: logLevel().default('info'),
    log_format: z.enum(['json', 'pretty']).default('json'),
    ca_ttl: duration().default(24 * 3_600_000),
    default_x509_svid_ttl: duration().default(3_600_000),
    default_jwt_svid_ttl: duration().default(300_000),
    agent_ttl: duration().optional(),
    ca_key_type: KEY_TYPE.default('ec-p256'),
    jwt_key_type: KEY_TYPE.default('ec-p256'),
    jwt_issuer: z.string().url().optional(),
    refresh_hint: duration().default(300_000),
    rotation_check_interval: duration().default(10_000),
    ca_subject: z
      .object({ organization: z.string().min(1).optional(), common_name: z.string().min(1).optional() })
      .strict()
      .optional(),
    upstream_authority: z
      .object({ cert_file: z.string().min(1), key_file: z.string().min(1), bundle_file: z.string().min(1).optional() })
      .strict()
      .optional(),
    health_checks: healthChecksSchema().optional(),
    metrics: metricsSchema().optional(),
    federation: federationConfigSchema.optional(),
    bounds: BoundsConfigSchema.optional(),
    connection_limits: ConnectionLimitsSchema.optional(),
    max_concurrent_attestations: z.number().int().min(1).max(100_000).default(64),
    max_concurrent_attestations_per_address: z.number().int().min(1).max(100_000).default(16),
  })
  .strict()

/** `[audit]`: the server's audit log (src/audit), the shape of the broker's `[broker.audit]`. */
const AuditSection = z
  .object({
    /** Attestations, SVIDs, instances, entry, bounds and revocation changes are appended (server/audit/server-audit.ts). */
    enabled: z.boolean().default(true),
    /** Default: `<data_dir>/server-audit.sqlite3`. */
    path: z.string().min(1).optional(),
    /** A checkpoint (C2SP signed note, key `server-audit-checkpoint` in the key manager) is signed this often when the log grew; 0: on demand only. */
    checkpoint_interval: duration().default(60_000),
  })
  .strict()

// The plugins table is the catalog's to check (selectPlugins), block by block.
const FileConfig = z.object({ server: ServerSection, audit: AuditSection.optional(), plugins: z.unknown().optional() }).strict()

type PluginBlockDefaults = Readonly<Record<string, Readonly<Record<string, unknown>>>>

/** The plugin definitions the server may use, registered by the composition root (src/cli/plugins.ts). */
export interface ServerPluginRegistry {
  keyManagers: readonly AnyPlugin<KeyManager>[]
  datastores: readonly AnyPlugin<DataStore>[]
  nodeAttestors: readonly AnyPlugin<ServerNodeAttestor, ServerNodeAttestorDeps>[]
  /** The blocks a file that leaves a plugin type out gets, by type (e.g. the default datastore). */
  defaults?: { key_manager?: PluginBlockDefaults; datastore?: PluginBlockDefaults; node_attestor?: PluginBlockDefaults }
}

/**
 * The server's plugin types and their cardinality: exactly one key manager and
 * one datastore, at least one node attestor (whose failures the catalog labels
 * `nodeattestor(<name>): `).
 */
export function serverCatalog(r: ServerPluginRegistry) {
  const d = r.defaults ?? {}
  return {
    key_manager: { cardinality: 'exactly_one' as const, plugins: r.keyManagers, ...(d.key_manager ? { defaults: d.key_manager } : {}) },
    datastore: { cardinality: 'exactly_one' as const, plugins: r.datastores, ...(d.datastore ? { defaults: d.datastore } : {}) },
    node_attestor: {
      cardinality: 'at_least_one' as const,
      plugins: r.nodeAttestors,
      ...(d.node_attestor ? { defaults: d.node_attestor } : {}),
      adapt: errorPrefixing<ServerNodeAttestor>(['attest'], 'ERR_NODE_ATTESTATION_FAILED'),
    },
  }
}

/** The plugins a server.toml selected, each with its validated config. */
export interface ServerPlugins {
  keyManager: ConfiguredPlugin<KeyManager>
  datastore: ConfiguredPlugin<DataStore>
  nodeAttestors: ConfiguredPlugin<ServerNodeAttestor, ServerNodeAttestorDeps>[]
}

export interface ServerConfig {
  trustDomain: TrustDomain
  /** `server_id`; undefined: the one kept in the data directory (ca/server-id.ts). */
  serverId: string | undefined
  bindAddress: { host: string; port: number }
  socketPath: string
  dataDir: string
  logLevel: 'debug' | 'info' | 'warn' | 'error'
  logFormat: 'json' | 'pretty'
  caTtlMs: number
  defaultX509TtlMs: number
  defaultJwtTtlMs: number
  agentTtlMs: number
  caKeyType: KeyType
  jwtKeyType: KeyType
  jwtIssuer: string | undefined
  refreshHintSeconds: number
  rotationCheckIntervalMs: number
  caSubject: { organization?: string; commonName?: string } | undefined
  upstream: { certFile: string; keyFile: string; bundleFile: string | undefined } | undefined
  health: HealthEndpointConfig | undefined
  metrics: MetricsEndpointConfig | undefined
  federation: FederationFileConfig | undefined
  /** Namespace operating bounds declared in the config (`[server.bounds."/prefix"]`). */
  bounds: BoundsSet
  /** Agent API connection limits that were configured (per source address); the rest are defaults. */
  connectionLimits: Partial<ConnectionGuardLimits>
  /** Concurrent Attest calls (unauthenticated): in all and per source address. */
  attestationLimits: { maxConcurrent: number; maxConcurrentPerAddress: number }
  plugins: ServerPlugins
  /** The server's audit log (`[audit]`, on by default), or undefined when `enabled = false`. */
  audit: { path: string; checkpointIntervalMs: number } | undefined
  /** Cross-field notes for `server validate` (not errors). */
  notes: string[]
}

export { splitHostPort }

/**
 * Validates a parsed server.toml as a whole: every problem (core keys, the
 * plugin choice and every plugin block) is reported together with its path,
 * in one pass. `baseDir` resolves relative paths (the config file's directory).
 */
export function toServerConfig(raw: unknown, baseDir: string, registry: ServerPluginRegistry): ServerConfig {
  const rawPlugins = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>).plugins : undefined
  const { selection, issues: pluginIssues } = selectPlugins(serverCatalog(registry), rawPlugins, { baseDir })
  const issues: ConfigIssue[] = []
  const r = FileConfig.safeParse(raw)
  if (!r.success) throw configError([...zodIssues(r.error), ...pluginIssues], 'server configuration')
  const f = r.data
  const s = f.server
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p))
  const dataDir = abs(s.data_dir)
  const audit = f.audit ?? AuditSection.parse({})

  const notes: string[] = []
  if (s.default_x509_svid_ttl > s.ca_ttl / 6)
    notes.push(`default_x509_svid_ttl (${s.default_x509_svid_ttl / 1000}s) is longer than ca_ttl/6: SVIDs will be cut short at CA rotation`)
  if (s.default_jwt_svid_ttl > s.ca_ttl / 6) notes.push('default_jwt_svid_ttl is longer than ca_ttl/6')
  if (s.ca_ttl < 60_000) issues.push({ path: 'server.ca_ttl', message: 'must be at least 1m' })
  if (s.default_x509_svid_ttl < 1000) issues.push({ path: 'server.default_x509_svid_ttl', message: 'must be at least 1s' })
  if (s.default_jwt_svid_ttl < 1000) issues.push({ path: 'server.default_jwt_svid_ttl', message: 'must be at least 1s' })

  let upstream: ServerConfig['upstream']
  if (s.upstream_authority) {
    upstream = {
      certFile: abs(s.upstream_authority.cert_file),
      keyFile: abs(s.upstream_authority.key_file),
      bundleFile: s.upstream_authority.bundle_file ? abs(s.upstream_authority.bundle_file) : undefined,
    }
    for (const [k, p] of [
      ['cert_file', upstream.certFile],
      ['key_file', upstream.keyFile],
      ['bundle_file', upstream.bundleFile],
    ] as const) {
      if (p && !existsSync(p)) issues.push({ path: `server.upstream_authority.${k}`, message: `file not found: ${p}` })
    }
  }
  const bounds = boundsFromConfig(s.bounds, s.trust_domain, issues)
  const socketPath = abs(s.socket_path ?? join(s.data_dir, 'private', 'admin.sock'))
  if (Buffer.byteLength(socketPath) > 100) issues.push({ path: 'server.socket_path', message: 'path too long for a Unix socket (max ~100 bytes)' })
  issues.push(...pluginIssues)
  if (issues.length > 0) throw configError(issues, 'server configuration')
  return {
    trustDomain: s.trust_domain,
    serverId: s.server_id,
    bindAddress: splitHostPort(s.bind_address),
    socketPath,
    dataDir,
    logLevel: s.log_level,
    logFormat: s.log_format,
    caTtlMs: s.ca_ttl,
    defaultX509TtlMs: s.default_x509_svid_ttl,
    defaultJwtTtlMs: s.default_jwt_svid_ttl,
    agentTtlMs: s.agent_ttl ?? s.default_x509_svid_ttl,
    caKeyType: s.ca_key_type,
    jwtKeyType: s.jwt_key_type,
    jwtIssuer: s.jwt_issuer,
    refreshHintSeconds: Math.max(1, Math.round(s.refresh_hint / 1000)),
    rotationCheckIntervalMs: s.rotation_check_interval,
    caSubject: s.ca_subject
      ? {
          ...(s.ca_subject.organization ? { organization: s.ca_subject.organization } : {}),
          ...(s.ca_subject.common_name ? { commonName: s.ca_subject.common_name } : {}),
        }
      : undefined,
    upstream,
    health: healthEndpoint(s.health_checks),
    metrics: metricsEndpoint(s.metrics),
    federation: s.federation
      ? {
          ...s.federation,
          ...(s.federation.bundle_endpoint
            ? {
                bundle_endpoint: {
                  ...s.federation.bundle_endpoint,
                  ...(s.federation.bundle_endpoint.cert_file ? { cert_file: abs(s.federation.bundle_endpoint.cert_file) } : {}),
                  ...(s.federation.bundle_endpoint.key_file ? { key_file: abs(s.federation.bundle_endpoint.key_file) } : {}),
                },
              }
            : {}),
          federates_with: Object.fromEntries(
            Object.entries(s.federation.federates_with).map(([td, f]) => [td, { ...f, ...(f.web_ca_file ? { web_ca_file: abs(f.web_ca_file) } : {}) }]),
          ),
        }
      : undefined,
    bounds,
    connectionLimits: toConnectionLimits(s.connection_limits),
    attestationLimits: { maxConcurrent: s.max_concurrent_attestations, maxConcurrentPerAddress: s.max_concurrent_attestations_per_address },
    plugins: { keyManager: selection.key_manager[0]!, datastore: selection.datastore[0]!, nodeAttestors: selection.node_attestor },
    audit: audit.enabled ? { path: abs(audit.path ?? join(dataDir, 'server-audit.sqlite3')), checkpointIntervalMs: audit.checkpoint_interval } : undefined,
    notes,
  }
}

export function configDir(path: string): string {
  return dirname(resolve(path))
}

export { IdentityError }
