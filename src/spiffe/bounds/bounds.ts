import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../spiffe-id.js'
import { TrustDomain } from '../trust-domain.js'

/**
 * Operating bounds of a SPIFFE namespace (a path prefix): the most an
 * identity under it may get. A field that is absent places no limit of its own
 * (it inherits the ancestors'); an empty list allows nothing.
 */
export interface Bounds {
  /** Longest X.509-SVID lifetime, seconds. */
  readonly x509SvidTtlSeconds?: number
  /** Longest JWT-SVID lifetime, seconds. */
  readonly jwtSvidTtlSeconds?: number
  /** The only audiences a JWT-SVID may name. */
  readonly jwtAudiences?: readonly string[]
  /** DNS names an X.509-SVID may carry must equal or lie below one of these; `[]` = no DNS names. */
  readonly dnsSuffixes?: readonly string[]
  /** Trust domains an entry may federate with; `[]` = none. */
  readonly federatesWith?: readonly string[]
  /** Most identities under the prefix that may be live at once. */
  readonly maxInstances?: number
  /** Selectors (`type:value`) the serving node must all have. */
  readonly requireNodeSelectors?: readonly string[]
  // Permission ceiling of the token broker (agents under the prefix). The
  // broker treats an absent `scopes` / `resources` / `mayDelegateTo` as empty.
  /** OAuth scopes a broker token may carry; `[]` = none. */
  readonly scopes?: readonly string[]
  /** RFC 8707 resources (absolute URIs) a broker token may name as audience; `[]` = none. */
  readonly resources?: readonly string[]
  /** Longest broker access token lifetime, seconds. */
  readonly maxTokenTtlSeconds?: number
  /** Most renewals of one broker token chain. */
  readonly maxRenewals?: number
  /** Most nested `act` hops of a delegated token (the broker's default is 5). */
  readonly maxDelegationDepth?: number
  /** SPIFFE IDs (exact) or ID prefixes (ending in `/`) a token may be delegated to; `[]` = none. */
  readonly mayDelegateTo?: readonly string[]
  /** Whether tokens without key binding (`cnf`) may be issued; the broker's default is false. */
  readonly allowBearer?: boolean
}

/** The wire / file form of `Bounds` (snake_case, TTLs in seconds), as in the signed document. */
export interface BoundsJson {
  x509_svid_ttl?: number
  jwt_svid_ttl?: number
  jwt_audiences?: string[]
  dns_suffixes?: string[]
  federates_with?: string[]
  max_instances?: number
  require_node_selectors?: string[]
  scopes?: string[]
  resources?: string[]
  max_token_ttl?: number
  max_renewals?: number
  max_delegation_depth?: number
  may_delegate_to?: string[]
  allow_bearer?: boolean
}

/** One problem in bounds input: where (`/agents/payments.jwt_svid_ttl`) and why. */
export interface BoundsIssue {
  path: string
  message: string
}

/** A bound a child sets looser than its parent, or a value outside what bounds allow. */
export interface BoundsViolation {
  /** The snake_case name of the bound (`jwt_svid_ttl`). */
  bound: BoundName
  message: string
}

export type BoundName = keyof BoundsJson

export const BOUND_NAMES: readonly BoundName[] = [
  'x509_svid_ttl',
  'jwt_svid_ttl',
  'jwt_audiences',
  'dns_suffixes',
  'federates_with',
  'max_instances',
  'require_node_selectors',
  'scopes',
  'resources',
  'max_token_ttl',
  'max_renewals',
  'max_delegation_depth',
  'may_delegate_to',
  'allow_bearer',
]

const FIELD: Record<BoundName, keyof Bounds> = {
  x509_svid_ttl: 'x509SvidTtlSeconds',
  jwt_svid_ttl: 'jwtSvidTtlSeconds',
  jwt_audiences: 'jwtAudiences',
  dns_suffixes: 'dnsSuffixes',
  federates_with: 'federatesWith',
  max_instances: 'maxInstances',
  require_node_selectors: 'requireNodeSelectors',
  scopes: 'scopes',
  resources: 'resources',
  max_token_ttl: 'maxTokenTtlSeconds',
  max_renewals: 'maxRenewals',
  max_delegation_depth: 'maxDelegationDepth',
  may_delegate_to: 'mayDelegateTo',
  allow_bearer: 'allowBearer',
}

