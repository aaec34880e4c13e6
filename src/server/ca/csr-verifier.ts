import type { KeyObject } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { MAX_CSR_BYTES, verifyCsr, type VerifiedCsr, type VerifyCsrOptions } from '../../spiffe/x509-svid/csr.js'
import { KeyObjectSigner } from '../../spiffe/key-signer.js'
import { checkJob, signJob } from './csr-jobs.js'
import type { X509CaDelegate } from './manager.js'
import { nativeEcdsa } from './native-ecdsa.js'

/**
 * Checks agents' CSRs (PKCS#10 self-signature, key type, SANs) off the main
 * thread. Importing a CSR's public key and verifying its signature cost about
 * four ECDSA signatures; on a worker pool they run on every core while the
 * main thread signs with the CA (whose key may sit in an HSM, so signing
 * stays behind the `Signer` interface on the main thread). ECDSA signatures
 * are checked with the native `ecverify` addon when it is built (see
 * native-ecdsa.ts), with node:crypto otherwise.
 *
 * When the CA's key is a software key (memory, disk key managers), the pool
 * also signs: `verifyAndSign` checks each CSR and builds and signs its leaf on
 * the same worker, so a batch's whole cost spreads over every core instead of
 * queueing its signatures on the main thread. HSM keys never leave their key
 * manager; their leaves are signed on the main thread after `verify`.
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
  /**
   * Checks each item's CSR like `verify` and, when it passes, signs the item's
   * X.509-SVID leaf with `ca` (the CSR's public key, the item's SPIFFE ID,
   * validity and DNS names; nothing else of the CSR). One promise per item, in
   * order, each settling (never rejecting) with the leaf's DER or the error.
   * Optional: verifiers without it leave signing to the caller.
   */
  verifyAndSign?(items: readonly SignItem[], ca: X509CaDelegate): Promise<SignOutcome>[]
  /** Stops the workers; checks still pending settle with ERR_UNAVAILABLE. */
  close(): Promise<void>
}

/** One leaf for `verifyAndSign`: what the server decided (ID, validity, DNS names) and the agent's CSR. */
export interface SignItem {
  csr: Uint8Array
  spiffeId: string
  /** ms since the epoch, from `X509CaDelegate.validity`. */
  notBefore: number
  notAfter: number
  dnsNames: readonly string[]
}

/** The outcome of one `verifyAndSign` item. Never a rejected promise. */
export type SignOutcome = { ok: true; leaf: Uint8Array } | { ok: false; error: IdentityError }

let inlineOptions: VerifyCsrOptions | undefined

/** verifyCsr options on this thread: the native ECDSA check when the addon loads. */
function inlineVerifyOptions(): VerifyCsrOptions {
  if (inlineOptions === undefined) {
    const ecdsa = nativeEcdsa()
    inlineOptions = ecdsa ? { ecdsa } : {}
  }
  return inlineOptions
}

