import { describe, expect, it } from 'vitest'
import { TPM_ALG, encodeTpm2bPublic, type TpmtPublic } from '../../../../src/tpm/structures.js'
import { decodePublicInput, ekTargetFromPublic } from '../../../../src/tpm/verify/public-key.js'
import { softEccKey, softRsaKey } from './soft-tpm.js'

const withSym = (pub: TpmtPublic, symmetric: TpmtPublic['parameters']['symmetric']): TpmtPublic =>
  ({ ...pub, parameters: { ...pub.parameters, symmetric } }) as TpmtPublic

describe('EK public input', () => {
  it('decodes TPMT_PUBLIC bytes, TPM2B_PUBLIC bytes and decoded areas to the same canonical bytes', () => {
    const k = softEccKey({ ek: true })
    for (const input of [k.bytes, encodeTpm2bPublic(k.bytes), k.public]) {
      const d = decodePublicInput(input)
      expect(Buffer.from(d.bytes).equals(k.bytes)).toBe(true)
      expect(d.public.type).toBe(TPM_ALG.ECC)
    }
  })

  it('makes RSA and ECC credential targets', () => {
    const r = ekTargetFromPublic(softRsaKey({ ek: true }).bytes)
    expect(r).toMatchObject({ kind: 'rsa', nameAlg: TPM_ALG.SHA256, symKeyBits: 128 })
    const e = softEccKey({ ek: true, curve: 'P-384', symBits: 256 })
    expect(ekTargetFromPublic(e.public)).toMatchObject({ kind: 'ecc', symKeyBits: 256, curve: 'P-384', x: (e.public.unique as { x: Uint8Array }).x })
  })

  const ek = softRsaKey({ ek: true }).public
  it.each([
    { title: 'no symmetric algorithm', pub: withSym(ek, { algorithm: TPM_ALG.NULL }), reason: 'EK symmetric algorithm must be AES-CFB' },
    {
      title: 'AES in another mode',
      pub: withSym(ek, { algorithm: TPM_ALG.AES, keyBits: 128, mode: TPM_ALG.CTR }),
      reason: 'EK symmetric algorithm must be AES-CFB',
    },
    {
      title: 'another cipher in CFB mode',
      pub: withSym(ek, { algorithm: 0x0026, keyBits: 128, mode: TPM_ALG.CFB }),
      reason: 'EK symmetric algorithm must be AES-CFB',
    },
    {
      title: 'an unknown curve',
      pub: { ...softEccKey({ ek: true }).public, parameters: { ...softEccKey({ ek: true }).public.parameters, curveId: 0x0020 } },
      reason: 'unsupported EK curve',
    },
  ])('refuses an EK with $title', ({ pub, reason }) => {
    expect(() => ekTargetFromPublic(pub as TpmtPublic)).toThrow(expect.objectContaining({ code: 'ERR_TPM_VERIFICATION_FAILED', message: reason }))
  })
})
