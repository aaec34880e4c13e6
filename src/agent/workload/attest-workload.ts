import { IdentityError } from '../../errors/identity-error.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { CallOpts, WorkloadAttestor, WorkloadCaller } from '../../plugin/contracts.js'
import { noteProcReads } from './proc-reads.js'

/** A configured workload attestor and its plugin name (the selector type). */
export interface NamedWorkloadAttestor {
  name: string
  attestor: WorkloadAttestor
}

/**
 * Runs every workload attestor on the caller at the same time and merges their
 * selectors as `<name>:<value>` (deduplicated, in attestor order). As in
 * SPIRE, the call fails only when every attestor fails; single failures are
 * logged to `log`. `opts` goes to each attestor as it is (its signal is not
 * read here: a call context makes one only when something needs it). The
 * failure is ERR_WORKLOAD_ATTESTATION_FAILED, whose message the API boundary
 * replaces with "workload attestation failed".
 *
 * Attestors may read `/proc/<pid>/…`; once they are done, the caller's pid is
 * marked (`proc-reads.ts`) so that the Workload API's re-check reads `/proc`
 * in full before these selectors are used.
 */
export async function attestWorkload(caller: WorkloadCaller, attestors: readonly NamedWorkloadAttestor[], opts: CallOpts, log: Logger): Promise<string[]> {
  try {
    return await runAttestors(caller, attestors, opts, log)
  } finally {
    noteProcReads(caller.pid)
  }
}

async function runAttestors(caller: WorkloadCaller, attestors: readonly NamedWorkloadAttestor[], opts: CallOpts, log: Logger): Promise<string[]> {
  if (attestors.length === 0) throw new TypeError('attestWorkload: no workload attestors configured')
  const pid = caller.pid
  if (attestors.length === 1) {
    // The usual case (one attestor, often answering without I/O): no allSettled round.
    const { name, attestor } = attestors[0]!
    let values: string[]
    try {
      values = await attestor.attest(caller, opts)
    } catch (reason) {
      log.warn({ [F.PID]: pid, [F.PLUGIN_NAME]: name, [F.ERR]: reason }, 'Workload attestor failed')
      throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `all 1 workload attestors failed for pid ${pid}`, {
        cause: reason,
        details: { pid },
      })
    }
    return prefixed(name, values)
  }
  const results = await Promise.allSettled(attestors.map((a) => a.attestor.attest(caller, opts)))
  const selectors: string[] = []
  const seen = new Set<string>()
  let failures = 0
  results.forEach((r, i) => {
    const name = attestors[i]!.name
    if (r.status === 'rejected') {
      failures++
      log.warn({ [F.PID]: pid, [F.PLUGIN_NAME]: name, [F.ERR]: r.reason as unknown }, 'Workload attestor failed')
      return
    }
    for (const v of r.value) {
      const s = `${name}:${v}`
      if (!seen.has(s)) {
        seen.add(s)
        selectors.push(s)
      }
    }
  })
  if (failures === attestors.length) {
    const first = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')
    throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `all ${failures} workload attestors failed for pid ${pid}`, {
      cause: first?.reason,
      details: { pid },
    })
  }
  return selectors
}

/** `<name>:<value>` for each value, deduplicated, in order. */
function prefixed(name: string, values: readonly string[]): string[] {
  const out: string[] = []
  if (values.length <= 32) {
    for (const v of values) {
      const s = `${name}:${v}`
      if (!out.includes(s)) out.push(s)
    }
    return out
  }
  const seen = new Set<string>()
  for (const v of values) {
    const s = `${name}:${v}`
    if (!seen.has(s)) {
      seen.add(s)
      out.push(s)
    }
  }
  return out
}

/**
 * How long one attestation of a connection may be reused for its later calls:
 * the least `selectorsStableForMs` of the attestors (0 when any does not say).
 */
export function attestationReuseMs(attestors: readonly NamedWorkloadAttestor[]): number {
  if (attestors.length === 0) return 0
  return Math.max(0, Math.min(...attestors.map((a) => a.attestor.selectorsStableForMs ?? 0)))
}
