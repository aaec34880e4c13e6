import { z } from 'zod'
import { duration } from '../../common/config/duration.js'
import { hostPort } from '../../common/config/refinements.js'
import type { RelationshipInput } from './relationships.js'

/**
 * The `[federation]` block of the server config (SPIRE's `federation {}`):
 *
 * ```toml
 * [federation.bundle_endpoint]
 * address = "0.0.0.0:8443"
 * refresh_hint = "5m"
 * profile = "https_spiffe"          # or "https_web" with cert_file / key_file
 *
 * [federation.federates_with."partner.example"]
 * bundle_endpoint_url = "https://partner.example:8443"
 * bundle_endpoint_profile = "https_spiffe"
 * endpoint_spiffe_id = "spiffe://partner.example/warrant/server"
 * # web_ca_file = "/etc/warrant/partner-ca.pem"   (https_web)
 * # refresh_hint = "1m"                           (override)
 * ```
 */
export const bundleEndpointConfigSchema = z
  .object({
    address: hostPort(),
    refresh_hint: duration().optional(),
    profile: z.enum(['https_spiffe', 'https_web']).default('https_spiffe'),
    cert_file: z.string().min(1).optional(),
    key_file: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((v, ctx) => {
    const files = v.cert_file !== undefined || v.key_file !== undefined
    if (v.profile === 'https_web' && (!v.cert_file || !v.key_file))
      ctx.addIssue({ code: 'custom', message: 'https_web needs cert_file and key_file', path: ['profile'] })
    if (v.profile === 'https_spiffe' && files) ctx.addIssue({ code: 'custom', message: 'cert_file and key_file apply to https_web only', path: ['profile'] })
    if (v.refresh_hint !== undefined && v.refresh_hint < 1000) ctx.addIssue({ code: 'custom', message: 'must be at least 1s', path: ['refresh_hint'] })
  })

export const federatesWithConfigSchema = z
  .object({
    bundle_endpoint_url: z.string(),
    bundle_endpoint_profile: z.enum(['https_spiffe', 'https_web']),
    endpoint_spiffe_id: z.string().optional(),
    web_ca_file: z.string().optional(),
    refresh_hint: duration().optional(),
  })
  .strict()

export const federationConfigSchema = z
  .object({
    bundle_endpoint: bundleEndpointConfigSchema.optional(),
    federates_with: z.record(z.string(), federatesWithConfigSchema).default({}),
  })
  .strict()

export type FederationFileConfig = z.infer<typeof federationConfigSchema>

/**
 * Relationships declared in the config file, for `RelationshipStore.upsert`
 * at startup (the store does the full validation: URL, IDs, trust domains).
 */
export function relationshipsFromConfig(cfg: FederationFileConfig): RelationshipInput[] {
  return Object.entries(cfg.federates_with).map(([td, f]) => ({
    trustDomain: td,
    bundleEndpointUrl: f.bundle_endpoint_url,
    profile: f.bundle_endpoint_profile,
    ...(f.endpoint_spiffe_id !== undefined ? { endpointSpiffeId: f.endpoint_spiffe_id } : {}),
    ...(f.web_ca_file !== undefined ? { webCaFile: f.web_ca_file } : {}),
    ...(f.refresh_hint !== undefined ? { refreshHintSeconds: Math.round(f.refresh_hint / 1000) } : {}),
  }))
}
