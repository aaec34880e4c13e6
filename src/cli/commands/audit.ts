/**
 * `warrant audit tail|search|verify|prove|verify-proof|verifier-key`: reads
 * an audit log file (src/audit) without writing to it. `verify` works on a
 * copy with only the log's verifier key and exits 1 with the problem's code
 * and place when anything was changed; `prove` writes an inclusion (or
 * consistency) proof that `verify-proof` checks offline.
 */
import { createPublicKey } from 'node:crypto'
import { availableParallelism } from 'node:os'
import { readFileSync, writeFileSync } from 'node:fs'
import { parseVerifierKey, verifierKey, verifyConsistencyBundle, verifyInclusionBundle, type NoteVerifier, type VerifyReport } from '../../audit/index.js'
import { AuditLogReader, verifyFileInParallel } from '../../audit/store/log-reader.js'
import { openCheckpoint } from '../../audit/checkpoint.js'
import { parseWitnessVerifierKey } from '../../audit/witness.js'
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = [
  '  audit tail --log FILE [-n 20]                             the last events, oldest first',
  '  audit search --log FILE [--type T] [--actor SPIFFE_ID] [--task ID] [--since TIME] [--until TIME] [--limit N]',
  '  audit verify --log FILE (--key VKEY | --key-file F) [--checkpoint NOTE_FILE ...] [--witness-key VKEY ...] [--no-event-check] [--workers N]',
  '                                                            --witness-key: every --checkpoint must carry that witness cosignature',
  '                                                            re-derive chain and tree, check every checkpoint; exit 1 where it breaks',
  '  audit prove --log FILE --seq N [--size M] [--out F]       inclusion proof of one event against a checkpoint',
  '  audit prove --log FILE --from-size A --size B [--out F]   consistency proof between two checkpoints',
  '  audit verify-proof --proof F (--key VKEY | --key-file F)  check a proof offline',
  '  audit verifier-key --public-key PEM_FILE --name NAME      the verifier key (C2SP vkey) of a checkpoint key',
].join('\n')

const FLAGS = {
  log: { type: 'string' },
  n: { type: 'string', short: 'n' },
  type: { type: 'string' },
  actor: { type: 'string' },
  task: { type: 'string' },
  since: { type: 'string' },
  until: { type: 'string' },
  limit: { type: 'string' },
  key: { type: 'string' },
  'key-file': { type: 'string' },
  checkpoint: { type: 'string', multiple: true },
  'witness-key': { type: 'string', multiple: true },
  'no-event-check': { type: 'boolean' },
  workers: { type: 'string' },
  seq: { type: 'string' },
  size: { type: 'string' },
  'from-size': { type: 'string' },
  out: { type: 'string' },
  proof: { type: 'string' },
  'public-key': { type: 'string' },
  name: { type: 'string' },
  output: { type: 'string' },
} as const

const arg = (message: string): IdentityError => new IdentityError('ERR_INVALID_ARGUMENT', message)

function need(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw arg(`--${flag} is required`)
  return v
}

function int(v: string | undefined, flag: string, min: number): number | undefined {
  if (v === undefined) return undefined
  if (!/^\d+$/.test(v) || !Number.isSafeInteger(Number(v)) || Number(v) < min) throw arg(`--${flag} must be an integer ≥ ${min}`)
  return Number(v)
}

function time(v: string | undefined, flag: string): number | undefined {
  if (v === undefined) return undefined
  const t = Date.parse(v)
  if (Number.isNaN(t)) throw arg(`--${flag} must be an RFC 3339 time (2026-12-05T12:00:00Z)`)
  return t
}

function readText(path: string, what: string): string {
  try {
    return readFileSync(path, 'utf8')
  } catch (cause) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `cannot read ${what} ${path}`, { cause })
  }
}

function verifier(values: { key?: string | undefined; 'key-file'?: string | undefined }): NoteVerifier {
  if ((values.key === undefined) === (values['key-file'] === undefined)) throw arg('give exactly one of --key and --key-file')
  return parseVerifierKey(values.key ?? readText(values['key-file']!, 'verifier key file').trim())
}

function openLog(path: string | undefined): AuditLogReader {
  return AuditLogReader.open(need(path, 'log'))
}

function printEvents(rows: { seq: number; event: string }[], json: boolean): void {
  if (json) {
    printJson(rows.map((r) => ({ seq: r.seq, event: JSON.parse(r.event) as unknown })))
    return
  }
  for (const r of rows) {
    const e = JSON.parse(r.event) as { time: string; type: string; outcome: string; actor?: { spiffe_id: string }; task_id?: string; reason?: string }
    const parts = [String(r.seq).padStart(8), e.time, e.type, e.outcome, e.reason ?? '', e.actor?.spiffe_id ?? '-', e.task_id ? `task=${e.task_id}` : '']
    process.stdout.write(`${parts.filter((p) => p !== '').join('  ')}\n`)
  }
}

function reportJson(r: VerifyReport): Record<string, unknown> {
  return {
    ok: r.ok,
    events: r.events,
    checkpoints: r.checkpoints,
    verified_size: r.verifiedSize,
    unsigned_tail: r.unsignedTail,
    root_hash: r.rootHash,
    origin: r.origin ?? null,
    problem: r.problem
      ? {
          code: r.problem.code,
          kind: r.problem.kind,
          seq: r.problem.seq ?? null,
          range: r.problem.range ?? null,
          checkpoint_size: r.problem.checkpointSize ?? null,
          message: r.problem.message,
        }
      : null,
  }
}

function where(r: VerifyReport): string {
  const p = r.problem!
  if (p.seq !== undefined) return `at event ${p.seq}`
  if (p.range) return `between events ${p.range.after + 1} and ${p.range.upTo}`
  if (p.checkpointSize !== undefined) return `at the checkpoint of size ${p.checkpointSize}`
  return 'in the log'
}

