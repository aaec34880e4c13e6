/**
 * `[broker.intents]`: intent declaration, the risk rules and human approval
 * (OpenID CIBA). The broker's config hands the raw section over
 * (`BrokerConfig.sections.intents`); this module owns its schema. The section
 * being present turns intents on (`enabled = false` turns them off again).
 *
 * The namespace rules (`max_autonomous_risk`, the actions that always need a
 * human, the approver group) live here per SPIFFE ID prefix rather than in
 * the signed namespace bounds: they decide who is asked, not what may ever be
 * issued, and the ceiling (scopes, resources) still bounds every intent.
 */
import { isAbsolute, resolve } from 'node:path'
import { z } from 'zod'
import { duration } from '../../common/config/duration.js'
import { configError, zodIssues, type ConfigIssue } from '../../common/config/issues.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { IdMatcher } from '../config.js'
import type { RiskPolicy } from './risk.js'

const weight = () => z.number().min(-1).max(1)
const unit = () => z.number().min(0).max(1)
const glob = () => z.string().min(1).max(512)
const GROUP = /^[A-Za-z0-9._-]{1,64}$/

/** A SPIFFE ID, or an ID prefix ending in `/`. */
const idOrPrefix = () =>
  z.string().superRefine((v, ctx) => {
    try {
      SpiffeId.fromString(v.endsWith('/') ? v.slice(0, -1) : v)
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message })
    }
  })

const ClassRuleSchema = z
  .object({
    match: glob(),
    weight: weight().default(0),
    human: z.boolean().default(false),
    forbid: z.boolean().default(false),
  })
  .strict()

const NamespaceSchema = z
  .object({
    prefix: idOrPrefix(),
    max_autonomous_risk: unit().optional(),
    human_actions: z.array(glob()).max(256).default([]),
    forbidden_actions: z.array(glob()).max(256).default([]),
    approver_group: z.string().regex(GROUP, 'must be a group name ([A-Za-z0-9._-], at most 64)').optional(),
    weight: weight().default(0),
  })
  .strict()

const GroupSchema = z
  .object({
    /** Slack-compatible incoming webhook (JSON `{text, blocks}`). */
    webhook_url: z.string().url().optional(),
    /** PEM bundle for the webhook's TLS certificate (default: the system's CAs). */
    webhook_ca_file: z.string().min(1).optional(),
    email: z.array(z.email()).max(64).default([]),
  })
  .strict()

const SmtpSchema = z
  .object({
    host: z.string().min(1),
    port: z.number().int().min(1).max(65_535).default(587),
    /** Implicit TLS (port 465); otherwise STARTTLS when the relay offers it (required when `require_tls`). */
    secure: z.boolean().default(false),
    require_tls: z.boolean().default(false),
    from: z.email(),
    user: z.string().min(1).optional(),
    /** File holding the relay password (never the password in the config). */
    password_file: z.string().min(1).optional(),
    ca_file: z.string().min(1).optional(),
  })
  .strict()

const HoursSchema = z
  .object({
    /** `HH:MM-HH:MM`, UTC. */
    utc: z.string().regex(/^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$/, 'must be HH:MM-HH:MM (UTC)'),
    outside_weight: weight().default(0.2),
    outside_requires_human: z.boolean().default(false),
  })
  .strict()

const HistorySchema = z
  .object({
    window: duration().default(3_600_000),
    refusal_weight: unit().default(0.1),
    denial_weight: unit().default(0.1),
    mismatch_weight: unit().default(0.3),
    signal_weight: unit().default(0.3),
    max: unit().default(0.6),
  })
  .strict()

