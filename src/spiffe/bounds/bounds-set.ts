import { SpiffeId } from '../spiffe-id.js'
import type { TrustDomain } from '../trust-domain.js'
import { boundsError, boundsToJson, collectBounds, intersect, narrows, type Bounds, type BoundsIssue, type BoundsJson } from './bounds.js'

/** Effective bounds of an ID: the intersection of every prefix that matches it. */
export interface EffectiveBounds {
  readonly bounds: Bounds
  /** The matching prefixes, shallowest first. */
  readonly prefixes: readonly string[]
}

/** One prefix and its bounds in list form (the signed document's `bounds` items). */
export type PrefixBoundsJson = { prefix: string } & BoundsJson

const CACHE_MAX = 10_000

/**
 * Normalises a namespace prefix: an absolute SPIFFE ID path (`/agents/payments`),
 * `/` for the whole trust domain. One trailing slash is dropped. Returns the
 * prefix or a problem.
 */
export function normalizePrefix(td: TrustDomain, raw: unknown): { prefix: string } | { problem: string } {
  if (typeof raw !== 'string' || raw.length === 0) return { problem: 'prefix must be a non-empty string' }
  if (raw[0] !== '/') return { problem: 'prefix must be a SPIFFE ID path starting with "/"' }
  if (raw === '/') return { prefix: '/' }
  const p = raw.endsWith('/') ? raw.slice(0, -1) : raw
  try {
    SpiffeId.fromPath(td, p)
  } catch (err) {
    return { problem: (err as Error).message.replace(/^invalid SPIFFE ID( path)?: /, '') }
  }
  return { prefix: p }
}

/** Prefixes that are ancestors of (or equal to) `path`, shallowest first: `/`, `/a`, `/a/b`. */
function ancestorsOf(path: string): string[] {
  const out = ['/']
  if (path === '' || path === '/') return out
  let i = path.indexOf('/', 1)
  while (i !== -1) {
    out.push(path.slice(0, i))
    i = path.indexOf('/', i + 1)
  }
  out.push(path)
  return out
}

function isUnder(child: string, parent: string): boolean {
  return parent === '/' ? child !== '/' : child.startsWith(`${parent}/`)
}

/**
 * The bounds of one trust domain, by path prefix. Immutable; every instance
 * is valid: each prefix narrows all of its ancestors. `with` and `without`
 * return new sets. `boundsFor` is cached per instance.
 */
export class BoundsSet {
  readonly trustDomain: TrustDomain
  readonly #byPrefix: ReadonlyMap<string, Bounds>
  readonly #cache = new Map<string, EffectiveBounds | undefined>()

  private constructor(td: TrustDomain, m: ReadonlyMap<string, Bounds>) {
    this.trustDomain = td
    this.#byPrefix = m
  }

  static empty(td: TrustDomain): BoundsSet {
    return new BoundsSet(td, new Map())
  }

  /**
   * Builds a set from prefix → bounds, checking everything: prefixes are valid
   * and distinct after normalisation (two spellings of one prefix overlap),
   * federation never names the local trust domain, and each prefix narrows
   * every ancestor. All problems are reported together (ERR_BOUNDS_INVALID,
   * `details.issues` with paths such as `/agents/payments.jwt_svid_ttl`).
   */
  static from(td: TrustDomain, entries: Iterable<readonly [string, Bounds]>, issues: BoundsIssue[] = []): BoundsSet {
    const m = new Map<string, Bounds>()
    const spelled = new Map<string, string>()
    for (const [raw, b] of entries) {
      const n = normalizePrefix(td, raw)
      if ('problem' in n) {
        issues.push({ path: String(raw).slice(0, 200), message: n.problem })
        continue
      }
      const prev = spelled.get(n.prefix)
      if (prev !== undefined) {
        issues.push({ path: raw, message: `overlaps "${prev}": both define ${n.prefix}` })
        continue
      }
      spelled.set(n.prefix, raw)
      if (b.federatesWith?.includes(td.name)) issues.push({ path: `${raw}.federates_with`, message: 'cannot name the local trust domain' })
      m.set(n.prefix, b)
    }
    issues.push(...treeIssues(m))
    if (issues.length > 0) throw boundsError(issues)
    return new BoundsSet(td, m)
  }

  /**
   * Parses the wire form: an object keyed by prefix (as in the config file) or
   * a list of `{ prefix, ...bounds }` (as in the signed document).
   */
  static parse(td: TrustDomain, raw: unknown): BoundsSet {
    const issues: BoundsIssue[] = []
    const entries: [string, Bounds][] = []
    if (Array.isArray(raw)) {
      raw.forEach((item: unknown, i) => {
        if (item === null || typeof item !== 'object' || Array.isArray(item)) {
          issues.push({ path: String(i), message: 'must be an object' })
          return
        }
        const { prefix, ...rest } = item as Record<string, unknown>
        if (typeof prefix !== 'string') {
          issues.push({ path: `${i}.prefix`, message: 'is required' })
          return
        }
        entries.push([prefix, collectBounds(rest, prefix, issues)])
      })
    } else if (raw !== null && typeof raw === 'object') {
      for (const [prefix, v] of Object.entries(raw)) entries.push([prefix, collectBounds(v, prefix, issues)])
    } else {
      issues.push({ path: '(root)', message: 'must be an object or a list' })
    }
    return BoundsSet.from(td, entries, issues)
  }

