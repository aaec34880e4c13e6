import { z } from 'zod'
import { duration } from '../../common/config/duration.js'
import type { ConfigIssue } from '../../common/config/issues.js'
import { isIdentityError } from '../../errors/identity-error.js'
import { BoundsSet } from '../../spiffe/bounds/bounds-set.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'

/**
 * One `[server.bounds."/agents/payments"]` table. TTLs are durations (`15m`)
 * or seconds; unknown keys are errors.
 *
 * ```toml
 * [server.bounds."/agents/payments"]
 * x509_svid_ttl = "15m"
 * jwt_svid_ttl = "5m"
 * jwt_audiences = ["spiffe://corp.example/svc/payments-api", "https://payments.corp.example"]
 * dns_suffixes = []                      # no DNS names
 * federates_with = ["partner.example"]
 * max_instances = 50
 * require_node_selectors = ["tpm:pcr_policy:prod"]
 * # token broker ceiling for agents under the prefix
 * scopes = ["payments:read", "payments:refund"]
 * resources = ["https://payments.corp.example"]
 * max_token_ttl = "10m"
 * max_renewals = 20
 * max_delegation_depth = 2
 * may_delegate_to = ["spiffe://corp.example/agents/payments/"]
 * allow_bearer = false
 * ```
 */
export const BoundsTableSchema = z
  .object({
    x509_svid_ttl: duration().optional(),
    jwt_svid_ttl: duration().optional(),
    jwt_audiences: z.array(z.string()).optional(),
    dns_suffixes: z.array(z.string()).optional(),
    federates_with: z.array(z.string()).optional(),
    max_instances: z.number().int().nonnegative().optional(),
    require_node_selectors: z.array(z.string()).optional(),
    scopes: z.array(z.string()).optional(),
    resources: z.array(z.string()).optional(),
    max_token_ttl: duration().optional(),
    max_renewals: z.number().int().nonnegative().optional(),
    max_delegation_depth: z.number().int().nonnegative().optional(),
    may_delegate_to: z.array(z.string()).optional(),
    allow_bearer: z.boolean().optional(),
  })
  .strict()

/** The `server.bounds` section: prefix → table. Add as `bounds: BoundsConfigSchema.optional()` to the server section. */
export const BoundsConfigSchema = z.record(z.string(), BoundsTableSchema)

export type BoundsConfig = z.output<typeof BoundsConfigSchema>

/**
 * Turns the parsed `server.bounds` section into a validated BoundsSet: TTLs
 * must be whole seconds, prefixes valid and distinct, and each prefix must
 * narrow its ancestors. Problems are appended to `issues` with paths under
 * `pathPrefix` (`server.bounds./agents/payments.jwt_svid_ttl`); an empty set
 * is returned when there are any.
 */
export function boundsFromConfig(cfg: BoundsConfig | undefined, td: TrustDomain, issues: ConfigIssue[], pathPrefix = 'server.bounds'): BoundsSet {
  if (!cfg) return BoundsSet.empty(td)
  const raw: Record<string, Record<string, unknown>> = {}
  const before = issues.length
  for (const [prefix, t] of Object.entries(cfg)) {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(t)) {
      if (v === undefined) continue
      if (k === 'x509_svid_ttl' || k === 'jwt_svid_ttl' || k === 'max_token_ttl') {
        const ms = v as number
        if (ms % 1000 !== 0 || ms < 1000) issues.push({ path: `${pathPrefix}.${prefix}.${k}`, message: 'must be a whole number of seconds, at least 1s' })
        else out[k] = ms / 1000
      } else out[k] = v
    }
    raw[prefix] = out
  }
  if (issues.length > before) return BoundsSet.empty(td)
  try {
    return BoundsSet.parse(td, raw)
  } catch (err) {
    if (!isIdentityError(err, 'ERR_BOUNDS_INVALID')) throw err
    const sub = (err.details?.issues as ConfigIssue[] | undefined) ?? [{ path: '', message: err.message }]
    issues.push(...sub.map((i) => ({ path: `${pathPrefix}.${i.path}`, message: i.message })))
    return BoundsSet.empty(td)
  }
}
