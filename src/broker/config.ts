/**
 * The broker's configuration: a `[broker]` section, either in server.toml
 * (embedded: `warrant server run` starts it) or in broker.toml (standalone:
 * `warrant broker run`, which adds `[workload_api]`). Two layers as elsewhere:
 * a strict zod file schema (every problem reported with its path), then
 * `toBrokerConfig`, which resolves relative paths against the config file's
 * directory and produces the typed runtime config.
 */
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { duration } from '../common/config/duration.js'
import { configError, zodIssues, type ConfigIssue } from '../common/config/issues.js'
import { resolvePluginBlockPaths } from '../common/config/plugin-paths.js'
import { splitHostPort } from '../common/config/observability.js'
import { hostPort, logLevel, trustDomain } from '../common/config/refinements.js'
import { SignalPolicySchema, type SignalPolicy } from '../signals/policy.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'

/** DPoP proof algorithms the broker can verify (asymmetric only, RFC 9449 §4.2). */
export const DPOP_ALGORITHMS = ['ES256', 'ES384', 'ES512', 'PS256', 'PS384', 'PS512', 'RS256', 'EdDSA', 'Ed25519'] as const
export type DpopAlgorithm = (typeof DPOP_ALGORITHMS)[number]

/** A SPIFFE ID, or a prefix of IDs when it ends in `/` (`spiffe://td/orchestrators/`). */
const idOrPrefix = () =>
  z.string().superRefine((v, ctx) => {
    const id = v.endsWith('/') ? v.slice(0, -1) : v
    try {
      const parsed = SpiffeId.fromString(id)
      if (v.endsWith('/') && parsed.path === '')
        ctx.addIssue({ code: 'custom', message: 'a prefix must name a path (use the trust domain list for a whole trust domain)' })
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message })
    }
  })

const DpopSection = z
  .object({
    /** Require a server nonce in every proof at the token endpoint (RFC 9449 §8). */
    nonce_required: z.boolean().default(true),
    /** How far a proof's `iat` may be from now, either way. */
    iat_window: duration().default(60_000),
    algorithms: z.array(z.enum(DPOP_ALGORITHMS)).min(1).default(['ES256', 'ES384', 'PS256', 'RS256', 'EdDSA']),
    /** How long one server nonce is accepted. */
    nonce_ttl: duration().default(300_000),
  })
  .strict()

const LimitsSection = z
  .object({
    body_bytes: z
      .number()
      .int()
      .min(1024)
      .max(1_048_576)
      .default(64 * 1024),
    header_bytes: z
      .number()
      .int()
      .min(4096)
      .max(65_536)
      .default(16 * 1024),
    max_connections_per_address: z.number().int().min(1).max(100_000).default(256),
    request_timeout: duration().default(10_000),
  })
  .strict()

const AuditSection = z
  .object({
    /** Every token issuance, renewal, delegation and revocation is appended, durably, before the token is released. */
    enabled: z.boolean().default(true),
    path: z.string().min(1).optional(),
    /** A checkpoint (C2SP signed note, key in the key manager) is signed this often when the log grew; 0: on demand only. */
    checkpoint_interval: duration().default(60_000),
  })
  .strict()

/** `[broker.signals]`: the Shared Signals transmitter (README, Shared Signals). */
const SignalsSection = z
  .object({
    /** Workloads that may create SSF streams and poll their events: SPIFFE IDs or prefixes. Empty: no transmitter. */
    receivers: z.array(idOrPrefix()).default([]),
    /** The transmitter's store (streams and unacknowledged events). Default `<data_dir>/broker-ssf.sqlite3`. */
    store_path: z.string().min(1).optional(),
    /** Longest wait of a poll without returnImmediately. */
    poll_wait: duration().default(25_000),
    max_streams_per_receiver: z.number().int().min(1).max(64).default(4),
    max_queued_per_stream: z.number().int().min(1).max(1_000_000).default(10_000),
    /** Receiver: transmitters this broker subscribes to (SSF 1.0) with its own SVID, polling (RFC 8936) or pushed to (RFC 8935). */
    transmitters: z
      .array(
        z
          .object({
            issuer: z.string().url(),
            /** PEM bundle that verifies the transmitter's TLS certificate (default: the system's CAs). */
            ca_file: z.string().min(1).optional(),
            /** Confidence of its events that carry none (0..1). */
            default_confidence: z.number().min(0).max(1).optional(),
            /** `poll` (default), or `push`: the transmitter POSTs each SET to `<issuer>/ssf/push/<path>` on this broker. */
            delivery: z.enum(['poll', 'push']).default('poll'),
          })
          .strict(),
      )
      .max(16)
      .default([]),
    /** Receiver: the response policy, rules in order (src/signals/policy.ts). */
    policy: SignalPolicySchema.default([]),
  })
  .strict()

