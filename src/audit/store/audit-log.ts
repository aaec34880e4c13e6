/**
 * The audit log: one SQLite file (WAL), appended with group
 * commit. `append` validates and canonicalizes the event at once, queues it,
 * and the queue of one event-loop turn is written in one IMMEDIATE
 * transaction (events and chain values) with one durable commit; each promise
 * resolves only after that commit, with the event's seq, leaf index and chain
 * value. The commit is synchronous=FULL's without its fsync on the event
 * loop: appends commit with synchronous=NORMAL (their frames are in the WAL,
 * so a killed process loses nothing) and their promises resolve after an
 * fdatasync of the WAL file run on libuv's pool (batches committed meanwhile
 * share the next one); checkpoints and migrations commit with
 * synchronous=FULL. The tree's right edge and last chain value are saved in
 * `audit_tree` at most every TREE_SAVE_EVERY events (and on close); opening
 * replays the events after the saved state, checking each stored chain value,
 * so a batch writes one row per event and nothing else. A failed
 * fdatasync rejects the batch and closes the log for appends (fail closed). If the store cannot be written
 * (closed, locked past the busy timeout, disk full, I/O error) every append
 * of the batch rejects with IdentityError ERR_AUDIT_UNAVAILABLE, the
 * `appendFailed` hook is called (a metric counter), and nothing of the batch
 * is kept: the caller must not release the credential.
 *
 * Checkpoints (checkpoint.ts) are signed on demand (`checkpoint()`) and, with
 * `checkpointIntervalMs`, periodically when the log grew, by a NoteSigner over
 * a KeyManager key, and stored in the same file.
 */
import { chmodSync, closeSync, constants, fdatasync, mkdirSync, openSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { F, type Logger, nullLogger } from '../../common/log/logger.js'
import type { ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { canonicalBytes, canonicalJson } from '../canonical.js'
import { isCanonicalAuditEvent } from '../canonical-event.js'
import { signCheckpoint, type NoteSigner } from '../checkpoint.js'
import { AUDIT_EVENT_VERSION, parseAuditEvent, type AuditEvent, type AuditEventInput } from '../event.js'
import { chainHash, GENESIS } from '../hash-chain.js'
import { HASH_SIZE, leafHash, MerkleAccumulator } from '../merkle.js'
import type { AuditReceipt, AuditSink } from '../sink.js'
import { AUDIT_MIGRATIONS } from './migrations.js'

type Db = Database.Database

export interface AuditLogHooks {
  /** Called once per failed append (store unavailable): count it. */
  appendFailed?(code: ErrorCode): void
  /** Called after each durable batch. */
  batchCommitted?(events: number, ms: number): void
}

export interface AuditLogOptions {
  /** Database file; created 0600 (directory 0700) when missing. */
  path: string
  /** The checkpoint origin line (and the signing key's name), e.g. `example.org/warrant/audit`. */
  origin: string
  /** Signs checkpoints; without it `checkpoint()` throws ERR_NOT_CONFIGURED. */
  signer?: NoteSigner
  /** Sign a checkpoint every this many ms when the log grew (0 or absent: only on demand). */
  checkpointIntervalMs?: number
  /** Event time when the caller gives none (ms since the epoch). */
  now?: () => number
  log?: Logger
  hooks?: AuditLogHooks
  /** SQLite busy timeout (default 5000 ms). */
  busyTimeoutMs?: number
  /** How the WAL reaches the disk after a batch; default node:fs fdatasync on libuv's pool. Tests inject one. */
  syncJournal?: (fd: number, done: (err: Error | null) => void) => void
}

export interface StoredCheckpoint {
  readonly size: number
  readonly rootHash: Buffer
  readonly note: string
}

interface Pending {
  event: AuditEvent
  bytes: Uint8Array
  resolve: (r: AuditReceipt) => void
  reject: (e: unknown) => void
}

function prepareFile(path: string, log: Logger): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  closeSync(openSync(path, constants.O_CREAT | constants.O_RDWR, 0o600))
  for (const p of [path, `${path}-wal`, `${path}-shm`]) {
    let mode: number
    try {
      mode = statSync(p).mode & 0o777
    } catch {
      continue
    }
    if ((mode & 0o077) !== 0) {
      chmodSync(p, 0o600)
      log.warn({ [F.PATH]: p, mode: mode.toString(8) }, 'Tightened audit log file permissions to 0600')
    }
  }
}

function migrate(db: Db, log: Logger): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT')
  const latest = AUDIT_MIGRATIONS[AUDIT_MIGRATIONS.length - 1]?.version ?? 0
  db.transaction(() => {
    const from = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v
    if (from > latest)
      throw new IdentityError('ERR_DATASTORE', `audit log schema version ${from} is newer than this build supports (${latest}); upgrade warrant`)
    for (const m of AUDIT_MIGRATIONS) {
      if (m.version <= from) continue
      db.exec(m.sql)
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now())
      log.info({ version: m.version, name: m.name }, 'Applied audit log migration')
    }
  }).immediate()
}

