import type { KeyObject } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { Worker } from 'node:worker_threads'
import type { ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { MAX_CSR_BYTES, verifyCsr, type VerifiedCsr, type VerifyCsrOptions } from '../../spiffe/x509-svid/csr.js'
import { KeyObjectSigner } from '../../spiffe/key-signer.js'
import type { SyncSigner } from '../../spiffe/x509-svid/certificate-builder.js'
import {
  checkJob,
  claimRuns,
  type CsrOutcome,
  leafJobAt,
  packLeafJobs,
  signJob,
  unpackLeafOutcomes,
  type LeafJob,
  type LeafOutcome,
  type PackedLeafJobs,
  type PackedLeafOutcomes,
} from './csr-jobs.js'
import type { X509CaDelegate } from './manager.js'
import { nativeEcSigner } from './native-ec-signer.js'
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
   * validity and DNS names; nothing else of the CSR). One promise for the
   * batch, settling (never rejecting) with each item's leaf DER or error, in
   * order. Optional: verifiers without it leave signing to the caller.
   */
  verifyAndSign?(items: readonly SignItem[], ca: X509CaDelegate): Promise<SignOutcome[]>
  /** Stops the workers; checks still pending settle with ERR_UNAVAILABLE. */
  close(): Promise<void>
}

/** One leaf for `verifyAndSign`: what the server decided (ID, validity in ms since the epoch from `X509CaDelegate.validity`, DNS names) and the agent's CSR. */
export type SignItem = LeafJob

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

/**
 * @internal A message to a worker: a job (CSRs to check, or a shared batch of
 * leaves to check and sign with CA generation `gen`, claimed `chunk` positions
 * at a time from the counter `claim[0]`), answered by a CsrJobResult with its
 * id; or the CA to sign with from now on (no answer). Messages on a port
 * arrive in order, so a CA is always in place before the first job that names
 * it.
 */
export type WorkerMessage =
  | { id: number; csrs: Uint8Array[] }
  | { id: number; gen: number; batch: PackedLeafJobs; claim: Int32Array; chunk: number }
  | { ca: { gen: number; certificate: Uint8Array; privateKey: KeyObject } }
/** @internal A worker's answer: checks, or packed leaves (in the order signed) with the runs of batch positions they are for. */
export interface CsrJobResult {
  id: number
  results?: CsrOutcome[]
  leaves?: PackedLeafOutcomes
  /** Start, end pairs of the batch positions the worker claimed, in order. */
  runs?: number[]
  /** In the answer to the start-up probe: whether the worker verifies ECDSA with the native addon. */
  native?: boolean
}

function checkFromWire(o: CsrOutcome | undefined): CsrCheck {
  if (o === undefined) return { ok: false, error: new IdentityError('ERR_INTERNAL', 'CSR verifier worker answered short') }
  if (!o.ok) return { ok: false, error: new IdentityError(o.code, o.message) }
  return { ok: true, csr: { spki: o.spki, spiffeId: o.spiffeId, dnsNames: o.dnsNames } }
}

