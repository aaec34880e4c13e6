import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { TPM_ALG, TPM_ST, encodeTpmtSignature, parseTpmtSignature, pcrSelection, tpmHash } from '../../../../src/tpm/structures.js'
import { verifyAkPublic } from '../../../../src/tpm/verify/ak.js'
import { verifyQuote } from '../../../../src/tpm/verify/quote.js'
import { softEccKey, softQuote, softRsaKey, softSign, attestBytes, type SoftKey } from './soft-tpm.js'

const FAILED = { code: 'ERR_TPM_VERIFICATION_FAILED' }

function pcrMap(indices: number[]): Map<number, Uint8Array> {
  return new Map(indices.map((i) => [i, new Uint8Array(randomBytes(32))]))
}

const aks: { title: string; ak: () => SoftKey }[] = [
  { title: 'ECC P-256 ECDSA', ak: () => softEccKey() },
  { title: 'ECC P-384 ECDSA', ak: () => softEccKey({ curve: 'P-384' }) },
  { title: 'RSA-2048 RSASSA', ak: () => softRsaKey() },
  { title: 'RSA-2048 RSAPSS', ak: () => softRsaKey({ scheme: TPM_ALG.RSAPSS }) },
]

describe('verifyQuote', () => {
  it.each(aks)('accepts a valid quote ($title)', ({ ak }) => {
    const key = ak()
    const nonce = randomBytes(32)
    const pcrs = pcrMap([0, 1, 7, 16])
    const q = softQuote(key, nonce, pcrs)
    const v = verifyQuote({ akPublic: key.bytes, ...q, nonce, pcrs: { hash: 'sha256', values: pcrs }, requiredSelection: [0, 16] })
    expect([...v.pcrs.keys()]).toEqual([0, 1, 7, 16])
    expect(v.clockInfo.resetCount).toBe(1)
  })

  const key = softEccKey()
  const nonce = new Uint8Array(randomBytes(32))
  const pcrs = pcrMap([0, 1, 2, 16])
  const good = { ...softQuote(key, nonce, pcrs), digest: tpmHash(TPM_ALG.SHA256, ...[0, 1, 2, 16].map((i) => pcrs.get(i)!)) }
  const base = { akPublic: key.bytes, attest: good.attest, signature: good.signature, nonce, pcrs: { hash: 'sha256' as const, values: pcrs } }

  const tamperedValues = new Map(pcrs)
  tamperedValues.set(16, new Uint8Array(32).fill(0xaa))
  const missing = new Map(pcrs)
  missing.delete(2)
  const extra = new Map(pcrs)
  extra.set(23, new Uint8Array(32))
  const shortValue = new Map(pcrs)
  shortValue.set(0, new Uint8Array(20))
  const badDigest = softQuote(key, nonce, pcrs, { digestValues: [new Uint8Array(32)] })
  const otherBank = softQuote(key, nonce, pcrs, { extraBanks: [{ hash: TPM_ALG.SHA1, pcrs: [0] }] })
  const sig = parseTpmtSignature(good.signature)
  const flipped = sig.sigAlg === TPM_ALG.ECDSA ? { ...sig, s: sig.s.map((b, i) => (i === 5 ? b ^ 1 : b)) } : sig
  const sha1Sig = softSign(key, good.attest, { hash: TPM_ALG.SHA1 })
  const notQuote = attestBytes({ type: TPM_ST.ATTEST_CREATION, objectName: key.name, creationHash: new Uint8Array(32) }, nonce)

  const signed = (pcrSelect: Parameters<typeof pcrSelection>[0]) => {
    const attest = attestBytes({ type: TPM_ST.ATTEST_QUOTE, pcrSelect: pcrSelection(pcrSelect), pcrDigest: good.digest }, nonce)
    return { attest, signature: softSign(key, attest) }
  }

  type Case = { title: string; params: Parameters<typeof verifyQuote>[0]; reason: string; details?: Record<string, unknown> }
  const cases: Case[] = [
    { title: 'an old nonce', params: { ...base, nonce: new Uint8Array(randomBytes(32)) }, reason: 'quote nonce does not match the challenge' },
    { title: 'a truncated nonce', params: { ...base, nonce: nonce.subarray(0, 31) }, reason: 'quote nonce does not match the challenge' },
    { title: 'another AK', params: { ...base, akPublic: softEccKey().bytes }, reason: 'quote signature is invalid' },
    {
      title: 'another AK of another type',
      params: { ...base, akPublic: softRsaKey().bytes },
      reason: "quote signature scheme does not match the signing key's scheme",
      details: { sigAlg: TPM_ALG.ECDSA, keyScheme: TPM_ALG.RSASSA },
    },
    {
      title: 'tampered PCR values',
      params: { ...base, pcrs: { hash: 'sha256', values: tamperedValues } },
      reason: 'reported PCR values do not match the quoted digest',
    },
    {
      title: 'a tampered digest',
      params: { ...base, attest: badDigest.attest, signature: badDigest.signature },
      reason: 'reported PCR values do not match the quoted digest',
    },
    {
      title: 'a quoted PCR that was not reported',
      params: { ...base, pcrs: { hash: 'sha256', values: missing } },
      reason: 'quoted PCR was not reported',
      details: { pcr: 2 },
    },
    {
      title: 'a reported PCR that was not quoted',
      params: { ...base, pcrs: { hash: 'sha256', values: extra } },
      reason: 'reported PCR is not covered by the quote',
      details: { pcr: 23 },
    },
    {
      title: 'a PCR value of the wrong size',
      params: { ...base, pcrs: { hash: 'sha256', values: shortValue } },
      reason: 'reported PCR value has the wrong size',
      details: { pcr: 0, size: 20 },
    },
    { title: 'a missing required PCR', params: { ...base, requiredSelection: [0, 7] }, reason: 'quote does not cover a required PCR', details: { pcr: 7 } },
    {
      title: 'a quote of another bank too',
      params: { ...base, attest: otherBank.attest, signature: otherBank.signature },
      reason: 'quote covers PCRs that were not reported',
      details: { bank: TPM_ALG.SHA1 },
    },
    {
      title: 'a quote of one bank in two selections',
      params: {
        ...base,
        ...signed([
          { hash: TPM_ALG.SHA256, pcrs: [0, 1] },
          { hash: TPM_ALG.SHA256, pcrs: [2, 16] },
        ]),
      },
      reason: 'quote covers PCRs that were not reported',
      details: { bank: TPM_ALG.SHA256 },
    },
    { title: 'a quote of no PCRs', params: { ...base, ...signed([{ hash: TPM_ALG.SHA256, pcrs: [] }]) }, reason: 'quote covers no PCRs' },
    {
      title: 'values reported for another bank',
      params: { ...base, pcrs: { hash: 'sha1', values: pcrs } },
      reason: 'quote covers PCRs that were not reported',
      details: { bank: TPM_ALG.SHA256 },
    },
    { title: 'a bad signature', params: { ...base, signature: encodeTpmtSignature(flipped) }, reason: 'quote signature is invalid' },
    { title: 'a signature over other data', params: { ...base, signature: softSign(key, badDigest.attest) }, reason: 'quote signature is invalid' },
    {
      title: 'a SHA-1 signature',
      params: { ...base, signature: sha1Sig },
      reason: 'quote signature uses a weak or unsupported hash',
      details: { hash: TPM_ALG.SHA1 },
    },
    { title: 'a garbage signature', params: { ...base, signature: new Uint8Array([0, 0x18, 0]) }, reason: 'quote signature is malformed' },
    {
      title: 'a tampered attest',
      params: { ...base, attest: good.attest.map((b, i) => (i === good.attest.length - 1 ? b ^ 1 : b)) },
      reason: 'quote signature is invalid',
    },
    {
      title: 'a truncated attest, validly signed',
      params: { ...base, attest: good.attest.subarray(0, 20), signature: softSign(key, good.attest.subarray(0, 20)) },
      reason: 'quote is malformed',
    },
    {
      title: 'a non-quote attestation',
      params: { ...base, attest: notQuote, signature: softSign(key, notQuote) },
      reason: 'attestation is not a quote',
      details: { type: TPM_ST.ATTEST_CREATION },
    },
    {
      title: 'an AK that is not restricted',
      params: { ...base, akPublic: softEccKey({ attrs: 0x00040072 }).bytes },
      reason: 'AK attribute restricted is not set',
    },
  ]
  it.each(cases)('rejects $title, with the reason', ({ params, reason, details }) => {
    expect(() => verifyQuote(params)).toThrow(expect.objectContaining({ ...FAILED, message: reason, ...(details ? { details } : {}) }))
  })

  it('skips empty selections of other banks', () => {
    const q = signed([
      { hash: TPM_ALG.SHA1, pcrs: [] },
      { hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 16] },
      { hash: TPM_ALG.SHA384, pcrs: [] },
    ])
    expect([...verifyQuote({ ...base, ...q }).pcrs.keys()]).toEqual([0, 1, 2, 16])
  })

  it('takes the AK as public area bytes, decoded, or already verified', () => {
    for (const akPublic of [key.bytes, key.public, verifyAkPublic(key.bytes)]) {
      expect(verifyQuote({ ...base, akPublic }).pcrs.size).toBe(4)
    }
  })

  it('rejects a bad magic even with a valid signature', () => {
    const a = attestBytes({ type: TPM_ST.ATTEST_QUOTE, pcrSelect: [], pcrDigest: new Uint8Array(32) }, nonce, { magic: 0xff544346 })
    expect(() => verifyQuote({ ...base, attest: a, signature: softSign(key, a) })).toThrow(
      expect.objectContaining({ ...FAILED, message: 'quote is malformed' }),
    )
  })
})
