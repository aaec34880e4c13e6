import { IdentityError } from '../../errors/identity-error.js'
import type { TrustDomain } from '../trust-domain.js'
import { JwtBundle } from './jwt-bundle.js'
import type { JwtBundleSource, X509BundleSource } from './sources.js'
import { SpiffeBundle } from './spiffe-bundle.js'
import { X509Bundle } from './x509-bundle.js'

interface Entry {
  td: TrustDomain
  x509: X509Bundle | undefined
  jwt: JwtBundle | undefined
  /** Set when the entry came from a whole SpiffeBundle (keeps sequence and hint). */
  spiffe: SpiffeBundle | undefined
}

/**
 * Bundles of several trust domains, keyed by trust domain. Each trust domain's
 * bundle is kept apart: setting one never touches another.
 *
 * `set(spiffeBundle)` replaces the trust domain's entry; `set(x509Bundle)` or
 * `set(jwtBundle)` replaces only that half (the Workload API delivers X.509
 * and JWT bundles on separate streams). Lookups of a half that was never set
 * throw ERR_BUNDLE_NOT_FOUND.
 */
export class BundleSet implements X509BundleSource, JwtBundleSource {
  readonly #entries = new Map<string, Entry>()

  constructor(bundles: Iterable<SpiffeBundle | X509Bundle | JwtBundle> = []) {
    for (const b of bundles) this.set(b)
  }

  set(bundle: SpiffeBundle | X509Bundle | JwtBundle): void {
    const td = bundle.trustDomain
    const key = td.name
    if (bundle instanceof SpiffeBundle) {
      this.#entries.set(key, { td, x509: bundle.x509Bundle(), jwt: bundle.jwtBundle(), spiffe: bundle })
      return
    }
    const prev = this.#entries.get(key)
    if (bundle instanceof X509Bundle) {
      this.#entries.set(key, { td, x509: bundle, jwt: prev?.jwt, spiffe: undefined })
    } else if (bundle instanceof JwtBundle) {
      this.#entries.set(key, { td, x509: prev?.x509, jwt: bundle, spiffe: undefined })
    } else {
      throw new TypeError('BundleSet.set expects a SpiffeBundle, X509Bundle or JwtBundle')
    }
  }

  /**
   * The trust domain's bundle as a SpiffeBundle, or undefined. For an entry
   * built from halves, the missing half is empty and no sequence or hint is set.
   */
  get(td: TrustDomain): SpiffeBundle | undefined {
    const e = this.#entries.get(td.name)
    if (!e) return undefined
    e.spiffe ??= SpiffeBundle.fromBundles(e.td, { x509: e.x509, jwt: e.jwt })
    return e.spiffe
  }

  has(td: TrustDomain): boolean {
    return this.#entries.has(td.name)
  }

  /** Removes the trust domain; returns whether it was present. */
  delete(td: TrustDomain): boolean {
    return this.#entries.delete(td.name)
  }

  /** Trust domains held, sorted by name. */
  trustDomains(): TrustDomain[] {
    return [...this.#entries.values()].map((e) => e.td).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
  }

  get size(): number {
    return this.#entries.size
  }

  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
    const b = this.#entries.get(td.name)?.x509
    if (!b) throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no X.509 bundle for trust domain "${td.name}"`)
    return b
  }

  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
    const b = this.#entries.get(td.name)?.jwt
    if (!b) throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no JWT bundle for trust domain "${td.name}"`)
    return b
  }
}
