import { X509Certificate } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import type { TrustDomain } from '../trust-domain.js'
import type { X509BundleSource } from './sources.js'

/** The X.509 authorities (CA certificates, DER) of one trust domain. Immutable. */
export class X509Bundle implements X509BundleSource {
  readonly trustDomain: TrustDomain
  readonly #authorities: readonly Uint8Array[]
  #parsed: X509Certificate[] | undefined

  constructor(trustDomain: TrustDomain, authoritiesDer: readonly Uint8Array[]) {
    this.trustDomain = trustDomain
    this.#authorities = authoritiesDer.map((d) => new Uint8Array(d))
  }

  /** The CA certificates as DER. */
  get authorities(): readonly Uint8Array[] {
    return this.#authorities
  }

  /** The CA certificates parsed by node:crypto (parsed once, lazily). */
  certificates(): X509Certificate[] {
    if (!this.#parsed) {
      try {
        this.#parsed = this.#authorities.map((d) => new X509Certificate(d))
      } catch (cause) {
        throw new IdentityError('ERR_BUNDLE_INVALID', 'bundle holds a certificate that cannot be parsed', { cause })
      }
    }
    return this.#parsed
  }

  isEmpty(): boolean {
    return this.#authorities.length === 0
  }

  hasAuthority(der: Uint8Array): boolean {
    return this.#authorities.some((a) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(der.buffer, der.byteOffset, der.byteLength)) === 0)
  }

  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
    if (!td.equals(this.trustDomain)) {
      throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no X.509 bundle for trust domain "${td.name}"`)
    }
    return this
  }

  equals(other: X509Bundle): boolean {
    if (!this.trustDomain.equals(other.trustDomain) || this.#authorities.length !== other.#authorities.length) return false
    return this.#authorities.every((a, i) => Buffer.compare(a, other.#authorities[i]!) === 0)
  }
}