  get size(): number {
    return this.#byPrefix.size
  }

  /** The bounds declared at exactly this prefix (normalised), if any. */
  get(prefix: string): Bounds | undefined {
    const n = normalizePrefix(this.trustDomain, prefix)
    return 'prefix' in n ? this.#byPrefix.get(n.prefix) : undefined
  }

  has(prefix: string): boolean {
    return this.get(prefix) !== undefined
  }

  /** Declared prefixes, sorted. */
  prefixes(): string[] {
    return [...this.#byPrefix.keys()].sort()
  }

  entries(): [string, Bounds][] {
    return this.prefixes().map((p) => [p, this.#byPrefix.get(p)!])
  }

  /** Declared prefixes strictly above `prefix`, shallowest first. */
  ancestorsOf(prefix: string): string[] {
    return ancestorsOf(prefix).filter((p) => p !== prefix && this.#byPrefix.has(p))
  }

  /** Declared prefixes strictly below `prefix`, sorted. */
  descendantsOf(prefix: string): string[] {
    return this.prefixes().filter((p) => isUnder(p, prefix))
  }

  /**
   * The effective bounds of `id`, or undefined when it is outside the trust
   * domain or under no declared prefix (then nothing limits it).
   */
  boundsFor(id: SpiffeId): EffectiveBounds | undefined {
    if (!id.memberOf(this.trustDomain)) return undefined
    const key = id.path
    if (this.#cache.has(key)) return this.#cache.get(key)
    const prefixes = ancestorsOf(id.path).filter((p) => this.#byPrefix.has(p))
    let result: EffectiveBounds | undefined
    if (prefixes.length > 0) {
      let b: Bounds = this.#byPrefix.get(prefixes[0]!)!
      for (const p of prefixes.slice(1)) b = intersect(b, this.#byPrefix.get(p)!)
      result = Object.freeze({ bounds: Object.freeze(b), prefixes: Object.freeze(prefixes) })
    }
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear()
    this.#cache.set(key, result)
    return result
  }

  /** A new set with `prefix` set to `bounds`; throws ERR_BOUNDS_INVALID (nothing changes) when it widens an ancestor or a descendant would widen it. */
  with(prefix: string, bounds: Bounds): BoundsSet {
    const n = normalizePrefix(this.trustDomain, prefix)
    if ('problem' in n) throw boundsError([{ path: prefix.slice(0, 200), message: n.problem }])
    const m = new Map(this.#byPrefix)
    m.set(n.prefix, bounds)
    return BoundsSet.from(this.trustDomain, m)
  }

  /** A new set without `prefix` (removing bounds never makes the rest inconsistent). */
  without(prefix: string): BoundsSet {
    const n = normalizePrefix(this.trustDomain, prefix)
    if ('problem' in n) throw boundsError([{ path: prefix.slice(0, 200), message: n.problem }])
    const m = new Map(this.#byPrefix)
    m.delete(n.prefix)
    return new BoundsSet(this.trustDomain, m)
  }

  /** The list form, sorted by prefix. */
  toJSON(): PrefixBoundsJson[] {
    return this.entries().map(([prefix, b]) => ({ prefix, ...boundsToJson(b) }))
  }
}

/** Every place a prefix is wider than one of its declared ancestors. */
function treeIssues(m: ReadonlyMap<string, Bounds>): BoundsIssue[] {
  const issues: BoundsIssue[] = []
  for (const [prefix, b] of [...m].sort(([a], [c]) => (a < c ? -1 : a > c ? 1 : 0))) {
    for (const anc of ancestorsOf(prefix)) {
      if (anc === prefix) continue
      const parent = m.get(anc)
      if (!parent) continue
      for (const v of narrows(b, parent)) {
        issues.push({ path: `${prefix}.${v.bound}`, message: `widens ancestor "${anc}": ${v.message}` })
      }
    }
  }
  return issues
}

/** For callers that have an ID string: parses it (ERR_SPIFFE_ID_INVALID) and returns its effective bounds. */
export function boundsFor(id: SpiffeId | string, set: BoundsSet): EffectiveBounds | undefined {
  const sid = typeof id === 'string' ? SpiffeId.fromString(id) : id
  if (!(sid instanceof SpiffeId)) throw new TypeError('id must be a SpiffeId or a string')
  return set.boundsFor(sid)
}
