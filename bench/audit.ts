/**
 * `npm run bench -- audit [--quick]`: the audit log's verify path.
 *
 * audit_verify_events_per_s: what `warrant audit verify` does, in process
 * (the CLI's start-up excluded; hashing on min(4, cores) worker threads, its
 * default, the single-threaded figure alongside), over a log of 1,000,000 events (100,000
 * with --quick) written once into a temp dir through AuditLog (group
 * commit) with a checkpoint every 100,000 events: read every row of the
 * SQLite file, check each event's schema and canonical form, re-derive the
 * chain link by link and the Merkle tree, and check every checkpoint's
 * signature and root with the verifier key. audit_verify_hashes_only_events_per_s
 * is the same without the per-event schema check (`--no-event-check`).
 *
 * Baseline, same run: a raw loop of node:crypto's one-shot
 * `hash('sha256', bytes)` over the same canonical event bytes, held in
 * memory (no file, no parsing): one SHA-256 per event, where verify needs at
 * least three (leaf, chain link, about one interior node) plus the reading.
 * Target ratio ≥ 0.5. Rounds alternate and the best of each is kept.
 * audit_verify_hash_floor_events_per_s (context, no target): the hashing any
 * verify of this log format must do, alone: per event its Merkle leaf hash,
 * its chain link (SHA-256 over the previous chain value and the same bytes)
 * and its share of the tree's interior nodes (an accumulator push), with the
 * same one-shot SHA-256 over the same in-memory bytes, on one thread, with no
 * reading and no checks. Its ratio to the baseline is the most a
 * single-threaded verify can reach; with W threads on C cores, at most
 * min(W, C) times that.
 * Also prints audit_append_events_per_s (group commit, 10,000 appends in
 * flight; no baseline) and the load average.
 */
import { createHash, hash } from 'node:crypto'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { chainHash, ecdsaNoteSigner, GENESIS, leafHash, parseVerifierKey, verifierKey, type AuditEventInput } from '../src/audit/index.js'
import { MerkleAccumulator } from '../src/audit/merkle.js'
import { AuditLog } from '../src/audit/store/audit-log.js'
import { AuditLogReader, verifyFileInParallel } from '../src/audit/store/log-reader.js'
import { MemoryKeyManager } from '../src/keymanager/index.js'
import { report } from './lib.js'

const ORIGIN = 'bench.example/warrant/audit'
const TYPES = ['token.exchanged', 'token.renewed', 'token.delegated', 'x509_svid.issued', 'token.introspected'] as const

