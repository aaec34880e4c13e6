/**
 * Test-side software stand-ins for TPM objects: public areas for node keys,
 * signed TPMS_ATTEST structures and a software ActivateCredential. Only for
 * unit tests of the verifier; the swtpm tests cross-check against real TPMs.
 */
import { createDecipheriv, createECDH, createHmac, generateKeyPairSync, privateDecrypt, sign, constants, type KeyObject } from 'node:crypto'
import { TpmReader, TpmWriter } from '../../../../src/tpm/marshal.js'
import {
  TPM_ALG,
  TPM_ECC_CURVE,
  TPM_GENERATED_VALUE,
  TPM_ST,
  TPMA_OBJECT,
  encodeTpmsAttest,
  encodeTpmtPublic,
  encodeTpmtSignature,
  hashDigestSize,
  hashNodeName,
  pcrSelection,
  tpmHash,
  tpmtPublicName,
  type TpmsAttest,
  type TpmtPublic,
  type TpmuAttest,
} from '../../../../src/tpm/structures.js'
import { kdfa, kdfe } from '../../../../src/tpm/verify/kdf.js'

export const AK_ATTRS =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.userWithAuth | TPMA_OBJECT.restricted | TPMA_OBJECT.sign
export const EK_ATTRS =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt

export interface SoftKey {
  public: TpmtPublic
  bytes: Uint8Array
  name: Uint8Array
  privateKey: KeyObject
  publicKey: KeyObject
}

function jwkBytes(s: string | undefined): Uint8Array {
  return new Uint8Array(Buffer.from(s ?? '', 'base64url'))
}

function finish(pub: TpmtPublic, privateKey: KeyObject, publicKey: KeyObject): SoftKey {
  const bytes = encodeTpmtPublic(pub)
  return { public: pub, bytes, name: tpmtPublicName(bytes), privateKey, publicKey }
}

const rsaPool = new Map<number, { privateKey: KeyObject; publicKey: KeyObject }[]>()
let rsaNext = 0
/** RSA generation is slow: cycle through a pool of 4 distinct key pairs per size. */
function rsaPair(bits: number): { privateKey: KeyObject; publicKey: KeyObject } {
  const pool = rsaPool.get(bits) ?? []
  rsaPool.set(bits, pool)
  const i = rsaNext++ % 4
  if (pool[i] === undefined) pool[i] = generateKeyPairSync('rsa', { modulusLength: bits })
  return pool[i]
}

export function softRsaKey(opts: { attrs?: number; bits?: number; scheme?: number; nameAlg?: number; ek?: boolean } = {}): SoftKey {
  const bits = opts.bits ?? 2048
  const { privateKey, publicKey } = rsaPair(bits)
  const n = jwkBytes(publicKey.export({ format: 'jwk' }).n)
  const ek = opts.ek === true
  const pub: TpmtPublic = {
    type: TPM_ALG.RSA,
    nameAlg: opts.nameAlg ?? TPM_ALG.SHA256,
    objectAttributes: opts.attrs ?? (ek ? EK_ATTRS : AK_ATTRS),
    authPolicy: new Uint8Array(0),
    parameters: {
      symmetric: ek ? { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } : { algorithm: TPM_ALG.NULL },
      scheme: ek ? { scheme: TPM_ALG.NULL } : { scheme: opts.scheme ?? TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 },
      keyBits: bits,
      exponent: 0,
    },
    unique: n,
  }
  return finish(pub, privateKey, publicKey)
}

export function softEccKey(opts: { attrs?: number; curve?: 'P-256' | 'P-384'; nameAlg?: number; ek?: boolean; symBits?: number } = {}): SoftKey {
  const curve = opts.curve ?? 'P-256'
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve === 'P-256' ? 'prime256v1' : 'secp384r1' })
  const jwk = publicKey.export({ format: 'jwk' })
  const ek = opts.ek === true
  const pub: TpmtPublic = {
    type: TPM_ALG.ECC,
    nameAlg: opts.nameAlg ?? TPM_ALG.SHA256,
    objectAttributes: opts.attrs ?? (ek ? EK_ATTRS : AK_ATTRS),
    authPolicy: new Uint8Array(0),
    parameters: {
      symmetric: ek ? { algorithm: TPM_ALG.AES, keyBits: opts.symBits ?? 128, mode: TPM_ALG.CFB } : { algorithm: TPM_ALG.NULL },
      scheme: ek ? { scheme: TPM_ALG.NULL } : { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 },
      curveId: curve === 'P-256' ? TPM_ECC_CURVE.P256 : TPM_ECC_CURVE.P384,
      kdf: { scheme: TPM_ALG.NULL },
    },
    unique: { x: jwkBytes(jwk.x), y: jwkBytes(jwk.y) },
  }
  return finish(pub, privateKey, publicKey)
}

