import { generateKeyPairSync, sign as cryptoSign, createPublicKey, constants, type KeyObject } from 'node:crypto'
import { HASH_FOR_ALGORITHM, HASH_LENGTH, type SignatureAlgorithm, type Signer } from './signer.js'

/** Key types this module can generate; the names match the KeyManager's `KeyType`. */
export type KeyPairType = 'ec-p256' | 'ec-p384' | 'ec-p521' | 'rsa-2048' | 'rsa-3072' | 'rsa-4096'

const CURVE_ALG: Readonly<Record<string, SignatureAlgorithm>> = {
  prime256v1: 'ES256',
  secp384r1: 'ES384',
  secp521r1: 'ES512',
}
const HASH = HASH_FOR_ALGORITHM
const HASH_LEN = HASH_LENGTH

/** The natural algorithm for a public key: P-256→ES256, P-384→ES384, P-521→ES512, RSA→RS256, RSA-PSS→PS256. */
export function defaultAlgorithmFor(publicKey: KeyObject): SignatureAlgorithm {
  const t = publicKey.asymmetricKeyType
  if (t === 'ec') {
    const alg = CURVE_ALG[publicKey.asymmetricKeyDetails?.namedCurve ?? '']
    if (alg) return alg
    throw new TypeError(`unsupported EC curve ${publicKey.asymmetricKeyDetails?.namedCurve ?? '?'}`)
  }
  if (t === 'rsa') return 'RS256'
  if (t === 'rsa-pss') return 'PS256'
  throw new TypeError(`unsupported key type ${t ?? '?'}`)
}

/** Throws TypeError when `alg` cannot be used with `key` (curve must match the ES* hash, as in JOSE). */
export function checkKeyAlgorithm(key: KeyObject, alg: SignatureAlgorithm): void {
  const hash = HASH[alg]
  if (!hash) throw new TypeError(`unsupported signature algorithm ${String(alg)}`)
  const t = key.asymmetricKeyType
  if (alg.startsWith('ES')) {
    if (t !== 'ec' || CURVE_ALG[key.asymmetricKeyDetails?.namedCurve ?? ''] !== alg) {
      throw new TypeError(`algorithm ${alg} does not match the key`)
    }
  } else if (alg.startsWith('RS')) {
    if (t !== 'rsa') throw new TypeError(`algorithm ${alg} does not match the key`)
  } else if (t !== 'rsa' && t !== 'rsa-pss') {
    throw new TypeError(`algorithm ${alg} does not match the key`)
  }
}

/** Generates a key pair in memory. */
export function generateKeyPair(type: KeyPairType): { privateKey: KeyObject; publicKey: KeyObject } {
  switch (type) {
    case 'ec-p256':
      return generateKeyPairSync('ec', { namedCurve: 'P-256' })
    case 'ec-p384':
      return generateKeyPairSync('ec', { namedCurve: 'P-384' })
    case 'ec-p521':
      return generateKeyPairSync('ec', { namedCurve: 'P-521' })
    case 'rsa-2048':
      return generateKeyPairSync('rsa', { modulusLength: 2048 })
    case 'rsa-3072':
      return generateKeyPairSync('rsa', { modulusLength: 3072 })
    case 'rsa-4096':
      return generateKeyPairSync('rsa', { modulusLength: 4096 })
    default:
      throw new TypeError(`unsupported key type ${String(type)}`)
  }
}

/**
 * A Signer over an in-memory private KeyObject. ECDSA signatures come back as
 * IEEE P1363 (r||s), RS* as PKCS#1 v1.5, PS* as PSS with salt = hash length.
 * ECDSA signs synchronously (tens of microseconds); RSA signs on the libuv
 * thread pool so a slow RSA-4096 signature does not block the event loop.
 */
export class KeyObjectSigner implements Signer {
  readonly publicKey: KeyObject
  /** The algorithm this key signs with unless told otherwise. */
  readonly defaultAlgorithm: SignatureAlgorithm
  readonly #privateKey: KeyObject
  readonly #checked = new Set<SignatureAlgorithm>()

  constructor(privateKey: KeyObject) {
    if (!privateKey || privateKey.type !== 'private') throw new TypeError('KeyObjectSigner needs a private KeyObject')
    this.#privateKey = privateKey
    this.publicKey = createPublicKey(privateKey)
    this.defaultAlgorithm = defaultAlgorithmFor(this.publicKey) // rejects unsupported key types early
  }

  async sign(data: Uint8Array, alg: SignatureAlgorithm): Promise<Uint8Array> {
    const { hash, key } = this.#params(alg)
    if (this.#privateKey.asymmetricKeyType === 'ec') return cryptoSign(hash, data, key)
    return new Promise((resolve, reject) => {
      cryptoSign(hash, data, key, (err, sig) => (err ? reject(err) : resolve(sig)))
    })
  }

  /** Synchronous signing, for hot paths that cannot afford a Promise. */
  signSync(data: Uint8Array, alg: SignatureAlgorithm): Uint8Array {
    const { hash, key } = this.#params(alg)
    return cryptoSign(hash, data, key)
  }

  #params(alg: SignatureAlgorithm): { hash: string; key: Parameters<typeof cryptoSign>[2] } {
    if (!this.#checked.has(alg)) {
      if (!isSignatureAlgorithm(alg)) throw new TypeError(`unsupported signature algorithm ${String(alg)}`)
      checkKeyAlgorithm(this.publicKey, alg)
      this.#checked.add(alg)
    }
    const hash = HASH[alg]
    if (alg.startsWith('ES')) return { hash, key: { key: this.#privateKey, dsaEncoding: 'ieee-p1363' } }
    if (alg.startsWith('PS')) {
      return { hash, key: { key: this.#privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_LEN[hash] } }
    }
    return { hash, key: { key: this.#privateKey, padding: constants.RSA_PKCS1_PADDING } }
  }
}

function isSignatureAlgorithm(alg: unknown): alg is SignatureAlgorithm {
  return typeof alg === 'string' && Object.hasOwn(HASH, alg)
}
