import { createHash, createHmac } from 'node:crypto'
import { toHashName, type TpmHashName } from './hash.js'

/**
 * Key derivation functions of TPM 2.0 Part 1 §11.4.10.
 *
 * `label` is a string (encoded as UTF-8) or bytes; a terminating zero octet is
 * appended unless the label already ends with one, as the reference
 * implementation does. `bits` need not be a multiple of 8: the output is
 * ceil(bits/8) bytes with the unused high bits of the first byte cleared.
 */
export interface KdfaParams {
  hash: number | TpmHashName
  key: Uint8Array
  label: string | Uint8Array
  contextU?: Uint8Array
  contextV?: Uint8Array
  bits: number
}

/** KDFa: SP800-108 counter mode with HMAC-`hash` as PRF (TPM 2.0 Part 1 §11.4.10.2). */
export function kdfa(p: KdfaParams): Uint8Array {
  const hash = toHashName(p.hash)
  checkBits(p.bits)
  const label = labelBytes(p.label)
  const u = p.contextU ?? new Uint8Array(0)
  const v = p.contextV ?? new Uint8Array(0)
  const outLen = Math.ceil(p.bits / 8)
  const out = Buffer.alloc(outLen)
  const bitsBe = u32(p.bits)
  let off = 0
  for (let i = 1; off < outLen; i++) {
    const block = createHmac(hash, p.key).update(u32(i)).update(label).update(u).update(v).update(bitsBe).digest()
    off += block.copy(out, off, 0, Math.min(block.length, outLen - off))
  }
  return maskTop(out, p.bits)
}

export interface KdfeParams {
  hash: number | TpmHashName
  /** The shared secret: the x coordinate of the ECDH point. */
  z: Uint8Array
  label: string | Uint8Array
  partyUInfo?: Uint8Array
  partyVInfo?: Uint8Array
  bits: number
}

/** KDFe: the SP800-56A concatenation KDF (TPM 2.0 Part 1 §11.4.10.3). */
export function kdfe(p: KdfeParams): Uint8Array {
  const hash = toHashName(p.hash)
  checkBits(p.bits)
  const label = labelBytes(p.label)
  const u = p.partyUInfo ?? new Uint8Array(0)
  const v = p.partyVInfo ?? new Uint8Array(0)
  const outLen = Math.ceil(p.bits / 8)
  const out = Buffer.alloc(outLen)
  let off = 0
  for (let i = 1; off < outLen; i++) {
    const block = createHash(hash).update(u32(i)).update(p.z).update(label).update(u).update(v).digest()
    off += block.copy(out, off, 0, Math.min(block.length, outLen - off))
  }
  return maskTop(out, p.bits)
}

function checkBits(bits: number): void {
  if (!Number.isInteger(bits) || bits <= 0 || bits > 0xffff * 8) throw new RangeError(`invalid KDF output size ${bits}`)
}

function labelBytes(label: string | Uint8Array): Uint8Array {
  const b = typeof label === 'string' ? Buffer.from(label, 'utf8') : label
  if (b.length > 0 && b[b.length - 1] === 0) return b
  const withZero = new Uint8Array(b.length + 1)
  withZero.set(b)
  return withZero
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4)
  b.writeUInt32BE(n >>> 0)
  return b
}

function maskTop(out: Buffer, bits: number): Uint8Array {
  const extra = out.length * 8 - bits
  if (extra > 0 && out.length > 0) out[0] = out[0]! & (0xff >> extra)
  return new Uint8Array(out.buffer, out.byteOffset, out.length)
}
