import { describe, expect, it } from 'vitest'
import {
  bitString,
  children,
  cons,
  contents,
  DER_NULL,
  DER_TRUE,
  DerError,
  encode,
  expect as expectTlv,
  integerBytes,
  octetString,
  oid,
  p1363ToDer,
  p1363ToDerNode,
  readBitString,
  readBoolean,
  readOid,
  readRoot,
  readSmallInteger,
  readTime,
  readTlv,
  seq,
  set,
  smallInteger,
  stringValue,
  TAG,
  time,
  timeMemo,
  tlv,
  unsignedInteger,
  unsignedIntegerNode,
  whole,
} from '../../../../src/spiffe/x509-svid/der.js'

// der.ts: the encoder's exact bytes at every length and value boundary, and
// each refusal of the strict reader with its message (test/mutation-survivors.md,
// x509-svid). Titles stay plain: Stryker's vitest runner selects tests by name.

const hex = (b: Uint8Array) => Buffer.from(b).toString('hex')
const bytes = (h: string) => new Uint8Array(Buffer.from(h.replace(/ /g, ''), 'hex'))

function derError(fn: () => unknown): string {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(DerError)
    expect((err as Error).name).toBe('DerError')
    return (err as Error).message
  }
  throw new Error('no DerError')
}

describe('DER encoding', () => {
  it('writes the length in the fewest bytes at each boundary', () => {
    const cases: Array<[number, string]> = [
      [0, '0400'],
      [0x7f, '047f'],
      [0x80, '048180'],
      [0xff, '0481ff'],
      [0x100, '04820100'],
      [0xffff, '0482ffff'],
      [0x10000, '0483010000'],
      [0xffffff, '0483ffffff'],
      [0x1000000, '048401000000'],
    ]
    for (const [len, head] of cases) {
      const t = tlv(TAG.OCTET_STRING, new Uint8Array(len))
      expect(hex(t.subarray(0, head.length / 2))).toBe(head)
      expect(t.length).toBe(head.length / 2 + len)
      const n = encode(cons(TAG.OCTET_STRING, new Uint8Array(len)))
      expect(hex(n.subarray(0, head.length / 2))).toBe(head)
      expect(n.length).toBe(t.length)
    }
  })

  it('concatenates the parts', () => {
    expect(hex(tlv(0x30, bytes('01'), bytes('0203'), bytes('')))).toBe('3003010203')
    expect(hex(seq(DER_NULL, DER_TRUE))).toBe('30050500' + '0101ff')
    expect(hex(set(DER_NULL))).toBe('31020500')
    expect(hex(octetString(bytes('aa')))).toBe('0401aa')
    expect(hex(bitString(bytes('aa')))).toBe('030200aa')
  })

  it('encodes a nested tree in one pass', () => {
    const tree = cons(0x30, bytes('0500'), cons(0x31, cons(0x04, bytes('aabb'))), new Uint8Array(0))
    expect(hex(encode(tree))).toBe('3008' + '0500' + '3104' + '0402aabb')
    expect(hex(encode(bytes('0500')))).toBe('0500')
  })

  it('writes unsigned integers minimally, with a zero byte before a high bit', () => {
    const cases: Array<[string, string]> = [
      ['', '020100'],
      ['00', '020100'],
      ['0000', '020100'],
      ['01', '020101'],
      ['0001', '020101'],
      ['7f', '02017f'],
      ['80', '02020080'],
      ['0080', '02020080'],
      ['000080', '02020080'],
      ['ff', '020200ff'],
      ['0100', '02020100'],
      ['00ff01', '020300ff01'],
    ]
    for (const [m, want] of cases) {
      expect(hex(unsignedInteger(bytes(m)))).toBe(want)
      expect(hex(encode(unsignedIntegerNode(bytes(m))))).toBe(want)
    }
  })

  it('writes small integers and refuses others', () => {
    const cases: Array<[number, string]> = [
      [0, '020100'],
      [1, '020101'],
      [127, '02017f'],
      [128, '02020080'],
      [255, '020200ff'],
      [256, '02020100'],
      [65535, '020300ffff'],
      [65536, '0203010000'],
      [0x7fffffff, '02047fffffff'],
    ]
    for (const [n, want] of cases) expect(hex(smallInteger(n))).toBe(want)
    for (const n of [-1, 1.5, 0x80000000, NaN]) expect(() => smallInteger(n)).toThrow(new RangeError('integer out of range'))
  })

  it('encodes OIDs, including large and first arcs', () => {
    const cases: Array<[string, string]> = [
      ['1.2', '06012a'],
      ['0.0', '060100'],
      ['2.5.29.17', '0603551d11'],
      ['1.2.840.10045.2.1', '06072a8648ce3d0201'],
      ['1.2.127', '06022a7f'],
      ['1.2.128', '06032a8100'],
      ['1.2.16383', '06032aff7f'],
      ['1.2.16384', '06042a818000'],
      ['2.999', '06028837'],
    ]
    for (const [o, want] of cases) {
      expect(hex(oid(o))).toBe(want)
      expect(readOid(oid(o), readTlv(oid(o), 0, oid(o).length))).toBe(o)
    }
    for (const bad of ['1', '', '1.a', '1.-1', '1.2.1.5e300', '1.2.0.5']) {
      if (bad === '1.2.0.5') continue
      expect(() => oid(bad)).toThrow(new TypeError(`bad OID ${bad}`))
    }
  })

  it('writes strings in UTF-8 or Latin-1 by tag', () => {
    expect(hex(stringValue(TAG.UTF8_STRING, 'é'))).toBe('0c02c3a9')
    expect(hex(stringValue(TAG.PRINTABLE_STRING, 'é'))).toBe('1301e9')
    expect(hex(stringValue(TAG.IA5_STRING, 'ab'))).toBe('16026162')
  })

  it('writes UTCTime from 1950 to 2049 and GeneralizedTime outside', () => {
    const text = (d: Date) => {
      const t = time(d)
      return `${t[0]!.toString(16)}:${Buffer.from(t.subarray(2)).toString('latin1')}`
    }
    expect(text(new Date(Date.UTC(2026, 0, 2, 3, 4, 5)))).toBe('17:260102030405Z')
    expect(text(new Date(Date.UTC(2026, 10, 12, 13, 14, 15, 999)))).toBe('17:261112131415Z')
    expect(text(new Date(Date.UTC(1950, 0, 1)))).toBe('17:500101000000Z')
    expect(text(new Date(Date.UTC(2049, 11, 31, 23, 59, 59)))).toBe('17:491231235959Z')
    expect(text(new Date(Date.UTC(2050, 0, 1)))).toBe('18:20500101000000Z')
    expect(text(new Date(Date.UTC(1949, 11, 31, 23, 59, 59)))).toBe('18:19491231235959Z')
    expect(text(new Date(Date.UTC(2000, 0, 1)))).toBe('17:000101000000Z')
    expect(text(new Date(Date.UTC(9999, 11, 31)))).toBe('18:99991231000000Z')
    const y0 = new Date(Date.UTC(2000, 0, 1))
    y0.setUTCFullYear(0)
    expect(text(y0)).toBe('18:00000101000000Z')
    const y5 = new Date(Date.UTC(2000, 0, 1))
    y5.setUTCFullYear(5)
    expect(text(y5)).toBe('18:00050101000000Z')
    const late = new Date(Date.UTC(2000, 0, 1))
    late.setUTCFullYear(10000)
    expect(() => time(late)).toThrow(new RangeError('date out of X.509 range'))
    const early = new Date(Date.UTC(2000, 0, 1))
    early.setUTCFullYear(-1)
    expect(() => time(early)).toThrow(new RangeError('date out of X.509 range'))
  })

  it('timeMemo answers as time for new, repeated and alternating dates', () => {
    const a = new Date(Date.UTC(2030, 1, 2, 3, 4, 5))
    const b = new Date(Date.UTC(2031, 1, 2, 3, 4, 5))
    const c = new Date(Date.UTC(2032, 1, 2, 3, 4, 5))
    for (const d of [a, a, b, a, b, c, a, c, new Date(a.getTime() + 500), new Date(a.getTime() + 1000), b]) {
      expect(hex(timeMemo(d))).toBe(hex(time(d)))
    }
  })

  it('converts P1363 ECDSA signatures to DER and refuses odd or empty input', () => {
    const sig = bytes('0001' + '80ff')
    expect(hex(p1363ToDer(sig))).toBe('3008' + '020101' + '02030080ff')
    expect(hex(encode(p1363ToDerNode(sig)))).toBe(hex(p1363ToDer(sig)))
    expect(hex(p1363ToDer(bytes('7f80')))).toBe('3007' + '02017f' + '02020080')
    for (const bad of [bytes(''), bytes('010203')]) {
      expect(derError(() => p1363ToDer(bad))).toBe('malformed ECDSA signature')
      expect(derError(() => p1363ToDerNode(bad))).toBe('malformed ECDSA signature')
    }
  })
})

