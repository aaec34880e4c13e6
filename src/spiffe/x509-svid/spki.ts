import { createHash, type KeyObject } from 'node:crypto'
import { spkiKeyBits } from './certificate-fields.js'
import { bitString, DER_NULL, oid, seq, unsignedInteger } from './der.js'

/**
 * Internal: SubjectPublicKeyInfo DER of a public KeyObject, fast.
 *
 * `KeyObject.export({ type: 'spki' })` goes through OpenSSL 3's encoder
 * lookup and costs several times an ECDSA P-256 signature, so the SPKI is
 * built from the JWK export instead (the same bytes: RFC 5480 uncompressed
 * point, RFC 3279 RSAPublicKey), and remembered per KeyObject. `parseCsr`
 * seeds the memo with the CSR's own SPKI bytes.
 */

const memo = new WeakMap<KeyObject, Buffer>()

const EC_PUBLIC_KEY = oid('1.2.840.10045.2.1')
const CURVE: Readonly<Record<string, { oid: Buffer; len: number }>> = {
  'P-256': { oid: oid('1.2.840.10045.3.1.7'), len: 32 },
  'P-384': { oid: oid('1.3.132.0.34'), len: 48 },
  'P-521': { oid: oid('1.3.132.0.35'), len: 66 },
}
const RSA_ALG = seq(oid('1.2.840.113549.1.1.1'), DER_NULL)

export function rememberSpki(key: KeyObject, spki: Uint8Array): void {
  memo.set(key, Buffer.from(spki))
}

/** The SPKI DER of an EC or RSA public key. TypeError for anything else. */
export function spkiOf(publicKey: KeyObject): Buffer {
  const hit = memo.get(publicKey)
  if (hit) return hit
  if (!publicKey || typeof publicKey !== 'object' || publicKey.type !== 'public') {
    throw new TypeError('publicKey must be a public KeyObject')
  }
  let spki: Buffer
  const t = publicKey.asymmetricKeyType
  if (t === 'ec') {
    const jwk = publicKey.export({ format: 'jwk' })
    const curve = CURVE[jwk.crv ?? '']
    if (!curve || typeof jwk.x !== 'string' || typeof jwk.y !== 'string') {
      spki = publicKey.export({ type: 'spki', format: 'der' })
    } else {
      const point = Buffer.alloc(1 + 2 * curve.len)
      point[0] = 0x04
      Buffer.from(jwk.x, 'base64url').copy(point, 1 + curve.len - Buffer.byteLength(jwk.x, 'base64url'))
      Buffer.from(jwk.y, 'base64url').copy(point, 1 + 2 * curve.len - Buffer.byteLength(jwk.y, 'base64url'))
      spki = seq(seq(EC_PUBLIC_KEY, curve.oid), bitString(point))
    }
  } else if (t === 'rsa') {
    const jwk = publicKey.export({ format: 'jwk' })
    if (typeof jwk.n !== 'string' || typeof jwk.e !== 'string') throw new TypeError('RSA key cannot be exported')
    spki = seq(RSA_ALG, bitString(seq(unsignedInteger(Buffer.from(jwk.n, 'base64url')), unsignedInteger(Buffer.from(jwk.e, 'base64url')))))
  } else {
    throw new TypeError(`unsupported public key type ${t ?? '?'}`)
  }
  memo.set(publicKey, spki)
  return spki
}

const skiMemo = new WeakMap<KeyObject, { spki: Buffer; ski: Buffer }>()

/** SPKI DER and its RFC 5280 §4.2.1.2 (1) key identifier (SHA-1 of the key bits), remembered per key. */
export function keyIds(publicKey: KeyObject): { spki: Buffer; ski: Buffer } {
  let ids = skiMemo.get(publicKey)
  if (!ids) {
    const spki = spkiOf(publicKey)
    ids = { spki, ski: createHash('sha1').update(spkiKeyBits(spki)).digest() }
    skiMemo.set(publicKey, ids)
  }
  return ids
}
