/**
 * A minimal DER encoder and a strict DER reader, enough for X.509
 * certificates and PKCS#10 requests. Internal to `x509-svid/`.
 *
 * The reader accepts only definite, minimal lengths (at most 4 length bytes)
 * and single-byte tags, checks that every element fits in its parent, and
 * throws `DerError` for anything else. Callers turn `DerError` into an
 * IdentityError with the code that fits their input.
 */

export class DerError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'DerError'
  }
}

export const TAG = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const

// ---------------------------------------------------------------- encoding

function lengthBytes(n: number): number {
  return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : n < 0x1000000 ? 4 : 5
}

function writeHeader(out: Buffer, off: number, tag: number, len: number): number {
  out[off++] = tag
  if (len < 0x80) {
    out[off++] = len
  } else {
    const n = lengthBytes(len) - 1
    out[off++] = 0x80 | n
    for (let i = n - 1; i >= 0; i--) out[off++] = (len >>> (8 * i)) & 0xff
  }
  return off
}

/** One TLV whose contents are the concatenation of `parts`. */
export function tlv(tag: number, ...parts: readonly Uint8Array[]): Buffer {
  let len = 0
  for (const p of parts) len += p.length
  const out = Buffer.allocUnsafe(1 + lengthBytes(len) + len)
  let off = writeHeader(out, 0, tag, len)
  for (const p of parts) {
    out.set(p, off)
    off += p.length
  }
  return out
}

export const seq = (...parts: readonly Uint8Array[]): Buffer => tlv(TAG.SEQUENCE, ...parts)
export const set = (...parts: readonly Uint8Array[]): Buffer => tlv(TAG.SET, ...parts)
export const octetString = (b: Uint8Array): Buffer => tlv(TAG.OCTET_STRING, b)
/** A BIT STRING with no unused bits. */
export const bitString = (b: Uint8Array): Buffer => tlv(TAG.BIT_STRING, ZERO_BYTE, b)
export const DER_NULL = Buffer.from([0x05, 0x00])
export const DER_TRUE = Buffer.from([0x01, 0x01, 0xff])
const ZERO_BYTE = Buffer.from([0])

/** An INTEGER from unsigned big-endian magnitude bytes (minimal, positive). */
export function unsignedInteger(magnitude: Uint8Array): Buffer {
  let i = 0
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++
  const m = magnitude.subarray(i)
  if (m.length === 0) return Buffer.from([0x02, 0x01, 0x00])
  return (m[0]! & 0x80) !== 0 ? tlv(TAG.INTEGER, ZERO_BYTE, m) : tlv(TAG.INTEGER, m)
}

export function smallInteger(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0x7fffffff) throw new RangeError('integer out of range')
  const bytes: number[] = []
  let v = n
  do {
    bytes.unshift(v & 0xff)
    v = Math.floor(v / 256)
  } while (v > 0)
  return unsignedInteger(Uint8Array.from(bytes))
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map((p) => Number(p))
  if (parts.length < 2 || parts.some((p) => !Number.isSafeInteger(p) || p < 0)) throw new TypeError(`bad OID ${dotted}`)
  const bytes: number[] = []
  const push = (v: number): void => {
    const tmp = [v & 0x7f]
    v = Math.floor(v / 128)
    while (v > 0) {
      tmp.unshift((v & 0x7f) | 0x80)
      v = Math.floor(v / 128)
    }
    bytes.push(...tmp)
  }
  push(parts[0]! * 40 + parts[1]!)
  for (const p of parts.slice(2)) push(p)
  return tlv(TAG.OID, Uint8Array.from(bytes))
}

export function stringValue(tag: number, s: string): Buffer {
  return tlv(tag, Buffer.from(s, tag === TAG.UTF8_STRING ? 'utf8' : 'latin1'))
}

const pad2 = (n: number): string => (n < 10 ? `0${n}` : String(n))

/** UTCTime for 1950..2049, GeneralizedTime otherwise (RFC 5280 §4.1.2.5); seconds precision. */
export function time(d: Date): Buffer {
  const y = d.getUTCFullYear()
  const rest = `${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`
  if (y >= 1950 && y < 2050) return tlv(TAG.UTC_TIME, Buffer.from(`${pad2(y % 100)}${rest}`, 'latin1'))
  if (y < 0 || y > 9999) throw new RangeError('date out of X.509 range')
  return tlv(TAG.GENERALIZED_TIME, Buffer.from(`${String(y).padStart(4, '0')}${rest}`, 'latin1'))
}