/** The tree state is saved with the batch that takes it this many events past the last save (and on close). */
export const TREE_SAVE_EVERY = 1024

/** fdatasyncs of the WAL that may run at once (each on its own descriptor, on libuv's pool of 4 threads by default). */
const CONCURRENT_SYNCS = 2

const utf8 = new TextEncoder()

/**
 * The event and its bytes when the canonical form of `raw` is certainly a
 * valid event (canonical-event.ts, the check `verify` runs on every stored
 * event): the usual append, without the schema's parse (several times the
 * cost of the rest of an append). Undefined otherwise; then the schema
 * decides and names what is wrong.
 */
function canonicalValidEvent(raw: unknown): { event: AuditEvent; bytes: Uint8Array } | undefined {
  let text: string
  try {
    text = canonicalJson(raw)
  } catch {
    return undefined
  }
  const bytes = utf8.encode(text)
  // the bytes are what is stored and hashed; the event (its search columns) is read back from them
  return isCanonicalAuditEvent(bytes) ? { event: JSON.parse(text) as AuditEvent, bytes } : undefined
}

const unavailable = (message: string, cause?: unknown): IdentityError =>
  new IdentityError('ERR_AUDIT_UNAVAILABLE', message, cause === undefined ? undefined : { cause })

export class AuditLog implements AuditSink {
  readonly #db: Db
  readonly #origin: string
  readonly #signer: NoteSigner | undefined
  readonly #now: () => number
  readonly #log: Logger
  readonly #hooks: AuditLogHooks
  readonly #insert: Database.Statement
  readonly #saveTree: Database.Statement
  /** synchronous=FULL for a checkpoint and back to NORMAL, prepared once (a pragma() call prepares a statement each time). */
  readonly #syncNormal: Database.Statement
  readonly #syncFull: Database.Statement
  /** One batch's rows (and, every TREE_SAVE_EVERY events, the tree state) in one IMMEDIATE transaction; built once. */
  readonly #writeBatch: (batch: readonly Pending[], tree: MerkleAccumulator, chain: Buffer, receipts: AuditReceipt[]) => Buffer
  #tree: MerkleAccumulator
  #chain: Buffer
  /** The tree size saved in `audit_tree`. */
  #savedSize: number
  #queue: Pending[] = []
  #barriers: (() => void)[] = []
  #closed = false
  #timer: NodeJS.Timeout | undefined
  #lastCheckpointSize = 0

  /** The WAL file: fdatasync'ed off the event loop after each batch. */
  readonly #walFds: readonly number[]
  /** WAL descriptors not in use by a running sync. */
  readonly #freeFds: number[]
  /** Running syncs, oldest first; each settles its batches only once it and every older one succeeded. */
  readonly #inflight: { settles: ((err: IdentityError | undefined) => void)[]; done: boolean }[] = []
  #unsynced: ((err: IdentityError | undefined) => void)[] = []
  #idle: (() => void)[] = []
  #broken: IdentityError | undefined
  readonly #syncJournal: (fd: number, done: (err: Error | null) => void) => void

