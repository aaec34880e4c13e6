import { IdentityError } from '../errors/identity-error.js'

/*
 * TrustDomain lives here with SpiffeId: each needs the other (a trust-domain
 * ID parses as a SPIFFE ID, a SPIFFE ID has a trust domain), and one module
 * keeps the import graph free of cycles. `trust-domain.ts` re-exports it.
 */
const MAX_TRUST_DOMAIN_BYTES = 255

/** A SPIFFE trust domain name such as `corp.example`. Immutable; compare with `equals`. */
export class TrustDomain {
  readonly name: string

  private constructor(name: string) {
    this.name = name
  }

  /**
   * Parses a trust domain name (`corp.example`) or a trust-domain SPIFFE ID
   * (`spiffe://corp.example`). Throws ERR_TRUST_DOMAIN_INVALID.
   */
  static fromString(s: string): TrustDomain {
    if (typeof s !== 'string') throw new TypeError('trust domain must be a string')
    if (s.includes(':/')) {
      let id: SpiffeId
      try {
        id = SpiffeId.fromString(s)
      } catch (cause) {
        const reason = cause instanceof IdentityError ? cause.message.replace(/^invalid SPIFFE ID: /, '') : 'invalid'
        throw new IdentityError('ERR_TRUST_DOMAIN_INVALID', `invalid trust domain ID: ${reason}`, { cause, details: { value: truncate(s) } })
      }
      if (id.path !== '') {
        throw new IdentityError('ERR_TRUST_DOMAIN_INVALID', 'trust domain ID must not have a path', {
          details: { value: truncate(s) },
        })
      }
      return id.trustDomain
    }
    const problem = trustDomainNameProblem(s)
    if (problem) throw new IdentityError('ERR_TRUST_DOMAIN_INVALID', `trust domain ${problem}`, { details: { value: truncate(s) } })
    return new TrustDomain(s)
  }

  /** @internal used by SpiffeId after it validated the name itself. */
  static unsafe(name: string): TrustDomain {
    return new TrustDomain(name)
  }

  static isValid(s: string): boolean {
    try {
      TrustDomain.fromString(s)
      return true
    } catch {
      return false
    }
  }

  /** `spiffe://<name>`: the form used as map key in the Workload API. */
  idString(): string {
    return `spiffe://${this.name}`
  }

  id(): SpiffeId {
    return SpiffeId.fromString(this.idString())
  }

  toString(): string {
    return this.name
  }

  toJSON(): string {
    return this.name
  }

  equals(other: TrustDomain | undefined | null): boolean {
    return !!other && other.name === this.name
  }
}

/** Returns a human reason when `name` is not a valid trust domain name, else undefined. */
export function trustDomainNameProblem(name: string): string | undefined {
  if (name.length === 0) return 'is missing'
  if (Buffer.byteLength(name) > MAX_TRUST_DOMAIN_BYTES) return `exceeds ${MAX_TRUST_DOMAIN_BYTES} bytes`
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i)
    const ok =
      (c >= 0x61 && c <= 0x7a) || // a-z
      (c >= 0x30 && c <= 0x39) || // 0-9
      c === 0x2e || // .
      c === 0x2d || // -
      c === 0x5f // _
    if (!ok) {
      if (c >= 0x41 && c <= 0x5a) return 'characters are limited to lowercase letters, numbers, dots, dashes, and underscores (uppercase found)'
      if (c === 0x3a) return 'must not include a port'
      if (c === 0x40) return 'must not include userinfo'
      if (c === 0x25) return 'must not be percent-encoded'
      return 'characters are limited to lowercase letters, numbers, dots, dashes, and underscores'
    }
  }
  return undefined
}

export function truncate(s: string, n = 128): string {
  return s.length > n ? `${s.slice(0, n)}…` : s
}

/** SPIFFE IDs must be supported up to this many bytes (SPIFFE-ID §2.3). */
export const MAX_SPIFFE_ID_BYTES = 2048
const SCHEME = 'spiffe://'

/**
 * A SPIFFE ID, `spiffe://<trust domain><path>`. Parsed once and immutable.
 * `toString()` is the canonical form and the key to use in maps.
 */
export class SpiffeId {
  readonly trustDomain: TrustDomain
  /** The path, `''` for a trust-domain ID, else starting with `/`. */
  readonly path: string
  readonly #str: string

  private constructor(td: TrustDomain, path: string) {
    this.trustDomain = td
    this.path = path
    this.#str = `${SCHEME}${td.name}${path}`
  }

