import type { JsonWebKey } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import { TrustDomain } from '../trust-domain.js'
import {
  asBuffer,
  bundleError,
  canonicalPublicJwk,
  decodeBase64Strict,
  importPublicJwk,
  inputText,
  isPlainObject,
  KNOWN_KTY,
  orderedJwk,
  parseCertificate,
  parseJsonObject,
} from './encoding.js'
import { JwtBundle } from './jwt-bundle.js'
import type { JwtBundleSource, X509BundleSource } from './sources.js'
import { X509Bundle } from './x509-bundle.js'

export const X509_SVID_USE = 'x509-svid'
export const JWT_SVID_USE = 'jwt-svid'

export interface SpiffeBundleInit {
  trustDomain: TrustDomain
  /** CA certificates as DER. Repeated certificates are dropped. */
  x509Authorities?: readonly Uint8Array[]
  /** kid → public JWK, or [kid, jwk] pairs (a repeated kid is rejected). */
  jwtAuthorities?: ReadonlyMap<string, JsonWebKey> | Iterable<readonly [string, JsonWebKey]>
  sequenceNumber?: number | undefined
  refreshHintSeconds?: number | undefined
}

interface Authority {
  der: Uint8Array
  jwk: JsonWebKey
}

/**
 * A SPIFFE bundle (SPIFFE Trust Domain and Bundle §4): the X.509 and JWT
 * authorities of one trust domain, with `spiffe_sequence` and
 * `spiffe_refresh_hint`. The document form is an RFC 7517 JWK Set. Immutable.
 */
export class SpiffeBundle implements X509BundleSource, JwtBundleSource {
  readonly trustDomain: TrustDomain
  readonly sequenceNumber: number | undefined
  readonly refreshHintSeconds: number | undefined
  readonly #x509: readonly Authority[]
  readonly #jwt: ReadonlyMap<string, JsonWebKey>
  #x509Bundle: X509Bundle | undefined
  #jwtBundle: JwtBundle | undefined

  private constructor(td: TrustDomain, x509: readonly Authority[], jwt: ReadonlyMap<string, JsonWebKey>, seq: number | undefined, hint: number | undefined) {
    this.trustDomain = td
    this.#x509 = Object.freeze([...x509])
    this.#jwt = jwt
    this.sequenceNumber = seq
    this.refreshHintSeconds = hint
  }

  /**
   * Builds a bundle from its parts, validating every authority (certificates
   * must parse; JWKs must import as public keys). Throws ERR_BUNDLE_INVALID;
   * a bad sequence number or refresh hint throws RangeError.
   */
  static from(init: SpiffeBundleInit): SpiffeBundle {
    if (!(init.trustDomain instanceof TrustDomain)) throw new TypeError('trustDomain must be a TrustDomain')
    checkSequence(init.sequenceNumber)
    checkRefreshHint(init.refreshHintSeconds)
    const x509: Authority[] = []
    const seen = new Set<string>()
    for (const [i, der] of (init.x509Authorities ?? []).entries()) {
      if (!(der instanceof Uint8Array)) throw new TypeError('x509Authorities must hold Uint8Array DER certificates')
      const key = asBuffer(der).toString('base64')
      if (seen.has(key)) continue
      seen.add(key)
      x509.push(x509Authority(new Uint8Array(der), `X.509 authority ${i}`))
    }
    const jwt = new Map<string, JsonWebKey>()
    for (const [kid, jwk] of init.jwtAuthorities ?? []) {
      if (typeof kid !== 'string' || kid.length === 0) throw bundleError('JWT authority has an empty key id')
      if (jwt.has(kid)) throw bundleError(`JWT authority key id "${kid}" is repeated`)
      if (!isPlainObject(jwk)) throw bundleError(`JWT authority "${kid}" is not a JWK object`)
      jwt.set(kid, importPublicJwk(jwk, `JWT authority "${kid}"`).jwk)
    }
    return new SpiffeBundle(init.trustDomain, x509, jwt, init.sequenceNumber, init.refreshHintSeconds)
  }