export const BrokerSectionSchema = z
  .object({
    /** The issuer identifier (RFC 8414 §2): https, no query or fragment. Metadata, `iss` and client-assertion `aud`. */
    issuer: z.string().url(),
    bind_address: hostPort().default('127.0.0.1:8443'),
    admin_socket_path: z.string().min(1).optional(),
    store_path: z.string().min(1).optional(),
    default_token_ttl: duration().default(300_000),
    /** Workloads that may create and end tasks over HTTPS: SPIFFE IDs, or prefixes ending in `/`. */
    orchestrators: z.array(idOrPrefix()).default([]),
    /** Resource servers that may introspect tokens: SPIFFE IDs or prefixes. */
    introspectors: z.array(idOrPrefix()).default([]),
    /** Workloads that may revoke any token, instance, task, chain or prefix over HTTPS (POST <issuer>/revocations): IDs or prefixes. */
    revocation_admins: z.array(idOrPrefix()).default([]),
    /** Workloads (gateways) that may have tools' static credentials released to inject them (credential shielding): IDs or prefixes. */
    credential_readers: z.array(idOrPrefix()).default([]),
    /** Workloads (gateways) that may ask for a Txn-Token for another workload: IDs or prefixes. */
    txn_token_requesters: z.array(idOrPrefix()).default([]),
    /** Trusted user-token issuers (IdPs): a user's access token from one (aud = the broker's issuer) may be the subject of a Txn-Token request on the user's behalf. */
    txn_token_user_issuers: z
      .array(z.object({ issuer: z.string().url(), jwks_uri: z.string().url(), ca_file: z.string().min(1).optional() }).strict())
      .max(16)
      .default([]),
    /** Lifetime of a Txn-Token (never beyond its subject token). */
    txn_token_ttl: duration().default(60_000),
    /** Foreign trust domains whose workloads may authenticate (the local one always may). */
    federated_trust_domains: z.array(trustDomain()).default([]),
    /** RFC 9396 `authorization_details` types clients may ask for (metadata and domain). */
    authorization_details_types: z.array(z.string().min(1).max(128)).max(64).default([]),
    /** Longest lifetime accepted for a JWT-SVID client assertion (exp - iat, or exp - now). */
    max_assertion_lifetime: duration().default(300_000),
    dpop: DpopSection.default(DpopSection.parse({})),
    limits: LimitsSection.default(LimitsSection.parse({})),
    audit: AuditSection.default(AuditSection.parse({})),
    signals: SignalsSection.default(SignalsSection.parse({})),
    /** `[broker.intents]`: intent declaration, risk rules and human approval; parsed by src/broker/intents/config.ts. */
    intents: z.record(z.string(), z.unknown()).optional(),
    /** `[broker.console]`: the operator console's HTTPS listener and operators; parsed by src/console/config.ts. */
    console: z.record(z.string(), z.unknown()).optional(),
    /** The broker's signing-key manager: one `[broker.key_manager.<name>]` block. Embedded, the server's is used when absent. */
    key_manager: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
    /** Standalone only. */
    log_level: logLevel().optional(),
    /** Standalone only: the server's signed bounds document (bounds.jws), re-read when it changes; the ceilings come from it. */
    bounds_document_path: z.string().min(1).optional(),
  })
  .strict()

const StandaloneFile = z
  .object({
    broker: BrokerSectionSchema,
    workload_api: z.object({ socket_path: z.string().min(1) }).strict(),
  })
  .strict()

