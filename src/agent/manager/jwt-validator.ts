/**
 * ValidateJWTSVID: a JWT-SVID checked against the bundles the caller may see
 * (the local trust domain and those its entries federate with). A foreign
 * trust domain's token passes on only the registered JWT claims, as SPIRE does.
 */
import type { Clock } from '../../common/clock.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { BundleSet } from '../../spiffe/bundle/bundle-set.js'
import type { JwtBundle } from '../../spiffe/bundle/jwt-bundle.js'
import type { JwtBundleSource } from '../../spiffe/bundle/sources.js'
import { validateJwtSvid } from '../../spiffe/jwt-svid/validate-jwt-svid.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import type { ValidatedJwtSvid } from '../workload-api/manager.js'

/** Claims of a federated trust domain's JWT-SVID that ValidateJWTSVID returns (the registered ones). */
const FOREIGN_JWT_CLAIMS: ReadonlySet<string> = new Set(['sub', 'aud', 'exp', 'iat', 'nbf', 'iss', 'jti'])

/** ERR_INVALID_ARGUMENT for a request without audience or token (checked before anything else). */
export function checkValidateRequest(req: { token: string; audience: string }): void {
  if (req.audience === '') throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
  if (req.token === '') throw new IdentityError('ERR_INVALID_ARGUMENT', 'svid must be specified')
}

/**
 * Validates `req.token` for `req.audience` against `bundles`, seeing only the
 * local trust domain and `federatesWith`; throws (with a message that never
 * holds the token) when invalid.
 */
export async function validateVisible(
  req: { token: string; audience: string },
  o: { trustDomain: TrustDomain; federatesWith: Iterable<string>; bundles: BundleSet; clock: Clock },
): Promise<ValidatedJwtSvid> {
  const visible = new Set<string>([o.trustDomain.name, ...o.federatesWith])
  const set = o.bundles
  const source: JwtBundleSource = {
    getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
      if (!visible.has(td.name)) throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${td.name}"`)
      return set.getJwtBundleForTrustDomain(td)
    },
  }
  const svid = await validateJwtSvid(req.token, source, { audience: req.audience, now: new Date(o.clock.now()) })
  if (svid.id.memberOf(o.trustDomain)) return { spiffeId: svid.id.toString(), claims: { ...svid.claims } }
  const claims = Object.fromEntries(Object.entries(svid.claims).filter(([k]) => FOREIGN_JWT_CLAIMS.has(k)))
  return { spiffeId: svid.id.toString(), claims }
}
