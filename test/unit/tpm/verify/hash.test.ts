import { describe, expect, it } from 'vitest'
import { digestSizeOf, hashAlgId, hashNameOf, toHashName, type TpmHashName } from '../../../../src/tpm/verify/hash.js'

const HASHES: [number, TpmHashName, number][] = [
  [0x0004, 'sha1', 20],
  [0x000b, 'sha256', 32],
  [0x000c, 'sha384', 48],
  [0x000d, 'sha512', 64],
]

describe('TPM hash algorithms', () => {
  it.each(HASHES)('maps 0x%s to %s (%i bytes) both ways', (id, name, size) => {
    expect(hashNameOf(id)).toBe(name)
    expect(hashAlgId(name)).toBe(id)
    expect(toHashName(id)).toBe(name)
    expect(toHashName(name)).toBe(name)
    expect(digestSizeOf(id)).toBe(size)
    expect(digestSizeOf(name)).toBe(size)
  })

  it('refuses unsupported algorithms with a RangeError naming them', () => {
    expect(hashNameOf(0x0012)).toBeUndefined()
    expect(() => digestSizeOf(0x0012)).toThrow(new RangeError('unsupported TPM hash algorithm 18'))
    expect(() => digestSizeOf('md5' as TpmHashName)).toThrow(new RangeError('unsupported TPM hash algorithm md5'))
    expect(() => hashAlgId('md5' as TpmHashName)).toThrow(new RangeError('unsupported hash md5'))
    expect(() => toHashName(0x0012)).toThrow(new RangeError('unsupported TPM hash algorithm 0x12'))
    expect(() => toHashName('md5' as TpmHashName)).toThrow(new RangeError('unsupported hash md5'))
  })
})
