import { IdentityError } from '../errors/identity-error.js'
import { BundleSet } from '../spiffe/bundle/bundle-set.js'
import { JwtBundle } from '../spiffe/bundle/jwt-bundle.js'
import { X509Bundle } from '../spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../spiffe/trust-domain.js'
import { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import type { JwtBundlesResponseMsg, X509BundlesResponseMsg, X509SvidResponseMsg } from './wire.js'

/**
 * What one FetchX509SVID message says: the caller's X.509-SVIDs (the first is
 * the default identity) and the X.509 bundles it may trust, by trust domain
 * (the SVIDs' own trust domains and the federated ones). Immutable.
 */
export interface X509Context {
  readonly svids: readonly X509Svid[]
  readonly bundles: BundleSet
}

function malformed(message: string, cause?: unknown): IdentityError {
  return new IdentityError('ERR_X509_SVID_INVALID', `workloadapi: ${message}`, cause === undefined ? undefined : { cause })
}

function trustDomainKey(key: string, what: string): TrustDomain {
  try {
    return TrustDomain.fromString(key)
  } catch (cause) {
    throw new IdentityError('ERR_BUNDLE_INVALID', `workloadapi: ${what} key is not a trust domain`, { cause })
  }
}

/**
 * Parses a FetchX509SVID response: every SVID must parse with its private key
 * (which must match the leaf) and its SPIFFE ID must be the leaf's; every
 * bundle must parse. Throws ERR_X509_SVID_INVALID, ERR_KEY_INVALID or
 * ERR_BUNDLE_INVALID; nothing is half-applied.
 */
export function parseX509Context(msg: X509SvidResponseMsg): X509Context {
  if (!msg.svids || msg.svids.length === 0) throw malformed('response has no X.509-SVIDs')
  const bundles = new BundleSet()
  const svids = msg.svids.map((s, i) => {
    let svid: X509Svid
    try {
      svid = X509Svid.parse(new Uint8Array(s.x509_svid), new Uint8Array(s.x509_svid_key), { hint: s.hint ?? '' })
    } catch (cause) {
      if (cause instanceof IdentityError) throw cause
      throw malformed(`X.509-SVID ${i} cannot be parsed`, cause)
    }
    if (svid.id.toString() !== s.spiffe_id)
      throw malformed(`X.509-SVID ${i} certificate is for "${svid.id.toString()}", not the announced "${String(s.spiffe_id).slice(0, 256)}"`)
    bundles.set(X509Bundle.parseDer(svid.id.trustDomain, new Uint8Array(s.bundle)))
    return svid
  })
  for (const [key, der] of Object.entries(msg.federated_bundles ?? {})) {
    const td = trustDomainKey(key, 'federated bundle')
    if (bundles.has(td)) continue // an SVID's own trust domain keeps the bundle that came with it
    bundles.set(X509Bundle.parseDer(td, new Uint8Array(der)))
  }
  return { svids: Object.freeze(svids), bundles }
}

/** Parses a FetchX509Bundles response (trust domain → concatenated DER). */
export function parseX509Bundles(msg: X509BundlesResponseMsg): BundleSet {
  const set = new BundleSet()
  for (const [key, der] of Object.entries(msg.bundles ?? {})) {
    const td = trustDomainKey(key, 'X.509 bundle')
    set.set(X509Bundle.parseDer(td, new Uint8Array(der)))
  }
  return set
}

/** Parses a FetchJWTBundles response (trust domain → JWKS JSON). */
export function parseJwtBundles(msg: JwtBundlesResponseMsg): BundleSet {
  const set = new BundleSet()
  for (const [key, jwks] of Object.entries(msg.bundles ?? {})) {
    const td = trustDomainKey(key, 'JWT bundle')
    set.set(JwtBundle.parseJwks(td, new Uint8Array(jwks)))
  }
  return set
}
