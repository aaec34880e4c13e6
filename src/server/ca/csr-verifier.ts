import { availableParallelism } from 'node:os'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { MAX_CSR_BYTES, verifyCsr, type VerifiedCsr, type VerifyCsrOptions } from '../../spiffe/x509-svid/csr.js'
import { nativeEcdsa } from './native-ecdsa.js'

/**
 * Checks agents' CSRs (PKCS#10 self-signature, key type, SANs) off the main
 * thread. Importing a CSR's public key and verifying its signature cost about
 * four ECDSA signatures; on a worker pool they run on every core while the
 * main thread signs with the CA (whose key may sit in an HSM, so signing
 * stays behind the `Signer` interface on the main thread). ECDSA signatures
 * are checked with the native `ecverify` addon when it is built (see
 * native-ecdsa.ts), with node:crypto otherwise.
 */

/** The outcome of one CSR check. Never a rejected promise: a bad CSR is `{ ok: false }`. */
export type CsrCheck = { ok: true; csr: VerifiedCsr } | { ok: false; error: IdentityError }

export interface CsrVerifier {
  /**
   * Checks each CSR with the rules of `verifyCsr`. Returns one promise per CSR,
   * in order; each settles (never rejects) as soon as its own CSR is checked,
   * so a caller can sign the first ones while the rest are still verified.
   */
  verify(csrs: readonly Uint8Array[]): Promise<CsrCheck>[]
  /** Stops the workers; checks still pending settle with ERR_UNAVAILABLE. */
  close(): Promise<void>
}

let inlineOptions: VerifyCsrOptions | undefined

