import { TPM_ST, hashDigestSize, pcrSelectIndices, tpmHash, type TpmsAttest, type TpmsClockInfo } from '../structures.js'
import { verifyAkPublic, type VerifiedAk } from './ak.js'
import { hashAlgId } from './hash.js'
import type { EkPublicInput } from './public-key.js'
import { constantTimeEqual, parseAttest, verificationFailed, verifyTpmSignature } from './signature.js'

export type PcrBankName = 'sha1' | 'sha256' | 'sha384'

export interface PcrValues {
  hash: PcrBankName
  /** PCR index → value, as read with TPM2_PCR_Read. */
  values: Map<number, Uint8Array>
}

export interface VerifyQuoteParams {
  /** The AK: its public area, or an AK already checked with `verifyAkPublic`. */
  akPublic: EkPublicInput | VerifiedAk
  /** TPMS_ATTEST bytes signed by the AK (TPM2_Quote's quoted, without the TPM2B size). */
  attest: Uint8Array
  /** TPMT_SIGNATURE. */
  signature: Uint8Array
  /** The verifier's fresh nonce, sent as qualifyingData. */
  nonce: Uint8Array
  pcrs: PcrValues
  /** PCR indices (in `pcrs.hash`'s bank) the quote must cover. */
  requiredSelection?: readonly number[]
}

export interface VerifiedQuote {
  attest: TpmsAttest
  clockInfo: TpmsClockInfo
  /** PCR index → value of the quoted bank, ascending by index. */
  pcrs: Map<number, Uint8Array>
}

/**
 * Verifies a TPM2_Quote: the AK signature (RSASSA, RSAPSS or ECDSA), magic and
 * type QUOTE, extraData equal to the nonce, a quote selection that covers
 * exactly the reported PCRs (and `requiredSelection`), and a pcrDigest equal
 * to H_sig(PCR values in selection order). Throws ERR_TPM_VERIFICATION_FAILED.
 */
export function verifyQuote(p: VerifyQuoteParams): VerifiedQuote {
  const ak = isVerifiedAk(p.akPublic) ? p.akPublic : verifyAkPublic(p.akPublic)
  const sig = verifyTpmSignature({ public: ak.public, key: ak.key }, p.attest, p.signature, 'quote')
  const attest = parseAttest(p.attest, 'quote')
  if (attest.attested.type !== TPM_ST.ATTEST_QUOTE) verificationFailed('attestation is not a quote', { type: attest.type })
  if (!constantTimeEqual(attest.extraData, p.nonce)) verificationFailed('quote nonce does not match the challenge')

  const bankAlg = hashAlgId(p.pcrs.hash)
  const valueSize = hashDigestSize(bankAlg)
  let quoted: number[] | undefined
  for (const sel of attest.attested.pcrSelect) {
    const indices = pcrSelectIndices(sel.pcrSelect)
    if (indices.length === 0) continue
    if (sel.hash !== bankAlg || quoted !== undefined) {
      verificationFailed('quote covers PCRs that were not reported', { bank: sel.hash })
    }
    quoted = indices
  }
  if (quoted === undefined) verificationFailed('quote covers no PCRs')
  const quotedSet = new Set(quoted)
  for (const idx of p.pcrs.values.keys()) {
    if (!quotedSet.has(idx)) verificationFailed('reported PCR is not covered by the quote', { pcr: idx })
  }
  for (const idx of quoted) {
    if (!p.pcrs.values.has(idx)) verificationFailed('quoted PCR was not reported', { pcr: idx })
  }
  for (const idx of p.requiredSelection ?? []) {
    if (!quotedSet.has(idx)) verificationFailed('quote does not cover a required PCR', { pcr: idx })
  }
  const ordered = new Map<number, Uint8Array>()
  const parts: Uint8Array[] = []
  for (const idx of quoted) {
    const v = p.pcrs.values.get(idx)!
    if (v.length !== valueSize) verificationFailed('reported PCR value has the wrong size', { pcr: idx, size: v.length })
    ordered.set(idx, v)
    parts.push(v)
  }
  const digest = tpmHash(sig.hash, ...parts)
  if (!constantTimeEqual(digest, attest.attested.pcrDigest)) verificationFailed('reported PCR values do not match the quoted digest')
  return { attest, clockInfo: attest.clockInfo, pcrs: ordered }
}

function isVerifiedAk(x: EkPublicInput | VerifiedAk): x is VerifiedAk {
  return !(x instanceof Uint8Array) && 'name' in x && 'key' in x && 'bytes' in x
}
