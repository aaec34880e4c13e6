import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { TPM_ALG, TPM_ECC_CURVE, TPM_ST, TPMA_OBJECT, encodeTpmsCreationData, pcrSelection, tpmHash, type TpmtPublic } from '../../../../src/tpm/structures.js'
import { TpmWriter } from '../../../../src/tpm/marshal.js'
import { verifyAkPublic, verifyCertifyCreation } from '../../../../src/tpm/verify/ak.js'
import { AK_ATTRS, attestBytes, softEccKey, softRsaKey, softSign, type SoftKey } from './soft-tpm.js'

const FAILED = { code: 'ERR_TPM_VERIFICATION_FAILED' }

describe('verifyAkPublic', () => {
  it.each([
    { title: 'ECC P-256', key: () => softEccKey() },
    { title: 'ECC P-384', key: () => softEccKey({ curve: 'P-384' }) },
    { title: 'RSA-2048', key: () => softRsaKey() },
  ])('accepts a $title AK and computes its name', ({ key }) => {
    const k = key()
    const v = verifyAkPublic(k.bytes, k.name)
    expect(Buffer.from(v.name).equals(k.name)).toBe(true)
  })

  const withParams = (k: SoftKey, change: (p: TpmtPublic['parameters']) => TpmtPublic['parameters']): TpmtPublic =>
    ({ ...k.public, parameters: change(k.public.parameters) }) as TpmtPublic
  const cases: { title: string; key: () => SoftKey | TpmtPublic; reason: string; details?: Record<string, unknown> }[] = [
    {
      title: 'without restricted',
      key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.restricted }),
      reason: 'AK attribute restricted is not set',
      details: { attributes: AK_ATTRS & ~TPMA_OBJECT.restricted },
    },
    { title: 'without fixedTPM', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.fixedTPM }), reason: 'AK attribute fixedTPM is not set' },
    { title: 'without fixedParent', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.fixedParent }), reason: 'AK attribute fixedParent is not set' },
    {
      title: 'without sensitiveDataOrigin',
      key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.sensitiveDataOrigin }),
      reason: 'AK attribute sensitiveDataOrigin is not set',
    },
    { title: 'without sign', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.sign }), reason: 'AK attribute sign is not set' },
    {
      title: 'with decrypt',
      key: () => softEccKey({ attrs: AK_ATTRS | TPMA_OBJECT.decrypt }),
      reason: 'AK attribute decrypt is set',
      details: { attributes: AK_ATTRS | TPMA_OBJECT.decrypt },
    },
    {
      title: 'with a SHA-1 nameAlg',
      key: () => softEccKey({ nameAlg: TPM_ALG.SHA1 }),
      reason: 'AK nameAlg must be SHA-256 or stronger',
      details: { nameAlg: TPM_ALG.SHA1 },
    },
    { title: 'with RSA-1024', key: () => softRsaKey({ bits: 1024 }), reason: 'AK RSA key is shorter than 2048 bits', details: { keyBits: 1024 } },
    { title: 'that is an EK (storage key)', key: () => softRsaKey({ ek: true }), reason: 'AK attribute sign is not set' },
    {
      title: 'on curve P-521',
      key: () => withParams(softEccKey(), (p) => ({ ...p, curveId: TPM_ECC_CURVE.P521 })),
      reason: 'AK curve must be P-256 or P-384',
      details: { curve: 'P-521' },
    },
    {
      title: 'on an unknown curve',
      key: () => withParams(softEccKey(), (p) => ({ ...p, curveId: 0x0020 })),
      reason: 'AK curve must be P-256 or P-384',
      details: { curve: 0x0020 },
    },
    {
      title: 'without a signing scheme',
      key: () => withParams(softEccKey(), (p) => ({ ...p, scheme: { scheme: TPM_ALG.NULL } })),
      reason: 'AK signing scheme must be RSASSA, RSAPSS or ECDSA with SHA-256 or stronger',
      details: { scheme: TPM_ALG.NULL },
    },
    {
      title: 'with an ECDSA SHA-1 scheme',
      key: () => withParams(softEccKey(), (p) => ({ ...p, scheme: { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA1 } })),
      reason: 'AK signing scheme must be RSASSA, RSAPSS or ECDSA with SHA-256 or stronger',
    },
    {
      title: 'ECC with an RSASSA scheme',
      key: () => withParams(softEccKey(), (p) => ({ ...p, scheme: { scheme: TPM_ALG.RSASSA, hashAlg: TPM_ALG.SHA256 } })),
      reason: 'AK signing scheme does not fit its key type',
    },
    {
      title: 'RSA with an ECDSA scheme',
      key: () => withParams(softRsaKey(), (p) => ({ ...p, scheme: { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA256 } })),
      reason: 'AK signing scheme does not fit its key type',
    },
    {
      title: 'with a symmetric algorithm',
      key: () => withParams(softEccKey(), (p) => ({ ...p, symmetric: { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CFB } })),
      reason: 'AK must not be a storage key (symmetric set)',
    },
  ]
  it.each(cases)('rejects an AK $title, with the reason', ({ key, reason, details }) => {
    const k = key()
    const input = 'bytes' in k ? k.bytes : k
    expect(() => verifyAkPublic(input)).toThrow(expect.objectContaining({ ...FAILED, message: reason, ...(details ? { details } : {}) }))
  })

  it('accepts an RSA AK with an RSAPSS scheme and a P-384 AK with SHA-384', () => {
    expect(verifyAkPublic(softRsaKey({ scheme: TPM_ALG.RSAPSS }).bytes).public.parameters.scheme.scheme).toBe(TPM_ALG.RSAPSS)
    const p384 = withParams(softEccKey({ curve: 'P-384' }), (p) => ({ ...p, scheme: { scheme: TPM_ALG.ECDSA, hashAlg: TPM_ALG.SHA384 } }))
    expect(verifyAkPublic(p384).key.asymmetricKeyDetails?.namedCurve).toBe('secp384r1')
  })

  it('rejects an AK whose name does not match', () => {
    const k = softEccKey()
    expect(() => verifyAkPublic(k.bytes, softEccKey().name)).toThrow(expect.objectContaining({ ...FAILED, message: 'AK name does not match its public area' }))
  })

  it('rejects garbage', () => {
    expect(() => verifyAkPublic(new Uint8Array([0, 1, 2]))).toThrow(expect.objectContaining({ ...FAILED, message: 'AK public area is malformed' }))
  })

  it('rejects an ECC AK whose point is not on its curve', () => {
    const k = softEccKey()
    const bad: TpmtPublic = { ...k.public, unique: { x: new Uint8Array(32).fill(1), y: new Uint8Array(32).fill(2) } } as TpmtPublic
    expect(() => verifyAkPublic(bad)).toThrow(expect.objectContaining({ ...FAILED, message: 'AK public key is malformed' }))
  })
})