function event(i: number): AuditEventInput {
  return {
    time: new Date(Date.UTC(2026, 11, 5) + i).toISOString(),
    type: TYPES[i % TYPES.length]!,
    outcome: 'success',
    actor: { spiffe_id: `spiffe://bench.example/agents/a${i % 100}`, instance: `i-${i % 1000}` },
    subject: `spiffe://bench.example/agents/a${i % 100}`,
    task_id: `task-${Math.floor(i / 10)}`,
    orchestration_id: `orch-${Math.floor(i / 1000)}`,
    resource: ['https://api.bench.example/'],
    scope: ['read', 'write'],
    delegation_depth: i % 3,
    token_id: `jti-${i.toString(36)}`,
  }
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const n = quick ? 100_000 : 1_000_000
  const every = 100_000
  const inFlight = 10_000
  const dir = mkdtempSync(join(tmpdir(), 'wbench-audit-'))
  try {
    const key = await new MemoryKeyManager().generateKey('audit', 'ec-p256')
    const path = join(dir, 'audit.db')
    const log = AuditLog.open({ path, origin: ORIGIN, signer: ecdsaNoteSigner(ORIGIN, key) })
    const t0 = performance.now()
    for (let i = 0; i < n;) {
      const batch: Promise<unknown>[] = []
      for (const end = Math.min(n, i + inFlight); i < end; i++) batch.push(log.append(event(i)))
      await Promise.all(batch)
      if (i % every === 0 || i === n) await log.checkpoint()
    }
    const appendRate = (n * 1000) / (performance.now() - t0)
    await log.close()
    const verifier = parseVerifierKey(verifierKey(ORIGIN, key.publicKey))

    // the baseline's input: the same canonical bytes, in memory
    const reader = AuditLogReader.open(path)
    const offsets = new Float64Array(n + 1)
    const chunks: Buffer[] = []
    let total = 0
    let k = 0
    for (const [, bytes] of reader.rows()) {
      chunks.push(bytes)
      total += bytes.byteLength
      offsets[++k] = total
    }
    const all = Buffer.concat(chunks, total)
    chunks.length = 0

    const workers = Math.min(4, availableParallelism())
    const timeVerify = async (checkEvents: boolean, parallel: boolean): Promise<number> => {
      const t = performance.now()
      const r = parallel ? await verifyFileInParallel(reader, { verifier, checkEvents, workers }) : reader.verify({ verifier, checkEvents })
      const ms = performance.now() - t
      if (!r.ok || r.events !== n || r.verifiedSize !== n) throw new Error(`bench log did not verify: ${JSON.stringify(r.problem ?? r)}`)
      return (n * 1000) / ms
    }
    let sink = 0
    const timeRaw = (oneShot: boolean): number => {
      const t = performance.now()
      for (let i = 0; i < n; i++) {
        const bytes = all.subarray(offsets[i], offsets[i + 1])
        const d = oneShot ? hash('sha256', bytes, 'buffer') : createHash('sha256').update(bytes).digest()
        sink ^= d[0]!
      }
      return (n * 1000) / (performance.now() - t)
    }

    // the floor: the three hashes per event verify cannot avoid, nothing else
    const timeFloor = (): number => {
      const t = performance.now()
      const tree = new MerkleAccumulator()
      let chain: Uint8Array = GENESIS
      for (let i = 0; i < n; i++) {
        const bytes = all.subarray(offsets[i], offsets[i + 1])
        chain = chainHash(chain, bytes)
        tree.push(leafHash(bytes))
      }
      sink ^= chain[0]! ^ tree.root()[0]!
      return (n * 1000) / (performance.now() - t)
    }

    let floor = 0
    let full = 0
    let hashesOnly = 0
    let fullSingle = 0
    let hashesOnlySingle = 0
    let base = 0
    let baseCreateHash = 0
    for (let round = 0; round < 2; round++) {
      base = Math.max(base, timeRaw(true))
      hashesOnly = Math.max(hashesOnly, await timeVerify(false, true))
      base = Math.max(base, timeRaw(true))
      full = Math.max(full, await timeVerify(true, true))
      baseCreateHash = Math.max(baseCreateHash, timeRaw(false))
      hashesOnlySingle = Math.max(hashesOnlySingle, await timeVerify(false, false))
      if (round === 0) fullSingle = await timeVerify(true, false)
      floor = Math.max(floor, timeFloor())
    }
    reader.close()
    const extra = {
      events: n,
      checkpoints: Math.ceil(n / every),
      avg_event_bytes: Math.round(total / n),
      file_mb: Math.round(statSync(path).size / 1e5) / 10,
      baseline_createhash_per_s: Math.round(baseCreateHash),
      workers,
      cores: availableParallelism(),
      loadavg_1m: Math.round(loadavg()[0]! * 100) / 100,
      sink: sink & 1,
    }
    report('audit_verify_events_per_s', full, base, 'events/s', { ...extra, single_thread_events_per_s: Math.round(fullSingle) })
    report('audit_verify_hashes_only_events_per_s', hashesOnly, base, 'events/s', { ...extra, single_thread_events_per_s: Math.round(hashesOnlySingle) })
    report('audit_verify_hash_floor_events_per_s', floor, base, 'events/s', {
      ...extra,
      what: 'leaf hash + chain link + tree push per event over the same bytes in memory, one thread, no reading, no checks: the most a single-threaded verify reaches',
      most_with_workers: Math.round(Math.min(workers + 1, availableParallelism()) * (floor / base) * 1000) / 1000,
    })
    report('audit_append_events_per_s', appendRate, null, 'events/s', { events: n, in_flight: inFlight, loadavg_1m: extra.loadavg_1m })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
