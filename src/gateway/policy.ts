/**
 * The gateway's decision for one call, pure: the caller must be one of the
 * tool's `allowed_agents` (an ID, or under a prefix ending in `/`); its
 * permission ceiling (from the signed bounds document) must include every
 * scope the tool needs and the tool's audience as a resource; and when the
 * caller came with a broker access token, that token's scope must include
 * the tool's scopes too. A refusal says which rule, as a reason code for the
 * log and the audit event; the caller learns only the OAuth error.
 */
import { checkCeiling, type Ceiling } from '../spiffe/bounds/ceiling.js'
import { matchesWorkload } from '../tokens/txn-token.js'
import type { Tool } from './registry.js'

export interface Caller {
  readonly spiffeId: string
  /** Scopes of the broker access token the caller presented; undefined for an X.509-SVID caller. */
  readonly tokenScopes?: readonly string[]
}

export type RefusalReason = 'agent_not_allowed' | 'ceiling.scopes' | 'ceiling.resources' | 'token.scope'

export type Decision =
  | { readonly allow: true }
  | {
      readonly allow: false
      readonly reason: RefusalReason
      /** For the log only. */
      readonly detail: string
      /** The OAuth error the caller gets (403 either way). */
      readonly error: 'access_denied' | 'insufficient_scope'
    }

/** Does `id` match one of the patterns (exact ID, or a prefix ending in `/` with more after it)? */
export function agentAllowed(patterns: readonly string[], id: string): boolean {
  return patterns.some((p) => matchesWorkload(id, p))
}

export function decide(tool: Tool, caller: Caller, ceiling: Ceiling): Decision {
  if (!agentAllowed(tool.allowedAgents, caller.spiffeId))
    return { allow: false, reason: 'agent_not_allowed', detail: `${caller.spiffeId} is not in allowed_agents of ${tool.name}`, error: 'access_denied' }
  const scopes = checkCeiling(ceiling, { scopes: tool.scopes })
  if (scopes) return { allow: false, reason: 'ceiling.scopes', detail: scopes.message, error: 'access_denied' }
  const resources = checkCeiling(ceiling, { resources: [tool.audience] })
  if (resources) return { allow: false, reason: 'ceiling.resources', detail: resources.message, error: 'access_denied' }
  if (caller.tokenScopes !== undefined) {
    const granted = new Set(caller.tokenScopes)
    const missing = tool.scopes.filter((s) => !granted.has(s))
    if (missing.length > 0) return { allow: false, reason: 'token.scope', detail: `token lacks ${missing.join(' ')}`, error: 'insufficient_scope' }
  }
  return { allow: true }
}
