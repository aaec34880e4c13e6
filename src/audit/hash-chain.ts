/**
 * The log's hash chain. Byte layout, fixed:
 *
 *     chain_0 = GENESIS = 32 bytes of 0x00 (the chain value before the first event)
 *     chain_i = SHA-256(chain_{i-1} || c_i)      for i = 1, 2, ... (i = seq)
 *
 * where chain_{i-1} is the raw 32-byte digest (not hex) and c_i the UTF-8
 * bytes of the i-th event's RFC 8785 canonical JSON, nothing between them
 * and no length prefix: chain_{i-1} has a fixed length, so the split is
 * unambiguous. The same c_i is the Merkle leaf data (leaf index i - 1).
 * Every link can be checked on its own from the stored chain values, which
 * is how `verify` says where a chain breaks.
 */
import { sha256Concat } from './sha256.js'

export const GENESIS: Uint8Array = new Uint8Array(32)

export function chainHash(previous: Uint8Array, canonical: Uint8Array): Buffer {
  if (previous.byteLength !== 32) throw new RangeError('chainHash: the previous chain value must be 32 bytes')
  return sha256Concat(previous, canonical)
}