describe('verifyCertifyCreation', () => {
  const ak = softEccKey()
  const verified = verifyAkPublic(ak.bytes)
  const creationData = encodeTpmsCreationData({
    pcrSelect: pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [] }]),
    pcrDigest: tpmHash(TPM_ALG.SHA256),
    locality: 1,
    parentNameAlg: TPM_ALG.SHA256,
    parentName: new Uint8Array(34),
    parentQualifiedName: new Uint8Array(34),
    outsideInfo: new Uint8Array(0),
  })
  const certify = (objectName: Uint8Array, data: Uint8Array, signer: SoftKey = ak) => {
    const attest = attestBytes({ type: TPM_ST.ATTEST_CREATION, objectName, creationHash: tpmHash(TPM_ALG.SHA256, data) }, new Uint8Array(0))
    return { attest, signature: softSign(signer, attest) }
  }

  it('accepts the AK certifying its own creation (TPMS and TPM2B creation data)', () => {
    const c = certify(ak.name, creationData)
    expect(verifyCertifyCreation({ ak: verified, ...c, creationData }).creationData?.locality).toBe(1)
    const tpm2b = new TpmWriter().tpm2b(creationData).finish()
    expect(verifyCertifyCreation({ ak: verified, ...c, creationData: tpm2b }).attest.type).toBe(TPM_ST.ATTEST_CREATION)
  })

  const other = softEccKey()
  const cases = [
    { title: 'another object', ...certify(other.name, creationData), creationData, reason: 'AK creation certification is for another object' },
    {
      title: 'other creation data',
      ...certify(ak.name, creationData),
      creationData: creationData.map((b, i) => (i === 60 ? b ^ 1 : b)),
      reason: 'AK creation data does not match the certified creation hash',
    },
    { title: 'a signature by another key', ...certify(ak.name, creationData, other), creationData, reason: 'AK creation certification signature is invalid' },
    {
      title: 'creation data that does not parse',
      ...certify(ak.name, new Uint8Array([0, 0, 0])),
      creationData: new Uint8Array([0, 0, 0]),
      reason: 'AK creation data is malformed',
    },
    {
      title: 'a quote instead of a creation certification',
      attest: attestBytes({ type: TPM_ST.ATTEST_QUOTE, pcrSelect: [], pcrDigest: randomBytes(32) }, new Uint8Array(0)),
      signature: new Uint8Array(0),
      creationData,
      reason: 'AK creation certification has the wrong attestation type',
      details: { type: TPM_ST.ATTEST_QUOTE },
    },
    {
      title: 'a truncated certification',
      attest: new Uint8Array([0xff, 0x54]),
      signature: new Uint8Array(0),
      creationData,
      reason: 'AK creation certification is malformed',
    },
  ]
  it.each(cases as ((typeof cases)[number] & { details?: Record<string, unknown> })[])(
    'rejects $title, with the reason',
    ({ attest, signature, creationData: cd, title, reason, details }) => {
      const sig = title.startsWith('a quote') || title.startsWith('a truncated') ? softSign(ak, attest) : signature
      expect(() => verifyCertifyCreation({ ak: verified, attest, signature: sig, creationData: cd })).toThrow(
        expect.objectContaining({ ...FAILED, message: reason, ...(details ? { details } : {}) }),
      )
    },
  )

  it('checks qualifying data when the verifier chose it', () => {
    const q = new Uint8Array(randomBytes(16))
    const attest = attestBytes({ type: TPM_ST.ATTEST_CREATION, objectName: ak.name, creationHash: tpmHash(TPM_ALG.SHA256, creationData) }, q)
    const signature = softSign(ak, attest)
    expect(verifyCertifyCreation({ ak: verified, attest, signature, creationData, qualifyingData: q }).creationData?.locality).toBe(1)
    expect(() => verifyCertifyCreation({ ak: verified, attest, signature, creationData, qualifyingData: new Uint8Array(16) })).toThrow(
      expect.objectContaining({ ...FAILED, message: 'AK creation certification carries the wrong qualifying data' }),
    )
  })

  it('returns no creation data when none is given to check', () => {
    const c = certify(ak.name, creationData)
    const out = verifyCertifyCreation({ ak: verified, ...c })
    expect(out.attest.type).toBe(TPM_ST.ATTEST_CREATION)
    expect(Object.keys(out)).toEqual(['attest'])
  })
})
