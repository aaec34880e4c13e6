import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { addSignatures, ecdsaNoteSigner, openCheckpoint, parseVerifierKey, signCheckpoint, verifierKey } from '../../../src/audit/checkpoint.js'
import { consistencyProof, leafHash, subtreeRoot } from '../../../src/audit/merkle.js'
import { FileWitnessState } from '../../../src/audit/store/witness-state.js'
import { cosign, parseWitnessVerifierKey, Witness, witnessVerifierKey, type WitnessRecord, type WitnessState } from '../../../src/audit/witness.js'
import { generateKeyPair, KeyObjectSigner } from '../../../src/spiffe/key-signer.js'

const ORIGIN = 'example.org/warrant/broker-audit'
const NOW = 1_800_000_000

class MemState implements WitnessState {
  readonly m = new Map<string, WitnessRecord>()
  get(o: string) {
    return this.m.get(o)
  }
  async put(o: string, r: WitnessRecord) {
    this.m.set(o, r)
  }
}

function setup(state: WitnessState = new MemState()) {
  const logKey = new KeyObjectSigner(generateKeyPair('ec-p256').privateKey)
  const logSigner = ecdsaNoteSigner(ORIGIN, logKey)
  const logVerifier = parseVerifierKey(verifierKey(ORIGIN, logKey.publicKey))
  const { privateKey } = generateKeyPairSync('ed25519')
  const w = new Witness({ name: 'witness.example/w1', privateKey, logs: [logVerifier], state, now: () => NOW })
  const leaves = Array.from({ length: 40 }, (_, i) => leafHash(Buffer.from(`event ${i}`)))
  const note = (size: number, ls = leaves) => signCheckpoint({ origin: ORIGIN, size, rootHash: subtreeRoot(ls, 0, size), extensions: [] }, [logSigner])
  const body = (old: number, proof: Buffer[], n: string) => `old ${old}\n${proof.map((p) => `${p.toString('base64')}\n`).join('')}\n${n}`
  return { w, leaves, note, body, logSigner, privateKey }
}

describe('Witness (C2SP tlog-witness add-checkpoint, tlog-cosignature)', () => {
  it('cosigns a first checkpoint, then a consistent extension; the cosignature verifies with the witness key', async () => {
    const { w, leaves, note, body } = setup()
    const n10 = await note(10)
    const a = await w.addCheckpoint(body(0, [], n10))
    expect([a.status, a.body.startsWith('— witness.example/w1 ')]).toEqual([200, true])
    const v = parseWitnessVerifierKey(w.verifierKey(), { now: () => NOW })
    expect(openCheckpoint(addSignatures(n10, [a.body]), v).size).toBe(10)
    expect(v.lastTimestamp).toBe(NOW)
    const n25 = await note(25)
    const b = await w.addCheckpoint(body(10, consistencyProof(leaves, 10, 25), n25))
    expect(b.status).toBe(200)
    expect(openCheckpoint(addSignatures(n25, [b.body]), v).size).toBe(25)
  })

  it('409 with the latest size when the old size is not its record (and the content type text/x.tlog.size)', async () => {
    const { w, leaves, note, body } = setup()
    await w.addCheckpoint(body(0, [], await note(10)))
    const r = await w.addCheckpoint(body(5, consistencyProof(leaves, 5, 20), await note(20)))
    expect([r.status, r.body, r.contentType]).toEqual([409, '10\n', 'text/x.tlog.size'])
    const r0 = await w.addCheckpoint(body(0, [], await note(20)))
    expect([r0.status, r0.body]).toEqual([409, '10\n'])
  })

  it('422 for a proof that does not verify: a log that rewrote its history gets no cosignature', async () => {
    const { w, leaves, note, body } = setup()
    await w.addCheckpoint(body(0, [], await note(10)))
    const rewritten = leaves.map((l, i) => (i === 3 ? leafHash(Buffer.from('forged')) : l))
    const forked = await note(20, rewritten)
    const r = await w.addCheckpoint(body(10, consistencyProof(rewritten, 10, 20), forked))
    expect(r.status).toBe(422)
    const again = await w.addCheckpoint(body(10, consistencyProof(leaves, 10, 20), await note(20)))
    expect(again.status).toBe(200)
  })

  it('409 for the same size with another root (a fork), 200 for the same checkpoint again', async () => {
    const { w, leaves, note, body } = setup()
    await w.addCheckpoint(body(0, [], await note(10)))
    expect((await w.addCheckpoint(body(10, [], await note(10)))).status).toBe(200)
    const fork = await note(
      10,
      leaves.map((l, i) => (i === 0 ? leafHash(Buffer.from('x')) : l)),
    )
    expect((await w.addCheckpoint(body(10, [], fork))).status).toBe(409)
  })

  it('404 for an unknown origin, 403 for a checkpoint not signed by the log, 400 for malformed bodies', async () => {
    const { w, note, body } = setup()
    const other = ecdsaNoteSigner('other.example/log', new KeyObjectSigner(generateKeyPair('ec-p256').privateKey))
    const foreign = await signCheckpoint({ origin: 'other.example/log', size: 1, rootHash: Buffer.alloc(32), extensions: [] }, [other])
    expect((await w.addCheckpoint(body(0, [], foreign))).status).toBe(404)
    const impostor = ecdsaNoteSigner(ORIGIN, new KeyObjectSigner(generateKeyPair('ec-p256').privateKey))
    const forged = await signCheckpoint({ origin: ORIGIN, size: 5, rootHash: Buffer.alloc(32), extensions: [] }, [impostor])
    expect((await w.addCheckpoint(body(0, [], forged))).status).toBe(403)
    const n = await note(10)
    for (const b of ['old 0\n' + n, `old 01\n\n${n}`, `old 0\nnot-base64\n\n${n}`, `old 11\n\n${n}`, `old 0\n${Buffer.alloc(32).toString('base64')}\n\n${n}`]) {
      expect((await w.addCheckpoint(b)).status).toBe(400)
    }
  })

  it('a cosignature over another checkpoint, with another key, or from the future does not verify', async () => {
    const { w, note, body, privateKey } = setup()
    const n10 = await note(10)
    const a = await w.addCheckpoint(body(0, [], n10))
    const v = parseWitnessVerifierKey(w.verifierKey(), { now: () => NOW })
    const n11 = await note(11)
    expect(() => openCheckpoint(addSignatures(n11, [a.body]), v)).toThrow()
    const text = n10.slice(0, n10.lastIndexOf('\n\n') + 1)
    const future = cosign(text, 'witness.example/w1', privateKey, NOW + 3600)
    expect(() => openCheckpoint(addSignatures(n10, [future]), v)).toThrow()
    const otherKey = generateKeyPairSync('ed25519').privateKey
    const wrong = cosign(text, 'witness.example/w1', otherKey, NOW)
    expect(() =>
      openCheckpoint(addSignatures(n10, [wrong]), parseWitnessVerifierKey(witnessVerifierKey('witness.example/w1', generateKeyPairSync('ed25519').publicKey))),
    ).toThrow()
  })

  it('FileWitnessState: records survive a restart, the file is 0600', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'witness-'))
    try {
      const path = join(dir, 'state.json')
      const { w, note, body } = setup(new FileWitnessState(path))
      await w.addCheckpoint(body(0, [], await note(10)))
      expect(statSync(path).mode & 0o777).toBe(0o600)
      const again = new FileWitnessState(path)
      expect(again.get(ORIGIN)?.size).toBe(10)
      expect(JSON.parse(readFileSync(path, 'utf8'))[ORIGIN].size).toBe(10)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