export const IntentsSectionSchema = z
  .object({
    enabled: z.boolean().default(true),
    base_risk: unit().default(0.1),
    max_autonomous_risk: unit().default(0.5),
    refuse_at: unit().optional(),
    declared_risk_weight: unit().default(0.5),
    /** Lifetime of an action-bound token. */
    token_ttl: duration().default(60_000),
    /** How long an intent waits for a human (the CIBA `expires_in`). */
    approval_ttl: duration().default(600_000),
    /** The CIBA polling interval. */
    poll_interval: duration().default(2_000),
    /** Most intents of one agent waiting for a human at once (beyond: temporarily_unavailable), so no agent floods approvers. */
    max_pending_per_agent: z.number().int().min(1).max(10_000).default(16),
    /** The operator console, linked from notifications; `{id}` is replaced by the intent's id. */
    console_url: z.string().url().optional(),
    default_approver_group: z.string().regex(GROUP).default('operators'),
    /** Who may report outcomes (`POST <issuer>/intents/outcome`); default: the broker's introspectors. */
    outcome_reporters: z.array(idOrPrefix()).optional(),
    /** The Shared Signals event raised about the agent on a mismatch (through the broker's transmitter). */
    mismatch_signal: z.enum(['session-revoked', 'credential-compromise', 'none']).default('session-revoked'),
    mismatch_confidence: unit().default(0.9),
    node_attestation: z.record(z.string().min(1).max(64), weight()).default({ tpm: -0.05, x509pop: 0, join_token: 0.15, unknown: 0.1 }),
    hours: HoursSchema.optional(),
    history: HistorySchema.default(HistorySchema.parse({})),
    actions: z.array(ClassRuleSchema).max(1024).default([]),
    resources: z.array(ClassRuleSchema).max(1024).default([]),
    namespaces: z.array(NamespaceSchema).max(1024).default([]),
    approver_groups: z.record(z.string().regex(GROUP), GroupSchema).default({}),
    smtp: SmtpSchema.optional(),
  })
  .strict()

export interface ApproverGroupConfig {
  readonly webhookUrl?: string
  readonly webhookCaFile?: string
  readonly email: readonly string[]
}

export interface SmtpConfig {
  readonly host: string
  readonly port: number
  readonly secure: boolean
  readonly requireTls: boolean
  readonly from: string
  readonly user?: string
  readonly passwordFile?: string
  readonly caFile?: string
}

export interface IntentsConfig {
  readonly policy: RiskPolicy
  readonly tokenTtlSeconds: number
  readonly approvalTtlSeconds: number
  readonly pollIntervalSeconds: number
  readonly maxPendingPerAgent: number
  readonly historyWindowSeconds: number
  readonly consoleUrl?: string
  /** undefined: the broker's introspectors. */
  readonly outcomeReporters?: IdMatcher
  readonly mismatchSignal: 'session-revoked' | 'credential-compromise' | 'none'
  readonly mismatchConfidence: number
  readonly approverGroups: Readonly<Record<string, ApproverGroupConfig>>
  readonly smtp?: SmtpConfig
}

function minutes(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number)
  return h! * 60 + m!
}

/**
 * Parses `[broker.intents]` (raw TOML) into the runtime config; undefined when
 * the section is absent or `enabled = false`. Relative files resolve against
 * `baseDir`. Throws ERR_CONFIG_INVALID naming every problem's path.
 */