  /** A bundle holding the authorities of an X509Bundle and/or a JwtBundle of the same trust domain. */
  static fromBundles(
    trustDomain: TrustDomain,
    parts: { x509?: X509Bundle | undefined; jwt?: JwtBundle | undefined; sequenceNumber?: number; refreshHintSeconds?: number },
  ): SpiffeBundle {
    for (const b of [parts.x509, parts.jwt]) {
      if (b && !b.trustDomain.equals(trustDomain)) {
        throw new RangeError(`bundle for "${b.trustDomain.name}" cannot join a bundle for "${trustDomain.name}"`)
      }
    }
    return SpiffeBundle.from({
      trustDomain,
      x509Authorities: parts.x509?.authorities ?? [],
      jwtAuthorities: parts.jwt?.keys ?? new Map(),
      sequenceNumber: parts.sequenceNumber,
      refreshHintSeconds: parts.refreshHintSeconds,
    })
  }

  /**
   * Parses a SPIFFE bundle document (JWK Set). `keys` must be present (may be
   * empty). Every key needs `kty`; keys with unknown `kty`, or missing or
   * unknown `use`, are ignored. `x509-svid` keys carry exactly one `x5c`
   * certificate; `jwt-svid` keys need a unique `kid` and a public key.
   * Throws ERR_BUNDLE_INVALID.
   */
  static parse(trustDomain: TrustDomain, doc: string | Uint8Array): SpiffeBundle {
    if (!(trustDomain instanceof TrustDomain)) throw new TypeError('trustDomain must be a TrustDomain')
    const obj = parseJsonObject(inputText(doc, 'SPIFFE bundle'), 'SPIFFE bundle')
    const keys = obj.keys
    if (keys === undefined) throw bundleError('SPIFFE bundle has no "keys" member')
    if (!Array.isArray(keys)) throw bundleError('SPIFFE bundle "keys" must be an array')
    const seq = optionalInteger(obj.spiffe_sequence, 'spiffe_sequence')
    const hint = optionalInteger(obj.spiffe_refresh_hint, 'spiffe_refresh_hint')

    const x509: Authority[] = []
    const seen = new Set<string>()
    const jwt = new Map<string, JsonWebKey>()
    keys.forEach((k: unknown, i) => {
      const what = `SPIFFE bundle key ${i}`
      if (!isPlainObject(k)) throw bundleError(`${what} must be an object`)
      if (typeof k.kty !== 'string' || k.kty.length === 0) throw bundleError(`${what} has no "kty"`)
      if (k.use !== undefined && typeof k.use !== 'string') throw bundleError(`${what} has a non-string "use"`)
      if (!KNOWN_KTY.has(k.kty)) return
      switch (k.use) {
        case X509_SVID_USE: {
          const x5c = k.x5c
          if (x5c !== undefined && !Array.isArray(x5c)) throw bundleError(`${what} "x5c" must be an array`)
          const count = x5c?.length ?? 0
          if (count !== 1) throw bundleError(`${what} must hold exactly one "x5c" certificate, got ${count}`)
          const b64: unknown = x5c![0]
          if (typeof b64 !== 'string') throw bundleError(`${what} "x5c" must hold base64 strings`)
          const der = decodeBase64Strict(b64)
          if (!der) throw bundleError(`${what} "x5c" certificate is not valid base64`)
          const dedupeKey = asBuffer(der).toString('base64')
          if (seen.has(dedupeKey)) return
          seen.add(dedupeKey)
          x509.push(x509Authority(der, `${what} certificate`))
          return
        }
        case JWT_SVID_USE: {
          if (typeof k.kid !== 'string' || k.kid.length === 0) throw bundleError(`${what} has no "kid"`)
          if (jwt.has(k.kid)) throw bundleError(`${what} repeats key id "${k.kid}"`)
          jwt.set(k.kid, importPublicJwk(k, what).jwk)
          return
        }
        default:
          return // missing or unknown use (e.g. SPIRE's wit-svid): ignore the element
      }
    })
    return new SpiffeBundle(trustDomain, x509, jwt, seq, hint)
  }

