/**
 * The agent's DPoP key (RFC 9449): an ES256 WebCrypto key pair whose private
 * half is non-extractable by default, so it exists only in this process's
 * memory and no code path can serialize it. Proofs are created with the
 * token library's `createDpopProof`; the public JWK's thumbprint is the
 * `cnf.jkt` the broker puts into tokens bound to this key.
 *
 * `DpopKey.generate({ extractable: true })` and `exportPrivateJwk()` exist
 * for one caller only: the CLI, whose commands run as separate processes and
 * must keep the key in a 0600 file between `token exchange` and `token renew`.
 */
import { webcrypto } from 'node:crypto'
import { IdentityError } from '../errors/identity-error.js'
import { createDpopProof, jwkThumbprint } from '../tokens/dpop.js'

type CryptoKeyPair = webcrypto.CryptoKeyPair
type JsonWebKey = webcrypto.JsonWebKey

const ALG = { name: 'ECDSA', namedCurve: 'P-256' } as const

export interface DpopProofRequest {
  method: string
  url: string
  /** The access token the request carries (adds `ath`): resource requests only. */
  accessToken?: string
  nonce?: string
  /** Seconds since the epoch for `iat` (default: now). */
  nowSec?: number
}

export class DpopKey {
  readonly #pair: CryptoKeyPair
  readonly #publicJwk: JsonWebKey
  readonly #thumbprint: string

  private constructor(pair: CryptoKeyPair, publicJwk: JsonWebKey, thumbprint: string) {
    this.#pair = pair
    this.#publicJwk = publicJwk
    this.#thumbprint = thumbprint
  }

  static async #from(pair: CryptoKeyPair): Promise<DpopKey> {
    const jwk = await webcrypto.subtle.exportKey('jwk', pair.publicKey)
    const pub: JsonWebKey = { kty: jwk.kty!, crv: jwk.crv!, x: jwk.x!, y: jwk.y! }
    return new DpopKey(pair, pub, await jwkThumbprint(pub as Parameters<typeof jwkThumbprint>[0]))
  }

  /** A fresh ES256 key; the private half is non-extractable unless `extractable` (CLI key files only). */
  static async generate(opts: { extractable?: boolean } = {}): Promise<DpopKey> {
    const pair = await webcrypto.subtle.generateKey(ALG, opts.extractable === true, ['sign', 'verify'])
    return DpopKey.#from(pair)
  }

  /** Imports a private EC P-256 JWK (from a CLI key file) as a non-extractable key. */
  static async importPrivateJwk(jwk: JsonWebKey): Promise<DpopKey> {
    if (
      jwk === null ||
      typeof jwk !== 'object' ||
      jwk.kty !== 'EC' ||
      jwk.crv !== 'P-256' ||
      typeof jwk.d !== 'string' ||
      typeof jwk.x !== 'string' ||
      typeof jwk.y !== 'string'
    ) {
      throw new IdentityError('ERR_KEY_INVALID', 'broker-client: the DPoP key must be an EC P-256 private JWK')
    }
    const priv = { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y, d: jwk.d }
    const pub = { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y }
    try {
      const privateKey = await webcrypto.subtle.importKey('jwk', priv, ALG, false, ['sign'])
      const publicKey = await webcrypto.subtle.importKey('jwk', pub, ALG, true, ['verify'])
      return await DpopKey.#from({ privateKey, publicKey })
    } catch (cause) {
      throw new IdentityError('ERR_KEY_INVALID', 'broker-client: the DPoP key could not be imported', { cause })
    }
  }

  /** RFC 7638 SHA-256 thumbprint of the public key: the `cnf.jkt` of tokens bound to it. */
  get thumbprint(): string {
    return this.#thumbprint
  }

  get publicJwk(): JsonWebKey {
    return { ...this.#publicJwk }
  }

  get extractable(): boolean {
    return this.#pair.privateKey.extractable
  }

  /** A DPoP proof JWT (`typ` dpop+jwt, `jwk` header, `jti`, `htm`, `htu`, `iat`, and `ath`/`nonce` when given). */
  proof(req: DpopProofRequest): Promise<string> {
    return createDpopProof(this.#pair, {
      method: req.method.toUpperCase(),
      url: req.url,
      ...(req.accessToken !== undefined ? { accessToken: req.accessToken } : {}),
      ...(req.nonce !== undefined ? { nonce: req.nonce } : {}),
      ...(req.nowSec !== undefined ? { nowSec: req.nowSec } : {}),
    })
  }

  /** The private JWK, only for a key generated extractable (CLI key files); TypeError otherwise. */
  async exportPrivateJwk(): Promise<JsonWebKey> {
    if (!this.#pair.privateKey.extractable) throw new TypeError('broker-client: the DPoP key is not extractable')
    const jwk = await webcrypto.subtle.exportKey('jwk', this.#pair.privateKey)
    return { kty: jwk.kty!, crv: jwk.crv!, x: jwk.x!, y: jwk.y!, d: jwk.d! }
  }

  /** Never the key material. */
  toJSON(): Record<string, string> {
    return { jkt: this.#thumbprint }
  }
}
