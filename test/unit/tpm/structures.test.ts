import { generateKeyPairSync, type KeyObject } from 'node:crypto'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { TpmReader, fromHex, toHex } from '../../../src/tpm/marshal.js'
import {
  TPM_ALG,
  TPM_ECC_CURVE,
  TPM_GENERATED_VALUE,
  TPM_ST,
  decodeTpmtPublic,
  ecdsaSignatureP1363,
  encodeTpm2bPublic,
  encodeTpmlPcrSelection,
  encodeTpmsAttest,
  encodeTpmsCreationData,
  encodeTpmsNvPublic,
  encodeTpmtPublic,
  encodeTpmtSignature,
  encodeTpmtTkCreation,
  parseCredentialBlob,
  parseTpm2bNvPublic,
  parseTpm2bPublic,
  parseTpmlPcrSelection,
  parseTpmsAttest,
  parseTpmsCreationData,
  parseTpmtPublic,
  parseTpmtSignature,
  parseTpmtTkCreation,
  pcrSelection,
  pcrSelectionToBanks,
  publicKeyFromTpmtPublic,
  tpmHash,
  tpmtPublicName,
  type TpmsAttest,
  type TpmtPublic,
  type TpmtSignature,
} from '../../../src/tpm/structures.js'
import { akTemplateEcc, akTemplateRsa, ekTemplateEcc, ekTemplateRsa, srkTemplateEcc } from '../../../src/tpm/templates.js'

const RSA_EK_L1 = '0001000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa' + '00060080004300100800000000000100' + '00'.repeat(256)
const ECC_EK_L2 =
  '0023000b000300b20020837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa' +
  '0006008000430010000300100020' +
  '00'.repeat(32) +
  '0020' +
  '00'.repeat(32)
const ECC_AK = '0023000b000504720000001000180' + '00b000300100000' + '0000'

const isPayloadError = (err: unknown) => err instanceof IdentityError && err.code === 'ERR_TPM_PAYLOAD_INVALID'

function b64uToBytes(s: string): Uint8Array {
  return new Uint8Array(Buffer.from(s, 'base64url'))
}

function pubFromKey(kind: 'rsa' | 'ecc', key: KeyObject): TpmtPublic {
  const jwk = key.export({ format: 'jwk' })
  if (kind === 'rsa') {
    const t = akTemplateRsa()
    t.unique = b64uToBytes(jwk.n!)
    return t
  }
  const t = akTemplateEcc()
  t.unique = { x: b64uToBytes(jwk.x!), y: b64uToBytes(jwk.y!) }
  return t
}

describe('templates encode as the TCG / tpm2-tools bytes', () => {
  it.each([
    ['RSA EK L-1', () => encodeTpmtPublic(ekTemplateRsa()), RSA_EK_L1],
    ['ECC EK L-2', () => encodeTpmtPublic(ekTemplateEcc()), ECC_EK_L2],
    ['ECC AK', () => encodeTpmtPublic(akTemplateEcc()), ECC_AK],
    ['RSA AK', () => encodeTpmtPublic(akTemplateRsa()), '0001000b000504720000001000140' + '00b080000000000' + '0000'],
  ])('%s', (_n, enc, hex) => {
    expect(toHex(enc())).toBe(hex)
    expect(encodeTpmtPublic(parseTpmtPublic(fromHex(hex)))).toEqual(fromHex(hex))
  })

  it('SRK template round-trips', () => {
    const b = encodeTpmtPublic(srkTemplateEcc())
    expect(parseTpmtPublic(b)).toEqual(srkTemplateEcc())
    expect(parseTpm2bPublic(encodeTpm2bPublic(b)).bytes).toEqual(b)
  })
})

