import { createPublicKey, type JsonWebKey, type KeyObject } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import type { TrustDomain } from '../trust-domain.js'
import { bundleError, importPublicJwk, inputText, isPlainObject, KNOWN_KTY, orderedJwk, parseJsonObject } from './encoding.js'

/** The JWT authorities (public JWKs by key id) of one trust domain. Immutable. */
export class JwtBundle implements JwtBundleSource {
  readonly trustDomain: TrustDomain
  readonly #keys: ReadonlyMap<string, JsonWebKey>
  readonly #keyObjects = new Map<string, KeyObject>()

  /** `keys` maps kid → public JWK. Throws ERR_BUNDLE_INVALID for an empty kid or a key that cannot be imported. */
  constructor(trustDomain: TrustDomain, keys: ReadonlyMap<string, JsonWebKey> | Iterable<[string, JsonWebKey]>) {
    this.trustDomain = trustDomain
    const m = new Map<string, JsonWebKey>()
    for (const [kid, jwk] of keys) {
      if (typeof kid !== 'string' || kid.length === 0) throw new IdentityError('ERR_BUNDLE_INVALID', 'JWT authority has an empty key id')
      const pub = publicOnly(jwk)
      m.set(kid, pub)
    }
    this.#keys = m
  }

  /**
   * Parses a standard JWKS, as the Workload API's FetchJWTBundles sends it.
   * `use` may be absent (or `jwt-svid` / `sig`); keys with another `use`
   * (e.g. `x509-svid`) and keys of unknown `kty` are ignored. Every key needs
   * a unique `kid` and must import as a public key. Throws ERR_BUNDLE_INVALID.
   */
  static parseJwks(trustDomain: TrustDomain, json: string | Uint8Array): JwtBundle {
    const doc = parseJsonObject(inputText(json, 'JWKS'), 'JWKS')
    const keys = doc.keys
    if (!Array.isArray(keys)) throw bundleError('JWKS "keys" must be an array')
    const m = new Map<string, JsonWebKey>()
    keys.forEach((k: unknown, i) => {
      const what = `JWKS key ${i}`
      if (!isPlainObject(k)) throw bundleError(`${what} must be an object`)
      if (typeof k.kty !== 'string') throw bundleError(`${what} has no "kty"`)
      if (k.use !== undefined && typeof k.use !== 'string') throw bundleError(`${what} has a non-string "use"`)
      if (!KNOWN_KTY.has(k.kty)) return
      if (k.use !== undefined && k.use !== 'jwt-svid' && k.use !== 'sig') return
      if (typeof k.kid !== 'string' || k.kid.length === 0) throw bundleError(`${what} has no "kid"`)
      if (m.has(k.kid)) throw bundleError(`${what} repeats key id "${k.kid}"`)
      m.set(k.kid, importPublicJwk(k, what).jwk)
    })
    return new JwtBundle(trustDomain, m)
  }

  /** A standard JWKS with no `use` member, as SPIRE's Workload API sends: `{"keys":[{kty,kid,crv,x,y}]}`. */
  toJwks(): string {
    const keys = [...this.#keys].map(([kid, jwk]) => orderedJwk({ kid }, jwk))
    return JSON.stringify({ keys })
  }

  /** kid → public JWK (no private members). */
  get keys(): ReadonlyMap<string, JsonWebKey> {
    return this.#keys
  }

  /** The public key for `kid` as a KeyObject (imported once, then cached), or undefined. */
  findKey(kid: string): KeyObject | undefined {
    const cached = this.#keyObjects.get(kid)
    if (cached) return cached
    const jwk = this.#keys.get(kid)
    if (!jwk) return undefined
    let key: KeyObject
    try {
      key = createPublicKey({ key: jwk, format: 'jwk' })
    } catch (cause) {
      throw new IdentityError('ERR_BUNDLE_INVALID', `JWT authority "${kid}" cannot be imported`, { cause })
    }
    this.#keyObjects.set(kid, key)
    return key
  }

  isEmpty(): boolean {
    return this.#keys.size === 0
  }

  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
    if (!td.equals(this.trustDomain)) {
      throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no JWT bundle for trust domain "${td.name}"`)
    }
    return this
  }
}

const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const

function publicOnly(jwk: JsonWebKey): JsonWebKey {
  if (jwk === null || typeof jwk !== 'object') throw new IdentityError('ERR_BUNDLE_INVALID', 'JWT authority is not a JWK object')
  const out: JsonWebKey = { ...jwk }
  for (const k of PRIVATE_MEMBERS) delete (out as Record<string, unknown>)[k]
  return out
}

/** Where JWT trust comes from: a static bundle, a set, the agent cache, the workload client. */
export interface JwtBundleSource {
  /** Throws IdentityError ERR_BUNDLE_NOT_FOUND when the trust domain is unknown. */
  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle
}