/** TPMT_SIGNATURE by `key` over `message` with its scheme (or RSASSA/ECDSA SHA-256). */
export function softSign(key: SoftKey, message: Uint8Array, opts: { hash?: number; sigAlg?: number } = {}): Uint8Array {
  const hash = opts.hash ?? TPM_ALG.SHA256
  const node = hashNodeName(hash)
  if (key.public.type === TPM_ALG.ECC) {
    const size = key.public.parameters.curveId === TPM_ECC_CURVE.P256 ? 32 : 48
    const sig = sign(node, message, { key: key.privateKey, dsaEncoding: 'ieee-p1363' })
    return encodeTpmtSignature({ sigAlg: TPM_ALG.ECDSA, hash, r: sig.subarray(0, size), s: sig.subarray(size) })
  }
  const sigAlg = opts.sigAlg ?? (key.public.parameters.scheme.scheme === TPM_ALG.RSAPSS ? TPM_ALG.RSAPSS : TPM_ALG.RSASSA)
  const sig =
    sigAlg === TPM_ALG.RSAPSS
      ? sign(node, message, { key: key.privateKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: hashDigestSize(hash) })
      : sign(node, message, { key: key.privateKey, padding: constants.RSA_PKCS1_PADDING })
  return encodeTpmtSignature({ sigAlg: sigAlg as typeof TPM_ALG.RSASSA, hash, sig })
}

export function attestBytes(attested: TpmuAttest, extraData: Uint8Array, overrides: Partial<TpmsAttest> = {}): Uint8Array {
  return encodeTpmsAttest({
    magic: TPM_GENERATED_VALUE,
    type: attested.type,
    qualifiedSigner: new Uint8Array(34),
    extraData,
    clockInfo: { clock: 1000n, resetCount: 1, restartCount: 0, safe: true },
    firmwareVersion: 0x2000n,
    attested,
    ...overrides,
  })
}

/** A quote over `pcrs` (bank `bank`, ascending indices) with digest H_sig(values). */
export function softQuote(
  ak: SoftKey,
  nonce: Uint8Array,
  pcrs: Map<number, Uint8Array>,
  opts: { bank?: number; selectIndices?: number[]; digestValues?: Uint8Array[]; extraBanks?: { hash: number; pcrs: number[] }[]; type?: number } = {},
): { attest: Uint8Array; signature: Uint8Array } {
  const bank = opts.bank ?? TPM_ALG.SHA256
  const indices = opts.selectIndices ?? [...pcrs.keys()].sort((a, b) => a - b)
  const values = opts.digestValues ?? indices.map((i) => pcrs.get(i) ?? new Uint8Array(hashDigestSize(bank)))
  const attested: TpmuAttest = {
    type: TPM_ST.ATTEST_QUOTE,
    pcrSelect: pcrSelection([{ hash: bank, pcrs: indices }, ...(opts.extraBanks ?? [])]),
    pcrDigest: tpmHash(TPM_ALG.SHA256, ...values),
  }
  const attest = attestBytes(attested, nonce, opts.type === undefined ? {} : { type: opts.type as TpmsAttest['type'] })
  return { attest, signature: softSign(ak, attest) }
}

/** Software TPM2_ActivateCredential. Throws when the integrity HMAC fails (the TPM's 0x1DF). */
export function softActivateCredential(ek: SoftKey, akName: Uint8Array, credentialBlob: Uint8Array, encryptedSecret: Uint8Array): Uint8Array {
  const nameAlg = ek.public.nameAlg
  const digestBits = hashDigestSize(nameAlg) * 8
  const encSecret = new TpmReader(encryptedSecret).tpm2b()
  let seed: Uint8Array
  if (ek.public.type === TPM_ALG.RSA) {
    seed = privateDecrypt(
      { key: ek.privateKey, padding: constants.RSA_PKCS1_OAEP_PADDING, oaepHash: hashNodeName(nameAlg), oaepLabel: Buffer.from('IDENTITY\0') },
      encSecret,
    )
  } else {
    const r = new TpmReader(encSecret)
    const x = r.tpm2b()
    const y = r.tpm2b()
    const curve = ek.public.parameters.curveId === TPM_ECC_CURVE.P256 ? 'prime256v1' : 'secp384r1'
    const ecdh = createECDH(curve)
    ecdh.setPrivateKey(jwkBytes(ek.privateKey.export({ format: 'jwk' }).d))
    const z = ecdh.computeSecret(Buffer.concat([Buffer.from([4]), x, y]))
    seed = kdfe({ hash: nameAlg, z, label: 'IDENTITY', partyUInfo: x, partyVInfo: ek.public.unique.x, bits: digestBits })
  }
  const idObject = new TpmReader(credentialBlob).tpm2b()
  const r = new TpmReader(idObject)
  const outerHmac = r.tpm2b()
  const encIdentity = r.bytes(r.remaining)
  const hmacKey = kdfa({ hash: nameAlg, key: seed, label: 'INTEGRITY', bits: digestBits })
  const expected = createHmac(hashNodeName(nameAlg), hmacKey).update(encIdentity).update(akName).digest()
  if (!expected.equals(outerHmac)) throw new Error('TPM_RC_INTEGRITY')
  const symBits = ek.public.parameters.symmetric.keyBits ?? 128
  const symKey = kdfa({ hash: nameAlg, key: seed, label: 'STORAGE', contextU: akName, bits: symBits })
  const d = createDecipheriv(`aes-${symBits}-cfb`, symKey, Buffer.alloc(16))
  const plain = Buffer.concat([d.update(encIdentity), d.final()])
  return new TpmReader(plain).tpm2b()
}

export { TpmWriter }
