import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { TpmReader, TpmWriter, fromHex, toHex } from '../../../src/tpm/marshal.js'

describe('TpmWriter / TpmReader', () => {
  it('round-trips every primitive big-endian', () => {
    const bytes = new TpmWriter(4).u8(0xab).u16(0x1234).u32(0xdeadbeef).u64(0x0102030405060708n).i32(-2).tpm2b(fromHex('cafe')).bytes(fromHex('ff')).finish()
    expect(toHex(bytes)).toBe('ab1234deadbeef0102030405060708fffffffe0002cafeff')
    const r = new TpmReader(bytes)
    expect(r.u8()).toBe(0xab)
    expect(r.u16()).toBe(0x1234)
    expect(r.u32()).toBe(0xdeadbeef)
    expect(r.u64()).toBe(0x0102030405060708n)
    expect(r.i32()).toBe(-2)
    expect(toHex(r.tpm2b())).toBe('cafe')
    expect(toHex(r.bytes(1))).toBe('ff')
    r.expectEnd()
  })

  it('patchU32 and sized nest a TPM2B', () => {
    const w = new TpmWriter().u32(0).sized((i) => i.u16(7))
    w.patchU32(0, w.length)
    expect(toHex(w.finish())).toBe('00000008' + '0002' + '0007')
  })

  it.each([
    ['u8 past end', (r: TpmReader) => r.u8(), ''],
    ['u16 truncated', (r: TpmReader) => r.u16(), '01'],
    ['u32 truncated', (r: TpmReader) => r.u32(), '010203'],
    ['u64 truncated', (r: TpmReader) => r.u64(), '01020304050607'],
    ['tpm2b longer than buffer', (r: TpmReader) => r.tpm2b(), '0005aabb'],
    ['tpm2b over cap', (r: TpmReader) => r.tpm2b('x', 1), '0002aabb'],
    ['trailing bytes', (r: TpmReader) => r.expectEnd(), '00'],
    ['sized not fully consumed', (r: TpmReader) => r.sized('x', (i) => i.u8()), '00020102'],
  ])('%s throws ERR_TPM_PAYLOAD_INVALID', (_name, fn, hex) => {
    const r = new TpmReader(fromHex(hex))
    expect(() => fn(r)).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })

  it('rejects out-of-range writes with RangeError', () => {
    expect(() => new TpmWriter().u8(256)).toThrow(RangeError)
    expect(() => new TpmWriter().u16(-1)).toThrow(RangeError)
    expect(() => new TpmWriter().u32(2 ** 32)).toThrow(RangeError)
    expect(() => new TpmWriter().tpm2b(new Uint8Array(0x10000))).toThrow(RangeError)
  })

  it('fuzz: random reads on random bytes only throw IdentityError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.array(fc.integer({ min: 0, max: 6 }), { maxLength: 20 }), (buf, ops) => {
        const r = new TpmReader(buf)
        try {
          for (const op of ops) {
            switch (op) {
              case 0:
                r.u8()
                break
              case 1:
                r.u16()
                break
              case 2:
                r.u32()
                break
              case 3:
                r.u64()
                break
              case 4:
                r.tpm2b()
                break
              case 5:
                r.sized('s', (i) => i.u16())
                break
              default:
                r.expectEnd()
            }
          }
        } catch (err) {
          expect(err).toBeInstanceOf(IdentityError)
          expect((err as IdentityError).code).toBe('ERR_TPM_PAYLOAD_INVALID')
        }
      }),
      { numRuns: 2000 },
    )
  })
})
