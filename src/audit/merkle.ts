/**
 * The Merkle tree of RFC 9162 §2.1 (RFC 6962's shape): leaf hash
 * SHA-256(0x00 || data), interior node SHA-256(0x01 || left || right), a tree
 * of n leaves split at the largest power of two smaller than n. Proof
 * generation works over the leaf hashes; the two verification functions are
 * the algorithms of RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency),
 * pure, with sizes and indexes as safe integers (right shifts by division,
 * since `>>` would cut them to 32 bits).
 */
import { IdentityError } from '../errors/identity-error.js'
import { sha256, sha256Prefixed, sha256Prefixed2 } from './sha256.js'

export const HASH_SIZE = 32

/** SHA-256 of the empty string: the root of the empty tree (RFC 9162 §2.1.1). */
export const EMPTY_ROOT: Uint8Array = sha256(new Uint8Array(0))

/** SHA-256(0x00 || data). */
export function leafHash(data: Uint8Array): Buffer {
  return sha256Prefixed(0x00, data)
}

/** SHA-256(0x01 || left || right). */
export function nodeHash(left: Uint8Array, right: Uint8Array): Buffer {
  return sha256Prefixed2(0x01, left, right)
}

/** Largest power of two strictly smaller than n (n ≥ 2). */
function splitPoint(n: number): number {
  let k = 1
  while (k * 2 < n) k *= 2
  return k
}

/**
 * The tree's right edge: the roots of its perfect subtrees, largest first
 * (one per set bit of the size). Appending a leaf costs amortized one node
 * hash; `root()` folds the edge from the right. This is how the log keeps
 * its tree head without reading old leaves, and how `verify` rebuilds a
 * million-leaf tree in one pass.
 */
export class MerkleAccumulator {
  #size = 0
  /** Perfect-subtree roots, largest first; #heights[i] is the height of #nodes[i]. */
  readonly #nodes: Buffer[] = []
  readonly #heights: number[] = []

  static fromState(size: number, nodes: readonly Uint8Array[]): MerkleAccumulator {
    const a = new MerkleAccumulator()
    const heights: number[] = []
    for (let bit = 52; bit >= 0; bit--) if (Math.floor(size / 2 ** bit) % 2 === 1) heights.push(bit)
    if (heights.length !== nodes.length) throw new RangeError(`a tree of ${size} leaves has ${heights.length} edge nodes, not ${nodes.length}`)
    a.#size = size
    for (let i = 0; i < nodes.length; i++) {
      a.#nodes.push(Buffer.from(nodes[i]!))
      a.#heights.push(heights[i]!)
    }
    return a
  }

  get size(): number {
    return this.#size
  }

  /** The right edge, largest subtree first (for persisting; `fromState` reads it back). */
  get edge(): readonly Buffer[] {
    return this.#nodes
  }

  /** Appends a leaf by its leaf hash. */
  push(leaf: Buffer): void {
    this.pushSubtree(leaf, 0)
  }

