/** Configuration of the agent half of the tpm node attestor. */
import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'

const AgentSchema = z
  .object({
    /** TPM character device (default /dev/tpmrm0, the kernel resource manager). */
    device: z.string().startsWith('/', 'must be an absolute path').optional(),
    /** swtpm / mssim simulator as host:port (tests and development). */
    swtpm: z
      .string()
      .regex(/^(?:\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$/, 'must be host:port')
      .optional(),
    ek_type: z.enum(['rsa', 'ecc']).default('rsa'),
  })
  .strict()
  .refine((c) => !(c.device !== undefined && c.swtpm !== undefined), { message: 'set device or swtpm, not both', path: ['swtpm'] })

export interface TpmAgentConfig {
  /** Transport URI for openTransport: `device:/dev/tpmrm0` or `swtpm:host:port`. */
  transportUri: string
  ekType: 'rsa' | 'ecc'
}

export function parseTpmAgentConfig(raw: unknown): TpmAgentConfig {
  const c = parseWith(AgentSchema, raw ?? {})
  return {
    transportUri: c.swtpm !== undefined ? `swtpm:${c.swtpm}` : `device:${c.device ?? '/dev/tpmrm0'}`,
    ekType: c.ek_type,
  }
}
