import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  decodeAnswer,
  decodeChallenge,
  decodePayload,
  encodeAnswer,
  encodeChallenge,
  encodePayload,
  type TpmAttestationPayload,
} from '../../../../attestors/node/tpm/payload.js'
import { isIdentityError } from '../../../../src/errors/index.js'
import { encodeTpm2bPublic } from '../../../../src/tpm/structures.js'
import { softEccKey } from '../../tpm/verify/soft-tpm.js'

const INVALID = { code: 'ERR_ATTESTATION_PAYLOAD_INVALID' }
const ek = softEccKey({ ek: true })
const ak = softEccKey()
const payload: TpmAttestationPayload = {
  ekCert: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x01]),
  ekPublic: encodeTpm2bPublic(ek.bytes),
  akPublic: encodeTpm2bPublic(ak.bytes),
  akCreationData: new Uint8Array([1, 2, 3]),
  akCreationAttest: new Uint8Array([4, 5]),
  akCreationSignature: new Uint8Array([6]),
}
const challenge = {
  credentialBlob: new Uint8Array(70).fill(1),
  encryptedSecret: new Uint8Array(70).fill(2),
  nonce: new Uint8Array(32).fill(3),
  pcrBank: 'sha256' as const,
  pcrs: [0, 7, 16],
}
const answer = {
  activatedSecret: new Uint8Array(32).fill(4),
  quoteAttest: new Uint8Array(100).fill(5),
  quoteSignature: new Uint8Array(70).fill(6),
  pcrValues: new Map([
    [16, new Uint8Array(32).fill(7)],
    [0, new Uint8Array(32)],
  ]),
}

const obj = (b: Uint8Array): Record<string, unknown> => JSON.parse(Buffer.from(b).toString()) as Record<string, unknown>
const enc = (o: unknown): Uint8Array => Buffer.from(JSON.stringify(o))

