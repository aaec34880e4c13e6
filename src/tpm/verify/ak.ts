import type { KeyObject } from 'node:crypto'
import {
  ECC_CURVE_INFO,
  TPM_ALG,
  TPM_ECC_CURVE,
  TPMA_OBJECT,
  TPM_ST,
  parseTpmsCreationData,
  publicKeyFromTpmtPublic,
  tpmHash,
  tpmtPublicName,
  type TpmsAttest,
  type TpmsCreationData,
  type TpmtPublic,
} from '../structures.js'
import { decodePublicInput, type EkPublicInput } from './public-key.js'
import { constantTimeEqual, parseAttest, parseOrFail, verificationFailed, verifyTpmSignature } from './signature.js'

/** A verified attestation key: decoded public area, its TPMT_PUBLIC bytes, Name and node key. */
export interface VerifiedAk {
  public: TpmtPublic
  bytes: Uint8Array
  name: Uint8Array
  key: KeyObject
}

const REQUIRED_ATTRS: [keyof typeof TPMA_OBJECT, number][] = [
  ['fixedTPM', TPMA_OBJECT.fixedTPM],
  ['fixedParent', TPMA_OBJECT.fixedParent],
  ['sensitiveDataOrigin', TPMA_OBJECT.sensitiveDataOrigin],
  ['restricted', TPMA_OBJECT.restricted],
  ['sign', TPMA_OBJECT.sign],
]
const STRONG_NAME_ALGS = new Set<number>([TPM_ALG.SHA256, TPM_ALG.SHA384, TPM_ALG.SHA512])
const AK_SCHEMES = new Set<number>([TPM_ALG.RSASSA, TPM_ALG.RSAPSS, TPM_ALG.ECDSA])

/**
 * Checks that a public area describes an attestation key: a restricted
 * signing key that never left the TPM (fixedTPM, fixedParent,
 * sensitiveDataOrigin, restricted, sign; not decrypt), RSA ≥ 2048 or ECC
 * P-256/P-384, nameAlg SHA-256 or stronger, a non-NULL signing scheme with a
 * strong hash. When `expectedName` is given it must equal nameAlg ‖ H(public).
 */
export function verifyAkPublic(akPublic: EkPublicInput, expectedName?: Uint8Array): VerifiedAk {
  const { public: pub, bytes } = parseOrFail('AK public area', () => decodePublicInput(akPublic))
  const attrs = pub.objectAttributes >>> 0
  for (const [label, bit] of REQUIRED_ATTRS) {
    if ((attrs & bit) === 0) verificationFailed(`AK attribute ${label} is not set`, { attributes: attrs })
  }
  if ((attrs & TPMA_OBJECT.decrypt) !== 0) verificationFailed('AK attribute decrypt is set', { attributes: attrs })
  if (!STRONG_NAME_ALGS.has(pub.nameAlg)) verificationFailed('AK nameAlg must be SHA-256 or stronger', { nameAlg: pub.nameAlg })
  if (pub.type === TPM_ALG.RSA) {
    if (pub.parameters.keyBits < 2048) verificationFailed('AK RSA key is shorter than 2048 bits', { keyBits: pub.parameters.keyBits })
  } else if (pub.parameters.curveId !== TPM_ECC_CURVE.P256 && pub.parameters.curveId !== TPM_ECC_CURVE.P384) {
    verificationFailed('AK curve must be P-256 or P-384', { curve: ECC_CURVE_INFO[pub.parameters.curveId]?.crv ?? pub.parameters.curveId })
  }
  const scheme = pub.parameters.scheme
  if (!AK_SCHEMES.has(scheme.scheme) || scheme.hashAlg === undefined || !STRONG_NAME_ALGS.has(scheme.hashAlg)) {
    verificationFailed('AK signing scheme must be RSASSA, RSAPSS or ECDSA with SHA-256 or stronger', { scheme: scheme.scheme })
  }
  if ((pub.type === TPM_ALG.RSA) === (scheme.scheme === TPM_ALG.ECDSA)) verificationFailed('AK signing scheme does not fit its key type')
  if (pub.parameters.symmetric.algorithm !== TPM_ALG.NULL) verificationFailed('AK must not be a storage key (symmetric set)')
  const name = tpmtPublicName(bytes)
  if (expectedName !== undefined && !constantTimeEqual(name, expectedName)) verificationFailed('AK name does not match its public area')
  const key = parseOrFail('AK public key', () => publicKeyFromTpmtPublic(pub))
  return { public: pub, bytes, name, key }
}

export interface VerifyCertifyCreationParams {
  ak: VerifiedAk
  /** TPMS_ATTEST produced by TPM2_CertifyCreation (the signed bytes). */
  attest: Uint8Array
  /** TPMT_SIGNATURE over `attest` by the AK. */
  signature: Uint8Array
  /** The AK's TPMS_CREATION_DATA (or TPM2B_CREATION_DATA) as returned by Create/CreatePrimary; checked when given. */
  creationData?: Uint8Array
  /** qualifyingData the certification must carry, when the verifier chose it. */
  qualifyingData?: Uint8Array
}

/**
 * Verifies the AK's self-certification (TPM2_CertifyCreation signed by the AK
 * over its own creation ticket): signature, type CREATION, objectName equal to
 * the AK Name and creationHash equal to H_nameAlg(creationData).
 */
export function verifyCertifyCreation(p: VerifyCertifyCreationParams): { attest: TpmsAttest; creationData?: TpmsCreationData } {
  verifyTpmSignature({ public: p.ak.public, key: p.ak.key }, p.attest, p.signature, 'AK creation certification')
  const attest = parseAttest(p.attest, 'AK creation certification')
  if (attest.attested.type !== TPM_ST.ATTEST_CREATION) verificationFailed('AK creation certification has the wrong attestation type', { type: attest.type })
  if (!constantTimeEqual(attest.attested.objectName, p.ak.name)) verificationFailed('AK creation certification is for another object')
  if (p.qualifyingData !== undefined && !constantTimeEqual(attest.extraData, p.qualifyingData)) {
    verificationFailed('AK creation certification carries the wrong qualifying data')
  }
  if (p.creationData === undefined) return { attest }
  const raw = p.creationData
  const inner = raw.length > 2 && ((raw[0]! << 8) | raw[1]!) === raw.length - 2 ? raw.subarray(2) : raw
  const creationData = parseOrFail('AK creation data', () => parseTpmsCreationData(inner))
  const hash = tpmHash(p.ak.public.nameAlg, inner)
  if (!constantTimeEqual(hash, attest.attested.creationHash)) verificationFailed('AK creation data does not match the certified creation hash')
  return { attest, creationData }
}