function emit(value: unknown, out: string | undefined): void {
  if (out === undefined) {
    printJson(value)
    return
  }
  writeFileSync(out, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o644 })
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (!cmd || !['tail', 'search', 'verify', 'prove', 'verify-proof', 'verifier-key'].includes(cmd)) {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, FLAGS)
  const json = outputFormat(values.output) === 'json'
  switch (cmd) {
    case 'tail': {
      const r = openLog(values.log)
      try {
        printEvents(r.tail(int(values.n, 'n', 1) ?? 20), json)
      } finally {
        r.close()
      }
      return 0
    }
    case 'search': {
      const r = openLog(values.log)
      try {
        const since = time(values.since, 'since')
        const until = time(values.until, 'until')
        const limit = int(values.limit, 'limit', 1)
        printEvents(
          r.search({
            ...(values.type !== undefined ? { type: values.type } : {}),
            ...(values.actor !== undefined ? { actor: values.actor } : {}),
            ...(values.task !== undefined ? { taskId: values.task } : {}),
            ...(since !== undefined ? { since } : {}),
            ...(until !== undefined ? { until } : {}),
            ...(limit !== undefined ? { limit } : {}),
          }),
          json,
        )
      } finally {
        r.close()
      }
      return 0
    }
    case 'verify': {
      const v = verifier(values)
      const external = (values.checkpoint ?? []).map((f) => readText(f, 'checkpoint'))
      const witnesses = (values['witness-key'] ?? []).map((k) => parseWitnessVerifierKey(k.includes('+') ? k : readText(k, 'witness key').trim()))
      if (witnesses.length > 0 && external.length === 0) throw arg('--witness-key checks the cosignatures of --checkpoint files: give at least one')
      // a witness's cosignature: that witness saw this checkpoint as the log's latest consistent tree (no split view)
      for (const note of external) for (const w of witnesses) openCheckpoint(note, w)
      const r = openLog(values.log)
      // hashing on worker threads (one per core, at most 4) unless --workers 0
      const workers = int(values.workers, 'workers', 0) ?? Math.min(4, availableParallelism())
      const opts = { verifier: v, external, checkEvents: !values['no-event-check'] }
      let report: VerifyReport
      try {
        report = workers === 0 ? r.verify(opts) : await verifyFileInParallel(r, { ...opts, workers })
      } finally {
        r.close()
      }
      if (json) printJson(reportJson(report))
      if (report.ok) {
        if (!json) {
          process.stdout.write(
            `OK: ${report.events} events; ${report.checkpoints} checkpoint(s) verified with ${v.name}; signed up to ${report.verifiedSize}` +
              `${report.unsignedTail > 0 ? `, ${report.unsignedTail} event(s) after the last checkpoint chained but not yet signed` : ''}; root ${report.rootHash}\n`,
          )
        }
        return 0
      }
      const p = report.problem!
      process.stderr.write(`warrant: audit log verification failed ${where(report)} (${p.kind}): ${p.message} [${p.code}]\n`)
      return 1
    }
    case 'prove': {
      const r = openLog(values.log)
      try {
        const size = int(values.size, 'size', 1)
        const from = int(values['from-size'], 'from-size', 0)
        if (from !== undefined) {
          if (values.seq !== undefined) throw arg('--seq and --from-size are two different proofs')
          if (size === undefined) throw arg('--size is required with --from-size')
          emit(r.proveConsistency(from, size), values.out)
        } else {
          emit(r.proveInclusion(int(need(values.seq, 'seq'), 'seq', 1)!, size), values.out)
        }
      } finally {
        r.close()
      }
      return 0
    }
    case 'verify-proof': {
      const v = verifier(values)
      let raw: unknown
      try {
        raw = JSON.parse(readText(need(values.proof, 'proof'), 'proof'))
      } catch (err) {
        if (err instanceof IdentityError) throw err
        throw new IdentityError('ERR_AUDIT_PROOF_INVALID', 'the proof file is not JSON')
      }
      const format = (raw as { format?: unknown } | null)?.format
      if (format === 'warrant-audit-consistency-v1') {
        const { first, second } = verifyConsistencyBundle(raw, v)
        if (json) printJson({ ok: true, origin: second.origin, first_size: first.size, second_size: second.size })
        else process.stdout.write(`OK: the log of ${second.size} events extends the log of ${first.size} (${second.origin}, signed by ${v.name})\n`)
        return 0
      }
      const { event, checkpoint, seq } = verifyInclusionBundle(raw, v)
      if (json) printJson({ ok: true, origin: checkpoint.origin, seq, tree_size: checkpoint.size, event })
      else
        process.stdout.write(
          `OK: event ${seq} (${event.type}, ${event.time}) is in the log of ${checkpoint.size} events (${checkpoint.origin}, signed by ${v.name})\n`,
        )
      return 0
    }
    case 'verifier-key': {
      let key
      try {
        key = createPublicKey(readText(need(values['public-key'], 'public-key'), 'public key'))
      } catch (cause) {
        if (cause instanceof IdentityError) throw cause
        throw new IdentityError('ERR_KEY_INVALID', 'the public key file is not a PEM public key', { cause })
      }
      let vkey: string
      try {
        vkey = verifierKey(need(values.name, 'name'), key)
      } catch (cause) {
        if (cause instanceof IdentityError) throw cause
        throw new IdentityError('ERR_KEY_INVALID', (cause as Error).message, { cause })
      }
      if (json) printJson({ verifier_key: vkey })
      else process.stdout.write(`${vkey}\n`)
      return 0
    }
  }
  return 2
}
