/**
 * A synchronous ECDSA signer over the native `ecsign` addon (native/ecsign.c)
 * for the CSR pool's threads: the CA's software key is imported once per
 * thread, and each leaf signature skips the OpenSSL 3 context set-up that
 * node:crypto's sign() pays per call. Only for keys already in this process
 * (memory and disk key managers); HSM keys never get here. Without the addon
 * (not built, or another platform), or for a key it does not take (RSA),
 * callers keep node:crypto.
 */
import type { KeyObject } from 'node:crypto'
import { createPublicKey } from 'node:crypto'
import { findNativeAddon, requireNativeAddon } from '../../common/native/addon.js'
import type { SignatureAlgorithm } from '../../spiffe/signer.js'
import type { SyncSigner } from '../../spiffe/x509-svid/certificate-builder.js'

interface EcSignAddon {
  importKey(pkcs8: Uint8Array): object
  sign(handle: object, hash: number, data: Uint8Array): Uint8Array
}

/** The hash argument of the addon, and the curve each algorithm goes with. */
const ALGS: Readonly<Partial<Record<SignatureAlgorithm, { hash: number; curve: string }>>> = {
  ES256: { hash: 0, curve: 'prime256v1' },
  ES384: { hash: 1, curve: 'secp384r1' },
}

let loaded: { addon: EcSignAddon | undefined; error: unknown } | undefined

function load(): { addon: EcSignAddon | undefined; error: unknown } {
  const path = findNativeAddon('ecsign')
  if (path === undefined) return { addon: undefined, error: new Error('build/Release/ecsign.node is missing: run `npm ci` or `npm rebuild`') }
  try {
    const addon = requireNativeAddon(path) as Partial<EcSignAddon>
    if (typeof addon.importKey !== 'function' || typeof addon.sign !== 'function') throw new TypeError('ecsign: exports missing')
    return { addon: addon as EcSignAddon, error: undefined }
  } catch (error) {
    return { addon: undefined, error }
  }
}

/** Why `nativeEcSigner` always answers undefined (undefined when the addon loaded). */
export function nativeEcSignerError(): unknown {
  loaded ??= load()
  return loaded.error
}

/**
 * A SyncSigner for an EC P-256 or P-384 private key, or undefined when the
 * addon is not available, the key is of another kind or the addon refuses
 * it (never throws). Signatures come back
 * as IEEE P1363 (r || s), as KeyObjectSigner's do; `signSync` accepts only the
 * algorithm of the key's curve (ES256 for P-256, ES384 for P-384).
 */
export function nativeEcSigner(privateKey: KeyObject): SyncSigner | undefined {
  loaded ??= load()
  const addon = loaded.addon
  if (addon === undefined || privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ec') return undefined
  const curve = privateKey.asymmetricKeyDetails?.namedCurve
  const alg = (Object.keys(ALGS) as SignatureAlgorithm[]).find((a) => ALGS[a]!.curve === curve)
  if (alg === undefined) return undefined
  // The key's bytes exist in this process for as long as the import takes; the copy is wiped at once.
  const der = privateKey.export({ format: 'der', type: 'pkcs8' })
  let handle: object
  try {
    handle = addon.importKey(der)
  } catch {
    // Never fatal: the caller signs with node:crypto instead.
    return undefined
  } finally {
    der.fill(0)
  }
  const hash = ALGS[alg]!.hash
  const publicKey = createPublicKey(privateKey)
  const signSync = (data: Uint8Array, a: SignatureAlgorithm): Uint8Array => {
    if (a !== alg) throw new TypeError(`this key signs ${alg}, not ${String(a)}`)
    return addon.sign(handle, hash, data)
  }
  return { publicKey, signSync, sign: async (data, a) => signSync(data, a) }
}
