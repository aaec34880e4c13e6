import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { canonicalBytes, canonicalJson } from '../../../src/audit/canonical.js'

interface Vector {
  title: string
  source: string
  input: string
  expected_hex: string
}

/** The RFC 8785 author's test data (input → canonical output bytes), kept as data. */
const vectors = JSON.parse(readFileSync(new URL('./fixtures/jcs-vectors.json', import.meta.url), 'utf8')) as Vector[]

/** RFC 8785 Appendix B: IEEE 754 doubles (hex) and their canonical serialization. */
const NUMBERS: [string, string][] = [
  ['0000000000000000', '0'],
  ['8000000000000000', '0'],
  ['0000000000000001', '5e-324'],
  ['8000000000000001', '-5e-324'],
  ['7fefffffffffffff', '1.7976931348623157e+308'],
  ['ffefffffffffffff', '-1.7976931348623157e+308'],
  ['4340000000000000', '9007199254740992'],
  ['c340000000000000', '-9007199254740992'],
  ['4430000000000000', '295147905179352830000'],
  ['44b52d02c7e14af5', '9.999999999999997e+22'],
  ['44b52d02c7e14af6', '1e+23'],
  ['44b52d02c7e14af7', '1.0000000000000001e+23'],
  ['444b1ae4d6e2ef4e', '999999999999999700000'],
  ['444b1ae4d6e2ef4f', '999999999999999900000'],
  ['444b1ae4d6e2ef50', '1e+21'],
  ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
  ['3eb0c6f7a0b5ed8d', '0.000001'],
  ['41b3de4355555553', '333333333.3333332'],
  ['41b3de4355555554', '333333333.33333325'],
  ['41b3de4355555555', '333333333.3333333'],
  ['41b3de4355555556', '333333333.3333334'],
  ['41b3de4355555557', '333333333.33333343'],
  ['becbf647612f3696', '-0.0000033333333333333333'],
  ['43143ff3c1cb0959', '1424953923781206.2'],
]

const double = (hex: string): number => Buffer.from(hex, 'hex').readDoubleBE(0)

describe('canonicalJson (RFC 8785)', () => {
  it.each(vectors.map((v) => [v.title, v] as const))('matches the RFC 8785 vector %s byte for byte', (_t, v) => {
    expect(Buffer.from(canonicalBytes(JSON.parse(v.input))).toString('hex')).toBe(v.expected_hex)
  })

  it.each(NUMBERS)('serializes the double %s as %s (Appendix B)', (hex, expected) => {
    expect(canonicalJson(double(hex))).toBe(expected)
  })

  it('refuses NaN, Infinity, lone surrogates and undefined (TypeError)', () => {
    expect(() => canonicalJson(double('7fffffffffffffff'))).toThrow(TypeError)
    expect(() => canonicalJson(double('7ff0000000000000'))).toThrow(TypeError)
    expect(() => canonicalJson({ a: '\ud800' })).toThrow(TypeError)
    expect(() => canonicalJson(undefined)).toThrow(TypeError)
  })

  it('sorts members by UTF-16 code units, not by code point or locale', () => {
    // U+FB33 (one unit) sorts after U+1F602 (surrogates D83D DE02) in UTF-16 order
    expect(canonicalJson({ '\ufb33': 1, '\u{1f602}': 2, '\u00f6': 3 })).toBe('{"\u00f6":3,"\u{1f602}":2,"\ufb33":1}')
  })
})
