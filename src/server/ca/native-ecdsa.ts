/**
 * ECDSA verification through the native `ecverify` addon (native/ecverify.c):
 * OpenSSL's ECDSA on a per-thread key whose public point is swapped per call,
 * which spares the key import node:crypto pays for every CSR's fresh key.
 * Used by the CSR verifier workers; without the addon (not built, or another
 * platform) CSRs are checked with node:crypto, with the same results.
 */
import { findNativeAddon, requireNativeAddon } from '../../common/native/addon.js'
import type { EcdsaVerify } from '../../spiffe/x509-svid/csr.js'

interface EcVerifyAddon {
  verify(curve: number, point: Uint8Array, hash: number, data: Uint8Array, signature: Uint8Array): number
}

const CURVE = { 'P-256': 0, 'P-384': 1 } as const
const HASH = { sha256: 0, sha384: 1, sha512: 2 } as const

let loaded: { verify: EcdsaVerify | undefined; error: unknown } | undefined

/** The native verifier, or undefined (with the reason in `nativeEcdsaError()`) when the addon cannot be loaded. */
export function nativeEcdsa(): EcdsaVerify | undefined {
  loaded ??= load()
  return loaded.verify
}

/** Why `nativeEcdsa()` is undefined (undefined when it loaded). */
export function nativeEcdsaError(): unknown {
  loaded ??= load()
  return loaded.error
}

function load(): { verify: EcdsaVerify | undefined; error: unknown } {
  const path = findNativeAddon('ecverify')
  if (path === undefined) return { verify: undefined, error: new Error('build/Release/ecverify.node is missing: run `npm ci` or `npm rebuild`') }
  try {
    const addon = requireNativeAddon(path) as Partial<EcVerifyAddon>
    if (typeof addon.verify !== 'function') throw new TypeError('ecverify: verify export missing')
    const fn = addon.verify.bind(addon)
    const verify: EcdsaVerify = (curve, point, hash, data, signature) => {
      const r = fn(CURVE[curve], point, HASH[hash], data, signature)
      return r === 1 ? 'valid' : r === -1 ? 'bad-key' : 'invalid'
    }
    return { verify, error: undefined }
  } catch (error) {
    return { verify: undefined, error }
  }
}