const MAX_LIST = 256
const MAX_STRING = 2048
/** Ten years: longer TTLs are certainly typos. */
const MAX_TTL_SECONDS = 10 * 366 * 86_400
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
/** RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/
/** Deepest delegation chain a ceiling may allow. */
export const MAX_DELEGATION_DEPTH_LIMIT = 32

export function boundsError(issues: BoundsIssue[], what = 'bounds'): IdentityError {
  return new IdentityError('ERR_BOUNDS_INVALID', `invalid ${what}: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, {
    details: { issues },
  })
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

function join(path: string, key: string): string {
  return path ? `${path}.${key}` : key
}

function stringList(
  v: unknown,
  path: string,
  issues: BoundsIssue[],
  check: (s: string) => string | undefined,
  normalize: (s: string) => string = (s) => s,
): string[] | undefined {
  if (!Array.isArray(v)) {
    issues.push({ path, message: 'must be a list of strings' })
    return undefined
  }
  if (v.length > MAX_LIST) {
    issues.push({ path, message: `must have at most ${MAX_LIST} items` })
    return undefined
  }
  const out = new Set<string>()
  v.forEach((item: unknown, i) => {
    if (typeof item !== 'string' || item.length === 0 || item.length > MAX_STRING) {
      issues.push({ path: `${path}.${i}`, message: `must be a non-empty string of at most ${MAX_STRING} characters` })
      return
    }
    const problem = check(item)
    if (problem) issues.push({ path: `${path}.${i}`, message: problem })
    else out.add(normalize(item))
  })
  return [...out].sort()
}

function dnsSuffixProblem(s: string): string | undefined {
  const d = s.toLowerCase()
  if (d.length > 253 || !d.split('.').every((l) => DNS_LABEL.test(l))) return `"${s.slice(0, 80)}" is not a DNS name (wildcards are not allowed)`
  return undefined
}

function selectorProblem(s: string): string | undefined {
  const i = s.indexOf(':')
  if (i <= 0 || i === s.length - 1) return `"${s.slice(0, 80)}" is not a selector (type:value)`
  return undefined
}

function scopeProblem(s: string): string | undefined {
  return SCOPE_TOKEN.test(s) ? undefined : `"${s.slice(0, 80)}" is not an OAuth scope token (RFC 6749 §3.3)`
}

/** RFC 8707 §2: an absolute URI without a fragment. */
export function resourceProblem(s: string): string | undefined {
  let u: URL
  try {
    u = new URL(s)
  } catch {
    return `"${s.slice(0, 80)}" is not an absolute URI`
  }
  if (s.includes('#') || u.hash !== '') return `"${s.slice(0, 80)}" must not have a fragment`
  if (/\s/.test(s)) return `"${s.slice(0, 80)}" must not contain white space`
  return undefined
}

/** A SPIFFE ID (`spiffe://td/path`) or an ID prefix ending in `/` (`spiffe://td/agents/`, `spiffe://td/`). */
export function delegateePatternProblem(s: string): string | undefined {
  const body = s.endsWith('/') ? s.slice(0, -1) : s
  const bad = `"${s.slice(0, 80)}" is not a SPIFFE ID or an ID prefix ending in "/"`
  if (!body.startsWith('spiffe://')) return bad
  const rest = body.slice('spiffe://'.length)
  if (!rest.includes('/')) return TrustDomain.isValid(rest) && s.endsWith('/') ? undefined : bad
  try {
    SpiffeId.fromString(body)
  } catch {
    return bad
  }
  return undefined
}

/** `id` (a SPIFFE ID or a pattern) is covered by `pattern`: equal, or under it when `pattern` ends in `/`. */
export function delegateeCovered(pattern: string, id: string): boolean {
  return pattern === id || (pattern.endsWith('/') && id.startsWith(pattern))
}

function trustDomainProblem(s: string): string | undefined {
  return TrustDomain.isValid(s) && !s.includes(':/') ? undefined : `"${s.slice(0, 80)}" is not a trust domain name`
}

/**
 * Parses the wire form (snake_case keys, TTLs in whole seconds). Every
 * problem is collected; unknown keys are errors. Throws ERR_BOUNDS_INVALID
 * with `details.issues`, each issue path prefixed by `path`.
 */
export function parseBounds(raw: unknown, path = ''): Bounds {
  const issues: BoundsIssue[] = []
  const b = collectBounds(raw, path, issues)
  if (issues.length > 0) throw boundsError(issues)
  return b
}

/** Like `parseBounds` but appends issues to `issues` instead of throwing. */
export function collectBounds(raw: unknown, path: string, issues: BoundsIssue[]): Bounds {
  const out: { -readonly [K in keyof Bounds]: Bounds[K] } = {}
  if (!isPlainObject(raw)) {
    issues.push({ path: path || '(root)', message: 'must be an object' })
    return out
  }
  for (const [key, v] of Object.entries(raw)) {
    const p = join(path, key)
    if (v === undefined) continue
    switch (key) {
      case 'x509_svid_ttl':
      case 'jwt_svid_ttl':
        if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > MAX_TTL_SECONDS) {
          issues.push({ path: p, message: `must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}` })
        } else out[FIELD[key] as 'x509SvidTtlSeconds'] = v as number
        break
      case 'max_instances':
        if (!Number.isSafeInteger(v) || (v as number) < 0) issues.push({ path: p, message: 'must be a non-negative integer' })
        else out.maxInstances = v as number
        break
      case 'max_token_ttl':
        if (!Number.isSafeInteger(v) || (v as number) < 1 || (v as number) > MAX_TTL_SECONDS) {
          issues.push({ path: p, message: `must be a whole number of seconds between 1 and ${MAX_TTL_SECONDS}` })
        } else out.maxTokenTtlSeconds = v as number
        break
      case 'max_renewals':
        if (!Number.isSafeInteger(v) || (v as number) < 0) issues.push({ path: p, message: 'must be a non-negative integer' })
        else out.maxRenewals = v as number
        break
      case 'max_delegation_depth':
        if (!Number.isSafeInteger(v) || (v as number) < 0 || (v as number) > MAX_DELEGATION_DEPTH_LIMIT) {
          issues.push({ path: p, message: `must be an integer between 0 and ${MAX_DELEGATION_DEPTH_LIMIT}` })
        } else out.maxDelegationDepth = v as number
        break
      case 'allow_bearer':
        if (typeof v !== 'boolean') issues.push({ path: p, message: 'must be true or false' })
        else out.allowBearer = v
        break
      case 'scopes': {
        const l = stringList(v, p, issues, scopeProblem)
        if (l) out.scopes = l
        break
      }
      case 'resources': {
        const l = stringList(v, p, issues, resourceProblem)
        if (l) out.resources = l
        break
      }
      case 'may_delegate_to': {
        const l = stringList(v, p, issues, delegateePatternProblem)
        if (l) out.mayDelegateTo = l
        break
      }
      case 'jwt_audiences': {
        const l = stringList(v, p, issues, () => undefined)
        if (l) out.jwtAudiences = l
        break
      }
      case 'dns_suffixes': {
        const l = stringList(v, p, issues, dnsSuffixProblem, (s) => s.toLowerCase())
        if (l) out.dnsSuffixes = l
        break
      }
      case 'federates_with': {
        const l = stringList(v, p, issues, trustDomainProblem)
        if (l) out.federatesWith = l
        break
      }
      case 'require_node_selectors': {
        const l = stringList(v, p, issues, selectorProblem)
        if (l) out.requireNodeSelectors = l
        break
      }
      default:
        issues.push({ path: p, message: `unknown key (known: ${BOUND_NAMES.join(', ')})` })
    }
  }
  return out
}

/** The wire form; absent fields are left out. */
export function boundsToJson(b: Bounds): BoundsJson {
  const out: BoundsJson = {}
  if (b.x509SvidTtlSeconds !== undefined) out.x509_svid_ttl = b.x509SvidTtlSeconds
  if (b.jwtSvidTtlSeconds !== undefined) out.jwt_svid_ttl = b.jwtSvidTtlSeconds
  if (b.jwtAudiences !== undefined) out.jwt_audiences = [...b.jwtAudiences]
  if (b.dnsSuffixes !== undefined) out.dns_suffixes = [...b.dnsSuffixes]
  if (b.federatesWith !== undefined) out.federates_with = [...b.federatesWith]
  if (b.maxInstances !== undefined) out.max_instances = b.maxInstances
  if (b.requireNodeSelectors !== undefined) out.require_node_selectors = [...b.requireNodeSelectors]
  if (b.scopes !== undefined) out.scopes = [...b.scopes]
  if (b.resources !== undefined) out.resources = [...b.resources]
  if (b.maxTokenTtlSeconds !== undefined) out.max_token_ttl = b.maxTokenTtlSeconds
  if (b.maxRenewals !== undefined) out.max_renewals = b.maxRenewals
  if (b.maxDelegationDepth !== undefined) out.max_delegation_depth = b.maxDelegationDepth
  if (b.mayDelegateTo !== undefined) out.may_delegate_to = [...b.mayDelegateTo]
  if (b.allowBearer !== undefined) out.allow_bearer = b.allowBearer
  return out
}

/** True when the bounds limit nothing. */
export function isUnbounded(b: Bounds): boolean {
  return BOUND_NAMES.every((n) => b[FIELD[n]] === undefined)
}

/** `name` equals `suffix` or lies below it (`a.payments.example` under `payments.example`). */
export function dnsNameUnder(name: string, suffix: string): boolean {
  const n = name.toLowerCase()
  return n === suffix || n.endsWith(`.${suffix}`)
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  return Math.min(a, b)
}

function intersectLists(a: readonly string[] | undefined, b: readonly string[] | undefined): readonly string[] | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  const s = new Set(b)
  return a.filter((x) => s.has(x))
}

