import { createHmac } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { kdfa, kdfe } from '../../../../src/tpm/verify/kdf.js'

const hex = (s: string): Uint8Array => Buffer.from(s, 'hex')
const toHex = (b: Uint8Array): string => Buffer.from(b).toString('hex')

// KDFa self-test vectors of the TCG reference implementation (libtpms KdfTestData.h):
// key 271fa0…, label "KDFSELFTESTLABEL\0", contextU ce244f…, contextV da5040…, 160 bits.
const KDFA_KEY = '271fa08bbdc5060ec3dfa928ff9b73123a12da0c'
const KDFA_LABEL = 'KDFSELFTESTLABEL'
const KDFA_U = 'ce244f395dca7391'
const KDFA_V = 'da504031ddf12e83'
const kdfaVectors = [
  { title: 'sha1', hash: 'sha1', expected: '55b5a7184aa07423c47dae766c26a2377d7cf851' },
  { title: 'sha256', hash: 'sha256', expected: 'bb0259e1c8ba607e6a2cd704b69a902e9ade84c4' },
  { title: 'sha384', hash: 'sha384', expected: '1dce70c9113eb2dba47bd9cfc72bf46f45b09312' },
  { title: 'sha512', hash: 'sha512', expected: '8be2c1b85b78569b9fa759f5857c56d684810fd3' },
] as const

// KDFe vectors from chrisfenner/tpm-test-vectors (vectors/kdfe.json), generated with go-tpm
// and validated against a TPM simulator.
const kdfeVectors = [
  {
    title: '06_SHA1_32',
    hash: 0x0004,
    z: '9b050039c8e5ca60deeb978f2faf573c94af61',
    label: 'IDENTITY',
    u: 'ff1a1852db7b60a5c963f17eb306f3a905d100ae',
    v: '0047ee45771a256d58b091b6d6',
    bits: 32,
    expected: '94c3c160',
  },
  {
    title: '22_SHA1_7 (odd bit count)',
    hash: 0x0004,
    z: '356f9d00d61b54cf010580b1755d1975905c00',
    label: 'CFB',
    u: '006c5c2bcdd650f6c836dba98c4734',
    v: '8849bd3d05d69f',
    bits: 7,
    expected: '58',
  },
  {
    title: '31_SHA256_13',
    hash: 0x000b,
    z: '739245447ead0deea5f834f06e043159c6ff',
    label: 'IDENTITY',
    u: 'ad503e36c2314ec9afa2f4047bf19ce7fbc6fe2def32c58459c0fc828c00',
    v: 'ba6dd80b788034161743c95e8ef7a9486fbd69d3ff',
    bits: 13,
    expected: '0956',
  },
  {
    title: '35_SHA256_336 (multi-block)',
    hash: 0x000b,
    z: '8995a6318a0217c7c7bf543f50da29016c4ff2a1ea5daf54ebcb00',
    label: 'INTEGRITY',
    u: '8852f14d8e9b68',
    v: '74ff',
    bits: 336,
    expected: '92343ef558feb95fd14838f9ca39c8618598a7eeb31af7fc276030b8c3ff326d4870f190e54abbec9da4',
  },
  {
    title: '37_SHA256_431 (empty V)',
    hash: 0x000b,
    z: 'e89fc5304cf46c1cf7d1f5de5d3d1ec7eddc80b0386700',
    label: 'SECRET',
    u: 'e602bc959fd97af0405649e0c80e02e9dd64e9d79e698292b043c79dfa9f9261',
    v: '',
    bits: 431,
    expected: '3a8e893b8b76cdddbf87845b2567fa7152577829f6a55b73cb82d4a1f0342a051d6e50e20ec2f96bc4de38d7d0d79a9caf99e1d574b9',
  },
  {
    title: '72_SHA384_79',
    hash: 0x000c,
    z: '67d2210f344df271e1c960d595814c4aeb9706c24aa42d2d97914d1bd1452b54ec69a42d07',
    label: 'STORAGE',
    u: 'd3e7df7d31ef352ce0214cc940f4703488621339fa87eb2cb872093cbc00',
    v: '5ea33fdb57e2e9649e5be68cf9643c58d6da596c9f',
    bits: 79,
    expected: '32c262b6c9fec57cf217',
  },
  {
    title: '89_SHA512_590 (empty U)',
    hash: 0x000d,
    z: 'e1d2e700',
    label: 'SECRET',
    u: '',
    v: 'fffcf34e848b9cfe54a0be31766d7044b467cab4829e49bcfe38',
    bits: 590,
    expected:
      '2c0d227eb22e8b002dbe8f27a8eea0d71bde6c87d6749ec0441324b3a0eb11aba611d6b4e8e0ea569512031df5d806be60f77295d13790c6fa647477be047d72cc84e697c29b5f235251',
  },
] as const

