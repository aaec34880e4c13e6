import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import type { AgentNodeAttestor, PluginDefinition } from '../../../src/plugin/contracts.js'

const ConfigSchema = z.object({ token: z.string().min(1).optional() }).strict()

/** Agent half of join_token: the payload is the token; there is no challenge. */
export function joinTokenAgent(token: string): AgentNodeAttestor {
  if (!token) throw new IdentityError('ERR_CONFIG_INVALID', 'no token given')
  return {
    // A token is single-use: the agent renews its SVID instead of attesting again.
    canReattest: false,
    async payload() {
      return Buffer.from(token, 'utf8')
    },
    async answer() {
      throw new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', 'unexpected challenge')
    },
  }
}

export const joinTokenAgentPlugin: PluginDefinition<{ token: string | undefined }, AgentNodeAttestor> = {
  type: 'node_attestor',
  name: 'join_token',
  parseConfig(raw) {
    return parseWith(ConfigSchema, raw ?? {}) as { token: string | undefined }
  },
  async create(config) {
    return joinTokenAgent(config.token ?? '')
  },
}
