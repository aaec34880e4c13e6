/**
 * The work of the CSR pool, shared by its worker threads and its calling
 * thread (which takes its share when it is idle): check a CSR, or check it
 * and sign its X.509-SVID leaf; the shared form of a batch of leaves to sign,
 * the claiming of its positions, and the compact form of a worker's answers.
 */
import type { ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { createX509SvidSync, type SyncSigner } from '../../spiffe/x509-svid/certificate-builder.js'
import { verifyCsr, type VerifyCsrOptions } from '../../spiffe/x509-svid/csr.js'

function failure(err: unknown, what: string): { ok: false; code: ErrorCode; message: string } {
  if (err instanceof IdentityError) return { ok: false, code: err.code, message: err.message }
  if (err instanceof TypeError) return { ok: false, code: 'ERR_CSR_INVALID', message: 'invalid CSR: not DER bytes' }
  return { ok: false, code: 'ERR_INTERNAL', message: `${what} failed unexpectedly` }
}

/** @internal An outcome of a CSR check as a worker reports it (plain data). */
export type CsrOutcome = { ok: true; spki: Uint8Array; spiffeId: string | undefined; dnsNames: string[] } | { ok: false; code: ErrorCode; message: string }

/** Checks one CSR (`verifyCsr`). */
export function checkJob(der: Uint8Array, options: VerifyCsrOptions): CsrOutcome {
  try {
    const c = verifyCsr(der, options)
    return { ok: true, spki: c.spki, spiffeId: c.spiffeId, dnsNames: c.dnsNames }
  } catch (err) {
    return failure(err, 'CSR verification')
  }
}

/** One leaf to check and sign: what the server decided (ID, validity in ms since the epoch, DNS names) and the agent's CSR. */
export interface LeafJob {
  csr: Uint8Array
  spiffeId: string
  notBefore: number
  notAfter: number
  dnsNames: readonly string[]
}

/** A signed leaf's DER, or why there is none. */
export type LeafOutcome = Uint8Array | { code: ErrorCode; message: string }

/** SPIFFE IDs parsed once per thread (the server validated them when written); cleared when large. */
const ids = new Map<string, SpiffeId>()

/** Checks one CSR and signs its leaf with `ca` (the job's ID, validity and DNS names; only the CSR's key). */
export function signJob(job: LeafJob, ca: { certificate: Uint8Array; signer: SyncSigner }, options: VerifyCsrOptions): LeafOutcome {
  let spki: Uint8Array
  try {
    spki = verifyCsr(job.csr, options).spki
  } catch (err) {
    const f = failure(err, 'CSR verification')
    return { code: f.code, message: f.message }
  }
  try {
    let id = ids.get(job.spiffeId)
    if (id === undefined) {
      if (ids.size >= 10_000) ids.clear()
      ids.set(job.spiffeId, (id = SpiffeId.fromString(job.spiffeId)))
    }
    return createX509SvidSync({
      spiffeId: id,
      publicKey: { spki },
      signer: ca.signer,
      issuer: { certificate: ca.certificate },
      notBefore: new Date(job.notBefore),
      notAfter: new Date(job.notAfter),
      ...(job.dnsNames.length > 0 ? { dnsNames: job.dnsNames } : {}),
    })
  } catch (err) {
    if (err instanceof IdentityError) return { code: err.code, message: err.message }
    return { code: 'ERR_INTERNAL', message: 'X.509-SVID signing failed unexpectedly' }
  }
}

// ------------------------------------------------------------ compact messages

/**
 * A batch of leaf jobs as the pool shares it with its workers: the CSRs back
 * to back in one buffer and the validity times in another, both on shared
 * memory (every worker reads the same bytes; nothing is copied per worker),
 * plus the ID strings. Threads claim runs of positions from a shared counter
 * and read the jobs they claimed with `leafJobAt`.
 */
export interface PackedLeafJobs {
  csrs: Uint8Array
  /** End offset of each CSR in `csrs`. */
  ends: Uint32Array
  spiffeIds: string[]
  /** notBefore, notAfter of each job (ms since the epoch). */
  times: Float64Array
  /** DNS names per job; omitted when no job has any. */
  dnsNames?: (readonly string[])[]
}

export function packLeafJobs(jobs: readonly LeafJob[]): PackedLeafJobs {
  let total = 0
  for (const j of jobs) total += j.csr.length
  const csrs = new Uint8Array(new SharedArrayBuffer(total))
  const ends = new Uint32Array(new SharedArrayBuffer(4 * jobs.length))
  const times = new Float64Array(new SharedArrayBuffer(16 * jobs.length))
  const spiffeIds = new Array<string>(jobs.length)
  let anyDns = false
  let at = 0
  for (let i = 0; i < jobs.length; i++) {
    const j = jobs[i]!
    csrs.set(j.csr, at)
    at += j.csr.length
    ends[i] = at
    times[2 * i] = j.notBefore
    times[2 * i + 1] = j.notAfter
    spiffeIds[i] = j.spiffeId
    if (j.dnsNames.length > 0) anyDns = true
  }
  return { csrs, ends, spiffeIds, times, ...(anyDns ? { dnsNames: jobs.map((j) => j.dnsNames) } : {}) }
}

const NO_DNS: readonly string[] = []

/** Job `i` of a packed batch (its CSR is a view of the shared buffer). */
export function leafJobAt(p: PackedLeafJobs, i: number): LeafJob {
  const start = i === 0 ? 0 : p.ends[i - 1]!
  return {
    csr: p.csrs.subarray(start, p.ends[i]),
    spiffeId: p.spiffeIds[i]!,
    notBefore: p.times[2 * i]!,
    notAfter: p.times[2 * i + 1]!,
    dnsNames: p.dnsNames?.[i] ?? NO_DNS,
  }
}

/**
 * Claims runs of `chunk` positions of a batch of `n` jobs from the shared
 * counter `claim[0]` and calls `each(i)` for every position claimed, until
 * none is left or `max` runs were taken. Returns the runs, as start, end
 * pairs. Every thread claiming from the same counter gets disjoint runs.
 */
export function claimRuns(claim: Int32Array, n: number, chunk: number, each: (i: number) => void, max = Infinity): number[] {
  const runs: number[] = []
  while (runs.length < 2 * max) {
    const start = Atomics.add(claim, 0, chunk)
    if (start >= n) break
    const end = Math.min(n, start + chunk)
    for (let i = start; i < end; i++) each(i)
    runs.push(start, end)
  }
  return runs
}

/** A worker's answers, in the order it signed them: the leaves back to back (transferred), and the errors by position. */
export interface PackedLeafOutcomes {
  leaves: Uint8Array
  /** End offset of each leaf in `leaves` (an item with an error has an empty leaf). */
  ends: Uint32Array
  /** [position, code, message] of each item that has no leaf. */
  errors: [number, ErrorCode, string][]
}

export function packLeafOutcomes(outcomes: readonly LeafOutcome[]): { packed: PackedLeafOutcomes; transfer: ArrayBuffer[] } {
  let total = 0
  for (const o of outcomes) if (o instanceof Uint8Array) total += o.length
  const leaves = new Uint8Array(total)
  const ends = new Uint32Array(outcomes.length)
  const errors: [number, ErrorCode, string][] = []
  let at = 0
  for (let i = 0; i < outcomes.length; i++) {
    const o = outcomes[i]!
    if (o instanceof Uint8Array) {
      leaves.set(o, at)
      at += o.length
    } else {
      errors.push([i, o.code, o.message])
    }
    ends[i] = at
  }
  return { packed: { leaves, ends, errors }, transfer: [leaves.buffer, ends.buffer] }
}

/** The outcomes of a packed answer; leaves are views of its one buffer. `n` items are expected (missing ones are ERR_INTERNAL). */
export function unpackLeafOutcomes(p: PackedLeafOutcomes, n: number): LeafOutcome[] {
  const out = new Array<LeafOutcome>(n)
  let start = 0
  for (let i = 0; i < n; i++) {
    if (i >= p.ends.length) {
      out[i] = { code: 'ERR_INTERNAL', message: 'CSR verifier worker answered short' }
      continue
    }
    const end = p.ends[i]!
    out[i] = p.leaves.subarray(start, end)
    start = end
  }
  for (const [i, code, message] of p.errors) if (i >= 0 && i < n) out[i] = { code, message }
  return out
}
