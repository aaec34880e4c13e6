/**
 * Reads an audit log file (a copy, or the live file) read-only: the rows in
 * seq order for `verify`, the checkpoints, search and tail, and inclusion
 * and consistency proofs (which recompute the leaf hashes from the events,
 * never trusting stored hashes).
 */
import { resolve } from 'node:path'
import Database from 'better-sqlite3'
import { IdentityError } from '../../errors/identity-error.js'
import { consistencyProof, inclusionProof, leafHash } from '../merkle.js'
import { CONSISTENCY_FORMAT, INCLUSION_FORMAT, type ConsistencyBundle, type InclusionBundle } from '../proof.js'
import { LogVerifier, type VerifyReport } from '../verify.js'
import type { NoteVerifier } from '../checkpoint.js'
import { PageVerifier } from './page-verify.js'
import { PAGE_HEIGHT, verifyInParallel } from './parallel-verify.js'

export interface StoredEventRow {
  readonly seq: number
  readonly event: string
}

export interface EventFilter {
  type?: string
  actor?: string
  taskId?: string
  /** ms since the epoch, inclusive. */
  since?: number
  /** ms since the epoch, exclusive. */
  until?: number
  limit?: number
}

export class AuditLogReader {
  readonly #db: Database.Database
  /** The file, as opened (worker threads of `verifyFileInParallel` open it too). */
  readonly path: string

  private constructor(db: Database.Database, path: string) {
    this.#db = db
    this.path = path
  }

  /** Opens read-only; ERR_AUDIT_UNAVAILABLE when the file is missing or is not an audit log. */
  static open(path: string): AuditLogReader {
    let db: Database.Database | undefined
    try {
      db = new Database(path, { readonly: true, fileMustExist: true })
      db.prepare('SELECT 1 FROM audit_events LIMIT 1').get()
      return new AuditLogReader(db, resolve(path))
    } catch (cause) {
      db?.close()
      throw new IdentityError('ERR_AUDIT_UNAVAILABLE', `cannot read the audit log ${path}`, { cause })
    }
  }

  close(): void {
    this.#db.close()
  }

  origin(): string | undefined {
    return (this.#db.prepare("SELECT value FROM audit_meta WHERE key = 'origin'").get() as { value: string } | undefined)?.value
  }

  count(): number {
    return (this.#db.prepare('SELECT COALESCE(MAX(seq), 0) AS n FROM audit_events').get() as { n: number }).n
  }

  /** [seq, event bytes, chain value] in seq order. */
  *rows(): Generator<[number, Buffer, Buffer]> {
    for (const page of this.pages()) yield* page
  }

  /** The rows in pages of up to `size` (by seq: several times faster than one iterate() per row). */
  *pages(size = 2 ** PAGE_HEIGHT): Generator<[number, Buffer, Buffer][]> {
    const page = this.#db.prepare('SELECT seq, event, chain_hash FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?').raw(true)
    let after = Number.MIN_SAFE_INTEGER
    for (;;) {
      const rows = page.all(after, size) as [number, Buffer, Buffer][]
      if (rows.length === 0) return
      yield rows
      after = rows[rows.length - 1]![0]
    }
  }

  /** Reads and hashes pages of rows by seq range on this connection (page-verify.ts). */
  pageVerifier(): PageVerifier {
    return new PageVerifier(this.#db)
  }

  checkpoints(): { size: number; note: string; createdAt: number }[] {
    return (
      this.#db.prepare('SELECT tree_size, note, created_at FROM audit_checkpoints ORDER BY tree_size').all() as {
        tree_size: number
        note: string
        created_at: number
      }[]
    ).map((r) => ({ size: r.tree_size, note: r.note, createdAt: r.created_at }))
  }

  event(seq: number): StoredEventRow | undefined {
    const r = this.#db.prepare('SELECT seq, event FROM audit_events WHERE seq = ?').get(seq) as { seq: number; event: Buffer } | undefined
    return r ? { seq: r.seq, event: r.event.toString('utf8') } : undefined
  }

  search(f: EventFilter): StoredEventRow[] {
    const where: string[] = []
    const args: (string | number)[] = []
    const add = (clause: string, v: string | number | undefined): void => {
      if (v === undefined) return
      where.push(clause)
      args.push(v)
    }
    add('type = ?', f.type)
    add('actor = ?', f.actor)
    add('task_id = ?', f.taskId)
    add('time_ms >= ?', f.since)
    add('time_ms < ?', f.until)
    const sql = `SELECT seq, event FROM audit_events${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY seq LIMIT ?`
    return (this.#db.prepare(sql).all(...args, f.limit ?? 1000) as { seq: number; event: Buffer }[]).map((r) => ({
      seq: r.seq,
      event: r.event.toString('utf8'),
    }))
  }

  tail(n: number): StoredEventRow[] {
    const rows = this.#db.prepare('SELECT seq, event FROM audit_events ORDER BY seq DESC LIMIT ?').all(n) as { seq: number; event: Buffer }[]
    return rows.reverse().map((r) => ({ seq: r.seq, event: r.event.toString('utf8') }))
  }

  /** Leaf hashes of events 1..size, recomputed from the stored events. */
  leafHashes(size: number): Buffer[] {
    const out: Buffer[] = []
    for (const [seq, event] of this.#db.prepare('SELECT seq, event FROM audit_events WHERE seq <= ? ORDER BY seq').raw(true).iterate(size) as IterableIterator<
      [number, Buffer]
    >) {
      if (seq !== out.length + 1) throw new IdentityError('ERR_AUDIT_LOG_TAMPERED', `event ${out.length + 1} is missing; run warrant audit verify`)
      out.push(leafHash(event))
    }
    if (out.length !== size) throw new IdentityError('ERR_AUDIT_LOG_TAMPERED', `the log has ${out.length} events, fewer than ${size}`)
    return out
  }