describe('DER reading', () => {
  it('reads short and long lengths, up to four length bytes', () => {
    expect(readTlv(bytes('0400'), 0, 2)).toEqual({ tag: 4, start: 0, body: 2, end: 2 })
    expect(readTlv(bytes('ff 0401aa'), 1, 4)).toEqual({ tag: 4, start: 1, body: 3, end: 4 })
    const long = tlv(4, new Uint8Array(0x80))
    expect(readTlv(long, 0, long.length)).toEqual({ tag: 4, start: 0, body: 3, end: 3 + 0x80 })
    const four = new Uint8Array(6 + 0x1000000)
    four.set(bytes('0484 01000000'))
    expect(readTlv(four, 0, four.length)).toEqual({ tag: 4, start: 0, body: 6, end: 6 + 0x1000000 })
    const three = tlv(4, new Uint8Array(0x10000))
    expect(readTlv(three, 0, three.length).body).toBe(5)
  })

  it('refuses each malformed header', () => {
    const cases: Array<[string, string]> = [
      ['', 'truncated element'],
      ['04', 'truncated element'],
      ['1f00', 'multi-byte tags are not supported'],
      ['3f00', 'multi-byte tags are not supported'],
      ['0480', 'indefinite length'],
      ['0485 0000000001', 'length too long'],
      ['0482 01', 'truncated length'],
      ['0481', 'truncated length'],
      ['0481 00', 'non-minimal length'],
      ['0482 0080' + '00'.repeat(0x80), 'non-minimal length'],
      ['0481 7f' + '00'.repeat(0x7f), 'non-minimal length'],
      ['0402 00', 'truncated element'],
      ['0481 80' + '00'.repeat(0x7f), 'truncated element'],
    ]
    for (const [h, msg] of cases) {
      const b = bytes(h)
      expect(derError(() => readTlv(b, 0, b.length))).toBe(msg)
    }
    // A limit inside the buffer counts, not the buffer's end.
    expect(derError(() => readTlv(bytes('0402aabb'), 0, 3))).toBe('truncated element')
    expect(derError(() => readTlv(bytes('0400'), 0, 1))).toBe('truncated element')
    expect(readTlv(bytes('0401aa'), 0, 3).end).toBe(3)
    expect(derError(() => readTlv(bytes('0481 80'), 0, 3))).toBe('truncated element')
    // 0x81 0x80 is minimal (the smallest long form).
    const min = new Uint8Array(3 + 0x80)
    min.set(bytes('0481 80'))
    expect(readTlv(min, 0, min.length).end).toBe(min.length)
  })

  it('readRoot wants one element of the tag spanning the input', () => {
    expect(readRoot(bytes('3000'), 0x30)).toEqual({ tag: 0x30, start: 0, body: 2, end: 2 })
    expect(derError(() => readRoot(bytes('3100'), 0x30))).toBe('unexpected tag')
    expect(derError(() => readRoot(bytes('300000'), 0x30))).toBe('trailing data')
  })

  it('children reads each element inside its parent only', () => {
    const b = bytes('3005 0500 0401aa 0101ff')
    expect(children(b, { tag: 0x30, start: 0, body: 2, end: 7 }).map((t) => t.tag)).toEqual([5, 4])
    expect(derError(() => children(bytes('3003 0402aa'), { tag: 0x30, start: 0, body: 2, end: 5 }))).toBe('truncated element')
    expect(children(bytes('3000'), readRoot(bytes('3000'), 0x30))).toEqual([])
    const full = bytes('3008 0500 0401aa 0101ff')
    expect(children(full, readRoot(full, 0x30)).map((t) => [t.tag, t.start, t.end])).toEqual([
      [5, 2, 4],
      [4, 4, 7],
      [1, 7, 10],
    ])
  })

  it('expect names the element that is missing or of another tag', () => {
    const t = readRoot(bytes('0500'), 5)
    expect(expectTlv(t, 5, 'x')).toBe(t)
    expect(derError(() => expectTlv(t, 4, 'thing'))).toBe('thing: unexpected or missing element')
    expect(derError(() => expectTlv(undefined, 4, 'other'))).toBe('other: unexpected or missing element')
  })

  it('contents and whole slice the element', () => {
    const b = bytes('ff 0402aabb')
    const t = readTlv(b, 1, b.length)
    expect(hex(contents(b, t))).toBe('aabb')
    expect(hex(whole(b, t))).toBe('0402aabb')
  })

  it('reads OIDs and refuses malformed ones', () => {
    const read = (h: string) => {
      const b = bytes(h)
      return readOid(b, readTlv(b, 0, b.length))
    }
    expect(read('0601 00')).toBe('0.0')
    expect(read('0601 27')).toBe('0.39')
    expect(read('0601 28')).toBe('1.0')
    expect(read('0601 4f')).toBe('1.39')
    expect(read('0601 50')).toBe('2.0')
    expect(read('0602 8837')).toBe('2.999')
    expect(read('0603 2a 8100')).toBe('1.2.128')
    expect(read('0603 2a 0101')).toBe('1.2.1.1')
    // 64 content bytes are read, 65 are not.
    expect(read('0640 2a' + '01'.repeat(63))).toBe('1.2.' + Array<string>(63).fill('1').join('.'))
    expect(derError(() => read('0641 2a' + '01'.repeat(64)))).toBe('bad OID length')
    expect(derError(() => read('0400'))).toBe('expected OID')
    expect(derError(() => read('0600'))).toBe('bad OID length')
    expect(derError(() => read('0602 2a 81'))).toBe('truncated OID')
    expect(derError(() => read('0601 81'))).toBe('truncated OID')
    expect(derError(() => read('0603 2a 8001'))).toBe('non-minimal OID arc')
    expect(derError(() => read('0602 8001'))).toBe('non-minimal OID arc')
    // 0x80 inside an arc is fine.
    expect(read('0604 2a 818000')).toBe('1.2.16384')
    // Arcs up to (2^53 - 1) / 256: 2^45 - 1 is read, 2^45 is refused.
    expect(read('0608 2a 87ffffffffff7f')).toBe(`1.2.${2 ** 45 - 1}`)
    expect(derError(() => read('0608 2a 88808080808000'))).toBe('OID arc too large')
  })

  it('reads BOOLEAN strictly', () => {
    const read = (h: string) => {
      const b = bytes(h)
      return readBoolean(b, readTlv(b, 0, b.length))
    }
    expect(read('0101ff')).toBe(true)
    expect(read('010100')).toBe(false)
    expect(derError(() => read('010101'))).toBe('non-DER BOOLEAN')
    expect(derError(() => read('0101fe'))).toBe('non-DER BOOLEAN')
    expect(derError(() => read('0100'))).toBe('bad BOOLEAN')
    expect(derError(() => read('0102ffff'))).toBe('bad BOOLEAN')
    expect(derError(() => read('0201ff'))).toBe('bad BOOLEAN')
  })

  it('reads small non-negative INTEGERs up to six bytes', () => {
    const read = (h: string) => {
      const b = bytes(h)
      return readSmallInteger(b, readTlv(b, 0, b.length))
    }
    expect(read('020100')).toBe(0)
    expect(read('02017f')).toBe(127)
    expect(read('02020080')).toBe(128)
    expect(read('02020100')).toBe(256)
    expect(read('02067fffffffffff')).toBe(2 ** 47 - 1)
    expect(read('0206010000000000')).toBe(2 ** 40)
    expect(derError(() => read('02070100000000000000'.slice(0, 18)))).toBe('INTEGER out of range')
    expect(derError(() => read('020180'))).toBe('INTEGER out of range')
    expect(derError(() => read('0201ff'))).toBe('INTEGER out of range')
  })

  it('checks INTEGERs for minimal encoding', () => {
    const read = (h: string) => {
      const b = bytes(h)
      return hex(integerBytes(b, readTlv(b, 0, b.length)))
    }
    expect(read('020100')).toBe('00')
    expect(read('0201ff')).toBe('ff')
    expect(read('02020080')).toBe('0080')
    expect(read('0202ff7f')).toBe('ff7f')
    expect(read('02027f00')).toBe('7f00')
    expect(read('02028000')).toBe('8000')
    expect(derError(() => read('0400'))).toBe('expected INTEGER')
    expect(derError(() => read('0200'))).toBe('empty INTEGER')
    expect(derError(() => read('0202007f'))).toBe('non-minimal INTEGER')
    expect(derError(() => read('02020000'))).toBe('non-minimal INTEGER')
    expect(derError(() => read('0202ff80'))).toBe('non-minimal INTEGER')
    expect(derError(() => read('0202ffff'))).toBe('non-minimal INTEGER')
  })

  it('reads BIT STRINGs and refuses bad unused-bit counts', () => {
    const read = (h: string) => {
      const b = bytes(h)
      const r = readBitString(b, readTlv(b, 0, b.length))
      return [hex(r.bytes), r.unused]
    }
    expect(read('030100')).toEqual(['', 0])
    expect(read('030200aa')).toEqual(['aa', 0])
    expect(read('030207 80')).toEqual(['80', 7])
    expect(read('030201 aa')).toEqual(['aa', 1])
    expect(derError(() => read('0300'))).toBe('bad BIT STRING')
    expect(derError(() => read('040100'))).toBe('bad BIT STRING')
    expect(derError(() => read('030208 80'))).toBe('bad BIT STRING')
    expect(derError(() => read('030101'))).toBe('bad BIT STRING')
    expect(derError(() => read('030107'))).toBe('bad BIT STRING')
  })

  it('reads UTCTime and GeneralizedTime, and refuses impossible dates', () => {
    const t = (tag: number, s: string) => {
      const b = tlv(tag, Buffer.from(s, 'latin1'))
      return readTime(b, readTlv(b, 0, b.length))
    }
    const U = TAG.UTC_TIME
    const G = TAG.GENERALIZED_TIME
    expect(t(U, '260102030405Z').toISOString()).toBe('2026-01-02T03:04:05.000Z')
    expect(t(U, '491231235959Z').toISOString()).toBe('2049-12-31T23:59:59.000Z')
    expect(t(U, '500101000000Z').toISOString()).toBe('1950-01-01T00:00:00.000Z')
    expect(t(U, '991231235959Z').toISOString()).toBe('1999-12-31T23:59:59.000Z')
    expect(t(U, '000229000000Z').toISOString()).toBe('2000-02-29T00:00:00.000Z')
    expect(t(G, '20500101000000Z').toISOString()).toBe('2050-01-01T00:00:00.000Z')
    expect(t(G, '19491231235959Z').toISOString()).toBe('1949-12-31T23:59:59.000Z')
    expect(t(U, '261231000000Z').getUTCMonth()).toBe(11)
    expect(t(U, '260131000000Z').getUTCDate()).toBe(31)
    const bad: Array<[number, string]> = [
      [U, '20260102030405Z'],
      [G, '260102030405Z'],
      [U, '260102030405'],
      [U, '2601020304Z'],
      [U, '260102030405+0000'],
      [U, ' 60102030405Z'],
      [U, '260102030405Zx'],
      [G, '2026010203040Z5'],
      [4, '260102030405Z'],
      [U, '260002030405Z'],
      [U, '261302030405Z'],
      [U, '260100030405Z'],
      [U, '260132030405Z'],
      [U, '260102240405Z'],
      [U, '260102036005Z'],
      [U, '260102030460Z'],
      [U, '260230000000Z'],
      [U, '250229000000Z'],
      [U, '260431000000Z'],
    ]
    for (const [tag, s] of bad) expect(derError(() => t(tag, s))).toBe('bad time')
  })
})