export interface IdMatcher {
  readonly ids: readonly string[]
  readonly prefixes: readonly string[]
}

export interface BrokerConfig {
  issuer: string
  bindAddress: { host: string; port: number }
  adminSocketPath: string
  storePath: string
  defaultTokenTtlSeconds: number
  orchestrators: IdMatcher
  introspectors: IdMatcher
  revocationAdmins: IdMatcher
  txnTokenRequesters: IdMatcher
  credentialReaders: IdMatcher
  txnTokenTtlSeconds: number
  txnTokenUserIssuers: readonly { issuer: string; jwksUri: string; caFile?: string }[]
  federatedTrustDomains: readonly TrustDomain[]
  maxAssertionLifetimeSeconds: number
  authorizationDetailsTypes: readonly string[]
  dpop: { nonceRequired: boolean; iatWindowSeconds: number; algorithms: readonly DpopAlgorithm[]; nonceTtlSeconds: number }
  limits: { bodyBytes: number; headerBytes: number; maxConnectionsPerAddress: number; requestTimeoutMs: number }
  /** Shared Signals: the transmitter (when `receivers` is not empty) and the receiver (when `transmitters` is not empty); undefined when neither. */
  signals?:
    | {
        receivers: IdMatcher
        storePath: string
        pollWaitMs: number
        maxStreamsPerReceiver: number
        maxQueuedPerStream: number
        transmitters: readonly { issuer: string; caFile?: string; defaultConfidence?: number; delivery: 'poll' | 'push' }[]
        policy: SignalPolicy
      }
    | undefined
  /**
   * Raw sections parsed by the room that owns them (`intents`: src/broker/intents/config.ts;
   * `console`: src/console/config.ts), with the directories their relative paths resolve against.
   */
  sections: { intents: Record<string, unknown> | undefined; console: Record<string, unknown> | undefined; baseDir: string; dataDir: string }
  /** The broker's audit log (src/audit), or undefined when `[broker.audit] enabled = false`. */
  audit: { path: string; checkpointIntervalMs: number } | undefined
  /** The key manager block, paths resolved; undefined when embedded and the server's is used. */
  keyManager: { name: string; raw: unknown } | undefined
  logLevel: 'debug' | 'info' | 'warn' | 'error'
  /** Standalone: the Workload API socket the broker gets its SVID and bundles from. */
  workloadApiSocket: string | undefined
  /** Standalone: the signed bounds document file. */
  boundsDocumentPath: string | undefined
}

/** Does `id` match an entry of the list (exact ID, or under a prefix ending in `/`)? */
export function matchesIdList(list: IdMatcher, id: string): boolean {
  return list.ids.includes(id) || list.prefixes.some((p) => id.startsWith(p))
}

function idList(v: readonly string[]): IdMatcher {
  return { ids: v.filter((x) => !x.endsWith('/')), prefixes: v.filter((x) => x.endsWith('/')) }
}

function checkIssuer(issuer: string, issues: ConfigIssue[], path: string): void {
  let u: URL
  try {
    u = new URL(issuer)
  } catch {
    return // reported by the schema
  }
  if (u.protocol !== 'https:') issues.push({ path, message: 'must be an https URL (RFC 8414 §2)' })
  if (u.search !== '' || u.hash !== '' || issuer.includes('?') || issuer.includes('#'))
    issues.push({ path, message: 'must have no query or fragment (RFC 8414 §2)' })
  if (u.username !== '' || u.password !== '') issues.push({ path, message: 'must not carry credentials' })
}

