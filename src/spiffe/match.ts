import { IdentityError } from '../errors/identity-error.js'
import type { SpiffeId } from './spiffe-id.js'
import type { TrustDomain } from './trust-domain.js'

/** Authorizes an ID or throws ERR_ID_NOT_AUTHORIZED. */
export type Matcher = (id: SpiffeId) => void

const deny = (id: SpiffeId, why: string): never => {
  throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `unexpected ID "${id.toString()}": ${why}`)
}

export const matchAny = (): Matcher => () => {}

export const matchId =
  (expected: SpiffeId): Matcher =>
  (id) => {
    if (!id.equals(expected)) deny(id, `expected "${expected.toString()}"`)
  }

export const matchOneOf = (...expected: SpiffeId[]): Matcher => {
  const set = new Set(expected.map((e) => e.toString()))
  return (id) => {
    if (!set.has(id.toString())) deny(id, 'not one of the expected IDs')
  }
}

export const matchMemberOf =
  (td: TrustDomain): Matcher =>
  (id) => {
    if (!id.memberOf(td)) deny(id, `expected trust domain "${td.name}"`)
  }

/** Same trust domain and path equal to or below `prefix` on a segment boundary. */
export const matchPathPrefix =
  (td: TrustDomain, prefix: string): Matcher =>
  (id) => {
    if (!id.memberOf(td) || !id.hasPathPrefix(prefix)) deny(id, `expected an ID under "${td.idString()}${prefix}"`)
  }