  private constructor(db: Db, opts: AuditLogOptions, tree: MerkleAccumulator, chain: Buffer, savedSize: number, walFds: number[]) {
    this.#walFds = walFds
    this.#freeFds = [...walFds]
    this.#syncJournal = opts.syncJournal ?? fdatasync
    this.#db = db
    this.#origin = opts.origin
    this.#signer = opts.signer
    this.#now = opts.now ?? Date.now
    this.#log = opts.log ?? nullLogger
    this.#hooks = opts.hooks ?? {}
    this.#tree = tree
    this.#chain = chain
    this.#savedSize = savedSize
    this.#insert = db.prepare('INSERT INTO audit_events (seq, time_ms, type, actor, task_id, event, chain_hash) VALUES (?, ?, ?, ?, ?, ?, ?)')
    this.#saveTree = db.prepare(
      'INSERT INTO audit_tree (id, size, chain_hash, edge) VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET size = excluded.size, chain_hash = excluded.chain_hash, edge = excluded.edge',
    )
    this.#syncNormal = db.prepare('PRAGMA synchronous = NORMAL')
    this.#syncFull = db.prepare('PRAGMA synchronous = FULL')
    const write = db.transaction((batch: readonly Pending[], tree: MerkleAccumulator, chain: Buffer, receipts: AuditReceipt[]): Buffer => {
      for (const p of batch) {
        const seq = tree.size + 1
        chain = chainHash(chain, p.bytes)
        tree.push(leafHash(p.bytes))
        this.#insert.run(seq, Date.parse(p.event.time), p.event.type, p.event.actor?.spiffe_id ?? null, p.event.task_id ?? null, p.bytes, chain)
        receipts.push({ seq, leafIndex: seq - 1, chainHash: chain.toString('hex'), time: p.event.time })
      }
      if (tree.size - this.#savedSize >= TREE_SAVE_EVERY) this.#saveTree.run(tree.size, chain, Buffer.concat(tree.edge))
      return chain
    })
    this.#writeBatch = (batch, tree, chain, receipts) => write.immediate(batch, tree, chain, receipts)
    this.#lastCheckpointSize = (db.prepare('SELECT COALESCE(MAX(tree_size), 0) AS s FROM audit_checkpoints').get() as { s: number }).s
    const every = opts.checkpointIntervalMs ?? 0
    if (every > 0) {
      this.#timer = setInterval(() => {
        if (this.#tree.size > this.#lastCheckpointSize && this.#signer) {
          this.checkpoint().catch((err: unknown) => this.#log.error({ err }, 'Periodic audit checkpoint failed'))
        }
      }, every)
      this.#timer.unref()
    }
  }

  /** Opens (creating when missing) the log file. Throws ERR_AUDIT_UNAVAILABLE when it cannot be opened or its tree state does not match its last event. */
  static open(opts: AuditLogOptions): AuditLog {
    const log = opts.log ?? nullLogger
    const path = resolve(opts.path)
    let db: Db | undefined
    try {
      prepareFile(path, log)
      db = new Database(path)
      db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 5000))}`)
      if (db.pragma('journal_mode = WAL', { simple: true }) !== 'wal') throw new Error('journal_mode WAL was not applied')
      db.pragma('synchronous = FULL')
      migrate(db, log)
      const origin = db.prepare("SELECT value FROM audit_meta WHERE key = 'origin'").get() as { value: string } | undefined
      if (origin === undefined) db.prepare("INSERT INTO audit_meta (key, value) VALUES ('origin', ?)").run(opts.origin)
      else if (origin.value !== opts.origin)
        throw new IdentityError('ERR_CONFIG_INVALID', `audit log ${path} has origin "${origin.value}", not "${opts.origin}"`)
      const { tree, chain, savedSize } = loadTree(db)
      db.pragma('synchronous = NORMAL')
      // The WAL file exists while a connection is open in WAL mode (SQLite deletes it only when the last one closes).
      // One descriptor per sync that may run at once: a write-back error is reported to every descriptor opened before it,
      // so two overlapping syncs both see it (on one descriptor, the first to return would take it from the other).
      const walFds: number[] = []
      try {
        for (let i = 0; i < CONCURRENT_SYNCS; i++) walFds.push(openSync(`${path}-wal`, constants.O_RDONLY | constants.O_NOFOLLOW))
      } catch (err) {
        for (const fd of walFds) closeSync(fd)
        throw err
      }
      return new AuditLog(db, opts, tree, chain, savedSize, walFds)
    } catch (err) {
      db?.close()
      if (err instanceof IdentityError) throw err
      throw unavailable(`cannot open the audit log ${path}`, err)
    }
  }

  get size(): number {
    return this.#tree.size
  }

  get origin(): string {
    return this.#origin
  }

  /** Appends an event; resolves once it is durable. Rejects ERR_AUDIT_EVENT_INVALID (nothing written) or ERR_AUDIT_UNAVAILABLE (fail closed). */
  append(input: AuditEventInput): Promise<AuditReceipt> {
    if (this.#closed) return Promise.reject(this.#failed(unavailable('the audit log is closed')))
    if (this.#broken) return Promise.reject(this.#failed(this.#broken))
    let event: AuditEvent
    let bytes: Uint8Array
    const raw = { ...input, v: input.v ?? AUDIT_EVENT_VERSION, time: input.time ?? new Date(this.#now()).toISOString() }
    const fast = canonicalValidEvent(raw)
    if (fast !== undefined) ({ event, bytes } = fast)
    else {
      try {
        event = parseAuditEvent(raw)
        bytes = canonicalBytes(event)
      } catch (err) {
        return Promise.reject(err instanceof IdentityError ? err : new IdentityError('ERR_AUDIT_EVENT_INVALID', (err as Error).message, { cause: err }))
      }
    }
    return new Promise<AuditReceipt>((res, rej) => {
      this.#queue.push({ event, bytes, resolve: res, reject: rej })
      if (this.#queue.length === 1) setImmediate(() => this.#flush())
    })
  }

  #failed(err: IdentityError): IdentityError {
    try {
      this.#hooks.appendFailed?.(err.code)
    } catch {
      // a metric hook never changes the outcome
    }
    return err
  }

  #flush(): void {
    const batch = this.#queue
    const barriers = this.#barriers
    this.#queue = []
    this.#barriers = []
    let deferred = false
    try {
      if (batch.length === 0) return
      if (this.#closed) {
        for (const p of batch) p.reject(this.#failed(unavailable('the audit log is closed')))
        return
      }
      const started = performance.now()
      const tree = this.#tree.clone()
      let chain = this.#chain
      const receipts: AuditReceipt[] = []
      try {
        chain = this.#writeBatch(batch, tree, chain, receipts)
      } catch (cause) {
        this.#log.error({ err: cause, events: batch.length }, 'Audit log write failed; the batch is refused')
        for (const p of batch) p.reject(this.#failed(unavailable('the audit log cannot be written', cause)))
        return
      }
      if (tree.size - this.#savedSize >= TREE_SAVE_EVERY) this.#savedSize = tree.size
      this.#tree = tree
      this.#chain = chain
      deferred = true
      this.#unsynced.push((err) => {
        if (err) for (const p of batch) p.reject(this.#failed(err))
        else {
          batch.forEach((p, i) => p.resolve(receipts[i]!))
          this.#hooks.batchCommitted?.(batch.length, performance.now() - started)
        }
        for (const b of barriers) b()
      })
      this.#startSync()
    } finally {
      if (!deferred) for (const b of barriers) b()
    }
  }

  /**
   * An fdatasync of the WAL on libuv's pool for every batch committed before
   * it started. Up to CONCURRENT_SYNCS run at once, so a batch committed while
   * one runs need not wait for it to end before its own starts (it would wait
   * up to twice a sync); batches are still acknowledged in commit order, each
   * once its sync and every older one succeeded. A failed sync refuses every
   * batch not yet acknowledged and every later append.
   */
  #startSync(): void {
    while (this.#unsynced.length > 0 && this.#freeFds.length > 0 && this.#broken === undefined) {
      const fd = this.#freeFds.pop()!
      const group = { settles: this.#unsynced, done: false }
      this.#unsynced = []
      this.#inflight.push(group)
      this.#syncJournal(fd, (cause) => {
        this.#freeFds.push(fd)
        group.done = true
        if (cause && this.#broken === undefined) {
          // Whether those frames reached the disk is unknown: refuse the batch and every later append.
          this.#broken = unavailable('the audit log could not sync its journal', cause)
          this.#log.error({ err: cause }, 'Audit log sync failed; appends refused from now on')
        }
        this.#settle()
        this.#startSync()
      })
    }
    if (this.#broken !== undefined) this.#settle()
    if (this.#idleNow()) for (const r of this.#idle.splice(0)) r()
  }

  /** No sync running (every descriptor back) and none waiting. */
  #idleNow(): boolean {
    return this.#freeFds.length === this.#walFds.length && this.#inflight.length === 0 && this.#unsynced.length === 0
  }

  /** Acknowledges the oldest synced batches in order; once broken, refuses all that are not acknowledged. */
  #settle(): void {
    if (this.#broken !== undefined) {
      const groups = [...this.#inflight.splice(0).map((g) => g.settles), this.#unsynced.splice(0)]
      for (const settles of groups) for (const settle of settles) settle(this.#broken)
      return
    }
    while (this.#inflight.length > 0 && this.#inflight[0]!.done) for (const settle of this.#inflight.shift()!.settles) settle(undefined)
  }

  /** Resolves when no fdatasync is running or waiting. */
  #synced(): Promise<void> {
    if (this.#idleNow()) return Promise.resolve()
    return new Promise((r) => this.#idle.push(r))
  }

  /** Resolves after the appends queued so far were written (or refused). */
  #settled(): Promise<void> {
    if (this.#queue.length === 0) return Promise.resolve()
    return new Promise((r) => this.#barriers.push(r))
  }

  /**
   * Signs a checkpoint of the log as it is once the appends queued before
   * this call are settled, stores it, and returns it. ERR_NOT_CONFIGURED
   * without a signer; ERR_AUDIT_UNAVAILABLE when it cannot be stored.
   */
  async checkpoint(): Promise<StoredCheckpoint> {
    if (!this.#signer) throw new IdentityError('ERR_NOT_CONFIGURED', 'the audit log has no checkpoint signer')
    await this.#settled()
    if (this.#closed) throw unavailable('the audit log is closed')
    const size = this.#tree.size
    const rootHash = this.#tree.root()
    const note = await signCheckpoint({ origin: this.#origin, size, rootHash, extensions: [] }, [this.#signer])
    if (this.#closed) throw unavailable('the audit log is closed')
    try {
      this.#syncFull.run()
      this.#db.transaction(() => {
        const have = this.#db.prepare('SELECT root_hash FROM audit_checkpoints WHERE tree_size = ?').get(size) as { root_hash: Buffer } | undefined
        if (have !== undefined) {
          if (!have.root_hash.equals(rootHash)) throw new Error(`a checkpoint at size ${size} with another root is already stored`)
          return
        }
        this.#db.prepare('INSERT INTO audit_checkpoints (tree_size, root_hash, note, created_at) VALUES (?, ?, ?, ?)').run(size, rootHash, note, this.#now())
      })()
    } catch (cause) {
      throw unavailable('cannot store the audit checkpoint', cause)
    } finally {
      try {
        this.#syncNormal.run()
      } catch {
        // the connection is gone; the next write fails and says so
      }
    }
    if (size > this.#lastCheckpointSize) this.#lastCheckpointSize = size
    this.#log.info({ size }, 'Signed audit checkpoint')
    return { size, rootHash, note }
  }

  /** Stops the timer, writes what is queued, checkpoints the WAL and closes the file. */
  async close(): Promise<void> {
    if (this.#closed) return
    if (this.#timer) clearInterval(this.#timer)
    await this.#settled()
    await this.#synced()
    this.#closed = true
    try {
      if (this.#tree.size !== this.#savedSize) {
        this.#syncFull.run()
        this.#saveTree.run(this.#tree.size, this.#chain, Buffer.concat(this.#tree.edge))
      }
    } catch {
      // best effort: the next open replays the events after the saved state
    }
    try {
      this.#db.pragma('wal_checkpoint(TRUNCATE)')
    } catch {
      // best effort: the WAL is replayed at the next open
    }
    this.#db.close()
    for (const fd of this.#walFds) closeSync(fd)
  }
}

/**
 * The tree's right edge and last chain value: the state saved in `audit_tree` (its chain value checked against the
 * event it ends at), then every later event replayed, each stored chain value checked. A mismatch, a gap or a saved
 * state past the last event is ERR_AUDIT_LOG_TAMPERED.
 */
function loadTree(db: Db): { tree: MerkleAccumulator; chain: Buffer; savedSize: number } {
  const row = db.prepare('SELECT size, chain_hash, edge FROM audit_tree WHERE id = 1').get() as { size: number; chain_hash: Buffer; edge: Buffer } | undefined
  const tampered = (what: string) => new IdentityError('ERR_AUDIT_LOG_TAMPERED', `the audit log${what}; run warrant audit verify`)
  let tree = new MerkleAccumulator()
  let chain: Buffer = Buffer.from(GENESIS)
  const savedSize = row?.size ?? 0
  if (row !== undefined && row.size > 0) {
    const at = db.prepare('SELECT chain_hash FROM audit_events WHERE seq = ?').get(row.size) as { chain_hash: Buffer } | undefined
    if (at === undefined || !at.chain_hash.equals(row.chain_hash)) throw tampered(`'s tree state (size ${row.size}) does not match its event ${row.size}`)
    const edge: Buffer[] = []
    for (let i = 0; i < row.edge.byteLength; i += HASH_SIZE) edge.push(row.edge.subarray(i, i + HASH_SIZE))
    tree = MerkleAccumulator.fromState(row.size, edge)
    chain = row.chain_hash
  }
  const later = db.prepare('SELECT seq, event, chain_hash FROM audit_events WHERE seq > ? ORDER BY seq').iterate(savedSize) as Iterable<{
    seq: number
    event: Buffer
    chain_hash: Buffer
  }>
  for (const e of later) {
    if (e.seq !== tree.size + 1) throw tampered(` has no event ${tree.size + 1} before event ${e.seq}`)
    chain = chainHash(chain, e.event)
    if (!chain.equals(e.chain_hash)) throw tampered(`'s event ${e.seq} does not match its chain value`)
    tree.push(leafHash(e.event))
  }
  return { tree, chain, savedSize }
}