  /** Parses and validates. Throws ERR_SPIFFE_ID_INVALID with a reason. */
  static fromString(s: string): SpiffeId {
    if (typeof s !== 'string') throw new TypeError('SPIFFE ID must be a string')
    const fail = (reason: string): never => {
      throw new IdentityError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID: ${reason}`, { details: { value: truncate(s) } })
    }
    if (s.length === 0) fail('cannot be empty')
    if (Buffer.byteLength(s) > MAX_SPIFFE_ID_BYTES) fail(`exceeds ${MAX_SPIFFE_ID_BYTES} bytes`)
    // Scheme is case-insensitive per RFC 3986; we normalise to lowercase.
    if (!hasSpiffeScheme(s)) fail('scheme is missing or invalid')
    const rest = s.slice(SCHEME.length)
    const slash = rest.indexOf('/')
    const rawTd = slash === -1 ? rest : rest.slice(0, slash)
    const path = slash === -1 ? '' : rest.slice(slash)
    if (rawTd.length === 0) fail('trust domain is missing')
    // Trust domain is case-insensitive in the spec but must be lowercase on the wire (go-spiffe rejects uppercase).
    const tdProblem = trustDomainNameProblem(rawTd)
    if (tdProblem) fail(`trust domain ${tdProblem}`)
    const pathProblem = pathProblemOf(path)
    if (pathProblem) fail(pathProblem)
    return new SpiffeId(TrustDomain.unsafe(rawTd), path)
  }

  /** Builds an ID from a trust domain and an absolute path (`/ns/web`). */
  static fromPath(td: TrustDomain, path: string): SpiffeId {
    const problem = pathProblemOf(path)
    if (problem) throw new IdentityError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID path: ${problem}`, { details: { value: truncate(path) } })
    const id = new SpiffeId(td, path)
    if (Buffer.byteLength(id.#str) > MAX_SPIFFE_ID_BYTES) {
      throw new IdentityError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID: exceeds ${MAX_SPIFFE_ID_BYTES} bytes`)
    }
    return id
  }

  /** Builds an ID from path segments, each validated (`fromSegments(td, 'ns', 'web')`). */
  static fromSegments(td: TrustDomain, ...segments: string[]): SpiffeId {
    for (const seg of segments) {
      const p = segmentProblem(seg)
      if (p) throw new IdentityError('ERR_SPIFFE_ID_INVALID', `invalid SPIFFE ID path segment: ${p}`, { details: { value: truncate(seg) } })
    }
    return SpiffeId.fromPath(td, segments.length === 0 ? '' : `/${segments.join('/')}`)
  }

  static isValid(s: string): boolean {
    try {
      SpiffeId.fromString(s)
      return true
    } catch {
      return false
    }
  }

  /** Path segments (`['ns', 'web']`). */
  segments(): string[] {
    return this.path === '' ? [] : this.path.slice(1).split('/')
  }

  isTrustDomainId(): boolean {
    return this.path === ''
  }

  memberOf(td: TrustDomain): boolean {
    return this.trustDomain.equals(td)
  }

  /**
   * True when this ID's path equals `prefix` or lies below it on a segment
   * boundary: `/agents/pay` is a prefix of `/agents/pay/bot` but not of `/agents/payments`.
   */
  hasPathPrefix(prefix: string): boolean {
    if (prefix === '' || prefix === '/') return true
    const p = prefix.endsWith('/') ? prefix.slice(0, -1) : prefix
    return this.path === p || this.path.startsWith(`${p}/`)
  }

  /** A child ID: `id.append('instance-1')`. */
  append(...segments: string[]): SpiffeId {
    return SpiffeId.fromSegments(this.trustDomain, ...this.segments(), ...segments)
  }

  toString(): string {
    return this.#str
  }

  toJSON(): string {
    return this.#str
  }

  equals(other: SpiffeId | undefined | null): boolean {
    return !!other && other.#str === this.#str
  }
}

/** ASCII case-insensitive match of `spiffe://` (no Unicode case folding). */
function hasSpiffeScheme(s: string): boolean {
  if (s.length < SCHEME.length) return false
  for (let i = 0; i < SCHEME.length; i++) {
    let c = s.charCodeAt(i)
    if (c >= 0x41 && c <= 0x5a) c += 0x20
    if (c !== SCHEME.charCodeAt(i)) return false
  }
  return true
}

function pathProblemOf(path: string): string | undefined {
  if (path === '') return undefined
  if (path[0] !== '/') return 'path must have a leading slash'
  if (path.endsWith('/')) return 'path cannot have a trailing slash'
  const segs = path.slice(1).split('/')
  for (const seg of segs) {
    const p = segmentProblem(seg)
    if (p) return p
  }
  return undefined
}

function segmentProblem(seg: string): string | undefined {
  if (seg.length === 0) return 'path cannot contain empty segments'
  if (seg === '.' || seg === '..') return 'path cannot contain dot segments'
  for (let i = 0; i < seg.length; i++) {
    const c = seg.charCodeAt(i)
    const ok = (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2e || c === 0x2d || c === 0x5f
    if (!ok) {
      if (c === 0x25) return 'path cannot be percent-encoded'
      if (c === 0x3f) return 'must not include a query'
      if (c === 0x23) return 'must not include a fragment'
      return 'path segment characters are limited to letters, numbers, dots, dashes, and underscores'
    }
  }
  return undefined
}