  /** The checkpoint note at `size`, or the latest one (which covers `seq` if any does) when size is undefined. */
  checkpointFor(seq: number, size?: number): { size: number; note: string } | undefined {
    const r = (
      size !== undefined
        ? this.#db.prepare('SELECT tree_size, note FROM audit_checkpoints WHERE tree_size = ?').get(size)
        : this.#db.prepare('SELECT tree_size, note FROM audit_checkpoints WHERE tree_size >= ? ORDER BY tree_size DESC LIMIT 1').get(seq)
    ) as { tree_size: number; note: string } | undefined
    return r ? { size: r.tree_size, note: r.note } : undefined
  }

  /** An inclusion proof of event `seq` against the stored checkpoint of `size` (default: the latest covering it). */
  proveInclusion(seq: number, size?: number): InclusionBundle {
    const cp = this.checkpointFor(seq, size)
    if (cp === undefined) {
      throw new IdentityError('ERR_NOT_FOUND', size !== undefined ? `no checkpoint at size ${size}` : `no checkpoint covers event ${seq} yet; sign one first`)
    }
    if (seq < 1 || seq > cp.size) throw new IdentityError('ERR_INVALID_ARGUMENT', `event ${seq} is not in the tree of ${cp.size}`)
    const ev = this.event(seq)
    if (ev === undefined) throw new IdentityError('ERR_NOT_FOUND', `no event ${seq}`)
    const leaves = this.leafHashes(cp.size)
    return {
      format: INCLUSION_FORMAT,
      seq,
      leaf_index: seq - 1,
      tree_size: cp.size,
      event: ev.event,
      inclusion_path: inclusionProof(leaves, seq - 1, cp.size).map((h) => h.toString('base64')),
      checkpoint: cp.note,
    }
  }

  /** A consistency proof between two stored checkpoints. */
  proveConsistency(first: number, second: number): ConsistencyBundle {
    const a = this.checkpointFor(0, first)
    const b = this.checkpointFor(0, second)
    if (a === undefined || b === undefined) throw new IdentityError('ERR_NOT_FOUND', `no checkpoint at size ${a === undefined ? first : second}`)
    const leaves = this.leafHashes(second)
    return {
      format: CONSISTENCY_FORMAT,
      first: a.note,
      second: b.note,
      consistency_path: consistencyProof(leaves, first, second).map((h) => h.toString('base64')),
    }
  }

  /** Verifies the whole file (verify.ts); a file SQLite cannot read is reported `unreadable`, after the last event read. */
  verify(opts: { verifier: NoteVerifier; external?: readonly string[]; checkEvents?: boolean }): VerifyReport {
    let checkpoints: string[]
    try {
      checkpoints = this.checkpoints().map((c) => c.note)
    } catch (err) {
      return unreadable(0, err)
    }
    const v = new LogVerifier({
      verifier: opts.verifier,
      checkpoints,
      ...(opts.external ? { external: opts.external } : {}),
      checkEvents: opts.checkEvents ?? true,
    })
    let last = 0
    try {
      for (const [seq, event, chain] of this.rows()) {
        v.push(seq, event, chain)
        last = seq
      }
    } catch (err) {
      return unreadable(last, err)
    }
    return v.finish()
  }
}

/**
 * `reader.verify` with the hashing on `workers` threads (parallel-verify.ts);
 * the same report. A file SQLite cannot read is reported `unreadable`.
 */
export async function verifyFileInParallel(
  reader: AuditLogReader,
  opts: {
    verifier: NoteVerifier
    external?: readonly string[]
    checkEvents?: boolean
    workers: number
    /** For tests: no page on this thread. */ workersOnly?: boolean
  },
): Promise<VerifyReport> {
  let checkpoints: string[]
  try {
    checkpoints = reader.checkpoints().map((c) => c.note)
  } catch (err) {
    return unreadable(0, err)
  }
  let source: { path: string; maxSeq: number; local: PageVerifier }
  try {
    source = { path: reader.path, maxSeq: reader.count(), local: reader.pageVerifier() }
  } catch (err) {
    return unreadable(0, err)
  }
  try {
    return await verifyInParallel(
      source,
      { verifier: opts.verifier, checkpoints, ...(opts.external ? { external: opts.external } : {}), checkEvents: opts.checkEvents ?? true },
      opts.workers,
      opts.workersOnly ? { workersOnly: true } : undefined,
    )
  } catch (err) {
    const last = typeof (err as { lastSeq?: unknown }).lastSeq === 'number' ? (err as { lastSeq: number }).lastSeq : 0
    if (err instanceof Error && (err.name === 'SqliteError' || String((err as { code?: unknown }).code).startsWith('SQLITE_'))) return unreadable(last, err)
    throw err
  }
}

function unreadable(last: number, err: unknown): VerifyReport {
  return {
    ok: false,
    events: last,
    checkpoints: 0,
    verifiedSize: 0,
    unsignedTail: 0,
    rootHash: '',
    origin: undefined,
    problem: {
      code: 'ERR_AUDIT_LOG_TAMPERED',
      kind: 'unreadable',
      seq: last + 1,
      message: `the log file cannot be read after event ${last}: ${(err as Error).message}`,
    },
  }
}
