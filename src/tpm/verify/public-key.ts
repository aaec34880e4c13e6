import type { KeyObject } from 'node:crypto'
import { ECC_CURVE_INFO, TPM_ALG, encodeTpmtPublic, parseTpm2bPublic, parseTpmtPublic, publicKeyFromTpmtPublic, type TpmtPublic } from '../structures.js'
import { IdentityError } from '../../errors/index.js'

/** A public area given as TPMT_PUBLIC bytes, TPM2B_PUBLIC bytes, or decoded. */
export type EkPublicInput = Uint8Array | TpmtPublic

/**
 * Decodes a public area and returns it with its canonical TPMT_PUBLIC bytes
 * (the bytes the Name is computed over). TPM2B_PUBLIC is recognised by its
 * size prefix, which cannot collide with a TPMT_PUBLIC type (0x0001 / 0x0023).
 */
export function decodePublicInput(input: EkPublicInput): { public: TpmtPublic; bytes: Uint8Array } {
  if (!(input instanceof Uint8Array)) return { public: input, bytes: encodeTpmtPublic(input) }
  if (input.length >= 2 && ((input[0]! << 8) | input[1]!) === input.length - 2) return parseTpm2bPublic(input)
  return { public: parseTpmtPublic(input), bytes: input }
}

/**
 * What MakeCredential needs from the EK public area: its nameAlg, its
 * symmetric (AES-CFB) key size and its public key. Built from a TPMT_PUBLIC by
 * `ekTargetFromPublic`.
 */
export type CredentialTarget =
  | { kind: 'rsa'; nameAlg: number; symKeyBits: number; publicKey: KeyObject }
  | { kind: 'ecc'; nameAlg: number; symKeyBits: number; curve: 'P-256' | 'P-384' | 'P-521'; x: Uint8Array; y: Uint8Array }

/** The MakeCredential parameters of an EK public area (RSA or ECC, AES-CFB symmetric). */
export function ekTargetFromPublic(input: EkPublicInput): CredentialTarget {
  const { public: pub } = decodePublicInput(input)
  const sym = pub.parameters.symmetric
  if (sym.algorithm !== TPM_ALG.AES || sym.mode !== TPM_ALG.CFB || sym.keyBits === undefined) {
    throw new IdentityError('ERR_TPM_VERIFICATION_FAILED', 'EK symmetric algorithm must be AES-CFB')
  }
  if (pub.type === TPM_ALG.RSA) {
    return { kind: 'rsa', nameAlg: pub.nameAlg, symKeyBits: sym.keyBits, publicKey: publicKeyFromTpmtPublic(pub) }
  }
  const info = ECC_CURVE_INFO[pub.parameters.curveId]
  if (info === undefined) throw new IdentityError('ERR_TPM_VERIFICATION_FAILED', 'unsupported EK curve')
  return { kind: 'ecc', nameAlg: pub.nameAlg, symKeyBits: sym.keyBits, curve: info.crv, x: pub.unique.x, y: pub.unique.y }
}