  /** CA certificates (DER), in document order. */
  get x509Authorities(): readonly Uint8Array[] {
    return this.#x509.map((a) => a.der)
  }

  /** kid → canonical public JWK (`{kty, crv, x, y}` or `{kty, n, e}`). */
  get jwtAuthorities(): ReadonlyMap<string, JsonWebKey> {
    return this.#jwt
  }

  isEmpty(): boolean {
    return this.#x509.length === 0 && this.#jwt.size === 0
  }

  x509Bundle(): X509Bundle {
    this.#x509Bundle ??= new X509Bundle(
      this.trustDomain,
      this.#x509.map((a) => a.der),
    )
    return this.#x509Bundle
  }

  jwtBundle(): JwtBundle {
    this.#jwtBundle ??= new JwtBundle(this.trustDomain, this.#jwt)
    return this.#jwtBundle
  }

  getX509BundleForTrustDomain(td: TrustDomain): X509Bundle {
    this.#checkTd(td)
    return this.x509Bundle()
  }

  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
    this.#checkTd(td)
    return this.jwtBundle()
  }

  /** The same authorities with another sequence number. */
  withSequence(n: number): SpiffeBundle {
    checkSequence(n)
    return new SpiffeBundle(this.trustDomain, this.#x509, this.#jwt, n, this.refreshHintSeconds)
  }

  /** The same authorities with another refresh hint (seconds). */
  withRefreshHint(seconds: number | undefined): SpiffeBundle {
    checkRefreshHint(seconds)
    return new SpiffeBundle(this.trustDomain, this.#x509, this.#jwt, this.sequenceNumber, seconds)
  }

  /**
   * The SPIFFE bundle document in the shape SPIRE writes: x509 keys
   * `{use, kty, crv, x, y, x5c}` (RSA: `n, e`), JWT keys `{use, kty, kid, crv, x, y}`,
   * then `spiffe_sequence` and `spiffe_refresh_hint` when set. Deterministic.
   */
  marshal(opts: { indent?: number } = {}): string {
    const keys: Record<string, unknown>[] = []
    for (const a of this.#x509) {
      keys.push(orderedJwk({ use: X509_SVID_USE }, a.jwk, { x5c: [asBuffer(a.der).toString('base64')] }))
    }
    for (const [kid, jwk] of this.#jwt) keys.push(orderedJwk({ use: JWT_SVID_USE, kid }, jwk))
    const doc: Record<string, unknown> = { keys }
    if (this.sequenceNumber !== undefined) doc.spiffe_sequence = this.sequenceNumber
    if (this.refreshHintSeconds !== undefined) doc.spiffe_refresh_hint = this.refreshHintSeconds
    return JSON.stringify(doc, null, opts.indent)
  }

  /** Same trust domain, authorities (in order), sequence number and refresh hint. */
  equals(other: SpiffeBundle | undefined | null): boolean {
    if (!other || !this.trustDomain.equals(other.trustDomain)) return false
    if (this.sequenceNumber !== other.sequenceNumber || this.refreshHintSeconds !== other.refreshHintSeconds) return false
    return this.marshal() === other.marshal()
  }

  #checkTd(td: TrustDomain): void {
    if (!td.equals(this.trustDomain)) {
      throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${td.name}"`)
    }
  }
}

function x509Authority(der: Uint8Array, what: string): Authority {
  const cert = parseCertificate(der, what)
  return { der, jwk: canonicalPublicJwk(cert.publicKey, what) }
}

function optionalInteger(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw bundleError(`SPIFFE bundle "${name}" must be a non-negative integer (at most 2^53-1)`)
  }
  return v
}

function checkSequence(n: number | undefined): void {
  if (n !== undefined && (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)) {
    throw new RangeError('sequenceNumber must be a non-negative safe integer')
  }
}

function checkRefreshHint(n: number | undefined): void {
  if (n !== undefined && (typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0)) {
    throw new RangeError('refreshHintSeconds must be a non-negative safe integer')
  }
}
