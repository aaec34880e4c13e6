/** Configuration of the server half of the tpm node attestor. */
import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'
import { PCR_BANKS, type PcrBank } from './payload.js'

/** PCRs measured by firmware and the boot chain (SRTM), quoted by default. */
export const DEFAULT_PCRS: readonly number[] = [0, 1, 2, 3, 4, 5, 6, 7]
const PCR_HEX_LEN: Record<PcrBank, number> = { sha1: 40, sha256: 64, sha384: 96 }

const pcrIndex = z.number().int().min(0).max(23)
const hex = z.string().regex(/^[0-9a-fA-F]+$/, 'must be hex')

const ServerSchema = z
  .object({
    /** PEM files with EK manufacturer CA certificates (roots and intermediates). */
    ek_ca_paths: z.array(z.string().min(1)).min(1).optional(),
    /** SHA-256 hex of EK PKIX public keys accepted without a certificate chain. */
    ek_hash_allow_list: z
      .array(z.string().regex(/^[0-9a-fA-F]{64}$/, 'must be 64 hex characters (SHA-256)'))
      .min(1)
      .optional(),
    pcr_bank: z.enum(PCR_BANKS).default('sha256'),
    pcrs: z
      .array(pcrIndex)
      .min(1)
      .max(24)
      .refine((a) => new Set(a).size === a.length, 'PCR indices must be unique')
      .default([...DEFAULT_PCRS]),
    /** Named PCR policies: PCR index → expected value (hex). A policy matches when every listed PCR equals its value. */
    pcr_policies: z
      .record(
        z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'policy names use A-Z a-z 0-9 _ . -'),
        z.record(z.string().regex(/^(?:[0-9]|1[0-9]|2[0-3])$/, 'must be a PCR index 0..23'), hex),
      )
      .optional(),
    /** Reject agents whose quoted PCRs do not match this named policy. */
    require_pcr_policy: z.string().min(1).optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (c.ek_ca_paths === undefined && c.ek_hash_allow_list === undefined) {
      ctx.addIssue({ code: 'custom', path: ['ek_ca_paths'], message: 'set ek_ca_paths, ek_hash_allow_list or both' })
    }
    for (const [name, policy] of Object.entries(c.pcr_policies ?? {})) {
      if (Object.keys(policy).length === 0) ctx.addIssue({ code: 'custom', path: ['pcr_policies', name], message: 'policy lists no PCR' })
      for (const [idx, value] of Object.entries(policy)) {
        if (!c.pcrs.includes(Number(idx))) ctx.addIssue({ code: 'custom', path: ['pcr_policies', name, idx], message: 'PCR is not in pcrs' })
        if (value.length !== PCR_HEX_LEN[c.pcr_bank])
          ctx.addIssue({ code: 'custom', path: ['pcr_policies', name, idx], message: `value size does not fit the ${c.pcr_bank} bank` })
      }
    }
    if (c.require_pcr_policy !== undefined && c.pcr_policies?.[c.require_pcr_policy] === undefined) {
      ctx.addIssue({ code: 'custom', path: ['require_pcr_policy'], message: 'names no policy in pcr_policies' })
    }
  })

export interface TpmServerConfig {
  ekCaPaths: string[]
  /** Lowercase hex. */
  ekHashAllowList: string[]
  pcrBank: PcrBank
  /** Ascending. */
  pcrs: number[]
  /** name → PCR index → lowercase hex value. */
  pcrPolicies: Map<string, Map<number, string>>
  requirePcrPolicy: string | undefined
}

export function parseTpmServerConfig(raw: unknown): TpmServerConfig {
  const c = parseWith(ServerSchema, raw ?? {})
  const pcrPolicies = new Map<string, Map<number, string>>()
  for (const [name, policy] of Object.entries(c.pcr_policies ?? {})) {
    pcrPolicies.set(name, new Map(Object.entries(policy).map(([i, v]) => [Number(i), v.toLowerCase()])))
  }
  return {
    ekCaPaths: c.ek_ca_paths ?? [],
    ekHashAllowList: (c.ek_hash_allow_list ?? []).map((h) => h.toLowerCase()),
    pcrBank: c.pcr_bank,
    pcrs: [...c.pcrs].sort((a, b) => a - b),
    pcrPolicies,
    requirePcrPolicy: c.require_pcr_policy,
  }
}
