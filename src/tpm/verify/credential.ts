import { createCipheriv, createECDH, createHmac, createPublicKey, publicEncrypt, randomBytes, constants, type KeyObject } from 'node:crypto'
import { TpmWriter } from '../marshal.js'
import { digestSizeOf, toHashName } from './hash.js'
import { kdfa, kdfe } from './kdf.js'
import { ekTargetFromPublic, type CredentialTarget, type EkPublicInput } from './public-key.js'

export type { CredentialTarget } from './public-key.js'

export interface MakeCredentialParams {
  /** The EK: TPM2B_PUBLIC / TPMT_PUBLIC bytes, a decoded TpmtPublic, or a prepared target. */
  ekPublic: EkPublicInput | CredentialTarget
  /** The AK name: nameAlg ‖ H(AK TPMT_PUBLIC). */
  akName: Uint8Array
  /** The credential; at most the digest size of the EK's nameAlg. */
  secret: Uint8Array
  /** Source of randomness (tests only). */
  random?: (n: number) => Uint8Array
}

export interface MakeCredentialResult {
  /** TPM2B_ID_OBJECT: u16 size ‖ TPM2B(outer HMAC) ‖ encIdentity. */
  credentialBlob: Uint8Array
  /** TPM2B_ENCRYPTED_SECRET: u16 size ‖ RSA-OAEP ciphertext, or TPMS_ECC_POINT of the ephemeral key. */
  encryptedSecret: Uint8Array
}

const CURVE_NODE: Record<'P-256' | 'P-384' | 'P-521', { name: string; size: number }> = {
  'P-256': { name: 'prime256v1', size: 32 },
  'P-384': { name: 'secp384r1', size: 48 },
  'P-521': { name: 'secp521r1', size: 66 },
}

/**
 * Software TPM2_MakeCredential (TPM 2.0 Part 1 §24, Part 3 §12.6): protects
 * `secret` so that only the TPM holding the EK, with the object named `akName`
 * loaded, can recover it with TPM2_ActivateCredential.
 */
export function makeCredential(p: MakeCredentialParams): MakeCredentialResult {
  const target = isTarget(p.ekPublic) ? p.ekPublic : ekTargetFromPublic(p.ekPublic)
  const hash = toHashName(target.nameAlg)
  const digestSize = digestSizeOf(target.nameAlg)
  if (p.secret.length === 0 || p.secret.length > digestSize) {
    throw new RangeError(`credential must be 1..${digestSize} bytes`)
  }
  if (p.akName.length < 2) throw new RangeError('AK name too short')
  if (target.symKeyBits !== 128 && target.symKeyBits !== 192 && target.symKeyBits !== 256) {
    throw new RangeError(`unsupported EK symmetric key size ${target.symKeyBits}`)
  }
  const random = p.random ?? ((n: number) => new Uint8Array(randomBytes(n)))

  let seed: Uint8Array
  let encSecret: Uint8Array
  if (target.kind === 'rsa') {
    seed = random(digestSize)
    encSecret = new Uint8Array(
      publicEncrypt({ key: target.publicKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hash, oaepLabel: Buffer.from('IDENTITY\0', 'latin1') }, seed),
    )
  } else {
    const curve = CURVE_NODE[target.curve]
    const ecdh = createECDH(curve.name)
    if (p.random) ecdh.setPrivateKey(p.random(curve.size))
    else ecdh.generateKeys()
    const ekPoint = Buffer.concat([Buffer.from([4]), leftPad(target.x, curve.size), leftPad(target.y, curve.size)])
    const z = ecdh.computeSecret(ekPoint)
    const ephPub = ecdh.getPublicKey()
    const ephX = ephPub.subarray(1, 1 + curve.size)
    const ephY = ephPub.subarray(1 + curve.size)
    seed = kdfe({ hash: target.nameAlg, z, label: 'IDENTITY', partyUInfo: ephX, partyVInfo: target.x, bits: digestSize * 8 })
    encSecret = new TpmWriter().tpm2b(ephX).tpm2b(ephY).finish()
  }

  const symKey = kdfa({ hash: target.nameAlg, key: seed, label: 'STORAGE', contextU: p.akName, bits: target.symKeyBits })
  const cipher = createCipheriv(`aes-${target.symKeyBits}-cfb`, symKey, Buffer.alloc(16))
  const plain = new TpmWriter().tpm2b(p.secret).finish()
  const encIdentity = Buffer.concat([cipher.update(plain), cipher.final()])

  const hmacKey = kdfa({ hash: target.nameAlg, key: seed, label: 'INTEGRITY', bits: digestSize * 8 })
  const outerHmac = createHmac(hash, hmacKey).update(encIdentity).update(p.akName).digest()

  const credentialBlob = new TpmWriter()
    .sized((w) => {
      w.tpm2b(outerHmac).bytes(encIdentity)
    })
    .finish()
  const encryptedSecret = new TpmWriter().tpm2b(encSecret).finish()
  return { credentialBlob, encryptedSecret }
}

function isTarget(x: EkPublicInput | CredentialTarget): x is CredentialTarget {
  return !(x instanceof Uint8Array) && typeof (x as CredentialTarget).kind === 'string' && typeof (x as CredentialTarget).symKeyBits === 'number'
}

function leftPad(b: Uint8Array, size: number): Buffer {
  if (b.length > size) throw new RangeError('EC coordinate larger than the curve size')
  const out = Buffer.alloc(size)
  out.set(b, size - b.length)
  return out
}

/** A node KeyObject from JWK coordinates; exported for tests. */
export function ecPublicKeyObject(curve: 'P-256' | 'P-384' | 'P-521', x: Uint8Array, y: Uint8Array): KeyObject {
  const size = CURVE_NODE[curve].size
  return createPublicKey({
    format: 'jwk',
    key: { kty: 'EC', crv: curve, x: leftPad(x, size).toString('base64url'), y: leftPad(y, size).toString('base64url') },
  })
}