/** Converts an IEEE P1363 ECDSA signature (r||s) to DER `ECDSA-Sig-Value`. */
export function p1363ToDer(sig: Uint8Array): Buffer {
  if (sig.length === 0 || sig.length % 2 !== 0) throw new DerError('malformed ECDSA signature')
  const half = sig.length / 2
  return seq(unsignedInteger(sig.subarray(0, half)), unsignedInteger(sig.subarray(half)))
}

// ---------------------------------------------------------------- reading

/** A decoded element: `start` of the header, `body` start of the contents, `end` exclusive. */
export interface Tlv {
  readonly tag: number
  readonly start: number
  readonly body: number
  readonly end: number
}

export function readTlv(buf: Uint8Array, off: number, limit: number): Tlv {
  if (off + 2 > limit) throw new DerError('truncated element')
  const tag = buf[off]!
  if ((tag & 0x1f) === 0x1f) throw new DerError('multi-byte tags are not supported')
  const first = buf[off + 1]!
  let p = off + 2
  let len: number
  if (first < 0x80) {
    len = first
  } else {
    const n = first & 0x7f
    if (n === 0) throw new DerError('indefinite length')
    if (n > 4) throw new DerError('length too long')
    if (p + n > limit) throw new DerError('truncated length')
    if (buf[p] === 0) throw new DerError('non-minimal length')
    len = 0
    for (let i = 0; i < n; i++) len = len * 256 + buf[p++]!
    if (len < 0x80) throw new DerError('non-minimal length')
  }
  if (p + len > limit) throw new DerError('truncated element')
  return { tag, start: off, body: p, end: p + len }
}

/** Reads exactly one element spanning all of `buf`. */
export function readRoot(buf: Uint8Array, tag: number): Tlv {
  const t = readTlv(buf, 0, buf.length)
  if (t.tag !== tag) throw new DerError('unexpected tag')
  if (t.end !== buf.length) throw new DerError('trailing data')
  return t
}

export function children(buf: Uint8Array, parent: Tlv): Tlv[] {
  const out: Tlv[] = []
  let off = parent.body
  while (off < parent.end) {
    const t = readTlv(buf, off, parent.end)
    out.push(t)
    off = t.end
  }
  return out
}

export function expect(t: Tlv | undefined, tag: number, what: string): Tlv {
  if (!t || t.tag !== tag) throw new DerError(`${what}: unexpected or missing element`)
  return t
}

export const contents = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.body, t.end)
export const whole = (buf: Uint8Array, t: Tlv): Uint8Array => buf.subarray(t.start, t.end)

export function readOid(buf: Uint8Array, t: Tlv): string {
  if (t.tag !== TAG.OID) throw new DerError('expected OID')
  const b = contents(buf, t)
  if (b.length === 0 || b.length > 64) throw new DerError('bad OID length')
  const arcs: number[] = []
  let v = 0
  let started = false
  for (let i = 0; i < b.length; i++) {
    const c = b[i]!
    if (!started && c === 0x80) throw new DerError('non-minimal OID arc')
    started = true
    v = v * 128 + (c & 0x7f)
    if (v > Number.MAX_SAFE_INTEGER / 256) throw new DerError('OID arc too large')
    if ((c & 0x80) === 0) {
      arcs.push(v)
      v = 0
      started = false
    } else if (i === b.length - 1) {
      throw new DerError('truncated OID')
    }
  }
  const first = arcs[0]!
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80]
  return [...head, ...arcs.slice(1)].join('.')
}

export function readBoolean(buf: Uint8Array, t: Tlv): boolean {
  if (t.tag !== TAG.BOOLEAN || t.end - t.body !== 1) throw new DerError('bad BOOLEAN')
  const v = buf[t.body]
  if (v === 0xff) return true
  if (v === 0x00) return false
  throw new DerError('non-DER BOOLEAN')
}

/** A non-negative INTEGER that fits a JS number (small values: versions, path lengths). */
export function readSmallInteger(buf: Uint8Array, t: Tlv): number {
  const b = integerBytes(buf, t)
  if (b.length > 6 || (b[0]! & 0x80) !== 0) throw new DerError('INTEGER out of range')
  let v = 0
  for (const c of b) v = v * 256 + c
  return v
}

/** The contents of an INTEGER, checked for minimal encoding. */
export function integerBytes(buf: Uint8Array, t: Tlv): Uint8Array {
  if (t.tag !== TAG.INTEGER) throw new DerError('expected INTEGER')
  const b = contents(buf, t)
  if (b.length === 0) throw new DerError('empty INTEGER')
  if (b.length > 1 && ((b[0] === 0 && (b[1]! & 0x80) === 0) || (b[0] === 0xff && (b[1]! & 0x80) !== 0))) {
    throw new DerError('non-minimal INTEGER')
  }
  return b
}

