import { IdentityError } from '../errors/index.js'

/**
 * Big-endian TPM 2.0 marshalling. `TpmWriter` grows a buffer; `TpmReader`
 * is bounds-checked and throws `ERR_TPM_PAYLOAD_INVALID` on any overrun.
 */

function payloadError(message: string, details?: Record<string, unknown>): IdentityError {
  return new IdentityError('ERR_TPM_PAYLOAD_INVALID', message, details === undefined ? undefined : { details })
}

export class TpmWriter {
  #buf: Uint8Array
  #view: DataView
  #len = 0

  constructor(initialCapacity = 256) {
    this.#buf = new Uint8Array(Math.max(16, initialCapacity))
    this.#view = new DataView(this.#buf.buffer)
  }

  get length(): number {
    return this.#len
  }

  #reserve(n: number): number {
    const need = this.#len + n
    if (need > this.#buf.length) {
      let cap = this.#buf.length * 2
      while (cap < need) cap *= 2
      const next = new Uint8Array(cap)
      next.set(this.#buf.subarray(0, this.#len))
      this.#buf = next
      this.#view = new DataView(next.buffer)
    }
    const at = this.#len
    this.#len = need
    return at
  }

  u8(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xff) throw new RangeError(`u8 out of range: ${v}`)
    const at = this.#reserve(1)
    this.#view.setUint8(at, v)
    return this
  }

  u16(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffff) throw new RangeError(`u16 out of range: ${v}`)
    const at = this.#reserve(2)
    this.#view.setUint16(at, v)
    return this
  }

  u32(v: number): this {
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`u32 out of range: ${v}`)
    const at = this.#reserve(4)
    this.#view.setUint32(at, v)
    return this
  }

  i32(v: number): this {
    if (!Number.isInteger(v) || v < -0x80000000 || v > 0x7fffffff) throw new RangeError(`i32 out of range: ${v}`)
    const at = this.#reserve(4)
    this.#view.setInt32(at, v)
    return this
  }

  u64(v: bigint): this {
    if (v < 0n || v > 0xffffffffffffffffn) throw new RangeError(`u64 out of range: ${v}`)
    const at = this.#reserve(8)
    this.#view.setBigUint64(at, v)
    return this
  }

  bytes(b: Uint8Array): this {
    const at = this.#reserve(b.length)
    this.#buf.set(b, at)
    return this
  }

  /** TPM2B: u16 size ‖ bytes. */
  tpm2b(b: Uint8Array): this {
    if (b.length > 0xffff) throw new RangeError(`TPM2B too large: ${b.length}`)
    this.u16(b.length)
    return this.bytes(b)
  }

  /** Writes a TPM2B whose content is produced by `fn` into a nested writer. */
  sized(fn: (w: TpmWriter) => void): this {
    const inner = new TpmWriter()
    fn(inner)
    return this.tpm2b(inner.finish())
  }

  /** Overwrites a u32 at `offset` (used for commandSize). */
  patchU32(offset: number, v: number): this {
    if (offset < 0 || offset + 4 > this.#len) throw new RangeError('patch offset out of range')
    this.#view.setUint32(offset, v)
    return this
  }

  /** A copy of the written bytes. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len)
  }
}

export class TpmReader {
  readonly #buf: Uint8Array
  readonly #view: DataView
  #off = 0
  readonly #end: number

  constructor(buf: Uint8Array, offset = 0, end = buf.length) {
    this.#buf = buf
    this.#view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength)
    this.#off = offset
    this.#end = end
  }

  get offset(): number {
    return this.#off
  }

  get remaining(): number {
    return this.#end - this.#off
  }

  #take(n: number, what: string): number {
    if (n < 0 || this.#off + n > this.#end) {
      throw payloadError(`truncated TPM structure reading ${what}`, { offset: this.#off, need: n, remaining: this.remaining })
    }
    const at = this.#off
    this.#off += n
    return at
  }

  u8(what = 'u8'): number {
    return this.#view.getUint8(this.#take(1, what))
  }

  u16(what = 'u16'): number {
    return this.#view.getUint16(this.#take(2, what))
  }

  u32(what = 'u32'): number {
    return this.#view.getUint32(this.#take(4, what))
  }

  i32(what = 'i32'): number {
    return this.#view.getInt32(this.#take(4, what))
  }

  u64(what = 'u64'): bigint {
    return this.#view.getBigUint64(this.#take(8, what))
  }

  /** A copy of the next `n` bytes. */
  bytes(n: number, what = 'bytes'): Uint8Array {
    const at = this.#take(n, what)
    return this.#buf.slice(at, at + n)
  }

  /** TPM2B: u16 size ‖ bytes, optionally capped. */
  tpm2b(what = 'TPM2B', maxSize = 0xffff): Uint8Array {
    const size = this.u16(`${what}.size`)
    if (size > maxSize) throw payloadError(`${what} too large`, { size, max: maxSize })
    return this.bytes(size, what)
  }

  /** Reads a TPM2B and decodes its content with `fn`, which must consume it exactly. */
  sized<T>(what: string, fn: (r: TpmReader) => T, maxSize = 0xffff): T {
    const size = this.u16(`${what}.size`)
    if (size > maxSize) throw payloadError(`${what} too large`, { size, max: maxSize })
    const at = this.#take(size, what)
    const inner = new TpmReader(this.#buf, at, at + size)
    const v = fn(inner)
    inner.expectEnd(what)
    return v
  }

  /** A sub-reader over the next `n` bytes (advances this reader). */
  sub(n: number, what = 'sub'): TpmReader {
    const at = this.#take(n, what)
    return new TpmReader(this.#buf, at, at + n)
  }

  skip(n: number, what = 'skip'): void {
    this.#take(n, what)
  }

  /** Throws when bytes remain. */
  expectEnd(what = 'structure'): void {
    if (this.#off !== this.#end) {
      throw payloadError(`trailing bytes after ${what}`, { trailing: this.#end - this.#off })
    }
  }
}

export function concatBytes(...parts: Uint8Array[]): Uint8Array {
  let n = 0
  for (const p of parts) n += p.length
  const out = new Uint8Array(n)
  let o = 0
  for (const p of parts) {
    out.set(p, o)
    o += p.length
  }
  return out
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex')
}

export function fromHex(s: string): Uint8Array {
  const clean = s.replace(/\s+/g, '')
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(clean)) throw new TypeError('invalid hex')
  return new Uint8Array(Buffer.from(clean, 'hex'))
}