function outcome(der: Uint8Array): CsrCheck {
  try {
    if (inlineOptions === undefined) {
      const ecdsa = nativeEcdsa()
      inlineOptions = ecdsa ? { ecdsa } : {}
    }
    return { ok: true, csr: verifyCsr(der, inlineOptions) }
  } catch (err) {
    if (err instanceof IdentityError) return { ok: false, error: err }
    if (err instanceof TypeError) return { ok: false, error: new IdentityError('ERR_CSR_INVALID', 'invalid CSR: not DER bytes', { cause: err }) }
    return { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verification failed unexpectedly', { cause: err }) }
  }
}

/** Checks CSRs on the calling thread (tests, tools, and servers run without a pool). */
export const inlineCsrVerifier: CsrVerifier = {
  verify: (csrs) => csrs.map((c) => Promise.resolve(outcome(c))),
  close: async () => undefined,
}

// ------------------------------------------------------------ wire format (worker ↔ pool)

/** @internal A job posted to a worker. */
export interface CsrJob {
  id: number
  csrs: Uint8Array[]
}
/** @internal A check as a worker reports it (plain data). */
export type CsrOutcome = { ok: true; spki: Uint8Array; spiffeId: string | undefined; dnsNames: string[] } | { ok: false; code: ErrorCode; message: string }
/** @internal */
export interface CsrJobResult {
  id: number
  results: CsrOutcome[]
  /** In the answer to the start-up probe: whether the worker verifies ECDSA with the native addon. */
  native?: boolean
}

function fromWire(o: CsrOutcome): CsrCheck {
  if (o.ok) return { ok: true, csr: { spki: o.spki, spiffeId: o.spiffeId, dnsNames: o.dnsNames } }
  return { ok: false, error: new IdentityError(o.code, o.message) }
}

// ------------------------------------------------------------ pool

export interface CsrVerifierPoolOptions {
  /** Worker threads (default: the number of cores, at least 1, at most 16). */
  size?: number
  /** Most CSRs sent to a worker in one message (default 16): small enough to spread a batch over every worker. */
  chunkSize?: number
}

interface Pending {
  deliver: ((c: CsrCheck) => void)[]
}

interface Slot {
  worker: Worker
  /** CSRs sent and not answered yet. */
  load: number
  jobs: Map<number, Pending>
}

const MAX_POOL = 16

/** The worker's entry point; from TypeScript sources, the worker first registers tsx (as bin/warrant.js does). */
function workerSpec(): { entry: URL | string; eval: boolean; workerData?: unknown } {
  const self = import.meta.url
  const ext = self.endsWith('.ts') ? '.ts' : '.js'
  const entry = new URL(`./csr-verifier-worker${ext}`, self)
  if (ext === '.js') return { entry, eval: false }
  // tsx's ESM API module (the package maps `tsx/esm/api` to index.cjs for require, index.mjs for import).
  const api = pathToFileURL(createRequire(self).resolve('tsx/esm/api').replace(/\.cjs$/, '.mjs')).href
  const code =
    "const { workerData } = require('node:worker_threads');" +
    'import(workerData.api).then((m) => { m.register(); return import(workerData.entry) });'
  return { entry: code, eval: true, workerData: { api, entry: entry.href } }
}

/**
 * A fixed pool of worker threads that verify CSRs. Start it with the server
 * and `close()` it on stop; a worker that dies is replaced, and the checks it
 * held settle with ERR_INTERNAL (with no worker left, CSRs are checked on the
 * calling thread).
 */
export class CsrVerifierPool implements CsrVerifier {
  readonly size: number
  /** Whether the workers verify ECDSA signatures with the native addon (else with node:crypto). */
  nativeEcdsa = false
  readonly #chunkSize: number
  readonly #slots: Slot[] = []
  #nextId = 1
  #closed = false

  private constructor(size: number, chunkSize: number) {
    this.size = size
    this.#chunkSize = chunkSize
  }

  /** Starts the workers and waits until each has loaded its code. */
  static async start(opts: CsrVerifierPoolOptions = {}): Promise<CsrVerifierPool> {
    const size = opts.size ?? Math.min(MAX_POOL, Math.max(1, availableParallelism()))
    if (!Number.isInteger(size) || size < 1 || size > MAX_POOL) throw new RangeError(`size must be an integer from 1 to ${MAX_POOL}`)
    const chunkSize = opts.chunkSize ?? 16
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new RangeError('chunkSize must be a positive integer')
    const pool = new CsrVerifierPool(size, chunkSize)
    try {
      await Promise.all(Array.from({ length: size }, () => pool.#spawn()))
    } catch (err) {
      await pool.close()
      throw err
    }
    return pool
  }

  #spawn(): Promise<void> {
    const spec = workerSpec()
    const worker = new Worker(spec.entry, { eval: spec.eval, ...(spec.workerData === undefined ? {} : { workerData: spec.workerData }) })
    const slot: Slot = { worker, load: 0, jobs: new Map() }
    this.#slots.push(slot)
    worker.unref()
    let online = false
    const ready = new Promise<void>((resolve, reject) => {
      // The worker answers a zero-CSR job once its module graph has loaded.
      const probe: CsrJob = { id: 0, csrs: [] }
      worker.once('online', () => worker.postMessage(probe))
      const onFirst = (m: CsrJobResult) => {
        if (m.id !== 0) return
        online = true
        this.nativeEcdsa = m.native === true
        worker.off('message', onFirst)
        resolve()
      }
      worker.on('message', onFirst)
      worker.once('error', (err) => {
        if (!online) reject(new IdentityError('ERR_INTERNAL', 'CSR verifier worker failed to start', { cause: err }))
      })
    })
    worker.on('message', (m: CsrJobResult) => this.#onResult(slot, m))
    const lost = (why: string) => {
      const i = this.#slots.indexOf(slot)
      if (i < 0) return
      this.#slots.splice(i, 1)
      this.#fail(slot, this.#closed ? 'ERR_UNAVAILABLE' : 'ERR_INTERNAL', why)
      if (!this.#closed && online) void this.#spawn().catch(() => undefined)
    }
    worker.on('error', () => lost('CSR verifier worker failed'))
    worker.on('exit', () => lost('CSR verifier worker exited'))
    return ready
  }

  #onResult(slot: Slot, m: CsrJobResult): void {
    const job = slot.jobs.get(m.id)
    if (!job) return
    slot.jobs.delete(m.id)
    slot.load -= job.deliver.length
    if (slot.load === 0) slot.worker.unref()
    for (let i = 0; i < job.deliver.length; i++) {
      const r = m.results[i]
      job.deliver[i]!(r ? fromWire(r) : { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verifier worker answered short') })
    }
  }

  #fail(slot: Slot, code: ErrorCode, message: string): void {
    for (const job of slot.jobs.values()) for (const d of job.deliver) d({ ok: false, error: new IdentityError(code, message) })
    slot.jobs.clear()
    slot.load = 0
  }

  verify(csrs: readonly Uint8Array[]): Promise<CsrCheck>[] {
    if (this.#closed) return csrs.map(() => Promise.resolve({ ok: false, error: new IdentityError('ERR_UNAVAILABLE', 'CSR verifier is closed') }))
    // Every worker lost and none could be restarted: check on this thread rather than refuse.
    if (this.#slots.length === 0) return inlineCsrVerifier.verify(csrs)
    const out: Promise<CsrCheck>[] = new Array(csrs.length)
    // Anything that is not a plausible CSR (not bytes, over the size cap) is refused here, without a copy to a worker.
    const sent: number[] = []
    for (let i = 0; i < csrs.length; i++) {
      const c = csrs[i]
      if (c instanceof Uint8Array && c.length <= MAX_CSR_BYTES) sent.push(i)
      else out[i] = Promise.resolve(outcome(c as Uint8Array))
    }
    const chunk = Math.max(1, Math.min(this.#chunkSize, Math.ceil(sent.length / this.#slots.length)))
    for (let start = 0; start < sent.length; start += chunk) {
      const idx = sent.slice(start, start + chunk)
      // A compact copy each: structured clone would otherwise copy a view's whole underlying buffer.
      const part = idx.map((i) => Uint8Array.prototype.slice.call(csrs[i]!))
      const deliver: ((c: CsrCheck) => void)[] = []
      for (const i of idx) out[i] = new Promise<CsrCheck>((resolve) => deliver.push(resolve))
      let slot = this.#slots[0]!
      for (const s of this.#slots) if (s.load < slot.load) slot = s
      const id = this.#nextId++
      slot.jobs.set(id, { deliver })
      if (slot.load === 0) slot.worker.ref()
      slot.load += part.length
      const job: CsrJob = { id, csrs: part }
      slot.worker.postMessage(job)
    }
    return out
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const slots = this.#slots.splice(0)
    for (const s of slots) this.#fail(s, 'ERR_UNAVAILABLE', 'CSR verifier is closed')
    await Promise.all(slots.map((s) => s.worker.terminate()))
  }
}