describe('tpm payload', () => {
  it('round-trips the three messages', () => {
    const p = decodePayload(encodePayload(payload))
    expect(Buffer.from(p.akPublic).equals(Buffer.from(payload.akPublic))).toBe(true)
    expect(Buffer.from(p.ak.bytes).equals(ak.bytes)).toBe(true)
    expect(p.ekCert).toEqual(payload.ekCert)
    const { ekCert: _omit, ...noCert } = payload
    expect(decodePayload(encodePayload(noCert)).ekCert).toBeUndefined()
    expect(decodeChallenge(encodeChallenge(challenge))).toEqual(challenge)
    const a = decodeAnswer(encodeAnswer(answer), 'sha256')
    expect([...a.pcrValues.keys()]).toEqual([0, 16])
    expect(a.activatedSecret).toEqual(answer.activatedSecret)
  })

  const p = obj(encodePayload(payload))
  const c = obj(encodeChallenge(challenge))
  const a = obj(encodeAnswer(answer))
  const cases: { title: string; decode: (b: Uint8Array) => unknown; bytes: Uint8Array }[] = [
    { title: 'empty bytes', decode: decodePayload, bytes: new Uint8Array(0) },
    { title: 'truncated JSON', decode: decodePayload, bytes: encodePayload(payload).subarray(0, 50) },
    { title: 'an oversized message', decode: decodePayload, bytes: new Uint8Array(40_000).fill(0x20) },
    { title: 'invalid UTF-8', decode: decodePayload, bytes: new Uint8Array([0x7b, 0xff, 0x7d]) },
    { title: 'a JSON array', decode: decodePayload, bytes: enc([p]) },
    { title: 'another version', decode: decodePayload, bytes: enc({ ...p, v: 2 }) },
    { title: 'an unknown field', decode: decodePayload, bytes: enc({ ...p, extra: 1 }) },
    { title: 'a missing field', decode: decodePayload, bytes: enc({ ...p, ak_public: undefined }) },
    { title: 'non-base64 data', decode: decodePayload, bytes: enc({ ...p, ak_creation_data: '!!!!' }) },
    { title: 'non-canonical base64', decode: decodePayload, bytes: enc({ ...p, ak_creation_data: 'AQJ=' }) },
    { title: 'base64 without padding', decode: decodePayload, bytes: enc({ ...p, ak_creation_signature: 'Bg' }) },
    { title: 'a garbage public area', decode: decodePayload, bytes: enc({ ...p, ak_public: Buffer.from([0, 3, 0, 1, 0]).toString('base64') }) },
    {
      title: 'a public area with trailing bytes',
      decode: decodePayload,
      bytes: enc({ ...p, ak_public: Buffer.concat([Buffer.from(payload.akPublic), Buffer.from([0])]).toString('base64') }),
    },
    { title: 'an oversized EK certificate', decode: decodePayload, bytes: enc({ ...p, ek_cert: Buffer.alloc(9000).toString('base64') }) },
    { title: 'a short nonce', decode: decodeChallenge, bytes: enc({ ...c, nonce: Buffer.alloc(16).toString('base64') }) },
    { title: 'an unknown PCR bank', decode: decodeChallenge, bytes: enc({ ...c, pcr_bank: 'sm3_256' }) },
    { title: 'unsorted PCRs', decode: decodeChallenge, bytes: enc({ ...c, pcrs: [7, 0] }) },
    { title: 'a PCR index out of range', decode: decodeChallenge, bytes: enc({ ...c, pcrs: [24] }) },
    { title: 'a fractional PCR index', decode: decodeChallenge, bytes: enc({ ...c, pcrs: [1.5] }) },
    { title: 'a PCR value that is not hex', decode: decodeAnswer, bytes: enc({ ...a, pcr_values: { '0': 'zz'.repeat(32) } }) },
    { title: 'a PCR key that is not an index', decode: decodeAnswer, bytes: enc({ ...a, pcr_values: { '07': '00'.repeat(32) } }) },
    {
      title: 'a PCR value of the wrong size for the bank',
      decode: (b) => decodeAnswer(b, 'sha256'),
      bytes: enc({ ...a, pcr_values: { '0': '00'.repeat(20) } }),
    },
    { title: 'pcr_values as an array', decode: decodeAnswer, bytes: enc({ ...a, pcr_values: [] }) },
    { title: 'an empty activated secret', decode: decodeAnswer, bytes: enc({ ...a, activated_secret: '' }) },
  ]
  it.each(cases)('rejects $title', ({ decode, bytes }) => {
    expect(() => decode(bytes)).toThrow(expect.objectContaining(INVALID))
  })

  const onlyTypedErrors = (fn: () => unknown): void => {
    try {
      fn()
    } catch (err) {
      if (!isIdentityError(err, 'ERR_ATTESTATION_PAYLOAD_INVALID')) throw err
    }
  }

  it('throws only typed errors for arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        onlyTypedErrors(() => decodePayload(bytes))
        onlyTypedErrors(() => decodeChallenge(bytes))
        onlyTypedErrors(() => decodeAnswer(bytes, 'sha256'))
      }),
      { numRuns: 500 },
    )
  })

  it('throws only typed errors for mutated valid messages', () => {
    const messages = [encodePayload(payload), encodeChallenge(challenge), encodeAnswer(answer)]
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        (which, edits, cut) => {
          const m = Buffer.from(messages[which]!)
          for (const [pos, v] of edits) m[pos % m.length] = v
          const bytes = m.subarray(0, m.length - (cut % 4))
          onlyTypedErrors(() => decodePayload(bytes))
          onlyTypedErrors(() => decodeChallenge(bytes))
          onlyTypedErrors(() => decodeAnswer(bytes, 'sha256'))
        },
      ),
      { numRuns: 1000 },
    )
  })

  it('throws only typed errors for structurally valid JSON with random field values', () => {
    const b64 = fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b).toString('base64'))
    const field = fc.oneof(
      b64,
      fc.string(),
      fc.integer(),
      fc.constant(null),
      fc.array(fc.integer({ min: -2, max: 30 })),
      fc.dictionary(fc.string(), fc.string()),
    )
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom(...Object.keys(p), ...Object.keys(c), ...Object.keys(a)), field), (o) => {
        const bytes = enc({ v: 1, ...o })
        onlyTypedErrors(() => decodePayload(bytes))
        onlyTypedErrors(() => decodeChallenge(bytes))
        onlyTypedErrors(() => decodeAnswer(bytes, 'sha256'))
      }),
      { numRuns: 1000 },
    )
  })
})
