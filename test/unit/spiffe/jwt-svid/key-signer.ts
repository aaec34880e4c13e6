import { constants, generateKeyPairSync, sign, type KeyObject } from 'node:crypto'
import type { SignatureAlgorithm, Signer } from '../../../../src/spiffe/signer.js'

/** Test-only in-memory Signer backed by a node:crypto private key. */
export class KeySigner implements Signer {
  readonly publicKey: KeyObject
  readonly #privateKey: KeyObject

  constructor(privateKey: KeyObject, publicKey: KeyObject) {
    this.#privateKey = privateKey
    this.publicKey = publicKey
  }

  static generate(type: 'P-256' | 'P-384' | 'P-521' | 'rsa' | 'ed25519'): KeySigner {
    const pair =
      type === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : type === 'ed25519'
          ? generateKeyPairSync('ed25519')
          : generateKeyPairSync('ec', { namedCurve: type })
    return new KeySigner(pair.privateKey, pair.publicKey)
  }

  get privateKey(): KeyObject {
    return this.#privateKey
  }

  async sign(data: Uint8Array, alg: SignatureAlgorithm): Promise<Uint8Array> {
    return signSync(this.#privateKey, data, alg)
  }
}

export function signSync(key: KeyObject, data: Uint8Array, alg: string): Uint8Array {
  const hash = `sha${alg.slice(2)}`
  if (alg.startsWith('ES')) return sign(hash, data, { key, dsaEncoding: 'ieee-p1363' })
  if (alg.startsWith('PS')) return sign(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST })
  if (alg === 'EdDSA') return sign(null, data, key)
  return sign(hash, data, key)
}