function fromSection(
  b: z.infer<typeof BrokerSectionSchema>,
  baseDir: string,
  defaults: { dataDir: string },
  prefix: string,
  issues: ConfigIssue[],
): Omit<BrokerConfig, 'workloadApiSocket' | 'boundsDocumentPath'> {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p))
  checkIssuer(b.issuer, issues, `${prefix}.issuer`)
  let keyManager: BrokerConfig['keyManager']
  const kmNames = Object.keys(b.key_manager ?? {})
  if (kmNames.length > 1) issues.push({ path: `${prefix}.key_manager`, message: `exactly one key manager is allowed (found ${kmNames.join(', ')})` })
  else if (kmNames.length === 1) {
    const name = kmNames[0]!
    keyManager = { name, raw: resolvePluginBlockPaths('key_manager', name, b.key_manager![name], baseDir) }
  }
  const adminSocketPath = abs(b.admin_socket_path ?? resolve(defaults.dataDir, 'private', 'broker-admin.sock'))
  if (Buffer.byteLength(adminSocketPath) > 100)
    issues.push({ path: `${prefix}.admin_socket_path`, message: 'path too long for a Unix socket (max ~100 bytes)' })
  if (b.default_token_ttl < 1000) issues.push({ path: `${prefix}.default_token_ttl`, message: 'must be at least 1s' })
  if (b.default_token_ttl > 3_600_000) issues.push({ path: `${prefix}.default_token_ttl`, message: 'must be at most 1h' })
  if (b.dpop.iat_window < 1000 || b.dpop.iat_window > 600_000) issues.push({ path: `${prefix}.dpop.iat_window`, message: 'must be between 1s and 10m' })
  b.txn_token_user_issuers.forEach((u, i) => {
    if (!u.jwks_uri.startsWith('https://')) issues.push({ path: `${prefix}.txn_token_user_issuers[${i}].jwks_uri`, message: 'must be https' })
    if (u.issuer === b.issuer) issues.push({ path: `${prefix}.txn_token_user_issuers[${i}].issuer`, message: 'must not be the broker itself' })
  })
  if (b.txn_token_ttl < 1000 || b.txn_token_ttl > 3_600_000) issues.push({ path: `${prefix}.txn_token_ttl`, message: 'must be between 1s and 1h' })
  if (b.max_assertion_lifetime < 1000 || b.max_assertion_lifetime > 3_600_000)
    issues.push({ path: `${prefix}.max_assertion_lifetime`, message: 'must be between 1s and 1h' })
  if (b.signals.poll_wait < 1000 || b.signals.poll_wait > 120_000) issues.push({ path: `${prefix}.signals.poll_wait`, message: 'must be between 1s and 2m' })
  b.signals.transmitters.forEach((t, i) => {
    checkIssuer(t.issuer, issues, `${prefix}.signals.transmitters.${i}.issuer`)
    if (t.issuer === b.issuer) issues.push({ path: `${prefix}.signals.transmitters.${i}.issuer`, message: 'must not be the broker itself' })
  })
  if (b.signals.policy.length > 0 && b.signals.transmitters.length === 0)
    issues.push({ path: `${prefix}.signals.policy`, message: 'a response policy needs at least one transmitter' })
  const intentsOn = b.intents !== undefined && b.intents['enabled'] !== false
  b.signals.policy.forEach((r, i) => {
    if (r.action === 'step_up' && !intentsOn)
      issues.push({ path: `${prefix}.signals.policy.${i}.action`, message: 'step_up needs [broker.intents] (the agent is routed through human approval)' })
  })
  return {
    issuer: b.issuer,
    bindAddress: splitHostPort(b.bind_address),
    adminSocketPath,
    storePath: abs(b.store_path ?? resolve(defaults.dataDir, 'broker.sqlite3')),
    audit: b.audit.enabled
      ? { path: abs(b.audit.path ?? resolve(defaults.dataDir, 'broker-audit.sqlite3')), checkpointIntervalMs: b.audit.checkpoint_interval }
      : undefined,
    defaultTokenTtlSeconds: Math.floor(b.default_token_ttl / 1000),
    orchestrators: idList(b.orchestrators),
    introspectors: idList(b.introspectors),
    revocationAdmins: idList(b.revocation_admins),
    txnTokenRequesters: idList(b.txn_token_requesters),
    credentialReaders: idList(b.credential_readers),
    txnTokenTtlSeconds: Math.floor(b.txn_token_ttl / 1000),
    txnTokenUserIssuers: b.txn_token_user_issuers.map((u) => ({
      issuer: u.issuer,
      jwksUri: u.jwks_uri,
      ...(u.ca_file !== undefined ? { caFile: abs(u.ca_file) } : {}),
    })),
    federatedTrustDomains: b.federated_trust_domains,
    maxAssertionLifetimeSeconds: Math.floor(b.max_assertion_lifetime / 1000),
    authorizationDetailsTypes: [...new Set(b.authorization_details_types)],
    dpop: {
      nonceRequired: b.dpop.nonce_required,
      iatWindowSeconds: Math.floor(b.dpop.iat_window / 1000),
      algorithms: [...new Set(b.dpop.algorithms)],
      nonceTtlSeconds: Math.max(1, Math.floor(b.dpop.nonce_ttl / 1000)),
    },
    limits: {
      bodyBytes: b.limits.body_bytes,
      headerBytes: b.limits.header_bytes,
      maxConnectionsPerAddress: b.limits.max_connections_per_address,
      requestTimeoutMs: b.limits.request_timeout,
    },
    keyManager,
    logLevel: b.log_level ?? 'info',
    sections: { intents: b.intents, console: b.console, baseDir, dataDir: defaults.dataDir },
    signals:
      b.signals.receivers.length === 0 && b.signals.transmitters.length === 0
        ? undefined
        : {
            receivers: idList(b.signals.receivers),
            storePath: abs(b.signals.store_path ?? resolve(defaults.dataDir, 'broker-ssf.sqlite3')),
            pollWaitMs: b.signals.poll_wait,
            maxStreamsPerReceiver: b.signals.max_streams_per_receiver,
            maxQueuedPerStream: b.signals.max_queued_per_stream,
            transmitters: b.signals.transmitters.map((t) => ({
              issuer: t.issuer,
              delivery: t.delivery,
              ...(t.ca_file !== undefined ? { caFile: abs(t.ca_file) } : {}),
              ...(t.default_confidence !== undefined ? { defaultConfidence: t.default_confidence } : {}),
            })),
            policy: { rules: b.signals.policy },
          },
  }
}

