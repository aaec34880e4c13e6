import { describe, expect, it } from 'vitest'
import { fromHex, toHex } from '../../../src/tpm/marshal.js'
import { extractEkCertificateDer } from '../../../src/tpm/attest-client.js'

const der = '3082000401020304' // SEQUENCE, 2-byte length 4
describe('extractEkCertificateDer', () => {
  it.each([
    ['raw DER', der, der],
    ['short-form length', '30020102', '30020102'],
    ['trailing padding', der + 'ffffffff', der],
    ['PC Client prefix', '100100' + '0008' + der, der],
    ['prefix and padding', '100100' + '0008' + der + '0000', der],
  ])('%s', (_n, input, want) => {
    expect(toHex(extractEkCertificateDer(fromHex(input)))).toBe(want)
  })
  it.each([
    ['not DER', '0102'],
    ['truncated', '3082001001'],
    ['prefix longer than data', '1001000010' + der],
    ['indefinite length', '3080'],
    ['empty', ''],
  ])('rejects %s', (_n, input) => {
    expect(() => extractEkCertificateDer(fromHex(input))).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })
})
