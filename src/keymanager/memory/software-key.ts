/**
 * Pieces shared by the software key managers (memory, disk) and, for the
 * argument checks, by pkcs11: key-id validation, which signature algorithms a
 * key type accepts, and a ManagedKey over a node:crypto private KeyObject.
 */
import { createPrivateKey, createPublicKey, sign as cryptoSign, constants, type KeyObject } from 'node:crypto'
import { newPrivateKeyAsync } from '../../common/crypto/new-key.js'
import { IdentityError } from '../../errors/index.js'
import type { KeyType, ManagedKey } from '../key-manager.js'
import { HASH_FOR_ALGORITHM, HASH_LENGTH, type HashName, type SignatureAlgorithm } from '../../spiffe/signer.js'

const KEY_ID_RE = /^[A-Za-z0-9._-]{1,64}$/

/** Throws IdentityError ERR_INVALID_ARGUMENT unless `id` matches `[A-Za-z0-9._-]{1,64}`. */
export function assertKeyId(id: unknown): asserts id is string {
  if (typeof id !== 'string' || !KEY_ID_RE.test(id)) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', 'key id must match [A-Za-z0-9._-]{1,64}', {
      details: { key_id: typeof id === 'string' ? id.slice(0, 80) : typeof id },
    })
  }
}

/** Throws TypeError for an unknown key type. */
export function assertKeyType(type: unknown): asserts type is KeyType {
  if (type !== 'ec-p256' && type !== 'ec-p384' && type !== 'rsa-2048' && type !== 'rsa-3072' && type !== 'rsa-4096') {
    throw new TypeError(`unsupported key type ${String(type)}`)
  }
}

export { HASH_LENGTH, type HashName }
const ALG_HASH = HASH_FOR_ALGORITHM

/** The signature algorithms a key of `type` can produce. */
export function algorithmsForKeyType(type: KeyType): readonly SignatureAlgorithm[] {
  switch (type) {
    case 'ec-p256':
      return ['ES256']
    case 'ec-p384':
      return ['ES384']
    default:
      return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']
  }
}

/** Returns the hash of `alg`; throws TypeError when `alg` does not fit a key of `type`. */
export function hashForAlgorithm(type: KeyType, alg: SignatureAlgorithm): HashName {
  if (!algorithmsForKeyType(type).includes(alg)) {
    throw new TypeError(`signature algorithm ${String(alg)} does not fit a ${type} key`)
  }
  return ALG_HASH[alg]
}

/** Derives our KeyType from a node:crypto key (private or public); undefined when unsupported. */
export function keyTypeOf(key: KeyObject): KeyType | undefined {
  const d = key.asymmetricKeyDetails
  if (key.asymmetricKeyType === 'ec') {
    if (d?.namedCurve === 'prime256v1') return 'ec-p256'
    if (d?.namedCurve === 'secp384r1') return 'ec-p384'
    return undefined
  }
  if (key.asymmetricKeyType === 'rsa') {
    switch (d?.modulusLength) {
      case 2048:
        return 'rsa-2048'
      case 3072:
        return 'rsa-3072'
      case 4096:
        return 'rsa-4096'
      default:
        return undefined
    }
  }
  return undefined
}

/** Generates a private key of `type` with node:crypto (off the main thread; see new-key.ts for why it is imported back). */
export async function generateSoftwareKey(type: KeyType): Promise<KeyObject> {
  assertKeyType(type)
  if (type === 'ec-p256' || type === 'ec-p384') return newPrivateKeyAsync({ ec: type === 'ec-p256' ? 'P-256' : 'P-384' })
  return newPrivateKeyAsync({ rsa: Number(type.slice(4)) })
}

/** Parses a PKCS#8 PEM private key; throws ERR_KEY_INVALID when it is unreadable or of an unsupported type. */
export function parsePrivateKeyPem(pem: string | Buffer): { key: KeyObject; type: KeyType } {
  let key: KeyObject
  try {
    key = createPrivateKey({ key: pem, format: 'pem' })
  } catch (cause) {
    throw new IdentityError('ERR_KEY_INVALID', 'cannot parse private key', { cause })
  }
  const type = keyTypeOf(key)
  if (type === undefined) throw new IdentityError('ERR_KEY_INVALID', 'unsupported private key type')
  return { key, type }
}

/** Signs with a node:crypto private key, following the Signer contract. */
export function signWithKeyObject(privateKey: KeyObject, type: KeyType, data: Uint8Array, alg: SignatureAlgorithm): Promise<Uint8Array> {
  const hash = hashForAlgorithm(type, alg)
  const opts =
    type === 'ec-p256' || type === 'ec-p384'
      ? { key: privateKey, dsaEncoding: 'ieee-p1363' as const }
      : alg.startsWith('PS')
        ? { key: privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: HASH_LENGTH[hash] }
        : { key: privateKey, padding: constants.RSA_PKCS1_PADDING }
  // An EC signature takes ~30 µs: handing it to the libuv thread pool costs more than it saves (two thread
  // switches per signature, and on a busy server the pool competes with the calling thread for the same cores).
  // RSA signatures take milliseconds and stay off the event loop.
  if (type === 'ec-p256' || type === 'ec-p384') {
    try {
      const sig = cryptoSign(hash, data, opts)
      return Promise.resolve(new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength))
    } catch (err) {
      return Promise.reject(err)
    }
  }
  return new Promise((resolve, reject) => {
    cryptoSign(hash, data, opts, (err, sig) => (err ? reject(err) : resolve(new Uint8Array(sig.buffer, sig.byteOffset, sig.byteLength))))
  })
}

/** A ManagedKey whose private half is a node:crypto KeyObject held in this process. */
export class SoftwareKey implements ManagedKey {
  readonly id: string
  readonly type: KeyType
  readonly publicKey: KeyObject
  readonly #privateKey: KeyObject

  constructor(id: string, type: KeyType, privateKey: KeyObject) {
    this.id = id
    this.type = type
    this.#privateKey = privateKey
    this.publicKey = createPublicKey(privateKey)
  }

  async sign(data: Uint8Array, alg: SignatureAlgorithm): Promise<Uint8Array> {
    return signWithKeyObject(this.#privateKey, this.type, data, alg)
  }

  inProcessKey(): KeyObject {
    return this.#privateKey
  }

  /** Never serialise the private key through JSON or util.inspect. */
  toJSON(): { id: string; type: KeyType } {
    return { id: this.id, type: this.type }
  }
}