/**
 * The `[broker]` section of server.toml (the raw section, or undefined when
 * the file has none). Paths default under the server's data directory.
 */
export function toEmbeddedBrokerConfig(raw: unknown, baseDir: string, serverDataDir: string): BrokerConfig | undefined {
  if (raw === undefined) return undefined
  const r = BrokerSectionSchema.safeParse(raw)
  if (!r.success) throw configError(zodIssues(r.error, 'broker'), 'broker configuration')
  const issues: ConfigIssue[] = []
  if (r.data.log_level !== undefined) issues.push({ path: 'broker.log_level', message: "embedded, the broker logs at the server's log_level" })
  if (r.data.bounds_document_path !== undefined)
    issues.push({ path: 'broker.bounds_document_path', message: "embedded, the broker reads the server's own bounds document" })
  const cfg = fromSection(r.data, baseDir, { dataDir: serverDataDir }, 'broker', issues)
  if (issues.length > 0) throw configError(issues, 'broker configuration')
  return { ...cfg, workloadApiSocket: undefined, boundsDocumentPath: undefined }
}

/** broker.toml: `[broker]` plus `[workload_api] socket_path`; a key manager is required. Paths default under `<dir>/.warrant/broker`. */
export function toStandaloneBrokerConfig(raw: unknown, baseDir: string): BrokerConfig {
  const r = StandaloneFile.safeParse(raw)
  if (!r.success) throw configError(zodIssues(r.error), 'broker configuration')
  const issues: ConfigIssue[] = []
  const cfg = fromSection(r.data.broker, baseDir, { dataDir: resolve(baseDir, '.warrant', 'broker') }, 'broker', issues)
  if (!cfg.keyManager) issues.push({ path: 'broker.key_manager', message: 'required: one [broker.key_manager.<name>] block (memory, disk or pkcs11)' })
  if (issues.length > 0) throw configError(issues, 'broker configuration')
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p))
  const doc = r.data.broker.bounds_document_path
  return { ...cfg, workloadApiSocket: abs(r.data.workload_api.socket_path), boundsDocumentPath: doc === undefined ? undefined : abs(doc) }
}