/** BIT STRING contents without the unused-bits byte; `unused` is that count. */
export function readBitString(buf: Uint8Array, t: Tlv): { bytes: Uint8Array; unused: number } {
  if (t.tag !== TAG.BIT_STRING || t.end === t.body) throw new DerError('bad BIT STRING')
  const unused = buf[t.body]!
  if (unused > 7 || (unused > 0 && t.end - t.body === 1)) throw new DerError('bad BIT STRING')
  return { bytes: buf.subarray(t.body + 1, t.end), unused }
}

const TIME_UTC = /^(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/
const TIME_GEN = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})Z$/

export function readTime(buf: Uint8Array, t: Tlv): Date {
  const s = Buffer.from(contents(buf, t)).toString('latin1')
  let m: RegExpExecArray | null
  let year: number
  if (t.tag === TAG.UTC_TIME && (m = TIME_UTC.exec(s))) {
    const yy = Number(m[1])
    year = yy >= 50 ? 1900 + yy : 2000 + yy
  } else if (t.tag === TAG.GENERALIZED_TIME && (m = TIME_GEN.exec(s))) {
    year = Number(m[1])
  } else {
    throw new DerError('bad time')
  }
  const [mo, d, h, mi, se] = [2, 3, 4, 5, 6].map((i) => Number(m[i]))
  if (mo! < 1 || mo! > 12 || d! < 1 || d! > 31 || h! > 23 || mi! > 59 || se! > 59) throw new DerError('bad time')
  const date = new Date(Date.UTC(year, mo! - 1, d, h, mi, se))
  if (date.getUTCDate() !== d) throw new DerError('bad time')
  return date
}

// ---------------------------------------------------------------- one-pass encoding

/**
 * A DER tree encoded in one allocation: leaves are already-encoded bytes (or
 * raw contents inside a `cons`), inner nodes are `cons(tag, ...items)`.
 * Used on the hot path (leaf certificates), where many small Buffers cost
 * more than the encoding itself.
 */
export type DerNode = Uint8Array | DerCons
export interface DerCons {
  readonly tag: number
  readonly items: readonly DerNode[]
  len: number
}

export function cons(tag: number, ...items: DerNode[]): DerCons {
  return { tag, items, len: -1 }
}

function measure(n: DerNode): number {
  if (n instanceof Uint8Array) return n.length
  let len = 0
  for (const it of n.items) len += measure(it)
  n.len = len
  return 1 + lengthBytes(len) + len
}

function writeNode(out: Buffer, off: number, n: DerNode): number {
  if (n instanceof Uint8Array) {
    out.set(n, off)
    return off + n.length
  }
  off = writeHeader(out, off, n.tag, n.len)
  for (const it of n.items) off = writeNode(out, off, it)
  return off
}

export function encode(n: DerNode): Buffer {
  const out = Buffer.allocUnsafe(measure(n))
  writeNode(out, 0, n)
  return out
}

const ZERO = Uint8Array.of(0)

/** INTEGER node from unsigned big-endian magnitude (no copy). */
export function unsignedIntegerNode(magnitude: Uint8Array): DerNode {
  let i = 0
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++
  const m = magnitude.subarray(i)
  if (m.length === 0) return Uint8Array.of(0x02, 0x01, 0x00)
  return (m[0]! & 0x80) !== 0 ? cons(TAG.INTEGER, ZERO, m) : cons(TAG.INTEGER, m)
}

/** ECDSA P1363 (r||s) → DER `ECDSA-Sig-Value` node. */
export function p1363ToDerNode(sig: Uint8Array): DerNode {
  if (sig.length === 0 || sig.length % 2 !== 0) throw new DerError('malformed ECDSA signature')
  const half = sig.length / 2
  return cons(TAG.SEQUENCE, unsignedIntegerNode(sig.subarray(0, half)), unsignedIntegerNode(sig.subarray(half)))
}

let lastTimeMs = NaN
let lastTime: Buffer = Buffer.alloc(0)
let prevTimeMs = NaN
let prevTime: Buffer = Buffer.alloc(0)

/** `time()` with a two-entry memo (notBefore/notAfter repeat within a second). */
export function timeMemo(d: Date): Buffer {
  const ms = Math.floor(d.getTime() / 1000)
  if (ms === lastTimeMs) return lastTime
  if (ms === prevTimeMs) return prevTime
  const t = time(d)
  prevTimeMs = lastTimeMs
  prevTime = lastTime
  lastTimeMs = ms
  lastTime = t
  return t
}
