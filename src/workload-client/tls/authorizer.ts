import { IdentityError } from '../../errors/identity-error.js'
import { authorize, type AuthorizeOptions } from '../../spiffe/bounds/authorize.js'
import type { BoundsSet, EffectiveBounds } from '../../spiffe/bounds/bounds-set.js'
import { matchAny, matchId, matchMemberOf, matchOneOf, matchPathPrefix, type Matcher } from '../../spiffe/match.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import type { VerifiedPeer } from './verify-peer.js'

/**
 * Decides whether a verified peer may talk to us (go-spiffe's
 * `tlsconfig.Authorizer`): returns to allow, throws ERR_ID_NOT_AUTHORIZED to
 * refuse. It runs after the peer's chain verified against its own trust
 * domain's bundle, inside the handshake, so it must be synchronous.
 */
export type Authorizer = (peer: VerifiedPeer) => void

const toId = (id: SpiffeId | string): SpiffeId => (typeof id === 'string' ? SpiffeId.fromString(id) : id)
const toTd = (td: TrustDomain | string): TrustDomain => (typeof td === 'string' ? TrustDomain.fromString(td) : td)

function deny(peer: VerifiedPeer, why: string): never {
  throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `unexpected ID "${peer.id.toString()}": ${why}`)
}

/** An Authorizer from an ID Matcher (matchId, matchOneOf, matchWithinBounds...). */
export const adaptMatcher =
  (matcher: Matcher): Authorizer =>
  (peer) =>
    matcher(peer.id)

/** Any peer with a verified SVID of a trusted trust domain. */
export const authorizeAny = (): Authorizer => adaptMatcher(matchAny())

/** Exactly this SPIFFE ID. */
export const authorizeId = (id: SpiffeId | string): Authorizer => adaptMatcher(matchId(toId(id)))

/** One of these SPIFFE IDs. */
export const authorizeOneOf = (ids: readonly (SpiffeId | string)[]): Authorizer => {
  if (!Array.isArray(ids)) throw new TypeError('ids must be an array')
  return adaptMatcher(matchOneOf(...ids.map(toId)))
}

/** Any ID of this trust domain. */
export const authorizeMemberOf = (td: TrustDomain | string): Authorizer => adaptMatcher(matchMemberOf(toTd(td)))

/**
 * IDs equal to or below `prefix` (a SPIFFE ID such as `spiffe://td/agents/pay`)
 * on a path-segment boundary: `/agents/pay/bot` matches, `/agents/payments` does not.
 */
export const authorizePrefix = (prefix: SpiffeId | string): Authorizer => {
  const p = toId(prefix)
  return adaptMatcher(matchPathPrefix(p.trustDomain, p.path))
}

/** Peers for which `predicate` holds (it sees the verified peer: ID, SVID, chain). `description` goes into the refusal. */
export const authorizeIf = (predicate: (peer: VerifiedPeer) => boolean, description = 'refused by predicate'): Authorizer => {
  if (typeof predicate !== 'function') throw new TypeError('predicate must be a function')
  return (peer) => {
    if (predicate(peer) !== true) deny(peer, description)
  }
}

/** Options of `authorizeWithinBounds`. */
export interface WithinBoundsOptions extends AuthorizeOptions {
  /** A further decision on the peer's effective bounds (undefined when no prefix covers its ID). */
  predicate?: (bounds: EffectiveBounds | undefined, peer: VerifiedPeer) => boolean
}

/**
 * Peers whose SVID lies within the namespace bounds of `set` (src/spiffe's
 * `authorize`: the peer in the set's trust domain, its SVID lifetime and DNS
 * names and what `opts` asks within the bounds of its ID; `requireBounds`
 * refuses IDs no prefix covers), then `opts.predicate` on those bounds.
 */
export const authorizeWithinBounds = (set: BoundsSet, opts: WithinBoundsOptions = {}): Authorizer => {
  const { predicate, ...authorizeOpts } = opts
  return (peer) => {
    const eff = authorize(peer.svid, authorizeOpts, set)
    if (predicate && predicate(eff, peer) !== true) deny(peer, 'refused by the bounds predicate')
  }
}

/** Every authorizer must allow. */
export const authorizeAll =
  (...authorizers: Authorizer[]): Authorizer =>
  (peer) => {
    for (const a of authorizers) a(peer)
  }