describe('TPMT_PUBLIC', () => {
  it.each(['rsa', 'ecc'] as const)('%s: round-trip, name and public key', (kind) => {
    const { publicKey } = kind === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const pub = pubFromKey(kind, publicKey)
    const bytes = encodeTpmtPublic(pub)
    expect(parseTpmtPublic(bytes)).toEqual(pub)
    expect(decodeTpmtPublic(new TpmReader(bytes))).toEqual(pub)
    const name = tpmtPublicName(bytes)
    expect(toHex(name)).toBe('000b' + toHex(tpmHash(TPM_ALG.SHA256, bytes)))
    expect(tpmtPublicName(pub)).toEqual(name)
    const k = publicKeyFromTpmtPublic(bytes)
    expect(k.equals(publicKey)).toBe(true)
  })

  it('left-pads short ECC coordinates', () => {
    const t = akTemplateEcc()
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const jwk = publicKey.export({ format: 'jwk' })
    const x = b64uToBytes(jwk.x!)
    t.unique = { x: x[0] === 0 ? x.subarray(1) : x, y: b64uToBytes(jwk.y!) }
    expect(publicKeyFromTpmtPublic(t).equals(publicKey)).toBe(true)
  })

  it.each([
    ['unknown type', '0025000b00000000000000'],
    ['unknown nameAlg', '00010099000000000000'],
    ['bad RSA key size', '0001000b000000000000' + '0010' + '0010' + '0801' + '00000000' + '0000'],
    ['unknown curve', '0023000b000000000000' + '0010' + '0010' + '0099' + '0010' + '0000' + '0000'],
    ['bad symmetric', '0001000b000000000000' + '0006' + '0050' + '0043' + '0010' + '0800' + '00000000' + '0000'],
    ['truncated', RSA_EK_L1.slice(0, RSA_EK_L1.length - 2)],
    ['trailing', RSA_EK_L1 + '00'],
    ['modulus size mismatch', '0001000b000000000000' + '0010' + '0010' + '0800' + '00000000' + '0002aabb'],
  ])('rejects %s', (_n, hex) => {
    expect(() => parseTpmtPublic(fromHex(hex))).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })

  it('rejects an empty modulus as a key', () => {
    expect(() => publicKeyFromTpmtPublic(akTemplateRsa())).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })

  it('rejects ECC points that are not on the curve', () => {
    const t = akTemplateEcc()
    t.unique = { x: new Uint8Array(32).fill(1), y: new Uint8Array(32).fill(2) }
    expect(() => publicKeyFromTpmtPublic(t)).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })
})

describe('PCR selection', () => {
  it('encodes PCRs 0-7 and 16 as 03 ff 00 01', () => {
    const sel = pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 16] }])
    expect(toHex(encodeTpmlPcrSelection(sel))).toBe('00000001000b03ff0001')
    expect(pcrSelectionToBanks(parseTpmlPcrSelection(encodeTpmlPcrSelection(sel)))).toEqual([{ hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 16] }])
  })
  it('rejects out-of-range PCRs with RangeError', () => {
    expect(() => pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [24] }])).toThrow(RangeError)
  })
  it.each([
    ['too many banks', '00000100'],
    ['huge bitmap', '00000001000b20' + '00'.repeat(32)],
    ['bad hash', '00000001009903000000'],
  ])('rejects %s', (_n, hex) => {
    expect(() => parseTpmlPcrSelection(fromHex(hex))).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })
})

const quoteAttest: TpmsAttest = {
  magic: TPM_GENERATED_VALUE,
  type: TPM_ST.ATTEST_QUOTE,
  qualifiedSigner: fromHex('000b' + '11'.repeat(32)),
  extraData: fromHex('22'.repeat(32)),
  clockInfo: { clock: 123456789n, resetCount: 3, restartCount: 1, safe: true },
  firmwareVersion: 0x2019082900000000n,
  attested: {
    type: TPM_ST.ATTEST_QUOTE,
    pcrSelect: pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [16, 23] }]),
    pcrDigest: fromHex('33'.repeat(32)),
  },
}

describe('TPMS_ATTEST', () => {
  it.each<[string, TpmsAttest]>([
    ['quote', quoteAttest],
    [
      'creation',
      {
        ...quoteAttest,
        type: TPM_ST.ATTEST_CREATION,
        attested: { type: TPM_ST.ATTEST_CREATION, objectName: fromHex('000b' + '44'.repeat(32)), creationHash: fromHex('55'.repeat(32)) },
      },
    ],
    [
      'certify',
      {
        ...quoteAttest,
        type: TPM_ST.ATTEST_CERTIFY,
        attested: { type: TPM_ST.ATTEST_CERTIFY, name: fromHex('000b' + '66'.repeat(32)), qualifiedName: fromHex('000b' + '77'.repeat(32)) },
      },
    ],
  ])('%s round-trips', (_n, a) => {
    const bytes = encodeTpmsAttest(a)
    expect(parseTpmsAttest(bytes)).toEqual(a)
  })

  it('rejects a bad magic, an unknown type, truncation and trailing bytes', () => {
    const good = encodeTpmsAttest(quoteAttest)
    const badMagic = good.slice()
    badMagic[0] = 0
    const badType = good.slice()
    badType[5] = 0x99
    for (const b of [badMagic, badType, good.subarray(0, good.length - 1), fromHex(toHex(good) + '00')]) {
      expect(() => parseTpmsAttest(b)).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
    }
  })
})

