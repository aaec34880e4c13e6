import { IdentityError } from '../../errors/identity-error.js'
import { JwtSvid } from '../jwt-svid/jwt-svid.js'
import type { Matcher } from '../match.js'
import { SpiffeId } from '../spiffe-id.js'
import { TrustDomain } from '../trust-domain.js'
import { decodeSubjectAltName, OID, parseCertificateFields } from '../x509-svid/certificate-fields.js'
import { X509Svid } from '../x509-svid/x509-svid.js'
import { dnsNameUnder, type BoundName, type Bounds } from './bounds.js'
import type { BoundsSet, EffectiveBounds } from './bounds-set.js'

/** What an identity asks for or carries, checked against its bounds. Absent = not checked. */
export interface BoundsRequest {
  x509SvidTtlSeconds?: number
  jwtSvidTtlSeconds?: number
  /** Every audience must be allowed. */
  audience?: readonly string[]
  dnsNames?: readonly string[]
  federatesWith?: readonly string[]
  /** The serving node's selectors (`type:value`); must include every required one. */
  nodeSelectors?: readonly string[]
}

/** The first bound a request exceeds: which bound, declared at which prefix, and why. */
export interface BoundsFailure {
  prefix: string
  bound: BoundName
  message: string
}

const q = (s: string) => `"${s.slice(0, 200)}"`

function checkOne(prefix: string, b: Bounds, r: BoundsRequest): BoundsFailure | undefined {
  const fail = (bound: BoundName, message: string): BoundsFailure => ({ prefix, bound, message })
  if (r.x509SvidTtlSeconds !== undefined && b.x509SvidTtlSeconds !== undefined && r.x509SvidTtlSeconds > b.x509SvidTtlSeconds) {
    return fail('x509_svid_ttl', `X.509-SVID TTL ${r.x509SvidTtlSeconds}s exceeds ${b.x509SvidTtlSeconds}s`)
  }
  if (r.jwtSvidTtlSeconds !== undefined && b.jwtSvidTtlSeconds !== undefined && r.jwtSvidTtlSeconds > b.jwtSvidTtlSeconds) {
    return fail('jwt_svid_ttl', `JWT-SVID TTL ${r.jwtSvidTtlSeconds}s exceeds ${b.jwtSvidTtlSeconds}s`)
  }
  if (r.audience && b.jwtAudiences) {
    const bad = r.audience.find((a) => !b.jwtAudiences!.includes(a))
    if (bad !== undefined) return fail('jwt_audiences', `audience ${q(bad)} is not allowed`)
  }
  if (r.dnsNames && b.dnsSuffixes) {
    const bad = r.dnsNames.find((d) => !b.dnsSuffixes!.some((s) => dnsNameUnder(d, s)))
    if (bad !== undefined)
      return fail('dns_suffixes', b.dnsSuffixes.length === 0 ? `DNS name ${q(bad)}: no DNS names are allowed` : `DNS name ${q(bad)} is not allowed`)
  }
  if (r.federatesWith && b.federatesWith) {
    const bad = r.federatesWith.find((t) => !b.federatesWith!.includes(t))
    if (bad !== undefined) return fail('federates_with', `federation with ${q(bad)} is not allowed`)
  }
  if (r.nodeSelectors && b.requireNodeSelectors) {
    const have = new Set(r.nodeSelectors)
    const missing = b.requireNodeSelectors.find((s) => !have.has(s))
    if (missing !== undefined) return fail('require_node_selectors', `node lacks required selector ${q(missing)}`)
  }
  return undefined
}

/**
 * Checks `req` against every declared prefix above `id`, deepest first (so
 * the failure names the most specific prefix that forbids it). Same result as
 * checking the intersection. Undefined = within bounds (or under no prefix).
 */
export function checkBounds(set: BoundsSet, id: SpiffeId, req: BoundsRequest): BoundsFailure | undefined {
  const eff = set.boundsFor(id)
  return eff ? checkEffective(set, eff, req) : undefined
}

/** `checkBounds` with the effective bounds already looked up (`set.boundsFor(id)`), for callers that check several things. */
export function checkEffective(set: BoundsSet, eff: EffectiveBounds, req: BoundsRequest): BoundsFailure | undefined {
  for (let i = eff.prefixes.length - 1; i >= 0; i--) {
    const p = eff.prefixes[i]!
    const f = checkOne(p, set.get(p)!, req)
    if (f) return f
  }
  return undefined
}

/** Formats a failure for an error message: `jwt_audiences of "/agents/payments": audience "x" is not allowed`. */
export function describeFailure(f: BoundsFailure): string {
  return `exceeds bound ${f.bound} of "${f.prefix}": ${f.message}`
}

/** Options of `authorize`. */
export interface AuthorizeOptions {
  /** The audience(s) the relying party serves as; each must be allowed for the caller. */
  audience?: string | readonly string[]
  /** A lifetime (seconds) the caller asks for, checked against the JWT bound for a JWT-SVID, else the X.509 bound. */
  ttlSeconds?: number
  /** A trust domain the caller wants to reach through federation. */
  federatesWith?: string | TrustDomain
  /** DNS names to check, besides an X.509-SVID's own. */
  dnsNames?: readonly string[]
  /** The caller's node selectors, when the relying party knows them. */
  nodeSelectors?: readonly string[]
  /** Deny IDs that no declared prefix covers (default false: unbounded IDs pass). */
  requireBounds?: boolean
  /** Slack (seconds) when comparing an SVID's own lifetime to the bound. Default 30 (the CA backdates notBefore). */
  leewaySeconds?: number
}