  /**
   * Appends 2^height leaves at once by the root of their perfect subtree;
   * the size must be a multiple of 2^height (the subtree is aligned), as it
   * is in the tree of RFC 9162.
   */
  pushSubtree(root: Buffer, height: number): void {
    if (this.#size % 2 ** height !== 0) throw new RangeError(`a subtree of height ${height} cannot start at leaf ${this.#size}`)
    const leaves = 2 ** height
    let node = root
    while (this.#heights.length > 0 && this.#heights[this.#heights.length - 1] === height) {
      node = nodeHash(this.#nodes.pop()!, node)
      this.#heights.pop()
      height++
    }
    this.#nodes.push(node)
    this.#heights.push(height)
    this.#size += leaves
  }

  root(): Buffer {
    if (this.#nodes.length === 0) return Buffer.from(EMPTY_ROOT)
    let acc = this.#nodes[this.#nodes.length - 1]!
    for (let i = this.#nodes.length - 2; i >= 0; i--) acc = nodeHash(this.#nodes[i]!, acc)
    return acc
  }

  clone(): MerkleAccumulator {
    return MerkleAccumulator.fromState(this.#size, this.#nodes)
  }
}

/** MTH(D[lo:hi]) over leaf hashes (RFC 9162 §2.1.1). */
export function subtreeRoot(leaves: readonly Uint8Array[], lo = 0, hi = leaves.length): Buffer {
  const n = hi - lo
  if (n === 0) return Buffer.from(EMPTY_ROOT)
  if (n === 1) return Buffer.from(leaves[lo]!)
  const k = splitPoint(n)
  return nodeHash(subtreeRoot(leaves, lo, lo + k), subtreeRoot(leaves, lo + k, hi))
}

/** The audit path PATH(m, D[0:n]) of RFC 9162 §2.1.3.1, leaf to root. */
export function inclusionProof(leaves: readonly Uint8Array[], index: number, size = leaves.length): Buffer[] {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size || size > leaves.length) {
    throw new RangeError(`no inclusion proof for leaf ${index} in a tree of ${size}`)
  }
  const path = (m: number, lo: number, hi: number): Buffer[] => {
    const n = hi - lo
    if (n <= 1) return []
    const k = splitPoint(n)
    return m < k ? [...path(m, lo, lo + k), subtreeRoot(leaves, lo + k, hi)] : [...path(m - k, lo + k, hi), subtreeRoot(leaves, lo, lo + k)]
  }
  return path(index, 0, size)
}

/** The consistency proof PROOF(m, D[0:n]) of RFC 9162 §2.1.4.1. */
export function consistencyProof(leaves: readonly Uint8Array[], first: number, second = leaves.length): Buffer[] {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second || second > leaves.length) {
    throw new RangeError(`no consistency proof from ${first} to ${second}`)
  }
  if (first === 0 || first === second) return []
  const sub = (m: number, lo: number, hi: number, whole: boolean): Buffer[] => {
    const n = hi - lo
    if (m === n) return whole ? [] : [subtreeRoot(leaves, lo, hi)]
    const k = splitPoint(n)
    return m <= k ? [...sub(m, lo, lo + k, whole), subtreeRoot(leaves, lo + k, hi)] : [...sub(m - k, lo + k, hi, false), subtreeRoot(leaves, lo, lo + k)]
  }
  return sub(first, 0, second, true)
}

const lsb = (x: number): boolean => x % 2 === 1
const half = (x: number): number => Math.floor(x / 2)
const equal = (a: Uint8Array, b: Uint8Array): boolean => a.byteLength === b.byteLength && Buffer.compare(a, b) === 0

/**
 * RFC 9162 §2.1.3.2: true when `path` proves that the leaf with hash
 * `leaf` is at `index` in the tree of `size` leaves whose root is `root`.
 */
export function verifyInclusion(leaf: Uint8Array, index: number, size: number, path: readonly Uint8Array[], root: Uint8Array): boolean {
  if (!Number.isSafeInteger(index) || !Number.isSafeInteger(size) || index < 0 || index >= size) return false
  if (path.some((p) => p.byteLength !== HASH_SIZE) || leaf.byteLength !== HASH_SIZE) return false
  let fn = index
  let sn = size - 1
  let r: Uint8Array = leaf
  for (const p of path) {
    if (sn === 0) return false
    if (lsb(fn) || fn === sn) {
      r = nodeHash(p, r)
      if (!lsb(fn)) {
        while (!lsb(fn) && fn !== 0) {
          fn = half(fn)
          sn = half(sn)
        }
      }
    } else {
      r = nodeHash(r, p)
    }
    fn = half(fn)
    sn = half(sn)
  }
  return sn === 0 && equal(r, root)
}

/**
 * RFC 9162 §2.1.4.2: true when `path` proves that the tree of `first`
 * leaves with root `firstRoot` is a prefix of the tree of `second` leaves
 * with root `secondRoot`. Equal sizes need an empty path and equal roots; an
 * empty first tree is a prefix of every tree.
 */
export function verifyConsistency(first: number, second: number, firstRoot: Uint8Array, secondRoot: Uint8Array, path: readonly Uint8Array[]): boolean {
  if (!Number.isSafeInteger(first) || !Number.isSafeInteger(second) || first < 0 || first > second) return false
  if (path.some((p) => p.byteLength !== HASH_SIZE)) return false
  if (first === second) return path.length === 0 && equal(firstRoot, secondRoot)
  if (first === 0) return path.length === 0
  if (path.length === 0) return false
  // step 2: a first tree of 2^k leaves is a whole subtree of the second; its root starts the path
  const proof = isPowerOfTwo(first) ? [firstRoot, ...path] : [...path]
  let fn = first - 1
  let sn = second - 1
  while (lsb(fn)) {
    fn = half(fn)
    sn = half(sn)
  }
  let fr: Uint8Array = proof[0]!
  let sr: Uint8Array = proof[0]!
  for (const c of proof.slice(1)) {
    if (sn === 0) return false
    if (lsb(fn) || fn === sn) {
      fr = nodeHash(c, fr)
      sr = nodeHash(c, sr)
      if (!lsb(fn)) {
        while (!lsb(fn) && fn !== 0) {
          fn = half(fn)
          sn = half(sn)
        }
      }
    } else {
      sr = nodeHash(sr, c)
    }
    fn = half(fn)
    sn = half(sn)
  }
  return sn === 0 && equal(fr, firstRoot) && equal(sr, secondRoot)
}

function isPowerOfTwo(n: number): boolean {
  while (n > 1 && n % 2 === 0) n /= 2
  return n === 1
}

/** Throws IdentityError ERR_AUDIT_PROOF_INVALID unless `verifyInclusion` holds. */
export function assertInclusion(leaf: Uint8Array, index: number, size: number, path: readonly Uint8Array[], root: Uint8Array): void {
  if (!verifyInclusion(leaf, index, size, path, root)) {
    throw new IdentityError('ERR_AUDIT_PROOF_INVALID', `the inclusion proof of leaf ${index} does not lead to the root of the tree of ${size}`, {
      details: { leaf_index: index, tree_size: size },
    })
  }
}
