import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'

export const DEFAULT_WORKLOAD_SIZE_LIMIT = 128 * 1024 * 1024

const ConfigSchema = z
  .object({
    discover_workload_path: z.boolean().optional(),
    workload_size_limit: z.number().int().min(-1).optional(),
  })
  .strict()

export interface UnixAttestorConfig {
  /** Emit `path:` and `sha256:` selectors (reads `/proc/<pid>/exe`). */
  discoverWorkloadPath: boolean
  /** Bytes; binaries larger than this are not hashed. -1: never hash; 0: no limit. */
  workloadSizeLimit: number
}

/** Validates the `[plugins.workload_attestor.unix]` block; ERR_CONFIG_INVALID with issue paths. */
export function parseUnixAttestorConfig(raw: unknown): UnixAttestorConfig {
  const c = parseWith(ConfigSchema, raw ?? {})
  return {
    discoverWorkloadPath: c.discover_workload_path ?? true,
    workloadSizeLimit: c.workload_size_limit ?? DEFAULT_WORKLOAD_SIZE_LIMIT,
  }
}