export function parseIntentsConfig(raw: unknown, o: { baseDir: string }): IntentsConfig | undefined {
  if (raw === undefined) return undefined
  const r = IntentsSectionSchema.safeParse(raw)
  if (!r.success) throw configError(zodIssues(r.error, 'broker.intents'), 'broker configuration')
  const s = r.data
  if (!s.enabled) return undefined
  const issues: ConfigIssue[] = []
  const at = (p: string) => `broker.intents.${p}`
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(o.baseDir, p))
  if (s.token_ttl < 5_000 || s.token_ttl > 600_000) issues.push({ path: at('token_ttl'), message: 'must be between 5s and 10m' })
  if (s.approval_ttl < 30_000 || s.approval_ttl > 86_400_000) issues.push({ path: at('approval_ttl'), message: 'must be between 30s and 24h' })
  if (s.poll_interval < 1_000 || s.poll_interval > 60_000) issues.push({ path: at('poll_interval'), message: 'must be between 1s and 1m' })
  if (s.history.window < 60_000 || s.history.window > 30 * 86_400_000) issues.push({ path: at('history.window'), message: 'must be between 1m and 30d' })
  if (s.refuse_at !== undefined && s.refuse_at <= s.max_autonomous_risk) issues.push({ path: at('refuse_at'), message: 'must be above max_autonomous_risk' })
  const groups = new Set([s.default_approver_group, ...Object.keys(s.approver_groups)])
  s.namespaces.forEach((n, i) => {
    if (n.approver_group !== undefined && !groups.has(n.approver_group))
      issues.push({ path: at(`namespaces.${i}.approver_group`), message: `unknown group "${n.approver_group}" (declare it under approver_groups)` })
  })
  const prefixes = s.namespaces.map((n) => n.prefix)
  prefixes.forEach((p, i) => {
    if (prefixes.indexOf(p) !== i) issues.push({ path: at(`namespaces.${i}.prefix`), message: `prefix ${p} appears twice` })
  })
  for (const [name, g] of Object.entries(s.approver_groups)) {
    if (g.webhook_url !== undefined && !/^https?:\/\//.test(g.webhook_url))
      issues.push({ path: at(`approver_groups.${name}.webhook_url`), message: 'must be an http(s) URL' })
    if (g.email.length > 0 && s.smtp === undefined) issues.push({ path: at(`approver_groups.${name}.email`), message: 'needs [broker.intents.smtp]' })
  }
  if (s.smtp?.user !== undefined && s.smtp.password_file === undefined) issues.push({ path: at('smtp.password_file'), message: 'required with smtp.user' })
  if (issues.length > 0) throw configError(issues, 'broker configuration')
  const hours = s.hours
  return {
    policy: {
      baseRisk: s.base_risk,
      maxAutonomousRisk: s.max_autonomous_risk,
      ...(s.refuse_at !== undefined ? { refuseAt: s.refuse_at } : {}),
      declaredRiskWeight: s.declared_risk_weight,
      actions: s.actions,
      resources: s.resources,
      namespaces: s.namespaces.map((n) => ({
        prefix: n.prefix,
        ...(n.max_autonomous_risk !== undefined ? { maxAutonomousRisk: n.max_autonomous_risk } : {}),
        humanActions: n.human_actions,
        forbiddenActions: n.forbidden_actions,
        ...(n.approver_group !== undefined ? { approverGroup: n.approver_group } : {}),
        weight: n.weight,
      })),
      nodeAttestation: s.node_attestation,
      ...(hours
        ? {
            hours: {
              start: minutes(hours.utc.split('-')[0]!),
              end: minutes(hours.utc.split('-')[1]!),
              outsideWeight: hours.outside_weight,
              outsideRequiresHuman: hours.outside_requires_human,
            },
          }
        : {}),
      history: {
        refusalWeight: s.history.refusal_weight,
        denialWeight: s.history.denial_weight,
        mismatchWeight: s.history.mismatch_weight,
        signalWeight: s.history.signal_weight,
        max: s.history.max,
      },
      defaultApproverGroup: s.default_approver_group,
    },
    tokenTtlSeconds: Math.floor(s.token_ttl / 1000),
    approvalTtlSeconds: Math.floor(s.approval_ttl / 1000),
    pollIntervalSeconds: Math.max(1, Math.floor(s.poll_interval / 1000)),
    maxPendingPerAgent: s.max_pending_per_agent,
    historyWindowSeconds: Math.floor(s.history.window / 1000),
    ...(s.console_url !== undefined ? { consoleUrl: s.console_url } : {}),
    ...(s.outcome_reporters !== undefined
      ? {
          outcomeReporters: {
            ids: s.outcome_reporters.filter((x) => !x.endsWith('/')),
            prefixes: s.outcome_reporters.filter((x) => x.endsWith('/')),
          },
        }
      : {}),
    mismatchSignal: s.mismatch_signal,
    mismatchConfidence: s.mismatch_confidence,
    approverGroups: Object.fromEntries(
      Object.entries(s.approver_groups).map(([name, g]) => [
        name,
        {
          ...(g.webhook_url !== undefined ? { webhookUrl: g.webhook_url } : {}),
          ...(g.webhook_ca_file !== undefined ? { webhookCaFile: abs(g.webhook_ca_file) } : {}),
          email: g.email,
        },
      ]),
    ),
    ...(s.smtp
      ? {
          smtp: {
            host: s.smtp.host,
            port: s.smtp.port,
            secure: s.smtp.secure,
            requireTls: s.smtp.require_tls,
            from: s.smtp.from,
            ...(s.smtp.user !== undefined ? { user: s.smtp.user } : {}),
            ...(s.smtp.password_file !== undefined ? { passwordFile: abs(s.smtp.password_file) } : {}),
            ...(s.smtp.ca_file !== undefined ? { caFile: abs(s.smtp.ca_file) } : {}),
          },
        }
      : {}),
  }
}
