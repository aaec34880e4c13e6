import { X509Certificate } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import type { TrustDomain } from '../trust-domain.js'
import { asBuffer, bundleError, inputText, MAX_BUNDLE_BYTES, parseCertificate, parsePemBlocks, splitDerSequence, toPemBlock } from './encoding.js'

/** The X.509 authorities (CA certificates, DER) of one trust domain. Immutable. */
export class X509Bundle implements X509BundleSource {
  readonly trustDomain: TrustDomain
  readonly #authorities: readonly Uint8Array[]
  #parsed: X509Certificate[] | undefined

  constructor(trustDomain: TrustDomain, authoritiesDer: readonly Uint8Array[]) {
    this.trustDomain = trustDomain
    this.#authorities = authoritiesDer.map((d) => new Uint8Array(d))
  }

  /**
   * Parses the Workload API form: concatenated DER certificates (possibly none).
   * Every certificate must parse; trailing or truncated bytes are rejected.
   * Throws ERR_BUNDLE_INVALID.
   */
  static parseDer(trustDomain: TrustDomain, concatenatedDer: Uint8Array): X509Bundle {
    if (!(concatenatedDer instanceof Uint8Array)) throw new TypeError('concatenatedDer must be a Uint8Array')
    if (concatenatedDer.byteLength > MAX_BUNDLE_BYTES) throw bundleError(`X.509 bundle exceeds ${MAX_BUNDLE_BYTES} bytes`)
    const ders = splitDerSequence(concatenatedDer)
    ders.forEach((d, i) => parseCertificate(d, `X.509 authority ${i}`))
    return new X509Bundle(trustDomain, dedupe(ders))
  }

  /**
   * Parses PEM text holding zero or more CERTIFICATE blocks (text outside blocks
   * is ignored; any other block type is rejected). Throws ERR_BUNDLE_INVALID.
   */
  static parsePem(trustDomain: TrustDomain, pem: string | Uint8Array): X509Bundle {
    const text = inputText(pem, 'PEM bundle')
    const blocks = parsePemBlocks(text)
    if (blocks.length === 0 && text.trim().length > 0) throw bundleError('PEM bundle holds no certificate blocks')
    const ders = blocks.map((b, i) => {
      if (b.label !== 'CERTIFICATE') throw bundleError(`PEM block ${i} is "${b.label}", expected "CERTIFICATE"`)
      // A block must hold exactly one certificate.
      const parts = splitDerSequence(b.der)
      if (parts.length !== 1) throw bundleError(`PEM block ${i} does not hold exactly one certificate`)
      parseCertificate(b.der, `X.509 authority ${i}`)
      return b.der
    })
    return new X509Bundle(trustDomain, dedupe(ders))
  }

  /** The Workload API form: all authorities' DER concatenated. */
  toDer(): Uint8Array {
    return new Uint8Array(Buffer.concat(this.#authorities.map(asBuffer)))
  }

  /** PEM CERTIFICATE blocks, one per authority (empty string for an empty bundle). */
  toPem(): string {
    return this.#authorities.map((d) => toPemBlock('CERTIFICATE', d)).join('')
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
    return this.#authorities.some(
      (a) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(der.buffer, der.byteOffset, der.byteLength)) === 0,
    )
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

/** Drops repeated certificates, keeping first occurrences (as go-spiffe's AddX509Authority does). */
function dedupe(ders: readonly Uint8Array[]): Uint8Array[] {
  const seen = new Set<string>()
  const out: Uint8Array[] = []
  for (const d of ders) {
    const k = asBuffer(d).toString('base64')
    if (seen.has(k)) continue
    seen.add(k)
    out.push(d)
  }
  return out
}

/** Where X.509 trust comes from: a static bundle, a set, the agent cache, the workload client. */
export interface X509BundleSource {
  /** Throws IdentityError ERR_BUNDLE_NOT_FOUND when the trust domain is unknown. */
  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle
}
