/**
 * Server half of join_token: an operator creates a single-use token (only its
 * SHA-256 is stored, in the datastore the server lends this plugin); an agent
 * presents it as its payload, with no challenge. The agent ID is
 * `spiffe://<td>/warrant/agent/join_token/<token id>`, where the token id is
 * the first 32 hex digits of the token's SHA-256 (never the token itself, in
 * IDs or logs). The agent cannot attest again with the same token.
 */
import { createHash, randomBytes } from 'node:crypto'
import { z } from 'zod'
import { parseWith } from '../../../src/common/config/issues.js'
import type { Clock } from '../../../src/common/clock.js'
import type { Logger } from '../../../src/common/log/logger.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import type {
  JoinTokenRecords,
  NodeAttestationResult,
  PluginDefinition,
  ServerNodeAttestorDeps,
  TokenIssuingNodeAttestor,
} from '../../../src/plugin/contracts.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import type { TrustDomain } from '../../../src/spiffe/trust-domain.js'

const NAME = 'join_token'
const DEFAULT_TTL_S = 600
export const MAX_JOIN_TOKEN_TTL_S = 30 * 86_400
const MAX_TOKEN_LENGTH = 256

const ConfigSchema = z.object({}).strict()

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex')
}

/** A non-secret identifier for a token (for agent IDs and logs): the first 32 hex of its SHA-256. */
export function tokenId(token: string): string {
  return hashToken(token).slice(0, 32)
}

export function joinTokenServer(o: { trustDomain: TrustDomain; tokens: JoinTokenRecords; clock: Clock; log: Logger }): TokenIssuingNodeAttestor {
  return {
    async issueToken(opts) {
      // undefined or 0 = the default; anything else (negative, NaN, fractional, too long) is refused
      const ttl = opts.ttlSeconds === undefined || opts.ttlSeconds === 0 ? DEFAULT_TTL_S : opts.ttlSeconds
      if (!Number.isInteger(ttl) || ttl < 1 || ttl > MAX_JOIN_TOKEN_TTL_S) {
        throw new IdentityError('ERR_INVALID_ARGUMENT', `ttl must be an integer between 1 and ${MAX_JOIN_TOKEN_TTL_S} seconds`)
      }
      let alias = ''
      if (opts.spiffeId) {
        const id = SpiffeId.fromString(opts.spiffeId)
        if (!id.memberOf(o.trustDomain) || id.isTrustDomainId() || id.path.startsWith('/warrant/')) {
          throw new IdentityError('ERR_INVALID_ARGUMENT', 'spiffe_id must be a non-reserved ID in the local trust domain')
        }
        alias = id.toString()
      }
      const token = randomBytes(24).toString('base64url')
      const expiresAt = o.clock.now() + ttl * 1000
      await o.tokens.create({ tokenHash: hashToken(token), expiresAt, spiffeId: alias })
      o.log.info({ token_id: tokenId(token), expires_at: new Date(expiresAt).toISOString() }, 'Join token created')
      return { token, expiresAt }
    },

    async attest(payload): Promise<NodeAttestationResult> {
      const token = Buffer.from(payload).toString('utf8')
      if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw new IdentityError('ERR_JOIN_TOKEN_INVALID', 'malformed token')
      const id = tokenId(token)
      const rec = await o.tokens.consume(hashToken(token))
      if (!rec) throw new IdentityError('ERR_JOIN_TOKEN_INVALID', `token ${id} does not exist or was already used`)
      if (rec.expiresAt <= o.clock.now()) throw new IdentityError('ERR_JOIN_TOKEN_INVALID', `token ${id} expired`)
      return {
        agentId: SpiffeId.fromSegments(o.trustDomain, 'warrant', 'agent', NAME, id),
        selectorValues: [id],
        canReattest: false,
        ...(rec.spiffeId ? { nodeAlias: SpiffeId.fromString(rec.spiffeId) } : {}),
      }
    },
  }
}

export const joinTokenServerPlugin: PluginDefinition<Record<string, never>, TokenIssuingNodeAttestor, ServerNodeAttestorDeps> = {
  type: 'node_attestor',
  name: NAME,
  parseConfig: (raw) => parseWith<Record<string, never>>(ConfigSchema, raw ?? {}),
  create: async (_config, deps) => joinTokenServer({ trustDomain: deps.trustDomain, tokens: deps.joinTokens, clock: deps.clock, log: deps.log }),
}
