/**
 * The gateway's configuration, `gateway.toml`: `[gateway]` (bind address, the
 * origin agents address, the broker, the bounds document, the tool registry,
 * audit, limits) and `[workload_api]`. Two layers as elsewhere: a strict zod
 * file schema (every problem reported with its path), then
 * `toGatewayConfig`, which resolves relative paths against the config file's
 * directory and produces the typed runtime config.
 */
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { duration } from '../common/config/duration.js'
import { configError, zodIssues, type ConfigIssue } from '../common/config/issues.js'
import { resolvePluginBlockPaths } from '../common/config/plugin-paths.js'
import { splitHostPort } from '../common/config/observability.js'
import { hostPort, logLevel, trustDomain } from '../common/config/refinements.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'

const BrokerSection = z
  .object({
    /** The broker's issuer URL (RFC 8414): the Txn-Token request goes to its metadata's `token_endpoint`, else `<issuer>/token`. */
    issuer: z.string().url(),
    /** PEM file that verifies the broker's certificate; default: the trust bundles from the Workload API. */
    ca_file: z.string().min(1).optional(),
  })
  .strict()

const AuditSection = z
  .object({
    /** Every call, allowed or refused, is one `gateway.call` event. */
    path: z.string().min(1).optional(),
    /** A checkpoint is signed this often when the log grew; 0: on demand only. */
    checkpoint_interval: duration().default(60_000),
    /** The checkpoint key's manager: one `[gateway.audit.key_manager.<name>]` block; default a disk key manager beside the log. */
    key_manager: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
  })
  .strict()

const LimitsSection = z
  .object({
    header_bytes: z
      .number()
      .int()
      .min(4096)
      .max(65_536)
      .default(16 * 1024),
    /** Largest request body forwarded to a tool. */
    body_bytes: z
      .number()
      .int()
      .min(1024)
      .max(64 * 1024 * 1024)
      .default(1024 * 1024),
    /** Deadline of a whole inbound request (headers and body). */
    request_timeout: duration().default(30_000),
    /** Deadline for a tool to answer (connect and response headers) and of the broker's Txn-Token answer. */
    upstream_timeout: duration().default(15_000),
    max_connections_per_address: z.number().int().min(1).max(100_000).default(256),
  })
  .strict()

const GatewaySection = z
  .object({
    bind_address: hostPort().default('127.0.0.1:8444'),
    /** The origin agents address (`https://gateway.example:8444`): the DPoP `htu` is checked against it. Default `https://<bind_address>`. */
    url: z.string().url().optional(),
    /** Which of the Workload API's SVIDs is the gateway's (default: the first). */
    spiffe_id: z.string().min(1).optional(),
    broker: BrokerSection,
    /** The server's signed bounds document (bounds.jws): callers' permission ceilings. */
    bounds_document_path: z.string().min(1),
    /** Directory of tool documents (`*.json`, the OAuth Client ID Metadata Document shape with a `warrant_tool` member). */
    tools_dir: z.string().min(1),
    /** PEM file that verifies tool servers that do not present an X.509-SVID. */
    tool_ca_file: z.string().min(1).optional(),
    /** Foreign trust domains whose agents may call (the local one always may). */
    federated_trust_domains: z.array(trustDomain()).default([]),
    /** Accept unbound broker tokens sent as `Bearer` (the token library's rule: only tokens without `cnf`). */
    allow_bearer: z.boolean().default(false),
    /** Keep a Txn-Token per (agent, tool, scope) until shortly before it expires (default off: one per call). */
    txn_token_cache: z.boolean().default(false),
    log_level: logLevel().default('info'),
    audit: AuditSection.default(AuditSection.parse({})),
    limits: LimitsSection.default(LimitsSection.parse({})),
  })
  .strict()

const GatewayFile = z
  .object({
    gateway: GatewaySection,
    workload_api: z.object({ socket_path: z.string().min(1) }).strict(),
  })
  .strict()

export interface GatewayConfig {
  bindAddress: { host: string; port: number }
  /** The origin agents address, no trailing slash. */
  url: string
  spiffeId: string | undefined
  broker: { issuer: string; caFile: string | undefined }
  boundsDocumentPath: string
  toolsDir: string
  toolCaFile: string | undefined
  federatedTrustDomains: readonly TrustDomain[]
  allowBearer: boolean
  txnTokenCache: boolean
  logLevel: 'debug' | 'info' | 'warn' | 'error'
  audit: { path: string; checkpointIntervalMs: number; keyManager: { name: string; raw: unknown } | undefined }
  limits: { headerBytes: number; bodyBytes: number; requestTimeoutMs: number; upstreamTimeoutMs: number; maxConnectionsPerAddress: number }
  workloadApiSocket: string
}

