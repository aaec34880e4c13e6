import fc from 'fast-check'
import { createHash } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  MerkleAccumulator,
  nodeHash,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
} from '../../../src/audit/merkle.js'

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex')
const unhex = (s: string): Buffer => Buffer.from(s, 'hex')

/** The Certificate Transparency reference leaves and roots (RFC 6962; transparency-dev/merkle testonly). */
const CT_LEAVES = ['', '00', '10', '2021', '3031', '40414243', '5051525354555657', '606162636465666768696a6b6c6d6e6f'].map(unhex)
const CT_ROOTS = [
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855',
  '6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d',
  'fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125',
  'aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77',
  'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
  '4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4',
  '76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef',
  'ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c',
  '5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328',
]

/** A naive recomputation, straight from RFC 9162 §2.1.1, with createHash and array slices. */
function naiveRoot(data: Uint8Array[]): Buffer {
  const h = (...parts: Uint8Array[]) => parts.reduce((c, p) => c.update(p), createHash('sha256')).digest()
  if (data.length === 0) return h()
  if (data.length === 1) return h(Buffer.from([0]), data[0]!)
  let k = 1
  while (k * 2 < data.length) k *= 2
  return h(Buffer.from([1]), naiveRoot(data.slice(0, k)), naiveRoot(data.slice(k)))
}

const leavesArb = fc.array(fc.uint8Array({ maxLength: 24 }), { minLength: 1, maxLength: 70 })

describe('Merkle tree (RFC 9162 §2.1)', () => {
  it('matches the reference roots for sizes 0..8, incrementally and recursively', () => {
    const acc = new MerkleAccumulator()
    const hashes = CT_LEAVES.map((l) => leafHash(l))
    expect(hex(acc.root())).toBe(CT_ROOTS[0])
    expect(hex(EMPTY_ROOT)).toBe(CT_ROOTS[0])
    hashes.forEach((h, i) => {
      acc.push(h)
      expect(hex(acc.root())).toBe(CT_ROOTS[i + 1])
      expect(hex(subtreeRoot(hashes, 0, i + 1))).toBe(CT_ROOTS[i + 1])
    })
  })

  it('produces the reference inclusion and consistency proofs', () => {
    const hashes = CT_LEAVES.map((l) => leafHash(l))
    expect(inclusionProof(hashes, 0).map(hex)).toEqual([
      '96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7',
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ])
    expect(inclusionProof(hashes, 5).map(hex)).toEqual([
      'bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b',
      'ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0',
      'd37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7',
    ])
    expect(consistencyProof(hashes, 2, 8).map(hex)).toEqual([
      '5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e',
      '6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4',
    ])
  })

  it('the accumulator (and its saved edge) agrees with a naive recomputation (property)', () => {
    fc.assert(
      fc.property(leavesArb, (data) => {
        let acc = new MerkleAccumulator()
        data.forEach((d, i) => {
          acc.push(leafHash(d))
          if (i % 7 === 3) acc = MerkleAccumulator.fromState(acc.size, acc.edge)
        })
        expect(acc.root().equals(naiveRoot(data))).toBe(true)
      }),
      { numRuns: 150 },
    )
  })

  it('every inclusion proof verifies, and a wrong leaf, index, root or path (or an index past the size) does not (property)', () => {
    fc.assert(
      fc.property(leavesArb, fc.nat(), fc.nat(), (raw, a, b) => {
        // distinct leaves: with equal leaves a proof for one position is, rightly, a proof for another
        const data = raw.map((d, i) => Uint8Array.from([i, ...d]))
        const hashes = data.map((d) => leafHash(d))
        const size = 1 + (a % hashes.length)
        const index = b % size
        const root = naiveRoot(data.slice(0, size))
        const path = inclusionProof(hashes, index, size)
        expect(verifyInclusion(hashes[index]!, index, size, path, root)).toBe(true)
        expect(verifyInclusion(leafHash(Buffer.from('other')), index, size, path, root)).toBe(false)
        expect(verifyInclusion(hashes[index]!, index, size, path, nodeHash(root, root))).toBe(false)
        expect(verifyInclusion(hashes[index]!, size, size, path, root)).toBe(false)
        if (size > 1) {
          const other = (index + 1) % size
          expect(verifyInclusion(hashes[index]!, other, size, path, root)).toBe(false)
          expect(verifyInclusion(hashes[index]!, index, size, path.slice(0, -1), root)).toBe(false)
          expect(verifyInclusion(hashes[index]!, index, size, [...path, root], root)).toBe(false)
          const bent = path.map((p, i) => (i === 0 ? nodeHash(p, p) : p))
          expect(verifyInclusion(hashes[index]!, index, size, bent, root)).toBe(false)
        } else {
          expect(path).toEqual([])
        }
      }),
      { numRuns: 200 },
    )
  })

  it('every consistency proof verifies, and a wrong root, size or path does not (property)', () => {
    fc.assert(
      fc.property(leavesArb, fc.nat(), fc.nat(), (data, a, b) => {
        const hashes = data.map((d) => leafHash(d))
        const second = 1 + (a % hashes.length)
        const first = b % (second + 1)
        const r1 = naiveRoot(data.slice(0, first))
        const r2 = naiveRoot(data.slice(0, second))
        const path = consistencyProof(hashes, first, second)
        expect(verifyConsistency(first, second, r1, r2, path)).toBe(true)
        if (first > 0 && first < second) {
          expect(verifyConsistency(first, second, nodeHash(r1, r1), r2, path)).toBe(false)
          expect(verifyConsistency(first, second, r1, nodeHash(r2, r2), path)).toBe(false)
          expect(verifyConsistency(first, second, r1, r2, path.slice(1))).toBe(false)
          expect(verifyConsistency(first, second, r1, r2, [])).toBe(false)
          if (second < hashes.length) expect(verifyConsistency(first, second + 1, r1, naiveRoot(data.slice(0, second + 1)), path)).toBe(false)
        }
        expect(verifyConsistency(second, first, r2, r1, path)).toBe(first === second)
      }),
      { numRuns: 200 },
    )
  })

  it('refuses to prove what is not in the tree (RangeError) and rejects non-32-byte hashes', () => {
    const hashes = CT_LEAVES.map((l) => leafHash(l))
    expect(() => inclusionProof(hashes, 8)).toThrow(RangeError)
    expect(() => inclusionProof(hashes, -1)).toThrow(RangeError)
    expect(() => consistencyProof(hashes, 5, 4)).toThrow(RangeError)
    expect(verifyInclusion(Buffer.alloc(31), 0, 1, [], Buffer.alloc(32))).toBe(false)
    expect(verifyConsistency(1, 2, hashes[0]!, unhex(CT_ROOTS[2]!), [Buffer.alloc(16)])).toBe(false)
  })
})
