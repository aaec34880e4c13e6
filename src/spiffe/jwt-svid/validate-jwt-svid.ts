import type { KeyObject } from 'node:crypto'
import { flattenedVerify } from 'jose'
import { isIdentityError } from '../../errors/identity-error.js'
import type { JwtBundleSource } from '../bundle/sources.js'
import { jwtSvidFromVerified, type JwtSvid } from './jwt-svid.js'
import { algorithmsForKey, checkAudience, checkTimes, expectedAudience, fail, parseJwtSvidToken, timeOptions } from './parse.js'

/** Options of `validateJwtSvid`. */
export interface ValidateJwtSvidOptions {
  /** The audience(s) this validator identifies with; the token's `aud` must contain at least one (SPIRE's rule). */
  audience: string | readonly string[]
  /** Validation time. Default: the current time. */
  now?: Date
  /** Clock-skew allowance for exp / nbf / iat, in seconds. Default 30. */
  leewaySeconds?: number
  /** The Workload API hint to attach to the result. Default ''. */
  hint?: string
}

/**
 * Parses and fully validates a JWT-SVID (SPIFFE JWT-SVID spec, with SPIRE's
 * ValidateJWTSVID behaviour):
 *
 * 1. compact JWS; header members only `alg`, `kid`, `typ`; `alg` one of
 *    RS/ES/PS 256/384/512; `typ` absent, `JWT` or `JOSE`; `sub` a SPIFFE ID;
 *    `aud` and `exp` present → else ERR_JWT_SVID_INVALID;
 * 2. `kid` required (as go-spiffe); the key is looked up in the JWT bundle of
 *    the trust domain of `sub` and must suit `alg`; the signature is verified
 *    with jose, pinned to that `alg` → else ERR_JWT_SVID_UNTRUSTED (a missing
 *    bundle is wrapped as its cause);
 * 3. `exp` with leeway → ERR_JWT_SVID_EXPIRED; `nbf` / `iat` in the future
 *    beyond leeway → ERR_JWT_SVID_INVALID;
 * 4. `aud` must contain an expected audience → ERR_JWT_AUDIENCE_MISMATCH.
 *
 * Error messages never include the token. Bad options throw TypeError / RangeError.
 */
export async function validateJwtSvid(token: string, bundles: JwtBundleSource, opts: ValidateJwtSvidOptions): Promise<JwtSvid> {
  const expected = expectedAudience(opts.audience)
  const { nowMs, leeway } = timeOptions(opts)
  const hint = opts.hint ?? ''
  if (typeof hint !== 'string') throw new TypeError('hint must be a string')

  const parsed = parseJwtSvidToken(token)
  if (parsed.kid === '') fail('ERR_JWT_SVID_INVALID', 'token header missing key id')

  const td = parsed.id.trustDomain
  let key: KeyObject | undefined
  try {
    key = bundles.getJwtBundleForTrustDomain(td).findKey(parsed.kid)
  } catch (cause) {
    if (isIdentityError(cause, 'ERR_BUNDLE_NOT_FOUND')) fail('ERR_JWT_SVID_UNTRUSTED', `no bundle found for trust domain "${td.name}"`, cause)
    if (isIdentityError(cause, 'ERR_BUNDLE_INVALID'))
      fail('ERR_JWT_SVID_UNTRUSTED', `key "${parsed.kid.slice(0, 64)}" of trust domain "${td.name}" is unusable`, cause)
    throw cause
  }
  if (!key) fail('ERR_JWT_SVID_UNTRUSTED', `no key "${parsed.kid.slice(0, 64)}" found for trust domain "${td.name}"`)
  if (!algorithmsForKey(key).has(parsed.alg)) {
    fail('ERR_JWT_SVID_UNTRUSTED', `key "${parsed.kid.slice(0, 64)}" of trust domain "${td.name}" cannot verify ${parsed.alg}`)
  }

  const [protectedHeader, payload, signature] = parsed.signingParts
  try {
    await flattenedVerify({ protected: protectedHeader, payload, signature }, key, { algorithms: [parsed.alg] })
  } catch (cause) {
    fail('ERR_JWT_SVID_UNTRUSTED', 'token signature verification failed', cause)
  }

  checkTimes(parsed, nowMs, leeway)
  checkAudience(parsed, expected)
  return jwtSvidFromVerified(parsed, hint)
}
