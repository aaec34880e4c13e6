/**
 * A worker thread of `verifyInParallel`: for one page of stored events it
 * computes the leaf hashes, checks every chain link against the stored chain
 * values, optionally checks each event's schema and canonical form, and, for
 * a whole aligned page, the root of its subtree. Pure computation; the
 * main thread reads the file and keeps the verdict (LogVerifier).
 */
import { parentPort } from 'node:worker_threads'
import { chainHash } from '../hash-chain.js'
import { leafHash, MerkleAccumulator } from '../merkle.js'
import { checkEventBytes } from '../verify.js'
import type { VerifyJob, VerifyJobResult } from './parallel-verify.js'

function run(job: VerifyJob): VerifyJobResult {
  const events = Buffer.from(job.events.buffer, job.events.byteOffset, job.events.byteLength)
  const chains = Buffer.from(job.chains.buffer, job.chains.byteOffset, job.chains.byteLength)
  const leaves = new Uint8Array(32 * job.count)
  const tree = job.subtree ? new MerkleAccumulator() : undefined
  let prev: Uint8Array = job.prev
  let brokenLink = 0
  let eventProblem: VerifyJobResult['eventProblem']
  for (let i = 0; i < job.count; i++) {
    const bytes = events.subarray(job.offsets[i], job.offsets[i + 1])
    const stored = chains.subarray(32 * i, 32 * i + 32)
    const seq = job.firstSeq + i
    if (job.checkEvents && eventProblem === undefined) {
      const p = checkEventBytes(bytes)
      if (p) eventProblem = { seq, kind: p.kind, message: `event ${seq} ${p.message}` }
    }
    const leaf = leafHash(bytes)
    leaves.set(leaf, 32 * i)
    tree?.push(leaf)
    if (brokenLink === 0 && !chainHash(prev, bytes).equals(stored)) brokenLink = seq
    prev = stored
  }
  return { id: job.id, leaves, ...(tree ? { root: new Uint8Array(tree.root()) } : {}), brokenLink, ...(eventProblem ? { eventProblem } : {}) }
}

parentPort?.on('message', (job: VerifyJob) => {
  const r = run(job)
  parentPort!.postMessage(r, [r.leaves.buffer as ArrayBuffer])
})