function outcome(der: Uint8Array): CsrCheck {
  try {
    return { ok: true, csr: verifyCsr(der, inlineVerifyOptions()) }
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

/** @internal A leaf to sign, as posted to a worker (its CSR a compact copy). */
export interface WireSignItem {
  csr: Uint8Array
  spiffeId: string
  notBefore: number
  notAfter: number
  dnsNames: readonly string[]
}
/**
 * @internal A message to a worker: a job (CSRs to check, or leaves to check
 * and sign with CA generation `gen`), answered by a CsrJobResult with its id;
 * or the CA to sign with from now on (no answer). Messages on a port arrive in
 * order, so a CA is always in place before the first job that names it.
 */
export type WorkerMessage = { id: number; csrs: Uint8Array[] } | { id: number; gen: number; sign: WireSignItem[] } | { ca: { gen: number; certificate: Uint8Array; privateKey: KeyObject } }
/** @internal An outcome as a worker reports it (plain data): a checked CSR, a signed leaf, or an error. */
export type CsrOutcome =
  | { ok: true; spki: Uint8Array; spiffeId: string | undefined; dnsNames: string[] }
  | { ok: true; leaf: Uint8Array }
  | { ok: false; code: ErrorCode; message: string }
/** @internal */
export interface CsrJobResult {
  id: number
  results: CsrOutcome[]
  /** In the answer to the start-up probe: whether the worker verifies ECDSA with the native addon. */
  native?: boolean
}

function checkFromWire(o: CsrOutcome | undefined): CsrCheck {
  if (o === undefined) return { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verifier worker answered short') }
  if (!o.ok) return { ok: false, error: new IdentityError(o.code, o.message) }
  if ('leaf' in o) return { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verifier worker answered a check with a leaf') }
  return { ok: true, csr: { spki: o.spki, spiffeId: o.spiffeId, dnsNames: o.dnsNames } }
}

function signFromWire(o: CsrOutcome | undefined): SignOutcome {
  if (o === undefined) return { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verifier worker answered short') }
  if (!o.ok) return { ok: false, error: new IdentityError(o.code, o.message) }
  if (!('leaf' in o)) return { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verifier worker answered a signing job without a leaf') }
  return { ok: true, leaf: o.leaf }
}

// ------------------------------------------------------------ pool

export interface CsrVerifierPoolOptions {
  /** Worker threads (default: one fewer than the cores, at least 1, at most 16: the calling thread takes a share too). */
  size?: number
  /** Most CSRs in one chunk of work (default 8): small enough to spread a batch, and to keep the calling thread's turns short. */
  chunkSize?: number
  /**
   * Whether the calling thread runs queued chunks itself when its event loop
   * is idle (default true). Each worker holds at most six chunks at a time;
   * the rest wait in the pool's queue for whichever thread is free first.
   */
  callerRuns?: boolean
}

/**
 * Chunks a worker holds at once: enough that it never waits for the calling
 * thread (busy with a chunk of its own) to hand it more. Measured with 8-item
 * chunks on 2 cores: 2 left the worker idle, 16 left the calling thread idle.
 */
const WORKER_CHUNKS = 6

/** A chunk of work waiting for a thread: what to post to a worker, or what to run on the calling thread. */
interface Chunk {
  deliver: ((o: CsrOutcome | undefined) => void)[]
  job: (id: number, slot: Slot) => WorkerMessage
  inline: () => CsrOutcome[] | Promise<CsrOutcome[]>
}

interface Pending {
  deliver: ((o: CsrOutcome | undefined) => void)[]
}

interface Slot {
  worker: Worker
  /** Items sent and not answered yet. */
  load: number
  jobs: Map<number, Pending>
  /** The CA generation this worker signs with (0: none yet). */
  caGen: number
}

const MAX_POOL = 16

/** A compact copy: structured clone would otherwise copy a view's whole underlying buffer. */
const compact = (u: Uint8Array): Uint8Array => Uint8Array.prototype.slice.call(u)

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
 * A fixed pool of worker threads that verify CSRs (and sign leaves), with
 * the calling thread as one more member: work is cut into chunks, each
 * worker holds at most two, and the calling thread runs queued chunks when
 * its event loop is idle, so on a machine with as many busy threads as cores
 * no core is shared by two of ours. Start it with the server and `close()`
 * it on stop; a worker that dies is replaced, and the checks it held settle
 * with ERR_INTERNAL (with no worker left, CSRs are checked on the calling
 * thread).
 */
export class CsrVerifierPool implements CsrVerifier {
  readonly size: number
  /** Whether the workers verify ECDSA signatures with the native addon (else with node:crypto). */
  nativeEcdsa = false
  readonly #chunkSize: number
  readonly #callerRuns: boolean
  readonly #slots: Slot[] = []
  /** Chunks no thread has taken yet, oldest first. */
  readonly #queue: Chunk[] = []
  #inlineScheduled = false
  /** Items done by the workers and by the calling thread (for tests and diagnostics). */
  readonly #done = { worker: 0, caller: 0 }
  /** The calling thread's signer per CA. */
  readonly #inlineSigners = new WeakMap<X509CaDelegate, KeyObjectSigner>()
  /** A generation number per CA the workers have been given (a rotation makes a new delegate). */
  readonly #caGens = new WeakMap<X509CaDelegate, number>()
  #nextGen = 1
  #nextId = 1
  #closed = false

  private constructor(size: number, chunkSize: number, callerRuns: boolean) {
    this.size = size
    this.#chunkSize = chunkSize
    this.#callerRuns = callerRuns
  }

  /** How many items the workers and the calling thread have answered. */
  get stats(): { worker: number; caller: number } {
    return { ...this.#done }
  }

  /** Starts the workers and waits until each has loaded its code. */
  static async start(opts: CsrVerifierPoolOptions = {}): Promise<CsrVerifierPool> {
    const size = opts.size ?? Math.min(MAX_POOL, Math.max(1, availableParallelism() - 1))
    if (!Number.isInteger(size) || size < 1 || size > MAX_POOL) throw new RangeError(`size must be an integer from 1 to ${MAX_POOL}`)
    const chunkSize = opts.chunkSize ?? 8
    if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new RangeError('chunkSize must be a positive integer')
    const pool = new CsrVerifierPool(size, chunkSize, opts.callerRuns ?? true)
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
    const slot: Slot = { worker, load: 0, jobs: new Map(), caGen: 0 }
    this.#slots.push(slot)
    worker.unref()
    let online = false
    const ready = new Promise<void>((resolve, reject) => {
      // The worker answers a zero-CSR job once its module graph has loaded.
      const probe: WorkerMessage = { id: 0, csrs: [] }
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
      this.#pump()
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
    this.#done.worker += job.deliver.length
    for (let i = 0; i < job.deliver.length; i++) job.deliver[i]!(m.results[i])
    this.#pump()
  }

  #fail(slot: Slot, code: ErrorCode, message: string): void {
    for (const job of slot.jobs.values()) for (const d of job.deliver) d({ ok: false, code, message })
    slot.jobs.clear()
    slot.load = 0
  }

  verify(csrs: readonly Uint8Array[]): Promise<CsrCheck>[] {
    if (this.#closed) return csrs.map(() => Promise.resolve({ ok: false, error: new IdentityError('ERR_UNAVAILABLE', 'CSR verifier is closed') }))
    // Every worker lost and none could be restarted: check on this thread rather than refuse.
    if (this.#slots.length === 0) return inlineCsrVerifier.verify(csrs)
    return this.#dispatch(
      csrs,
      (c) => c,
      outcome,
      checkFromWire,
      (idx) => (id) => ({ id, csrs: idx.map((i) => compact(csrs[i]!)) }),
      (idx) => () => idx.map((i) => checkJob(csrs[i]!, inlineVerifyOptions())),
    )
  }

  verifyAndSign(items: readonly SignItem[], ca: X509CaDelegate): Promise<SignOutcome>[] {
    if (this.#closed) return items.map(() => Promise.resolve({ ok: false, error: new IdentityError('ERR_UNAVAILABLE', 'CSR verifier is closed') }))
    let gen = this.#caGens.get(ca)
    if (gen === undefined) this.#caGens.set(ca, (gen = this.#nextGen++))
    const caGen = gen
    // An implausible CSR is refused here with the error `verify` would give (the check never passes).
    const refused = (item: SignItem): SignOutcome => {
      const c = outcome(item.csr)
      return c.ok ? { ok: false, error: new IdentityError('ERR_CSR_INVALID', 'invalid CSR') } : c
    }
    return this.#dispatch(
      items,
      (item) => item.csr,
      refused,
      signFromWire,
      (idx) => (id, slot) => {
        if (slot.caGen !== caGen) {
          const msg: WorkerMessage = { ca: { gen: caGen, certificate: ca.certificate, privateKey: ca.privateKey } }
          slot.worker.postMessage(msg)
          slot.caGen = caGen
        }
        const sign = idx.map((i): WireSignItem => {
          const it = items[i]!
          return { csr: compact(it.csr), spiffeId: it.spiffeId, notBefore: it.notBefore, notAfter: it.notAfter, dnsNames: it.dnsNames }
        })
        return { id, gen: caGen, sign }
      },
      (idx) => async () => {
        let signer = this.#inlineSigners.get(ca)
        if (signer === undefined) this.#inlineSigners.set(ca, (signer = new KeyObjectSigner(ca.privateKey)))
        const c = { certificate: ca.certificate, signer }
        const out: CsrOutcome[] = []
        for (const i of idx) out.push(await signJob(items[i]!, c, inlineVerifyOptions()))
        return out
      },
    )
  }

  /**
   * Cuts items into chunks and queues them (see the class comment), one
   * promise per item in order. Anything whose CSR is not a plausible CSR (not
   * bytes, over the size cap) is answered by `refuse` here, without a copy to
   * a worker.
   */
  #dispatch<I, R>(
    items: readonly I[],
    csrOf: (item: I) => unknown,
    refuse: (item: I) => R,
    fromWire: (o: CsrOutcome | undefined) => R,
    job: (idx: number[]) => Chunk['job'],
    inline: (idx: number[]) => Chunk['inline'],
  ): Promise<R>[] {
    const out: Promise<R>[] = new Array(items.length)
    const sent: number[] = []
    for (let i = 0; i < items.length; i++) {
      const c = csrOf(items[i]!)
      if (c instanceof Uint8Array && c.length <= MAX_CSR_BYTES) sent.push(i)
      else out[i] = Promise.resolve(refuse(items[i]!))
    }
    const chunk = Math.max(1, Math.min(this.#chunkSize, Math.ceil(sent.length / (this.#slots.length + (this.#callerRuns ? 1 : 0)))))
    for (let start = 0; start < sent.length; start += chunk) {
      const idx = sent.slice(start, start + chunk)
      const deliver: ((o: CsrOutcome | undefined) => void)[] = []
      for (const i of idx) out[i] = new Promise<R>((resolve) => deliver.push((o) => resolve(fromWire(o))))
      this.#queue.push({ deliver, job: job(idx), inline: inline(idx) })
    }
    this.#pump()
    return out
  }

  /** Hands queued chunks to workers with room, and schedules the calling thread's turn for the rest. */
  #pump(): void {
    while (this.#queue.length > 0) {
      let slot: Slot | undefined
      for (const s of this.#slots) if (s.jobs.size < WORKER_CHUNKS && (slot === undefined || s.jobs.size < slot.jobs.size)) slot = s
      if (slot === undefined) break
      const c = this.#queue.shift()!
      const id = this.#nextId++
      const msg = c.job(id, slot)
      slot.jobs.set(id, { deliver: c.deliver })
      if (slot.load === 0) slot.worker.ref()
      slot.load += c.deliver.length
      slot.worker.postMessage(msg)
    }
    // No worker left at all: the calling thread runs everything. Otherwise it helps when callerRuns is on.
    if (this.#queue.length > 0 && !this.#inlineScheduled && (this.#callerRuns || this.#slots.length === 0)) {
      this.#inlineScheduled = true
      // setImmediate: after the I/O this turn of the event loop has, so answers from workers are taken first.
      setImmediate(() => void this.#runInline())
    }
  }

  /** The calling thread's turn: one queued chunk, then the next turn if work is left. */
  async #runInline(): Promise<void> {
    this.#inlineScheduled = false
    const c = this.#queue.shift()
    if (c === undefined) return
    let results: CsrOutcome[]
    try {
      results = await c.inline()
    } catch {
      results = []
    }
    this.#done.caller += c.deliver.length
    for (let i = 0; i < c.deliver.length; i++) c.deliver[i]!(results[i] ?? { ok: false, code: 'ERR_INTERNAL', message: 'CSR check failed unexpectedly' })
    this.#pump()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const slots = this.#slots.splice(0)
    for (const s of slots) this.#fail(s, 'ERR_UNAVAILABLE', 'CSR verifier is closed')
    for (const c of this.#queue.splice(0)) for (const d of c.deliver) d({ ok: false, code: 'ERR_UNAVAILABLE', message: 'CSR verifier is closed' })
    await Promise.all(slots.map((s) => s.worker.terminate()))
  }
}