/** Names allowed by both suffix lists: for each pair, the deeper suffix when one lies under the other. */
function intersectSuffixes(a: readonly string[] | undefined, b: readonly string[] | undefined): readonly string[] | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  const out = new Set<string>()
  for (const x of a)
    for (const y of b) {
      if (dnsNameUnder(x, y)) out.add(x)
      else if (dnsNameUnder(y, x)) out.add(y)
    }
  return [...out].sort()
}

/** Patterns allowed by both lists: for each pair, the narrower one when one covers the other. */
function intersectPatterns(a: readonly string[] | undefined, b: readonly string[] | undefined): readonly string[] | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  const out = new Set<string>()
  for (const x of a)
    for (const y of b) {
      if (delegateeCovered(y, x)) out.add(x)
      else if (delegateeCovered(x, y)) out.add(y)
    }
  return [...out].sort()
}

/** What both allow: smaller TTLs and limits, common audiences and trust domains, and every required selector. */
export function intersect(a: Bounds, b: Bounds): Bounds {
  const out: { -readonly [K in keyof Bounds]: Bounds[K] } = {}
  const x509 = minDefined(a.x509SvidTtlSeconds, b.x509SvidTtlSeconds)
  if (x509 !== undefined) out.x509SvidTtlSeconds = x509
  const jwt = minDefined(a.jwtSvidTtlSeconds, b.jwtSvidTtlSeconds)
  if (jwt !== undefined) out.jwtSvidTtlSeconds = jwt
  const aud = intersectLists(a.jwtAudiences, b.jwtAudiences)
  if (aud !== undefined) out.jwtAudiences = aud
  const dns = intersectSuffixes(a.dnsSuffixes, b.dnsSuffixes)
  if (dns !== undefined) out.dnsSuffixes = dns
  const fed = intersectLists(a.federatesWith, b.federatesWith)
  if (fed !== undefined) out.federatesWith = fed
  const max = minDefined(a.maxInstances, b.maxInstances)
  if (max !== undefined) out.maxInstances = max
  if (a.requireNodeSelectors !== undefined || b.requireNodeSelectors !== undefined) {
    out.requireNodeSelectors = [...new Set([...(a.requireNodeSelectors ?? []), ...(b.requireNodeSelectors ?? [])])].sort()
  }
  const scopes = intersectLists(a.scopes, b.scopes)
  if (scopes !== undefined) out.scopes = scopes
  const resources = intersectLists(a.resources, b.resources)
  if (resources !== undefined) out.resources = resources
  const ttl = minDefined(a.maxTokenTtlSeconds, b.maxTokenTtlSeconds)
  if (ttl !== undefined) out.maxTokenTtlSeconds = ttl
  const renewals = minDefined(a.maxRenewals, b.maxRenewals)
  if (renewals !== undefined) out.maxRenewals = renewals
  const depth = minDefined(a.maxDelegationDepth, b.maxDelegationDepth)
  if (depth !== undefined) out.maxDelegationDepth = depth
  const delegates = intersectPatterns(a.mayDelegateTo, b.mayDelegateTo)
  if (delegates !== undefined) out.mayDelegateTo = delegates
  if (a.allowBearer !== undefined || b.allowBearer !== undefined) out.allowBearer = (a.allowBearer ?? true) && (b.allowBearer ?? true)
  return out
}

