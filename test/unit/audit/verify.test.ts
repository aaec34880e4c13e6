import { describe, expect, it } from 'vitest'
import { canonicalBytes, chainHash, GENESIS, leafHash, LogVerifier, MerkleAccumulator, parseVerifierKey, signCheckpoint } from '../../../src/audit/index.js'
import { checkpointKey, ORIGIN, sampleEvent } from './helpers.js'

/** Rows built in memory: seq, canonical bytes, chain value; and the tree's root at each size. */
function rows(n: number) {
  const out: { seq: number; bytes: Uint8Array; chain: Buffer }[] = []
  const roots: Buffer[] = []
  const tree = new MerkleAccumulator()
  let chain: Uint8Array = GENESIS
  for (let i = 0; i < n; i++) {
    const bytes = canonicalBytes({ v: 1, ...sampleEvent(i) })
    chain = chainHash(chain, bytes)
    tree.push(leafHash(bytes))
    roots.push(tree.root())
    out.push({ seq: i + 1, bytes, chain: Buffer.from(chain) })
  }
  return { out, roots }
}

describe('LogVerifier (pure)', () => {
  it('accepts a whole log, reports the unsigned tail, and needs at least one checkpoint', async () => {
    const k = await checkpointKey()
    const { out, roots } = rows(12)
    const cp = await signCheckpoint({ origin: ORIGIN, size: 8, rootHash: roots[7]!, extensions: [] }, [k.signer])
    const v = new LogVerifier({ verifier: parseVerifierKey(k.vkey), checkpoints: [cp] })
    for (const r of out) v.push(r.seq, r.bytes, r.chain)
    expect(v.finish()).toMatchObject({
      ok: true,
      events: 12,
      checkpoints: 1,
      verifiedSize: 8,
      unsignedTail: 4,
      origin: ORIGIN,
      rootHash: roots[11]!.toString('hex'),
    })
    const none = new LogVerifier({ verifier: parseVerifierKey(k.vkey), checkpoints: [] })
    for (const r of out) none.push(r.seq, r.bytes, r.chain)
    expect(none.finish().problem).toMatchObject({ kind: 'no_checkpoint' })
  })

  it('reports the first problem by position: a broken link before a later bad root', async () => {
    const k = await checkpointKey()
    const { out, roots } = rows(10)
    const cp = await signCheckpoint({ origin: ORIGIN, size: 10, rootHash: roots[9]!, extensions: [] }, [k.signer])
    const v = new LogVerifier({ verifier: parseVerifierKey(k.vkey), checkpoints: [cp] })
    for (const r of out) v.push(r.seq, r.seq === 4 ? canonicalBytes({ v: 1, ...sampleEvent(40) }) : r.bytes, r.chain)
    expect(v.finish().problem).toMatchObject({ code: 'ERR_AUDIT_LOG_TAMPERED', kind: 'chain_mismatch', seq: 4 })
  })

  it('flags a non-canonical or invalid event only with checkEvents', async () => {
    const k = await checkpointKey()
    const { roots } = rows(1)
    const cp = await signCheckpoint({ origin: ORIGIN, size: 1, rootHash: roots[0]!, extensions: [] }, [k.signer])
    // the same event with a space: not canonical, and (being other bytes) not what the checkpoint signed either
    const spaced = Buffer.from(
      Buffer.from(canonicalBytes({ v: 1, ...sampleEvent(0) }))
        .toString()
        .replace(',', ', '),
    )
    const run = (checkEvents: boolean) => {
      const v = new LogVerifier({ verifier: parseVerifierKey(k.vkey), checkpoints: [cp], checkEvents })
      v.push(1, spaced, chainHash(GENESIS, spaced))
      return v.finish().problem
    }
    expect(run(true)).toMatchObject({ kind: 'non_canonical', seq: 1 })
    expect(run(false)).toMatchObject({ kind: 'root_mismatch', range: { after: 0, upTo: 1 } })
  })

  it('refuses two checkpoints of one size with different roots (a split view) and checkpoints of another origin', async () => {
    const k = await checkpointKey()
    const { out, roots } = rows(6)
    const good = await signCheckpoint({ origin: ORIGIN, size: 6, rootHash: roots[5]!, extensions: [] }, [k.signer])
    const split = await signCheckpoint({ origin: ORIGIN, size: 6, rootHash: roots[4]!, extensions: [] }, [k.signer])
    const v = new LogVerifier({ verifier: parseVerifierKey(k.vkey), checkpoints: [good], external: [split] })
    for (const r of out) v.push(r.seq, r.bytes, r.chain)
    expect(v.finish().problem).toMatchObject({ code: 'ERR_AUDIT_CHECKPOINT_INVALID', kind: 'checkpoints_inconsistent', checkpointSize: 6 })
    const other = await signCheckpoint({ origin: 'other.example/log', size: 3, rootHash: roots[2]!, extensions: [] }, [k.signer])
    const w = new LogVerifier({ verifier: parseVerifierKey(k.vkey), checkpoints: [good, other] })
    for (const r of out) w.push(r.seq, r.bytes, r.chain)
    expect(w.finish().problem).toMatchObject({ kind: 'origin_mismatch' })
  })
})
