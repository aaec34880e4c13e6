/**
 * Public API of the SPIFFE core: IDs, trust domains, matchers, bundles and
 * SVIDs. Pure (no file or network I/O).
 */
export { SpiffeId, MAX_SPIFFE_ID_BYTES } from './spiffe-id.js'
export { TrustDomain } from './trust-domain.js'
export { matchAny, matchId, matchMemberOf, matchOneOf, matchPathPrefix, type Matcher } from './match.js'
export { SIGNATURE_ALGORITHMS, type SignatureAlgorithm, type Signer } from './signer.js'
export { KeyObjectSigner, generateKeyPair, defaultAlgorithmFor, type KeyPairType } from './key-signer.js'

export type { X509BundleSource, JwtBundleSource } from './bundle/sources.js'
export { X509Bundle } from './bundle/x509-bundle.js'
export { JwtBundle } from './bundle/jwt-bundle.js'
export { SpiffeBundle, X509_SVID_USE, JWT_SVID_USE, type SpiffeBundleInit } from './bundle/spiffe-bundle.js'
export { BundleSet } from './bundle/bundle-set.js'
export { MAX_BUNDLE_BYTES } from './bundle/encoding.js'

export * from './x509-svid/index.js'
export * from './jwt-svid/index.js'
export * from './bounds/index.js'
