import type { SpiffeId } from '../spiffe-id.js'
import { delegateeCovered, type BoundName } from './bounds.js'
import type { BoundsSet } from './bounds-set.js'

/** Default most nested `act` hops when no prefix declares `max_delegation_depth` (the pattern's depth 5). */
export const DEFAULT_MAX_DELEGATION_DEPTH = 5

/**
 * The permission ceiling of an agent's SPIFFE ID: the most a token broker may
 * ever give it, from the namespace bounds that cover the ID, with the broker's
 * secure defaults for what no prefix declares: no scopes, no resources, no
 * delegation, key binding required, depth 5. TTL and renewal limits stay
 * undefined when undeclared (the broker applies its own caps).
 */
export interface Ceiling {
  readonly scopes: readonly string[]
  readonly resources: readonly string[]
  readonly maxTokenTtlSeconds?: number
  readonly maxRenewals?: number
  readonly maxDelegationDepth: number
  readonly mayDelegateTo: readonly string[]
  readonly allowBearer: boolean
  /** The declared prefixes the ceiling comes from, shallowest first (empty: none covers the ID). */
  readonly prefixes: readonly string[]
}

/** What a token (or task) asks for, checked against a ceiling. Absent = not checked. */
export interface CeilingRequest {
  scopes?: readonly string[]
  resources?: readonly string[]
  ttlSeconds?: number
  maxRenewals?: number
  /** `act` depth of the token to issue. */
  delegationDepth?: number
  /** SPIFFE ID a token is delegated to. */
  delegateTo?: string
  bearer?: boolean
}

/** The first ceiling a request exceeds: which bound and why (no prefix: the ceiling is the intersection). */
export interface CeilingFailure {
  bound: BoundName
  message: string
}

const NONE: Ceiling = Object.freeze({
  scopes: Object.freeze([]),
  resources: Object.freeze([]),
  maxDelegationDepth: DEFAULT_MAX_DELEGATION_DEPTH,
  mayDelegateTo: Object.freeze([]),
  allowBearer: false,
  prefixes: Object.freeze([]),
})

/** The effective ceiling of `id` (the intersection of every declared prefix above it, defaults applied). */
export function ceilingFor(set: BoundsSet, id: SpiffeId): Ceiling {
  const eff = set.boundsFor(id)
  if (!eff) return NONE
  const b = eff.bounds
  return Object.freeze({
    scopes: Object.freeze([...(b.scopes ?? [])]),
    resources: Object.freeze([...(b.resources ?? [])]),
    ...(b.maxTokenTtlSeconds !== undefined ? { maxTokenTtlSeconds: b.maxTokenTtlSeconds } : {}),
    ...(b.maxRenewals !== undefined ? { maxRenewals: b.maxRenewals } : {}),
    maxDelegationDepth: b.maxDelegationDepth ?? DEFAULT_MAX_DELEGATION_DEPTH,
    mayDelegateTo: Object.freeze([...(b.mayDelegateTo ?? [])]),
    allowBearer: b.allowBearer ?? false,
    prefixes: eff.prefixes,
  })
}

const q = (s: string) => `"${s.slice(0, 200)}"`

/** Checks `req` against `c`; undefined = within the ceiling. */
export function checkCeiling(c: Ceiling, req: CeilingRequest): CeilingFailure | undefined {
  const fail = (bound: BoundName, message: string): CeilingFailure => ({ bound, message })
  if (req.scopes) {
    const bad = req.scopes.find((s) => !c.scopes.includes(s))
    if (bad !== undefined) return fail('scopes', `scope ${q(bad)} is above the ceiling`)
  }
  if (req.resources) {
    const bad = req.resources.find((r) => !c.resources.includes(r))
    if (bad !== undefined) return fail('resources', `resource ${q(bad)} is above the ceiling`)
  }
  if (req.ttlSeconds !== undefined && c.maxTokenTtlSeconds !== undefined && req.ttlSeconds > c.maxTokenTtlSeconds) {
    return fail('max_token_ttl', `lifetime ${req.ttlSeconds}s exceeds ${c.maxTokenTtlSeconds}s`)
  }
  if (req.maxRenewals !== undefined && c.maxRenewals !== undefined && req.maxRenewals > c.maxRenewals) {
    return fail('max_renewals', `${req.maxRenewals} renewals exceed ${c.maxRenewals}`)
  }
  if (req.delegationDepth !== undefined && req.delegationDepth > c.maxDelegationDepth) {
    return fail('max_delegation_depth', `delegation depth ${req.delegationDepth} exceeds ${c.maxDelegationDepth}`)
  }
  if (req.delegateTo !== undefined && !c.mayDelegateTo.some((p) => delegateeCovered(p, req.delegateTo!))) {
    return fail('may_delegate_to', `delegation to ${q(req.delegateTo)} is not allowed`)
  }
  if (req.bearer === true && !c.allowBearer) return fail('allow_bearer', 'bearer tokens are not allowed')
  return undefined
}

/** Formats a failure: `exceeds ceiling scopes: scope "x" is above the ceiling`. */
export function describeCeilingFailure(f: CeilingFailure): string {
  return `exceeds ceiling ${f.bound}: ${f.message}`
}