const q = (l: readonly string[]) => (l.length === 0 ? 'none' : l.map((s) => `"${s}"`).join(', '))

/**
 * The bounds `child` sets looser than `parent`. A bound the child leaves out
 * inherits the parent's and is never a violation. Empty = `child` narrows `parent`.
 */
export function narrows(child: Bounds, parent: Bounds): BoundsViolation[] {
  const out: BoundsViolation[] = []
  const num = (bound: BoundName, c: number | undefined, p: number | undefined, unit: string) => {
    if (c !== undefined && p !== undefined && c > p) out.push({ bound, message: `${c}${unit} is wider than ${p}${unit}` })
  }
  num('x509_svid_ttl', child.x509SvidTtlSeconds, parent.x509SvidTtlSeconds, 's')
  num('jwt_svid_ttl', child.jwtSvidTtlSeconds, parent.jwtSvidTtlSeconds, 's')
  const subset = (bound: BoundName, c: readonly string[] | undefined, p: readonly string[] | undefined) => {
    if (c === undefined || p === undefined) return
    const extra = c.filter((x) => !p.includes(x))
    if (extra.length > 0) out.push({ bound, message: `${q(extra)} not allowed by ${q(p)}` })
  }
  subset('jwt_audiences', child.jwtAudiences, parent.jwtAudiences)
  subset('federates_with', child.federatesWith, parent.federatesWith)
  if (child.dnsSuffixes !== undefined && parent.dnsSuffixes !== undefined) {
    const extra = child.dnsSuffixes.filter((c) => !parent.dnsSuffixes!.some((p) => dnsNameUnder(c, p)))
    if (extra.length > 0) out.push({ bound: 'dns_suffixes', message: `${q(extra)} not under ${q(parent.dnsSuffixes)}` })
  }
  num('max_instances', child.maxInstances, parent.maxInstances, '')
  if (child.requireNodeSelectors !== undefined && parent.requireNodeSelectors !== undefined) {
    const missing = parent.requireNodeSelectors.filter((s) => !child.requireNodeSelectors!.includes(s))
    if (missing.length > 0) out.push({ bound: 'require_node_selectors', message: `drops required ${q(missing)}` })
  }
  subset('scopes', child.scopes, parent.scopes)
  subset('resources', child.resources, parent.resources)
  num('max_token_ttl', child.maxTokenTtlSeconds, parent.maxTokenTtlSeconds, 's')
  num('max_renewals', child.maxRenewals, parent.maxRenewals, '')
  num('max_delegation_depth', child.maxDelegationDepth, parent.maxDelegationDepth, '')
  if (child.mayDelegateTo !== undefined && parent.mayDelegateTo !== undefined) {
    const extra = child.mayDelegateTo.filter((c) => !parent.mayDelegateTo!.some((p) => delegateeCovered(p, c)))
    if (extra.length > 0) out.push({ bound: 'may_delegate_to', message: `${q(extra)} not covered by ${q(parent.mayDelegateTo)}` })
  }
  if (child.allowBearer === true && parent.allowBearer === false) out.push({ bound: 'allow_bearer', message: 'allows bearer tokens the parent forbids' })
  return out
}

/** Same bounds (lists compared as sets; parse output is sorted). */
export function boundsEqual(a: Bounds, b: Bounds): boolean {
  return JSON.stringify(boundsToJson(a)) === JSON.stringify(boundsToJson(b))
}