function checkHttpsUrl(v: string, path: string, issues: ConfigIssue[]): void {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    return // reported by the schema
  }
  if (u.protocol !== 'https:') issues.push({ path, message: 'must be an https URL' })
  if (u.search !== '' || u.hash !== '' || v.includes('?') || v.includes('#')) issues.push({ path, message: 'must have no query or fragment' })
  if (u.username !== '' || u.password !== '') issues.push({ path, message: 'must not carry credentials' })
}

/** gateway.toml (raw TOML, the file's directory) → the typed config; throws ERR_CONFIG_INVALID listing every issue with its path. */
export function toGatewayConfig(raw: unknown, baseDir: string): GatewayConfig {
  const r = GatewayFile.safeParse(raw)
  if (!r.success) throw configError(zodIssues(r.error), 'gateway configuration')
  const g = r.data.gateway
  const issues: ConfigIssue[] = []
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p))
  checkHttpsUrl(g.broker.issuer, 'gateway.broker.issuer', issues)
  const bind = splitHostPort(g.bind_address)
  const url = (g.url ?? `https://${bind.host.includes(':') ? `[${bind.host}]` : bind.host}:${bind.port}`).replace(/\/+$/, '')
  if (g.url !== undefined) {
    checkHttpsUrl(g.url, 'gateway.url', issues)
    if (new URL(g.url).pathname !== '/') issues.push({ path: 'gateway.url', message: 'must be an origin (no path)' })
  }
  if (g.spiffe_id !== undefined && !SpiffeId.isValid(g.spiffe_id)) issues.push({ path: 'gateway.spiffe_id', message: 'must be a SPIFFE ID' })
  let keyManager: GatewayConfig['audit']['keyManager']
  const kmNames = Object.keys(g.audit.key_manager ?? {})
  if (kmNames.length > 1) issues.push({ path: 'gateway.audit.key_manager', message: `exactly one key manager is allowed (found ${kmNames.join(', ')})` })
  else if (kmNames.length === 1) {
    const name = kmNames[0]!
    keyManager = { name, raw: resolvePluginBlockPaths('key_manager', name, g.audit.key_manager![name], baseDir) }
  }
  if (g.limits.upstream_timeout < 100 || g.limits.upstream_timeout > 600_000)
    issues.push({ path: 'gateway.limits.upstream_timeout', message: 'must be between 100ms and 10m' })
  if (g.limits.request_timeout < 1000 || g.limits.request_timeout > 3_600_000)
    issues.push({ path: 'gateway.limits.request_timeout', message: 'must be between 1s and 1h' })
  if (issues.length > 0) throw configError(issues, 'gateway configuration')
  const toolsDir = abs(g.tools_dir)
  return {
    bindAddress: bind,
    url,
    spiffeId: g.spiffe_id,
    broker: { issuer: g.broker.issuer, caFile: g.broker.ca_file === undefined ? undefined : abs(g.broker.ca_file) },
    boundsDocumentPath: abs(g.bounds_document_path),
    toolsDir,
    toolCaFile: g.tool_ca_file === undefined ? undefined : abs(g.tool_ca_file),
    federatedTrustDomains: g.federated_trust_domains,
    allowBearer: g.allow_bearer,
    txnTokenCache: g.txn_token_cache,
    logLevel: g.log_level,
    audit: {
      path: abs(g.audit.path ?? resolve(baseDir, '.warrant', 'gateway', 'gateway-audit.sqlite3')),
      checkpointIntervalMs: g.audit.checkpoint_interval,
      keyManager,
    },
    limits: {
      headerBytes: g.limits.header_bytes,
      bodyBytes: g.limits.body_bytes,
      requestTimeoutMs: g.limits.request_timeout,
      upstreamTimeoutMs: g.limits.upstream_timeout,
      maxConnectionsPerAddress: g.limits.max_connections_per_address,
    },
    workloadApiSocket: abs(r.data.workload_api.socket_path),
  }
}