function deny(id: SpiffeId, why: string): never {
  throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `unexpected ID "${id.toString()}": ${why}`)
}

function x509DnsNames(svid: X509Svid): string[] {
  const ext = parseCertificateFields(svid.leaf).extensions.get(OID.SUBJECT_ALT_NAME)
  return ext ? decodeSubjectAltName(ext.value).dnsNames : []
}

/**
 * Decides from the SVID alone (and the trust domain's bounds) whether a caller
 * may proceed: its ID must be in the set's trust domain, and what it carries
 * (the SVID's lifetime, a JWT-SVID's audiences, an X.509-SVID's DNS names) and
 * what it asks (`opts`) must lie within the effective bounds of its ID.
 * Returns those effective bounds (undefined when no prefix covers the ID);
 * throws ERR_ID_NOT_AUTHORIZED naming the bound and the prefix.
 */
export function authorize(svid: X509Svid | JwtSvid | SpiffeId, opts: AuthorizeOptions, set: BoundsSet): EffectiveBounds | undefined {
  const leeway = opts.leewaySeconds ?? 30
  if (!Number.isFinite(leeway) || leeway < 0) throw new RangeError('leewaySeconds must be a non-negative number')
  let id: SpiffeId
  const req: BoundsRequest = {}
  const audience = opts.audience === undefined ? [] : typeof opts.audience === 'string' ? [opts.audience] : [...opts.audience]
  const dnsNames = [...(opts.dnsNames ?? [])]
  let lifetime: { bound: 'x509' | 'jwt'; seconds: number } | undefined
  if (svid instanceof SpiffeId) id = svid
  else if (svid instanceof X509Svid) {
    id = svid.id
    dnsNames.push(...x509DnsNames(svid))
    lifetime = { bound: 'x509', seconds: (svid.notAfter.getTime() - svid.notBefore.getTime()) / 1000 }
  } else if (svid instanceof JwtSvid) {
    id = svid.id
    audience.push(...svid.audience)
    if (svid.issuedAt) lifetime = { bound: 'jwt', seconds: (svid.expiry.getTime() - svid.issuedAt.getTime()) / 1000 }
  } else throw new TypeError('svid must be an X509Svid, a JwtSvid or a SpiffeId')

  if (!id.memberOf(set.trustDomain)) deny(id, `bounds are for trust domain "${set.trustDomain.name}"`)
  const eff = set.boundsFor(id)
  if (!eff) {
    if (opts.requireBounds) deny(id, 'no operating bounds cover this ID')
    return undefined
  }
  if (audience.length > 0) req.audience = [...new Set(audience)]
  if (dnsNames.length > 0) req.dnsNames = dnsNames
  if (opts.federatesWith !== undefined) req.federatesWith = [typeof opts.federatesWith === 'string' ? opts.federatesWith : opts.federatesWith.name]
  if (opts.nodeSelectors) req.nodeSelectors = opts.nodeSelectors
  const isJwt = svid instanceof JwtSvid
  if (opts.ttlSeconds !== undefined) {
    if (!Number.isFinite(opts.ttlSeconds) || opts.ttlSeconds < 0) throw new RangeError('ttlSeconds must be a non-negative number')
    if (isJwt) req.jwtSvidTtlSeconds = opts.ttlSeconds
    else req.x509SvidTtlSeconds = opts.ttlSeconds
  }
  const f = checkBounds(set, id, req)
  if (f) deny(id, describeFailure(f))
  if (lifetime) {
    const lf = checkBounds(
      set,
      id,
      lifetime.bound === 'x509'
        ? { x509SvidTtlSeconds: Math.max(0, lifetime.seconds - leeway) }
        : { jwtSvidTtlSeconds: Math.max(0, lifetime.seconds - leeway) },
    )
    if (lf) deny(id, `SVID lifetime ${describeFailure(lf)}`)
  }
  return eff
}

/** A Matcher (for TLS authorizers and the like) that applies `authorize` to the peer's ID. */
export function matchWithinBounds(set: BoundsSet, opts: AuthorizeOptions = {}): Matcher {
  return (id) => {
    authorize(id, opts, set)
  }
}

/** A Matcher for IDs of the set's trust domain that lie under at least one declared prefix (`only` narrows to some of them). */
export function matchBoundedPrefix(set: BoundsSet, ...only: string[]): Matcher {
  return (id) => {
    const eff = id.memberOf(set.trustDomain) ? set.boundsFor(id) : undefined
    if (!eff) deny(id, 'no operating bounds cover this ID')
    if (only.length > 0 && !only.some((p) => id.hasPathPrefix(p) && set.has(p))) deny(id, `expected an ID under ${only.map((p) => `"${p}"`).join(', ')}`)
  }
}
