/**
 * A worker thread of `verifyInParallel`: for each page it is given (a seq
 * range of the log file) it reads the rows through its own read-only
 * connection and hashes them (page-verify.ts), and sends back the leaf hashes,
 * the first broken link and event problem, and for a whole aligned page the
 * subtree root. Reading and hashing only; the main thread keeps the verdict
 * (LogVerifier).
 */
import Database from 'better-sqlite3'
import { parentPort } from 'node:worker_threads'
import type { VerifyJob, VerifyJobResult } from './parallel-verify.js'
import { PageVerifier } from './page-verify.js'

const open = new Map<string, PageVerifier>()

function run(job: VerifyJob): VerifyJobResult {
  let pv = open.get(job.path)
  if (pv === undefined) {
    pv = new PageVerifier(new Database(job.path, { readonly: true, fileMustExist: true }))
    open.set(job.path, pv)
  }
  return { id: job.id, ...pv.verify(job.lo, job.hi, job.checkEvents) }
}

parentPort?.on('message', (job: VerifyJob) => {
  let r: VerifyJobResult
  try {
    r = run(job)
  } catch (err) {
    const e = err as Error & { code?: unknown }
    parentPort!.postMessage({ id: job.id, error: { name: e.name, message: e.message, ...(typeof e.code === 'string' ? { code: e.code } : {}) } })
    return
  }
  parentPort!.postMessage(r, [r.seqs.buffer as ArrayBuffer, r.leaves.buffer as ArrayBuffer])
})

parentPort?.postMessage({ ready: true })
