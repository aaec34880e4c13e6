/**
 * Fresh private keys that share nothing with the job that generated them.
 *
 * Node 20 can deadlock when a KeyObject returned by generateKeyPair[Sync] is
 * exported (as JWK, which allocates while holding the key's mutex) at the
 * moment a garbage collection destroys the finished key-generation job, which
 * still references the same key data and takes the same mutex in its
 * destructor. We saw it as an agent whose main thread hung in a futex during
 * per-instance key churn. Generating the key as PKCS#8 DER and importing that
 * gives a KeyObject no generation job ever referenced.
 */
import { createPrivateKey, generateKeyPair, generateKeyPairSync, type KeyObject } from 'node:crypto'

export type EcCurve = 'P-256' | 'P-384'

function imported(pkcs8: Buffer): KeyObject {
  return createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' })
}

/** A new EC private key (synchronous). */
export function newEcPrivateKey(curve: EcCurve = 'P-256'): KeyObject {
  const { privateKey } = generateKeyPairSync('ec', {
    namedCurve: curve,
    privateKeyEncoding: { type: 'pkcs8', format: 'der' },
    publicKeyEncoding: { type: 'spki', format: 'der' },
  })
  return imported(privateKey)
}

/** A new private key generated on the thread pool: EC on `curve`, or RSA of `modulusLength` bits. */
export function newPrivateKeyAsync(spec: { ec: EcCurve } | { rsa: number }): Promise<KeyObject> {
  return new Promise((resolve, reject) => {
    const done = (err: Error | null, _pub: Buffer, priv: Buffer) => {
      if (err) reject(err)
      else {
        try {
          resolve(imported(priv))
        } catch (e) {
          reject(e)
        }
      }
    }
    if ('ec' in spec) {
      generateKeyPair(
        'ec',
        { namedCurve: spec.ec, privateKeyEncoding: { type: 'pkcs8', format: 'der' }, publicKeyEncoding: { type: 'spki', format: 'der' } },
        done,
      )
    } else {
      generateKeyPair(
        'rsa',
        {
          modulusLength: spec.rsa,
          publicExponent: 0x10001,
          privateKeyEncoding: { type: 'pkcs8', format: 'der' },
          publicKeyEncoding: { type: 'spki', format: 'der' },
        },
        done,
      )
    }
  })
}
