import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import type { NewEntry } from '../datastore/types.js'
import { canonicalSelectors, checkSelector } from './selectors.js'

export interface EntryLimits {
  trustDomain: TrustDomain
  /** Largest X.509-SVID TTL an entry may ask for, seconds. */
  maxX509TtlSeconds: number
  maxJwtTtlSeconds: number
}

const DNS_RE = /^(?=.{1,253}$)(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
const MAX_HINT = 1024

export const serverIdOf = (td: TrustDomain): SpiffeId => SpiffeId.fromPath(td, '/warrant/server')

/** The placeholder of a per-instance entry template: one whole path segment, e.g. `/agents/refund-bot/{instance}`. */
export const INSTANCE_PLACEHOLDER = '{instance}'
/** A representative value used to validate templates (same character class as real instance IDs). */
export const INSTANCE_SAMPLE = 'i0000000000000000000000000'

export function isTemplateId(spiffeId: string): boolean {
  return spiffeId.includes(INSTANCE_PLACEHOLDER)
}

/** Substitutes an instance ID into a template. */
export function instanceSpiffeId(template: string, instanceId: string): string {
  return template.replace(INSTANCE_PLACEHOLDER, instanceId)
}

/** The ID an entry's namespace bounds are evaluated for: a template's bounds are those of any instance it can produce. */
export function boundsSpiffeId(spiffeId: string): string {
  return isTemplateId(spiffeId) ? instanceSpiffeId(spiffeId, INSTANCE_SAMPLE) : spiffeId
}

/**
 * Checks a template can only produce valid SPIFFE IDs: exactly one
 * `{instance}`, as a whole path segment, and valid with a sample instance ID
 * of the longest length we generate. Returns a reason or undefined.
 */
export function templateProblem(spiffeId: string): string | undefined {
  const n = spiffeId.split(INSTANCE_PLACEHOLDER).length - 1
  if (n === 0) return undefined
  if (n > 1) return `a template may hold ${INSTANCE_PLACEHOLDER} only once`
  if (/[{}]/.test(spiffeId.replace(INSTANCE_PLACEHOLDER, ''))) return 'braces are only allowed as {instance}'
  const i = spiffeId.indexOf(INSTANCE_PLACEHOLDER)
  const after = spiffeId.slice(i + INSTANCE_PLACEHOLDER.length)
  if (spiffeId[i - 1] !== '/' || (after !== '' && !after.startsWith('/'))) return `${INSTANCE_PLACEHOLDER} must be a whole path segment`
  return undefined
}
export const AGENT_PATH_PREFIX = '/warrant/agent/'
export const isAgentId = (id: SpiffeId): boolean => id.path.startsWith(AGENT_PATH_PREFIX)

/**
 * Validates and normalises an entry before it is written: every problem is
 * reported together (ERR_ENTRY_INVALID with `details.issues`), nothing is stored.
 */
export function validateEntry(e: NewEntry, limits: EntryLimits): NewEntry {
  const issues: { path: string; message: string }[] = []
  const bad = (path: string, message: string) => issues.push({ path, message })
  let spiffeId: SpiffeId | undefined
  let parentId: SpiffeId | undefined
  const tpl = typeof e.spiffeId === 'string' ? templateProblem(e.spiffeId) : undefined
  if (tpl) bad('spiffe_id', tpl)
  const template = typeof e.spiffeId === 'string' && isTemplateId(e.spiffeId)
  try {
    spiffeId = SpiffeId.fromString(template ? instanceSpiffeId(e.spiffeId, INSTANCE_SAMPLE) : e.spiffeId)
    if (!spiffeId.memberOf(limits.trustDomain)) bad('spiffe_id', `must be in trust domain "${limits.trustDomain.name}"`)
    else if (spiffeId.isTrustDomainId()) bad('spiffe_id', 'must have a path')
    else if (spiffeId.path.startsWith('/warrant/')) bad('spiffe_id', 'paths under /warrant/ are reserved for the server and agents')
  } catch (err) {
    bad('spiffe_id', (err as Error).message)
  }
  try {
    parentId = SpiffeId.fromString(e.parentId)
    if (!parentId.memberOf(limits.trustDomain)) bad('parent_id', `must be in trust domain "${limits.trustDomain.name}"`)
  } catch (err) {
    bad('parent_id', (err as Error).message)
  }
  let selectors = e.selectors
  if (!Array.isArray(e.selectors) || e.selectors.length === 0) bad('selectors', 'at least one selector is required')
  else {
    e.selectors.forEach((s, i) => {
      try {
        checkSelector(s)
      } catch (err) {
        bad(`selectors.${i}`, (err as Error).message)
      }
    })
    selectors = canonicalSelectors(e.selectors)
  }
  if (!Number.isInteger(e.x509SvidTtl) || e.x509SvidTtl < 0 || e.x509SvidTtl > limits.maxX509TtlSeconds) {
    bad('x509_svid_ttl', `must be an integer between 0 and ${limits.maxX509TtlSeconds} seconds`)
  }
  if (!Number.isInteger(e.jwtSvidTtl) || e.jwtSvidTtl < 0 || e.jwtSvidTtl > limits.maxJwtTtlSeconds) {
    bad('jwt_svid_ttl', `must be an integer between 0 and ${limits.maxJwtTtlSeconds} seconds`)
  }
  e.dnsNames.forEach((d, i) => {
    if (!DNS_RE.test(d)) bad(`dns_names.${i}`, `"${d.slice(0, 80)}" is not a valid DNS name`)
  })
  const feds: string[] = []
  e.federatesWith.forEach((t, i) => {
    try {
      const td = TrustDomain.fromString(t)
      if (td.equals(limits.trustDomain)) bad(`federates_with.${i}`, 'cannot federate with the local trust domain')
      else feds.push(td.name)
    } catch (err) {
      bad(`federates_with.${i}`, (err as Error).message)
    }
  })
  if (typeof e.hint !== 'string' || Buffer.byteLength(e.hint) > MAX_HINT) bad('hint', `must be at most ${MAX_HINT} bytes`)
  if (e.expiresAt !== null && (!Number.isFinite(e.expiresAt) || e.expiresAt <= 0)) bad('expires_at', 'must be a positive epoch time')
  if (spiffeId && parentId && spiffeId.equals(parentId)) bad('parent_id', 'an entry cannot be its own parent')
  if (issues.length > 0) {
    throw new IdentityError('ERR_ENTRY_INVALID', `invalid entry: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { details: { issues } })
  }
  return {
    ...e,
    spiffeId: template ? e.spiffeId : spiffeId!.toString(),
    parentId: parentId!.toString(),
    selectors,
    dnsNames: [...new Set(e.dnsNames)],
    federatesWith: [...new Set(feds)].sort(),
  }
}
