import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { TPM_ALG, TPM_ST, TPMA_OBJECT, encodeTpmsCreationData, pcrSelection, tpmHash } from '../../../../src/tpm/structures.js'
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

  const cases: { title: string; key: () => SoftKey; name?: Uint8Array }[] = [
    { title: 'without restricted', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.restricted }) },
    { title: 'without fixedTPM', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.fixedTPM }) },
    { title: 'without fixedParent', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.fixedParent }) },
    { title: 'without sensitiveDataOrigin', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.sensitiveDataOrigin }) },
    { title: 'without sign', key: () => softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.sign }) },
    { title: 'with decrypt', key: () => softEccKey({ attrs: AK_ATTRS | TPMA_OBJECT.decrypt }) },
    { title: 'with a SHA-1 nameAlg', key: () => softEccKey({ nameAlg: TPM_ALG.SHA1 }) },
    { title: 'with RSA-1024', key: () => softRsaKey({ bits: 1024 }) },
    { title: 'that is an EK (storage key)', key: () => softRsaKey({ ek: true }) },
  ]
  it.each(cases)('rejects an AK $title', ({ key }) => {
    const k = key()
    expect(() => verifyAkPublic(k.bytes)).toThrow(expect.objectContaining(FAILED))
  })

  it('rejects an AK whose name does not match', () => {
    const k = softEccKey()
    expect(() => verifyAkPublic(k.bytes, softEccKey().name)).toThrow(expect.objectContaining(FAILED))
  })

  it('rejects garbage', () => {
    expect(() => verifyAkPublic(new Uint8Array([0, 1, 2]))).toThrow(expect.objectContaining(FAILED))
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
    { title: 'another object', ...certify(other.name, creationData), creationData },
    { title: 'other creation data', ...certify(ak.name, creationData), creationData: creationData.map((b, i) => (i === 5 ? b ^ 1 : b)) },
    { title: 'a signature by another key', ...certify(ak.name, creationData, other), creationData },
    { title: 'a quote instead of a creation certification', attest: attestBytes({ type: TPM_ST.ATTEST_QUOTE, pcrSelect: [], pcrDigest: randomBytes(32) }, new Uint8Array(0)), signature: new Uint8Array(0), creationData },
  ]
  it.each(cases)('rejects $title', ({ attest, signature, creationData: cd, title }) => {
    const sig = title.startsWith('a quote') ? softSign(ak, attest) : signature
    expect(() => verifyCertifyCreation({ ak: verified, attest, signature: sig, creationData: cd })).toThrow(expect.objectContaining(FAILED))
  })
})
