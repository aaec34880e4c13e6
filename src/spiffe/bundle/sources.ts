import type { TrustDomain } from '../trust-domain.js'
import type { X509Bundle } from './x509-bundle.js'
import type { JwtBundle } from './jwt-bundle.js'

/** Where X.509 trust comes from: a static bundle, a set, the agent cache, the workload client. */
export interface X509BundleSource {
  /** Throws IdentityError ERR_BUNDLE_NOT_FOUND when the trust domain is unknown. */
  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle
}

export interface JwtBundleSource {
  /** Throws IdentityError ERR_BUNDLE_NOT_FOUND when the trust domain is unknown. */
  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle
}
