import { fromHex } from './marshal.js'
import { TPM_ALG, TPM_ECC_CURVE, TPMA_OBJECT, type TpmtPublic, type TpmtPublicEcc, type TpmtPublicRsa } from './structures.js'

/**
 * Key templates. The EK templates follow the TCG EK Credential Profile
 * (RSA "L-1", ECC P-256 "L-2"); the RSA one is byte-identical to what
 * swtpm_setup and tpm2_createek create, so its public key matches the EK cert.
 * Every function returns a fresh object.
 */

/** PolicySecret(TPM_RH_ENDORSEMENT) with SHA-256: the authPolicy of the default EKs. */
export const EK_AUTH_POLICY_SHA256 = fromHex('837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa')

/** fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt = 0x000300b2. */
export const EK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM | TPMA_OBJECT.fixedParent | TPMA_OBJECT.sensitiveDataOrigin | TPMA_OBJECT.adminWithPolicy | TPMA_OBJECT.restricted | TPMA_OBJECT.decrypt

/** fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | restricted | sign = 0x00050472. */
export const AK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.noDA |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.sign

/** fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | noDA | restricted | decrypt = 0x00030472. */
export const SRK_ATTRIBUTES =
  TPMA_OBJECT.fixedTPM |
  TPMA_OBJECT.fixedParent |
  TPMA_OBJECT.sensitiveDataOrigin |
  TPMA_OBJECT.userWithAuth |
  TPMA_OBJECT.noDA |
  TPMA_OBJECT.restricted |
  TPMA_OBJECT.decrypt

const AES128_CFB = { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB }

/** RSA-2048 EK, template L-1. */
export function ekTemplateRsa(): TpmtPublicRsa {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRIBUTES,
    authPolicy: EK_AUTH_POLICY_SHA256.slice(),
    parameters: { symmetric: { ...AES128_CFB }, scheme: { scheme: TPM_ALG.NULL }, keyBits: 2048, exponent: 0 },
    unique: new Uint8Array(256),
  }
}

/** ECC NIST P-256 EK, template L-2. */
export function ekTemplateEcc(): TpmtPublicEcc {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: EK_ATTRIBUTES,
    authPolicy: EK_AUTH_POLICY_SHA256.slice(),
    parameters: {
      symmetric: { ...AES128_CFB },
      scheme: { scheme: TPM_ALG.NULL },
      curveId: TPM_ECC_CURVE.P256,
      kdf: { scheme: TPM_ALG.NULL },
    },
    unique: { x: new Uint8Array(32), y: new Uint8Array(32) },
  }
}

export function ekTemplate(kind: 'rsa' | 'ecc'): TpmtPublic {
  return kind === 'rsa' ? ekTemplateRsa() : ekTemplateEcc()
}

/** ECC P-256 storage root key (restricted decrypt, AES-128-CFB), owner hierarchy. */
export function srkTemplateEcc(): TpmtPublicEcc {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: SRK_ATTRIBUTES,
    authPolicy: new Uint8Array(0),
    parameters: {
      symmetric: { ...AES128_CFB },
      scheme: { scheme: TPM_ALG.NULL },
      curveId: TPM_ECC_CURVE.P256,
      kdf: { scheme: TPM_ALG.NULL },
    },
    unique: { x: new Uint8Array(32), y: new Uint8Array(32) },
  }
}

/** ECC P-256 restricted signing AK, ECDSA-SHA256. */
export function akTemplateEcc(): TpmtPublicEcc {
  return {
    type: TPM_ALG.ECC,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: AK_ATTRIBUTES,
    authPolicy: new Uint8Array(0),
    parameters: {
      symmetric: { algorithm: TPM_ALG.NULL },
      scheme: { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 },
      curveId: TPM_ECC_CURVE.P256,
      kdf: { scheme: TPM_ALG.NULL },
    },
    unique: { x: new Uint8Array(0), y: new Uint8Array(0) },
  }
}

/** RSA-2048 restricted signing AK, RSASSA-SHA256. */
export function akTemplateRsa(): TpmtPublicRsa {
  return {
    type: TPM_ALG.RSA,
    nameAlg: TPM_ALG.SHA256,
    objectAttributes: AK_ATTRIBUTES,
    authPolicy: new Uint8Array(0),
    parameters: {
      symmetric: { algorithm: TPM_ALG.NULL },
      scheme: { scheme: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 },
      keyBits: 2048,
      exponent: 0,
    },
    unique: new Uint8Array(0),
  }
}

export function akTemplate(kind: 'rsa' | 'ecc'): TpmtPublic {
  return kind === 'rsa' ? akTemplateRsa() : akTemplateEcc()
}
