/**
 * `verify` on worker threads: the main thread reads the file page by page
 * (4,096 events) and keeps the one LogVerifier; workers hash. Each page
 * goes to a worker with the stored chain value before it, so every link is
 * checked independently; a whole page aligned on 4,096 leaves with no
 * checkpoint inside comes back as one subtree root, so the main thread does
 * no hashing for it. Results are applied in page order: the report is the
 * same as the single-threaded one's (test/unit/audit/store/parallel-verify.test.ts).
 */
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { chainHash, GENESIS } from '../hash-chain.js'
import { leafHash } from '../merkle.js'
import { checkEventBytes, LogVerifier, type LogVerifierOptions, type VerifyReport } from '../verify.js'

export const PAGE_HEIGHT = 12
const PAGE = 2 ** PAGE_HEIGHT

export interface VerifyJob {
  id: number
  firstSeq: number
  count: number
  events: Uint8Array
  offsets: Uint32Array
  chains: Uint8Array
  prev: Uint8Array
  checkEvents: boolean
  subtree: boolean
}

export interface VerifyJobResult {
  id: number
  leaves: Uint8Array
  root?: Uint8Array
  /** The first seq of the page whose chain link fails, 0 when none. */
  brokenLink: number
  eventProblem?: { seq: number; kind: 'event_invalid' | 'non_canonical'; message: string }
}

function workerSpec(): { entry: URL | string; eval: boolean; workerData?: unknown } {
  const self = import.meta.url
  const ext = self.endsWith('.ts') ? '.ts' : '.js'
  const entry = new URL(`./verify-worker${ext}`, self)
  if (ext === '.js') return { entry, eval: false }
  // from TypeScript sources the worker first registers tsx, as bin/warrant.js does
  const api = pathToFileURL(
    createRequire(self)
      .resolve('tsx/esm/api')
      .replace(/\.cjs$/, '.mjs'),
  ).href
  const code =
    "const { workerData } = require('node:worker_threads');" + 'import(workerData.api).then((m) => { m.register(); return import(workerData.entry) });'
  return { entry: code, eval: true, workerData: { api, entry: entry.href } }
}

class Pool {
  readonly #workers: Worker[] = []
  readonly #waiting = new Map<number, { resolve: (r: VerifyJobResult) => void; reject: (e: unknown) => void }>()
  #next = 0

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const spec = workerSpec()
      const w = new Worker(spec.entry, { eval: spec.eval, ...(spec.workerData === undefined ? {} : { workerData: spec.workerData }) })
      w.on('message', (r: VerifyJobResult) => {
        const p = this.#waiting.get(r.id)
        this.#waiting.delete(r.id)
        p?.resolve(r)
      })
      w.on('error', (err) => this.#failAll(err))
      w.on('exit', (code) => {
        if (code !== 0) this.#failAll(new Error(`audit verify worker exited with code ${code}`))
      })
      this.#workers.push(w)
    }
  }

  #failAll(err: unknown): void {
    for (const p of this.#waiting.values()) p.reject(err)
    this.#waiting.clear()
  }

  run(job: VerifyJob): Promise<VerifyJobResult> {
    const w = this.#workers[this.#next++ % this.#workers.length]!
    return new Promise((resolve, reject) => {
      this.#waiting.set(job.id, { resolve, reject })
      w.postMessage(job, [job.events.buffer as ArrayBuffer, job.chains.buffer as ArrayBuffer, job.offsets.buffer as ArrayBuffer])
    })
  }

  async close(): Promise<void> {
    await Promise.all(this.#workers.map((w) => w.terminate()))
  }
}

type Row = [number, Buffer, Buffer]

/**
 * Verifies the pages of rows (each in seq order, pages in order) with
 * `workers` threads. Same report as feeding every row to `LogVerifier.push`.
 */
export async function verifyInParallel(pages: Iterable<Row[]>, opts: LogVerifierOptions, workers: number): Promise<VerifyReport> {
  const v = new LogVerifier(opts)
  const checkEvents = opts.checkEvents ?? true
  const pool = new Pool(Math.max(1, workers))
  const inflight: { rows: Row[]; firstSeq: number; aligned: boolean; result: Promise<VerifyJobResult> }[] = []
  let prev: Uint8Array = GENESIS
  let id = 0

  const apply = async (): Promise<void> => {
    const job = inflight.shift()!
    const r = await job.result
    if (r.eventProblem) v.reportEvent(r.eventProblem.seq, r.eventProblem.kind, r.eventProblem.message)
    const last = job.firstSeq + job.rows.length - 1
    if (job.aligned && r.root !== undefined && !v.needsLeaves(job.firstSeq, last)) {
      v.pushSubtree(job.firstSeq, PAGE_HEIGHT, Buffer.from(r.root), r.brokenLink === 0 ? [] : [r.brokenLink])
      return
    }
    const leaves = Buffer.from(r.leaves.buffer, r.leaves.byteOffset, r.leaves.byteLength)
    for (let i = 0; i < job.rows.length; i++) {
      const seq = job.firstSeq + i
      v.pushHashed(seq, leaves.subarray(32 * i, 32 * i + 32), seq !== r.brokenLink)
    }
  }

  try {
    for (const rows of pages) {
      if (rows.length === 0) continue
      const firstSeq = rows[0]![0]
      const contiguous = rows[rows.length - 1]![0] - firstSeq + 1 === rows.length
      if (!contiguous) {
        // a gap: settle what is in flight, then this page on this thread, row by row
        while (inflight.length > 0) await apply()
        for (const [seq, bytes, stored] of rows) {
          if (checkEvents) {
            const p = checkEventBytes(bytes)
            if (p) v.reportEvent(seq, p.kind, `event ${seq} ${p.message}`)
          }
          v.pushHashed(seq, leafHash(bytes), chainHash(prev, bytes).equals(stored))
          prev = stored.byteLength === 32 ? stored : GENESIS
        }
        continue
      }
      let total = 0
      for (const r of rows) total += r[1].byteLength
      const events = new Uint8Array(total)
      const offsets = new Uint32Array(rows.length + 1)
      const chains = new Uint8Array(32 * rows.length)
      let at = 0
      rows.forEach(([, bytes, stored], i) => {
        events.set(bytes, at)
        at += bytes.byteLength
        offsets[i + 1] = at
        // a stored chain value of the wrong size cannot match: zeros make its link fail
        if (stored.byteLength === 32) chains.set(stored, 32 * i)
      })
      const aligned = rows.length === PAGE && (firstSeq - 1) % PAGE === 0
      const job: VerifyJob = { id: id++, firstSeq, count: rows.length, events, offsets, chains, prev: new Uint8Array(prev), checkEvents, subtree: aligned }
      const lastStored = rows[rows.length - 1]![2]
      prev = lastStored.byteLength === 32 ? lastStored : GENESIS
      inflight.push({ rows, firstSeq, aligned, result: pool.run(job) })
      if (inflight.length >= 2 * Math.max(1, workers)) await apply()
    }
    while (inflight.length > 0) await apply()
  } finally {
    await pool.close()
  }
  return v.finish()
}