describe('kdfa', () => {
  it.each(kdfaVectors)('matches the reference self-test vector ($title)', ({ hash, expected }) => {
    const out = kdfa({ hash, key: hex(KDFA_KEY), label: KDFA_LABEL, contextU: hex(KDFA_U), contextV: hex(KDFA_V), bits: 160 })
    expect(toHex(out)).toBe(expected)
  })

  it('treats a label that already ends in a zero octet like the string label', () => {
    const a = kdfa({ hash: 'sha256', key: hex(KDFA_KEY), label: KDFA_LABEL, bits: 256 })
    const b = kdfa({ hash: 'sha256', key: hex(KDFA_KEY), label: Buffer.from(`${KDFA_LABEL}\0`), bits: 256 })
    expect(toHex(a)).toBe(toHex(b))
  })

  it('depends on the output size (bits are hashed in)', () => {
    const a = kdfa({ hash: 'sha256', key: hex(KDFA_KEY), label: 'STORAGE', bits: 128 })
    const b = kdfa({ hash: 'sha256', key: hex(KDFA_KEY), label: 'STORAGE', bits: 256 })
    expect(a.length).toBe(16)
    expect(toHex(b).startsWith(toHex(a))).toBe(false)
  })

  it.each([0, -8, 1.5])('rejects output size %s', (bits) => {
    expect(() => kdfa({ hash: 'sha256', key: hex(KDFA_KEY), label: 'X', bits })).toThrow(RangeError)
  })

  it('rejects an unknown hash algorithm', () => {
    expect(() => kdfa({ hash: 0x0012, key: hex(KDFA_KEY), label: 'X', bits: 8 })).toThrow(RangeError)
  })
})

describe('kdfe', () => {
  it.each(kdfeVectors)('matches $title', ({ hash, z, label, u, v, bits, expected }) => {
    const out = kdfe({ hash, z: hex(z), label, partyUInfo: hex(u), partyVInfo: hex(v), bits })
    expect(toHex(out)).toBe(expected)
  })
})

describe('kdf bounds', () => {
  it('derives a multi-block KDFa output as SP800-108 counter mode defines it', () => {
    const key = hex(KDFA_KEY)
    const bits = 512 + 24
    const block = (i: number) => {
      const n = Buffer.alloc(4)
      n.writeUInt32BE(i)
      const l = Buffer.alloc(4)
      l.writeUInt32BE(bits)
      return createHmac('sha256', key).update(n).update('STORAGE\0').update(hex(KDFA_U)).update(l).digest()
    }
    const expected = Buffer.concat([block(1), block(2), block(3)]).subarray(0, bits / 8)
    expect(toHex(kdfa({ hash: 'sha256', key, label: 'STORAGE', contextU: hex(KDFA_U), bits }))).toBe(toHex(expected))
  })

  it('accepts the largest output size and refuses one bit more', () => {
    expect(kdfe({ hash: 'sha256', z: hex('01'), label: 'X', bits: 0xffff * 8 }).length).toBe(0xffff)
    expect(() => kdfe({ hash: 'sha256', z: hex('01'), label: 'X', bits: 0xffff * 8 + 1 })).toThrow(new RangeError(`invalid KDF output size ${0xffff * 8 + 1}`))
  })
})
