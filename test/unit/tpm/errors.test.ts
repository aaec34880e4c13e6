import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { TPM_RC, TpmError, decodeResponseCode, formatResponseCode, isTpmError } from '../../../src/tpm/errors.js'

describe('TPM response codes', () => {
  it.each([
    [0x100, 'TPM_RC_INITIALIZE (0x100)', TPM_RC.INITIALIZE],
    [0x902, 'TPM_RC_OBJECT_MEMORY (0x902)', TPM_RC.OBJECT_MEMORY],
    [0x922, 'TPM_RC_RETRY (0x922)', TPM_RC.RETRY],
    [0x1df, 'TPM_RC_INTEGRITY (0x1df) on parameter 1', TPM_RC.INTEGRITY],
    [0x1c4, 'TPM_RC_VALUE (0x1c4) on parameter 1', TPM_RC.VALUE],
    [0x1d5, 'TPM_RC_SIZE (0x1d5) on parameter 1', TPM_RC.SIZE],
    [0x98e, 'TPM_RC_AUTH_FAIL (0x98e) on session 1', TPM_RC.AUTH_FAIL],
    [0x99d, 'TPM_RC_POLICY_FAIL (0x99d) on session 1', TPM_RC.POLICY_FAIL],
    [0x18b, 'TPM_RC_HANDLE (0x18b) on handle 1', TPM_RC.HANDLE],
    [0x28b, 'TPM_RC_HANDLE (0x28b) on handle 2', TPM_RC.HANDLE],
    [0x1cb, 'TPM_RC_HANDLE (0x1cb) on parameter 1', TPM_RC.HANDLE],
    [0x14c, 'TPM_RC_NV_DEFINED (0x14c)', TPM_RC.NV_DEFINED],
    [0x17f, 'TPM_RC_UNKNOWN (0x17f)', 0x17f],
    [0x0a0010, 'TSS_RC_LAYER (0xa0010)', 0x0a0010],
  ])('0x%s → %s', (rc, text, base) => {
    expect(formatResponseCode(rc)).toBe(text)
    expect(decodeResponseCode(rc).base).toBe(base)
  })

  it('TpmError is an IdentityError with code ERR_TPM, rc and command', () => {
    const e = new TpmError(0x1df, 'ActivateCredential')
    expect(e).toBeInstanceOf(IdentityError)
    expect(e.code).toBe('ERR_TPM')
    expect(e.rc).toBe(0x1df)
    expect(e.command).toBe('ActivateCredential')
    expect(e.base).toBe(TPM_RC.INTEGRITY)
    expect(e.message).toBe('TPM2_ActivateCredential failed: TPM_RC_INTEGRITY (0x1df) on parameter 1')
    expect(isTpmError(e, TPM_RC.INTEGRITY)).toBe(true)
    expect(isTpmError(e, TPM_RC.SIZE)).toBe(false)
    expect(decodeResponseCode(0).kind).toBe('success')
    expect(decodeResponseCode(0x02).kind).toBe('tpm12')
    expect(decodeResponseCode(0x500).kind).toBe('vendor')
  })
})