function signFromWire(o: LeafOutcome): SignOutcome {
  return o instanceof Uint8Array ? { ok: true, leaf: o } : { ok: false, error: new IdentityError(o.code, o.message) }
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

/** Work a worker holds: answered by one message, or failed when the worker is lost. */
interface Held {
  readonly size: number
  /** Takes the worker's answer; returns how many items it answered. */
  onReply(m: CsrJobResult): number
  /** The worker will not answer (lost, or the pool closed). */
  fail(code: ErrorCode, message: string): void
}

/** A chunk of CSR checks waiting for a thread, or held by a worker. It settles exactly once. */
interface Chunk extends Held {
  /** The message that hands it to a worker. */
  post(id: number): WorkerMessage
  /** Runs it on the calling thread. */
  runInline(): void
}

/**
 * A batch of leaves to sign, shared with the workers it was posted to. Every
 * thread working on it claims runs of positions from one shared counter, so
 * the split follows whoever is free, and a worker answers once per batch. It
 * settles when every position is claimed and every worker it was posted to
 * has answered (or is lost: what that worker had claimed fails).
 */
class SignBatch {
  readonly claim = new Int32Array(new SharedArrayBuffer(4))
  /** Workers that will answer. */
  readonly waiting = new Set<Slot>()
  /** A worker was lost: the calling thread claims what is left whatever callerRuns says. */
  orphaned = false
  #lost: { code: ErrorCode; message: string } | undefined
  #settled = false

  readonly packed: PackedLeafJobs
  /** Positions per claim. */
  readonly chunk: number
  /** The item position of each batch position. */
  readonly positions: readonly number[]
  readonly ca: X509CaDelegate
  readonly #out: SignOutcome[]
  readonly #resolve: (out: SignOutcome[]) => void

  constructor(
    packed: PackedLeafJobs,
    chunk: number,
    positions: readonly number[],
    ca: X509CaDelegate,
    out: SignOutcome[],
    resolve: (out: SignOutcome[]) => void,
  ) {
    this.packed = packed
    this.chunk = chunk
    this.positions = positions
    this.ca = ca
    this.#out = out
    this.#resolve = resolve
  }

  get n(): number {
    return this.positions.length
  }

  get exhausted(): boolean {
    return Atomics.load(this.claim, 0) >= this.n
  }

  put(i: number, o: LeafOutcome): void {
    this.#out[this.positions[i]!] = signFromWire(o)
  }

  workerLost(slot: Slot, code: ErrorCode, message: string): void {
    this.waiting.delete(slot)
    this.orphaned = true
    this.#lost ??= { code, message }
  }

  /** Settles when nothing is left to claim or to wait for; true when settled (now or before). */
  settleIfDone(): boolean {
    if (this.#settled) return true
    if (!this.exhausted || this.waiting.size > 0) return false
    this.#settle(this.#lost ?? { code: 'ERR_INTERNAL', message: 'CSR verifier worker answered short' })
    return true
  }

  /** Settles now: every item without an outcome gets this error. */
  failRest(code: ErrorCode, message: string): void {
    if (this.#settled) return
    Atomics.store(this.claim, 0, this.n)
    this.#settle({ code, message })
  }

  #settle(missing: { code: ErrorCode; message: string }): void {
    this.#settled = true
    for (const at of this.positions) if (this.#out[at] === undefined) this.#out[at] = { ok: false, error: new IdentityError(missing.code, missing.message) }
    this.#resolve(this.#out)
  }
}

interface Slot {
  worker: Worker
  /** Items sent and not answered yet (a shared signing batch counts whole for each worker it went to); the worker is ref'd while above 0. */
  load: number
  jobs: Map<number, Held>
  /** The CA generation this worker signs with (0: none yet). */
  caGen: number
}

const MAX_POOL = 16

/** A compact copy: structured clone would otherwise copy a view's whole underlying buffer. */
const compact = (u: Uint8Array): Uint8Array => Uint8Array.prototype.slice.call(u)

const plausibleCsr = (c: unknown): c is Uint8Array => c instanceof Uint8Array && c.length <= MAX_CSR_BYTES

/** The worker's entry point; from TypeScript sources, the worker first registers tsx (as bin/warrant.js does). */
function workerSpec(): { entry: URL | string; eval: boolean; workerData?: unknown } {
  const self = import.meta.url
  const ext = self.endsWith('.ts') ? '.ts' : '.js'
  const entry = new URL(`./csr-verifier-worker${ext}`, self)
  if (ext === '.js') return { entry, eval: false }
  // tsx's ESM API module (the package maps `tsx/esm/api` to index.cjs for require, index.mjs for import).
  const api = pathToFileURL(
    createRequire(self)
      .resolve('tsx/esm/api')
      .replace(/\.cjs$/, '.mjs'),
  ).href
  const code =
    "const { workerData } = require('node:worker_threads');" + 'import(workerData.api).then((m) => { m.register(); return import(workerData.entry) });'
  return { entry: code, eval: true, workerData: { api, entry: entry.href } }
}

/**
 * A fixed pool of worker threads that verify CSRs (and sign leaves), with
 * the calling thread as one more member, so on a machine with as many busy
 * threads as cores no core is shared by two of ours.
 * - CSR checks are cut into chunks; each worker holds at most WORKER_CHUNKS
 *   of them, and the calling thread runs queued chunks when its event loop is
 *   idle.
 * - A batch of leaves to sign is packed on shared memory (csr-jobs.ts) and
 *   posted once to each worker it needs; the workers and the calling thread
 *   (one run per turn of its event loop) claim runs of it from a shared
 *   counter until none is left, and each worker answers once. Two messages
 *   per worker per batch, however the work splits.
 * Start it with the server and `close()` it on stop; a worker that dies is
 * replaced, and the work it held settles with ERR_INTERNAL (with no worker
 * left, everything runs on the calling thread).
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
  /** Signing batches with positions left to claim, oldest first. */
  readonly #batches: SignBatch[] = []
  /** Signing batches not settled yet. */
  readonly #open = new Set<SignBatch>()
  #inlineScheduled = false
  /** Items done by the workers and by the calling thread (for tests and diagnostics). */
  readonly #done = { worker: 0, caller: 0 }
  /** The calling thread's signer per CA. */
  readonly #inlineSigners = new WeakMap<X509CaDelegate, SyncSigner>()
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
    const held = slot.jobs.get(m.id)
    if (!held) return
    slot.jobs.delete(m.id)
    slot.load -= held.size
    if (slot.load === 0) slot.worker.unref()
    this.#done.worker += held.onReply(m)
    this.#pump()
  }

  #fail(slot: Slot, code: ErrorCode, message: string): void {
    for (const chunk of slot.jobs.values()) chunk.fail(code, message)
    slot.jobs.clear()
    slot.load = 0
  }

  verify(csrs: readonly Uint8Array[]): Promise<CsrCheck>[] {
    if (this.#closed) return csrs.map(() => Promise.resolve({ ok: false, error: new IdentityError('ERR_UNAVAILABLE', 'CSR verifier is closed') }))
    // Every worker lost and none could be restarted: check on this thread rather than refuse.
    if (this.#slots.length === 0) return inlineCsrVerifier.verify(csrs)
    const out = new Array<Promise<CsrCheck>>(csrs.length)
    const sent: number[] = []
    for (let i = 0; i < csrs.length; i++) {
      if (plausibleCsr(csrs[i])) sent.push(i)
      else out[i] = Promise.resolve(outcome(csrs[i]!))
    }
    for (const idx of this.#cut(sent)) {
      const deliver: ((c: CsrCheck) => void)[] = []
      for (const i of idx) out[i] = new Promise<CsrCheck>((resolve) => deliver.push(resolve))
      let settled = false
      const settle = (checks: (CsrOutcome | undefined)[]) => {
        if (settled) return
        settled = true
        for (let k = 0; k < deliver.length; k++) deliver[k]!(checkFromWire(checks[k]))
      }
      this.#queue.push({
        size: idx.length,
        post: (id) => ({ id, csrs: idx.map((i) => compact(csrs[i]!)) }),
        runInline: () => settle(idx.map((i) => checkJob(csrs[i]!, inlineVerifyOptions()))),
        onReply: (m) => {
          settle(m.results ?? [])
          return idx.length
        },
        fail: (code, message) => settle(idx.map(() => ({ ok: false, code, message }))),
      })
    }
    this.#pump()
    return out
  }

  verifyAndSign(items: readonly SignItem[], ca: X509CaDelegate): Promise<SignOutcome[]> {
    if (this.#closed) return Promise.resolve(items.map(() => ({ ok: false, error: new IdentityError('ERR_UNAVAILABLE', 'CSR verifier is closed') })))
    let gen = this.#caGens.get(ca)
    if (gen === undefined) this.#caGens.set(ca, (gen = this.#nextGen++))
    const caGen = gen
    const out = new Array<SignOutcome>(items.length)
    const sent: number[] = []
    for (let i = 0; i < items.length; i++) {
      if (plausibleCsr(items[i]!.csr)) {
        sent.push(i)
      } else {
        // An implausible CSR is refused here with the error `verify` would give (the check never passes).
        const c = outcome(items[i]!.csr)
        out[i] = c.ok ? { ok: false, error: new IdentityError('ERR_CSR_INVALID', 'invalid CSR') } : c
      }
    }
    if (sent.length === 0) return Promise.resolve(out)
    return new Promise<SignOutcome[]>((resolve) => {
      const chunk = this.#chunkFor(sent.length)
      const b = new SignBatch(packLeafJobs(sent.map((i) => items[i]!)), chunk, sent, ca, out, resolve)
      this.#open.add(b)
      this.#batches.push(b)
      // The least busy workers, as many as the batch has runs for.
      const workers = [...this.#slots].sort((x, y) => x.jobs.size - y.jobs.size).slice(0, Math.ceil(sent.length / chunk))
      for (const slot of workers) {
        if (slot.caGen !== caGen) {
          const msg: WorkerMessage = { ca: { gen: caGen, certificate: ca.certificate, privateKey: ca.privateKey } }
          slot.worker.postMessage(msg)
          slot.caGen = caGen
        }
        const id = this.#nextId++
        b.waiting.add(slot)
        slot.jobs.set(id, {
          size: b.n,
          onReply: (m) => {
            b.waiting.delete(slot)
            const runs = m.runs ?? []
            let count = 0
            for (let r = 0; r + 1 < runs.length; r += 2) count += runs[r + 1]! - runs[r]!
            const leaves = m.leaves ? unpackLeafOutcomes(m.leaves, count) : []
            let k = 0
            for (let r = 0; r + 1 < runs.length; r += 2) {
              for (let i = runs[r]!; i < runs[r + 1]! && i < b.n; i++)
                b.put(i, leaves[k++] ?? { code: 'ERR_INTERNAL', message: 'CSR verifier worker answered short' })
            }
            this.#settleBatch(b)
            return count
          },
          fail: (code, message) => {
            b.workerLost(slot, code, message)
            this.#settleBatch(b)
          },
        })
        if (slot.load === 0) slot.worker.ref()
        slot.load += b.n
        const msg: WorkerMessage = { id, gen: caGen, batch: b.packed, claim: b.claim, chunk }
        slot.worker.postMessage(msg)
      }
      this.#pump()
    })
  }

  /** Settles a batch that is done; for one with positions left that only this thread can take, schedules its turn. */
  #settleBatch(b: SignBatch): void {
    if (b.settleIfDone()) {
      this.#open.delete(b)
      const i = this.#batches.indexOf(b)
      if (i >= 0) this.#batches.splice(i, 1)
      return
    }
    this.#pump()
  }

  /** Whether the calling thread claims positions of this batch. */
  #claimsHere(b: SignBatch): boolean {
    return this.#callerRuns || b.orphaned || this.#slots.length === 0
  }

  /** Items per chunk or claim: at most chunkSize, and spread over every thread for a small batch. */
  #chunkFor(n: number): number {
    return Math.max(1, Math.min(this.#chunkSize, Math.ceil(n / Math.max(1, this.#slots.length + (this.#callerRuns ? 1 : 0)))))
  }

  /** Cuts the positions of plausible items into chunks of `#chunkFor` items. */
  #cut(sent: readonly number[]): number[][] {
    const chunk = this.#chunkFor(sent.length)
    const out: number[][] = []
    for (let start = 0; start < sent.length; start += chunk) out.push(sent.slice(start, start + chunk))
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
      const msg = c.post(id)
      slot.jobs.set(id, c)
      if (slot.load === 0) slot.worker.ref()
      slot.load += c.size
      slot.worker.postMessage(msg)
    }
    // No worker left at all: the calling thread runs everything. Otherwise it helps when callerRuns is on.
    const inline = (this.#queue.length > 0 && (this.#callerRuns || this.#slots.length === 0)) || this.#batches.some((b) => this.#claimsHere(b))
    if (inline && !this.#inlineScheduled) {
      this.#inlineScheduled = true
      // setImmediate: after the I/O this turn of the event loop has, so answers from workers are taken first.
      setImmediate(() => this.#runInline())
    }
  }

  /** The calling thread's turn: one run of the oldest signing batch it claims from, else one queued chunk; then the next turn if work is left. */
  #runInline(): void {
    this.#inlineScheduled = false
    for (let k = 0; k < this.#batches.length;) {
      const b = this.#batches[k]!
      if (!this.#claimsHere(b)) {
        k++
        continue
      }
      let signer = this.#inlineSigners.get(b.ca)
      if (signer === undefined) this.#inlineSigners.set(b.ca, (signer = nativeEcSigner(b.ca.privateKey) ?? new KeyObjectSigner(b.ca.privateKey)))
      const c = { certificate: b.ca.certificate, signer }
      const options = inlineVerifyOptions()
      let count = 0
      try {
        claimRuns(
          b.claim,
          b.n,
          b.chunk,
          (i) => {
            b.put(i, signJob(leafJobAt(b.packed, i), c, options))
            count++
          },
          1,
        )
      } catch {
        b.failRest('ERR_INTERNAL', 'X.509-SVID signing failed unexpectedly')
      }
      this.#done.caller += count
      if (b.exhausted) {
        this.#batches.splice(k, 1)
        this.#settleBatch(b)
      }
      if (count > 0) {
        this.#pump()
        return
      }
    }
    const c = this.#queue.shift()
    if (c === undefined) return
    try {
      c.runInline()
    } catch {
      c.fail('ERR_INTERNAL', 'CSR check failed unexpectedly')
    }
    this.#done.caller += c.size
    this.#pump()
  }

  /** @internal Stops every worker as a crash would (they are replaced); for tests of the recovery. */
  async crashWorkersForTest(): Promise<void> {
    await Promise.all(this.#slots.map((s) => s.worker.terminate()))
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const slots = this.#slots.splice(0)
    for (const s of slots) this.#fail(s, 'ERR_UNAVAILABLE', 'CSR verifier is closed')
    for (const c of this.#queue.splice(0)) c.fail('ERR_UNAVAILABLE', 'CSR verifier is closed')
    this.#batches.splice(0)
    for (const b of this.#open) b.failRest('ERR_UNAVAILABLE', 'CSR verifier is closed')
    this.#open.clear()
    await Promise.all(slots.map((s) => s.worker.terminate()))
  }
}