describe('TPMT_SIGNATURE', () => {
  it.each<[string, TpmtSignature]>([
    ['rsassa', { sigAlg: TPM_ALG.RSASSA, hash: TPM_ALG.SHA256, sig: new Uint8Array(256).fill(7) }],
    ['rsapss', { sigAlg: TPM_ALG.RSAPSS, hash: TPM_ALG.SHA384, sig: new Uint8Array(256).fill(8) }],
    ['ecdsa', { sigAlg: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256, r: new Uint8Array(31).fill(1), s: new Uint8Array(32).fill(2) }],
  ])('%s round-trips', (_n, s) => {
    expect(parseTpmtSignature(encodeTpmtSignature(s))).toEqual(s)
  })
  it('pads ECDSA r/s to P1363', () => {
    const p = ecdsaSignatureP1363({ sigAlg: TPM_ALG.ECDSA, hash: TPM_ALG.SHA256, r: fromHex('01'), s: fromHex('0002') }, TPM_ECC_CURVE.P256)
    expect(p.length).toBe(64)
    expect(p[31]).toBe(1)
    expect(p[63]).toBe(2)
  })
  it.each([
    ['hmac', '0005000b0000'],
    ['null', '0010'],
    ['bad hash', '00140099000100'],
    ['oversized sig', '0014000b0201' + '00'.repeat(0x201)],
  ])('rejects %s', (_n, hex) => {
    expect(() => parseTpmtSignature(fromHex(hex))).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })
})

describe('ticket, creation data, NV public, credential blob', () => {
  it('round-trips', () => {
    const t = { tag: TPM_ST.CREATION, hierarchy: 0x40000001, digest: fromHex('aa'.repeat(32)) }
    expect(parseTpmtTkCreation(encodeTpmtTkCreation(t))).toEqual(t)
    const c = {
      pcrSelect: pcrSelection([{ hash: TPM_ALG.SHA256, pcrs: [] }]),
      pcrDigest: new Uint8Array(0),
      locality: 1,
      parentNameAlg: TPM_ALG.SHA256,
      parentName: fromHex('000b' + 'bb'.repeat(32)),
      parentQualifiedName: fromHex('000b' + 'cc'.repeat(32)),
      outsideInfo: new Uint8Array(0),
    }
    expect(parseTpmsCreationData(encodeTpmsCreationData(c))).toEqual(c)
    const nv = { nvIndex: 0x01c00002, nameAlg: TPM_ALG.SHA256, attributes: 0x62072801, authPolicy: new Uint8Array(0), dataSize: 1016 }
    const nvBytes = encodeTpmsNvPublic(nv)
    const tpm2b = fromHex(nvBytes.length.toString(16).padStart(4, '0') + toHex(nvBytes))
    expect(parseTpm2bNvPublic(tpm2b)).toEqual(nv)
    expect(parseCredentialBlob(fromHex('0003aabbcc0002ddee'))).toEqual({ credentialBlob: fromHex('aabbcc'), encryptedSecret: fromHex('ddee') })
  })
  it('rejects a wrong ticket tag and a non-NV handle', () => {
    expect(() => parseTpmtTkCreation(fromHex('80224000000100'))).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
    expect(() => parseTpm2bNvPublic(fromHex('000e81000000000b00000000000000'))).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })
})

describe('fuzz: parsers throw only ERR_TPM_PAYLOAD_INVALID', () => {
  const parsers: Array<[string, (b: Uint8Array) => unknown, Uint8Array]> = [
    ['parseTpmtPublic', parseTpmtPublic, fromHex(RSA_EK_L1)],
    ['parseTpm2bPublic', parseTpm2bPublic, encodeTpm2bPublic(fromHex(ECC_EK_L2))],
    ['parseTpmsAttest', parseTpmsAttest, encodeTpmsAttest(quoteAttest)],
    ['parseTpmtSignature', parseTpmtSignature, fromHex('0018000b0002aabb0002ccdd')],
    ['parseTpmsCreationData', parseTpmsCreationData, fromHex('00000000' + '0000' + '00' + '000b' + '0000' + '0000' + '0000')],
    ['parseTpm2bNvPublic', parseTpm2bNvPublic, fromHex('000e01c00002000b620728010000' + '03f8')],
    ['parseTpmlPcrSelection', parseTpmlPcrSelection, fromHex('00000001000b03ff0001')],
    ['parseCredentialBlob', parseCredentialBlob, fromHex('0003aabbcc0002ddee')],
    ['publicKeyFromTpmtPublic', publicKeyFromTpmtPublic, fromHex(ECC_AK)],
  ]
  it.each(parsers)('%s on random bytes', (_n, parse) => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (b) => {
        try {
          parse(b)
        } catch (err) {
          expect(isPayloadError(err)).toBe(true)
        }
      }),
      { numRuns: 3000 },
    )
  })
  it.each(parsers)('%s on mutated valid input', (_n, parse, seed) => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.nat({ max: seed.length }), (edits, cut) => {
        const b = seed.slice(0, Math.max(cut, seed.length - 8))
        for (const [i, v] of edits) if (b.length > 0) b[i % b.length] = v
        try {
          parse(b)
        } catch (err) {
          expect(isPayloadError(err)).toBe(true)
        }
      }),
      { numRuns: 3000 },
    )
  })
})
