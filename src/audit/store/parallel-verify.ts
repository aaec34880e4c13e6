/**
 * `verify` on worker threads. The log is cut into pages by seq (4,096
 * events, page-verify.ts); each page is read from the file and hashed by
 * whichever thread takes it: a worker with its own read-only connection, or
 * the main thread itself while no worker is free (or still starting), so
 * reading is spread like hashing and a slow start costs nothing. The main
 * thread keeps the one LogVerifier and applies the pages in order: a whole
 * aligned page with no checkpoint inside as one subtree root, any other
 * page row by row. The report is the single-threaded one's
 * (test/unit/audit/store/parallel-verify.test.ts).
 */
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import { LogVerifier, type LogVerifierOptions, type VerifyReport } from '../verify.js'
import { PAGE_HEIGHT, pageBounds, pageCount, type PageResult, type PageVerifier } from './page-verify.js'

export { PAGE_HEIGHT } from './page-verify.js'

export interface VerifyJob {
  id: number
  path: string
  lo: number
  hi: number
  checkEvents: boolean
}

export type VerifyJobResult = PageResult & { id: number }

type WorkerReply = VerifyJobResult | { id: number; error: { name: string; message: string; code?: string } } | { ready: true }

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

/** Jobs a worker may hold at once: one running, one waiting, so it never idles on the main thread. */
const PER_WORKER = 2

interface Slot {
  readonly worker: Worker
  ready: boolean
  busy: number
}

class Pool {
  readonly #slots: Slot[] = []
  readonly #waiting = new Map<number, { slot: Slot; resolve: (r: PageResult) => void; reject: (e: unknown) => void }>()

  constructor(size: number) {
    for (let i = 0; i < size; i++) {
      const spec = workerSpec()
      const w = new Worker(spec.entry, { eval: spec.eval, ...(spec.workerData === undefined ? {} : { workerData: spec.workerData }) })
      const slot: Slot = { worker: w, ready: false, busy: 0 }
      w.on('message', (r: WorkerReply) => {
        if ('ready' in r) {
          slot.ready = true
          return
        }
        const p = this.#waiting.get(r.id)
        this.#waiting.delete(r.id)
        slot.busy--
        if (p === undefined) return
        if ('error' in r) p.reject(Object.assign(new Error(r.error.message), { name: r.error.name }, r.error.code !== undefined ? { code: r.error.code } : {}))
        else p.resolve(r)
      })
      w.on('error', (err) => this.#failAll(err))
      w.on('exit', (code) => {
        slot.ready = false
        if (code !== 0) this.#failAll(new Error(`audit verify worker exited with code ${code}`))
      })
      this.#slots.push(slot)
    }
  }

  #failAll(err: unknown): void {
    for (const p of this.#waiting.values()) p.reject(err)
    this.#waiting.clear()
  }

  /** The started worker with the fewest jobs, if one can take another. */
  free(): Slot | undefined {
    let best: Slot | undefined
    for (const s of this.#slots) if (s.ready && s.busy < PER_WORKER && (best === undefined || s.busy < best.busy)) best = s
    return best
  }

  run(slot: Slot, job: VerifyJob): Promise<PageResult> {
    slot.busy++
    return new Promise((resolve, reject) => {
      this.#waiting.set(job.id, { slot, resolve, reject })
      slot.worker.postMessage(job)
    })
  }

  async close(): Promise<void> {
    await Promise.all(this.#slots.map((s) => s.worker.terminate()))
  }
}

interface Page {
  result?: PageResult
  error?: Error
  settled?: Promise<void>
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

/**
 * Verifies the log file at `path` (whose largest seq is `maxSeq`, read on
 * this thread through `local`) with `workers` threads besides this one. Same report as feeding every row to
 * `LogVerifier.push`. A read failure (SqliteError) throws, carrying in
 * `lastSeq` the last event applied before it.
 */
export async function verifyInParallel(
  source: { path: string; maxSeq: number; local: PageVerifier },
  opts: LogVerifierOptions,
  workers: number,
  /** For tests: every page goes to a worker, none to this thread. */
  test?: { workersOnly?: boolean },
): Promise<VerifyReport> {
  const v = new LogVerifier(opts)
  const checkEvents = opts.checkEvents ?? true
  const count = pageCount(source.maxSeq)
  const local = source.local
  const pool = new Pool(Math.max(1, workers))
  const pages: Page[] = []
  let applied = 0
  let lastSeq = 0

  const apply = (r: PageResult): void => {
    if (r.eventProblem) v.reportEvent(r.eventProblem.seq, r.eventProblem.kind, r.eventProblem.message)
    const n = r.seqs.length
    if (n === 0) return
    const first = r.seqs[0]!
    if (r.root !== undefined && !v.needsLeaves(first, r.seqs[n - 1]!)) {
      v.pushSubtree(first, PAGE_HEIGHT, Buffer.from(r.root), r.brokenLink === 0 ? [] : [r.brokenLink])
    } else {
      const leaves = Buffer.from(r.leaves.buffer, r.leaves.byteOffset, r.leaves.byteLength)
      for (let i = 0; i < n; i++) v.pushHashed(r.seqs[i]!, leaves.subarray(32 * i, 32 * i + 32), r.seqs[i] !== r.brokenLink)
    }
    lastSeq = r.seqs[n - 1]!
  }

  try {
    let next = 0
    while (applied < count) {
      // apply what is done, in page order
      for (let p = pages[applied]; p !== undefined && (p.result !== undefined || p.error !== undefined); p = pages[applied]) {
        if (p.error !== undefined) throw p.error
        apply(p.result!)
        pages[applied++] = {}
      }
      if (applied === count) break
      if (next < count) {
        const { lo, hi } = pageBounds(next, count)
        const slot = pool.free()
        if (slot !== undefined) {
          const page: Page = {}
          page.settled = pool.run(slot, { id: next, path: source.path, lo, hi, checkEvents }).then(
            (r) => void (page.result = r),
            (err: unknown) => void (page.error = err instanceof Error ? err : new Error(String(err))),
          )
          pages[next++] = page
        } else if (test?.workersOnly) {
          await new Promise((r) => setTimeout(r, 1))
        } else {
          // no worker free: this thread takes the page, then lets the workers' replies in
          pages[next++] = { result: local.verify(lo, hi, checkEvents) }
          await turn()
        }
        continue
      }
      await pages[applied]!.settled
    }
  } catch (err) {
    throw err instanceof Error ? Object.assign(err, { lastSeq }) : new Error(String(err))
  } finally {
    await pool.close()
  }
  return v.finish()
}
