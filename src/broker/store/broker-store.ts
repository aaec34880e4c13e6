import { chmodSync, closeSync, constants, fdatasync, fdatasyncSync, mkdirSync, openSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { F, type Logger, nullLogger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { AuthorizationDetail } from '../../tokens/claims.js'
import type { RevocationKind } from '../../tokens/revocation.js'
import type { StoredRevocation, Task } from '../contract.js'

export type { StoredRevocation }
import { BROKER_MIGRATIONS, type Migration } from './migrations.js'

type Db = Database.Database

/** One issued token (access token or delegation grant), as stored. Times in epoch seconds. */
/** A tool's static credential as stored: sealed, never in clear. */
export interface StoredCredential {
  readonly tool: string
  readonly header: string
  readonly scheme?: string
  readonly sealed: Uint8Array
  readonly version: number
  readonly createdBy: string
  readonly createdAt: number
}

interface CredentialRow {
  tool: string
  header: string
  scheme: string | null
  sealed: Buffer
  version: number
  created_by: string
  created_at: number
}

function credentialOf(r: CredentialRow): StoredCredential {
  return {
    tool: r.tool,
    header: r.header,
    ...(r.scheme !== null ? { scheme: r.scheme } : {}),
    sealed: new Uint8Array(r.sealed),
    version: r.version,
    createdBy: r.created_by,
    createdAt: r.created_at,
  }
}

export interface TokenRecord {
  readonly jti: string
  readonly kind: 'access' | 'grant'
  readonly sub: string
  readonly clientId: string
  readonly taskId: string | undefined
  readonly parentJti: string | undefined
  readonly rootJti: string
  /** The delegation chain, current actor first (`act.sub`, then `act.act.sub`, ...). Empty for a direct token. */
  readonly actors: readonly string[]
  readonly depth: number
  readonly scopes: readonly string[]
  /** The targets this token (and what is exchanged from it) may name. */
  readonly resources: readonly string[]
  /** The `aud` claim. */
  readonly audiences: readonly string[]
  readonly authorizationDetails: readonly AuthorizationDetail[] | undefined
  readonly cnfJkt: string | undefined
  readonly cnfX5t: string | undefined
  /** Grants only: the SPIFFE ID that may exchange the grant (RFC 8693 §4.4 `may_act.sub`). */
  readonly mayAct: string | undefined
  readonly kid: string
  readonly iat: number
  readonly exp: number
  /** No token derived from this one (renewal or delegation) may expire later. */
  readonly maxExp: number
  /** Renewals in this token's lineage so far. */
  readonly renewals: number
  readonly renewedBy: string | undefined
  readonly revokedAt: number | undefined
}

export interface SigningKeyRecord {
  readonly keyId: string
  readonly kid: string
  readonly alg: string
  readonly state: 'next' | 'current' | 'previous'
  readonly createdAt: number
  readonly activatedAt: number | undefined
  readonly publishUntil: number | undefined
}

interface TokenRow {
  jti: string
  kind: 'access' | 'grant'
  sub: string
  client_id: string
  task_id: string | null
  parent_jti: string | null
  root_jti: string
  actors: string
  depth: number
  scopes: string
  resources: string
  audiences: string
  authorization_details: string | null
  cnf_jkt: string | null
  cnf_x5t: string | null
  may_act: string | null
  kid: string
  iat: number
  exp: number
  max_exp: number
  renewals: number
  renewed_by: string | null
  revoked_at: number | null
}

interface TaskRow {
  task_id: string
  orchestration_id: string | null
  agent: string
  scopes: string
  resources: string
  ttl_seconds: number
  max_renewals: number
  created_by: string
  created_at: number
  expires_at: number
  ended_at: number | null
}

interface KeyRow {
  key_id: string
  kid: string
  alg: string
  state: 'next' | 'current' | 'previous'
  created_at: number
  activated_at: number | null
  publish_until: number | null
}

interface RevocationRow {
  seq: number
  kind: RevocationKind
  value: string
  jtis: string | null
  reason: string | null
  created_by: string
  created_at: number
  not_after: number | null
  expires_at: number
}

const opt = <T>(v: T | null): T | undefined => (v === null ? undefined : v)
const list = (s: string): string[] => JSON.parse(s) as string[]

function toToken(r: TokenRow): TokenRecord {
  return Object.freeze({
    jti: r.jti,
    kind: r.kind,
    sub: r.sub,
    clientId: r.client_id,
    taskId: opt(r.task_id),
    parentJti: opt(r.parent_jti),
    rootJti: r.root_jti,
    actors: list(r.actors),
    depth: r.depth,
    scopes: list(r.scopes),
    resources: list(r.resources),
    audiences: list(r.audiences),
    authorizationDetails: r.authorization_details === null ? undefined : (JSON.parse(r.authorization_details) as AuthorizationDetail[]),
    cnfJkt: opt(r.cnf_jkt),
    cnfX5t: opt(r.cnf_x5t),
    mayAct: opt(r.may_act),
    kid: r.kid,
    iat: r.iat,
    exp: r.exp,
    maxExp: r.max_exp,
    renewals: r.renewals,
    renewedBy: opt(r.renewed_by),
    revokedAt: opt(r.revoked_at),
  })
}

function toRevocation(r: RevocationRow): StoredRevocation {
  return Object.freeze({
    seq: r.seq,
    kind: r.kind,
    value: r.value,
    ...(r.jtis !== null ? { jtis: list(r.jtis) } : {}),
    ...(r.reason !== null ? { reason: r.reason } : {}),
    createdBy: r.created_by,
    createdAt: r.created_at,
    ...(r.not_after !== null ? { notAfter: r.not_after } : {}),
    expiresAt: r.expires_at,
  })
}

function toTask(r: TaskRow): Task {
  return Object.freeze({
    taskId: r.task_id,
    ...(r.orchestration_id !== null ? { orchestrationId: r.orchestration_id } : {}),
    agent: r.agent,
    scopes: list(r.scopes),
    resources: list(r.resources),
    ttlSeconds: r.ttl_seconds,
    maxRenewals: r.max_renewals,
    createdBy: r.created_by,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    ...(r.ended_at !== null ? { endedAt: r.ended_at } : {}),
  })
}

function toKey(r: KeyRow): SigningKeyRecord {
  return Object.freeze({
    keyId: r.key_id,
    kid: r.kid,
    alg: r.alg,
    state: r.state,
    createdAt: r.created_at,
    activatedAt: opt(r.activated_at),
    publishUntil: opt(r.publish_until),
  })
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
      log.warn({ [F.PATH]: p, mode: mode.toString(8) }, 'Tightened broker store file permissions to 0600')
    }
  }
}

function migrate(db: Db, log: Logger, migrations: readonly Migration[]): void {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at INTEGER NOT NULL) STRICT')
  const latest = migrations[migrations.length - 1]?.version ?? 0
  db.transaction(() => {
    const from = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v
    if (from > latest) {
      throw new IdentityError('ERR_DATASTORE', `broker store schema version ${from} is newer than this build supports (${latest}); upgrade warrant`)
    }
    for (const m of migrations) {
      if (m.version <= from) continue
      db.exec(m.sql)
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now())
      log.info({ version: m.version, name: m.name }, 'Applied broker store migration')
    }
  }).immediate()
}

export interface BrokerStoreOptions {
  /** Database file; created 0600 (directory 0700) when missing. ':memory:' for a throwaway store. */
  path: string
  log?: Logger
  /** How the WAL file reaches the disk after a group commit; default node:fs fdatasync on libuv's pool. Tests inject one. */
  syncJournal?: (fd: number, done: (err: Error | null) => void) => void
}

/** When a group-committed call settles: `disk` after its round's WAL is fdatasync'ed, `process` once the round is committed. */
export type Durability = 'disk' | 'process'

/**
 * The broker's SQLite store (one file, WAL, synchronous=FULL: a used grant or
 * a renewal must survive a crash, or it could be replayed). Synchronous
 * better-sqlite3 calls; every multi-row write goes through `tx`, which the
 * service uses to re-check and write in one step.
 */
export class BrokerStore {
  readonly #db: Db
  readonly #stmts = new Map<string, Database.Statement>()
  /** The WAL file, opened once, fdatasync'ed off the event loop after each group commit; undefined in memory. */
  readonly #walFd: number | undefined

  readonly #syncJournal: (fd: number, done: (err: Error | null) => void) => void

  private constructor(db: Db, walFd: number | undefined, syncJournal: BrokerStoreOptions['syncJournal']) {
    this.#db = db
    this.#walFd = walFd
    this.#syncJournal = syncJournal ?? fdatasync
  }

  static open(opts: BrokerStoreOptions): BrokerStore {
    const log = opts.log ?? nullLogger
    const inMemory = opts.path === ':memory:'
    const path = inMemory ? opts.path : resolve(opts.path)
    let db: Db | undefined
    let walFd: number | undefined
    try {
      if (!inMemory) prepareFile(path, log)
      db = new Database(path)
      db.pragma('busy_timeout = 5000')
      if (!inMemory && db.pragma('journal_mode = WAL', { simple: true }) !== 'wal') throw new Error('journal_mode WAL was not applied')
      db.pragma('synchronous = FULL')
      db.pragma('foreign_keys = ON')
      if (db.pragma('foreign_keys', { simple: true }) !== 1) throw new Error('foreign keys are not enforced')
      migrate(db, log, BROKER_MIGRATIONS)
      // The WAL file exists while a connection is open in WAL mode (SQLite deletes it only when the last one closes).
      if (!inMemory) walFd = openSync(`${path}-wal`, constants.O_RDONLY | constants.O_NOFOLLOW)
    } catch (err) {
      db?.close()
      if (err instanceof IdentityError) throw err
      throw new IdentityError('ERR_DATASTORE', 'cannot open the broker store', { cause: err, details: { path } })
    }
    return new BrokerStore(db, walFd, opts.syncJournal)
  }

  /** The connection's synchronous level (2 = FULL) between transactions; for tests and diagnostics. */
  synchronousLevel(): number {
    return this.#db.pragma('synchronous', { simple: true }) as number
  }

  /** A prepared statement on this store's connection, cached by its text: for the tables other modules of `store/` own (intent-store.ts). */
  statement(sql: string): Database.Statement {
    return this.#stmt(sql)
  }

  #stmt(sql: string): Database.Statement {
    let s = this.#stmts.get(sql)
    if (!s) {
      s = this.#db.prepare(sql)
      this.#stmts.set(sql, s)
    }
    return s
  }

  /** Runs `fn` in one IMMEDIATE transaction: all of its writes or none. */
  tx<T>(fn: () => T): T {
    return this.#db.transaction(fn).immediate()
  }

  #queue: { fn: () => unknown; durability: Durability; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = []
  /** Committed rounds whose callers wait for the WAL to reach the disk. */
  #unsynced: ((syncErr: unknown) => void)[] = []
  #syncing = false
  #closeAfterSync = false

  /**
   * Like `tx`, group-committed: the calls queued in one turn of the event
   * loop run in call order inside one IMMEDIATE transaction, each in its own
   * savepoint (a call that throws undoes only its own writes and rejects
   * only its own promise; later calls see earlier calls' writes), and share
   * one commit. If the commit fails, every call rejects.
   *
   * Durability, per call: `disk` (the default) is synchronous=FULL's,
   * without its fsync on the event loop: the round commits with
   * synchronous=NORMAL (the frames are written to the WAL, so a killed
   * process loses nothing), then an fdatasync of the WAL file runs on
   * libuv's pool, and only then does any call of the round settle (so no
   * renewal or grant use is released before it is on disk). Rounds that
   * commit while an fdatasync is running share the next one. `process`: the
   * call settles once the round is committed to the WAL (it survives the
   * process being killed; a power loss before the next sync may lose it).
   * Only for writes whose loss fails closed: a fresh token whose record is
   * lost is unknown to introspection, renewal and delegation. A round with
   * any `disk` call waits for the sync as a whole. Everything else this
   * store writes (tx, single statements) keeps synchronous=FULL.
   */
  txQueued<T>(fn: () => T, durability: Durability = 'disk'): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ fn, durability, resolve: resolve as (v: unknown) => void, reject })
      if (this.#queue.length === 1) setImmediate(() => this.#flush(false))
    })
  }

  #flush(closing: boolean): void {
    const round = this.#queue
    this.#queue = []
    if (round.length === 0) return
    const outcomes: ({ ok: true; value: unknown } | { ok: false; err: unknown })[] = []
    const deferSync = this.#walFd !== undefined && !closing
    try {
      if (deferSync) this.#db.pragma('synchronous = NORMAL')
      try {
        this.#db
          .transaction(() => {
            for (const item of round) {
              try {
                outcomes.push({ ok: true, value: this.#db.transaction(item.fn)() })
              } catch (err) {
                outcomes.push({ ok: false, err })
              }
            }
          })
          .immediate()
      } finally {
        if (deferSync) this.#db.pragma('synchronous = FULL')
      }
    } catch (err) {
      for (const item of round) item.reject(err)
      return
    }
    const settle = (syncErr: unknown) => {
      round.forEach((item, i) => {
        const o = outcomes[i]!
        if (syncErr !== undefined) item.reject(syncErr)
        else if (o.ok) item.resolve(o.value)
        else item.reject(o.err)
      })
    }
    if (!deferSync) {
      // closing: the connection's own FULL sync (or none in memory) already happened; make the NORMAL rounds before it durable too
      settle(this.#syncNow())
      return
    }
    if (round.every((item) => item.durability === 'process')) settle(undefined)
    else {
      this.#unsynced.push(settle)
      this.#startSync()
    }
  }

  /** One fdatasync of the WAL on libuv's pool for every round committed before it started; then the next, if rounds are waiting. */
  #startSync(): void {
    if (this.#syncing || this.#unsynced.length === 0 || this.#walFd === undefined) return
    this.#syncing = true
    const waiting = this.#unsynced
    this.#unsynced = []
    this.#syncJournal(this.#walFd, (err) => {
      this.#syncing = false
      // A failed sync fails every waiting call: nothing of theirs is released (the rows may still reach the disk; unreleased, they grant nothing).
      const e = err ? new IdentityError('ERR_DATASTORE', 'the broker store could not sync its journal', { cause: err }) : undefined
      for (const settle of waiting) settle(e)
      if (this.#closeAfterSync) closeSync(this.#walFd!)
      else this.#startSync()
    })
  }

  /** fdatasync of the WAL on this thread; the error, if any. */
  #syncNow(): unknown {
    if (this.#walFd === undefined) return undefined
    try {
      fdatasyncSync(this.#walFd)
      return undefined
    } catch (err) {
      return new IdentityError('ERR_DATASTORE', 'the broker store could not sync its journal', { cause: err })
    }
  }

  // tool credentials (sealed)

  putCredential(c: StoredCredential): StoredCredential {
    const prev = this.getCredential(c.tool)
    const rec = { ...c, version: (prev?.version ?? 0) + 1 }
    this.#stmt(
      `INSERT INTO tool_credentials (tool, header, scheme, sealed, version, created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (tool) DO UPDATE SET header = excluded.header, scheme = excluded.scheme, sealed = excluded.sealed,
         version = excluded.version, created_by = excluded.created_by, created_at = excluded.created_at`,
    ).run(rec.tool, rec.header, rec.scheme ?? null, Buffer.from(rec.sealed), rec.version, rec.createdBy, rec.createdAt)
    return rec
  }

  getCredential(tool: string): StoredCredential | undefined {
    const r = this.#stmt('SELECT tool, header, scheme, sealed, version, created_by, created_at FROM tool_credentials WHERE tool = ?').get(tool) as
      CredentialRow | undefined
    return r ? credentialOf(r) : undefined
  }

  listCredentials(): StoredCredential[] {
    return (
      this.#stmt('SELECT tool, header, scheme, sealed, version, created_by, created_at FROM tool_credentials ORDER BY tool').all() as CredentialRow[]
    ).map(credentialOf)
  }

  deleteCredential(tool: string): boolean {
    return this.#stmt('DELETE FROM tool_credentials WHERE tool = ?').run(tool).changes > 0
  }

  // tasks

  insertTask(t: Task): void {
    this.#stmt(
      `INSERT INTO tasks (task_id, orchestration_id, agent, scopes, resources, ttl_seconds, max_renewals, created_by, created_at, expires_at, ended_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)`,
    ).run(
      t.taskId,
      t.orchestrationId ?? null,
      t.agent,
      JSON.stringify(t.scopes),
      JSON.stringify(t.resources),
      t.ttlSeconds,
      t.maxRenewals,
      t.createdBy,
      t.createdAt,
      t.expiresAt,
    )
  }

  getTask(taskId: string): Task | undefined {
    const r = this.#stmt('SELECT * FROM tasks WHERE task_id = ?').get(taskId) as TaskRow | undefined
    return r ? toTask(r) : undefined
  }

  listTasks(filter: { agent?: string; orchestrationId?: string; includeEnded?: boolean } = {}): Task[] {
    const where: string[] = []
    const args: unknown[] = []
    if (filter.agent !== undefined) {
      where.push('agent = ?')
      args.push(filter.agent)
    }
    if (filter.orchestrationId !== undefined) {
      where.push('orchestration_id = ?')
      args.push(filter.orchestrationId)
    }
    if (!filter.includeEnded) where.push('ended_at IS NULL')
    const sql = `SELECT * FROM tasks${where.length ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at, task_id`
    return (this.#stmt(sql).all(...args) as TaskRow[]).map(toTask)
  }

  /** Marks the task ended; false when it was already ended (or unknown). */
  endTask(taskId: string, at: number): boolean {
    return this.#stmt('UPDATE tasks SET ended_at = ? WHERE task_id = ? AND ended_at IS NULL').run(at, taskId).changes === 1
  }

  // tokens

  insertToken(t: TokenRecord): void {
    this.#stmt(
      `INSERT INTO tokens (jti, kind, sub, client_id, task_id, parent_jti, root_jti, actors, depth, scopes, resources, audiences,
         authorization_details, cnf_jkt, cnf_x5t, may_act, kid, iat, exp, max_exp, renewals, renewed_by, revoked_at)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)`,
    ).run(
      t.jti,
      t.kind,
      t.sub,
      t.clientId,
      t.taskId ?? null,
      t.parentJti ?? null,
      t.rootJti,
      JSON.stringify(t.actors),
      t.depth,
      JSON.stringify(t.scopes),
      JSON.stringify(t.resources),
      JSON.stringify(t.audiences),
      t.authorizationDetails === undefined ? null : JSON.stringify(t.authorizationDetails),
      t.cnfJkt ?? null,
      t.cnfX5t ?? null,
      t.mayAct ?? null,
      t.kid,
      t.iat,
      t.exp,
      t.maxExp,
      t.renewals,
    )
  }

  getToken(jti: string): TokenRecord | undefined {
    const r = this.#stmt('SELECT * FROM tokens WHERE jti = ?').get(jti) as TokenRow | undefined
    return r ? toToken(r) : undefined
  }

  /** Records `successor` as the one renewal of `jti`; false when it was already renewed. */
  markRenewed(jti: string, successor: string): boolean {
    return this.#stmt('UPDATE tokens SET renewed_by = ? WHERE jti = ? AND renewed_by IS NULL').run(successor, jti).changes === 1
  }

  /** Records a one-time grant as used; false when it was used before. */
  useGrant(jti: string, usedBy: string, at: number, issuedJti: string): boolean {
    return (
      this.#stmt('INSERT INTO used_grants (jti, used_by, used_at, issued_jti) VALUES (?, ?, ?, ?) ON CONFLICT (jti) DO NOTHING').run(jti, usedBy, at, issuedJti)
        .changes === 1
    )
  }

  grantUse(jti: string): { usedBy: string; usedAt: number; issuedJti: string } | undefined {
    const r = this.#stmt('SELECT used_by, used_at, issued_jti FROM used_grants WHERE jti = ?').get(jti) as
      { used_by: string; used_at: number; issued_jti: string } | undefined
    return r ? { usedBy: r.used_by, usedAt: r.used_at, issuedJti: r.issued_jti } : undefined
  }

  /** Revokes `jti` and every token derived from it (renewals and delegations, transitively); returns how many were newly revoked. */
  revokeTree(jti: string, at: number): number {
    return this.#stmt(
      `WITH RECURSIVE tree(jti) AS (SELECT jti FROM tokens WHERE jti = ? UNION SELECT t.jti FROM tokens t JOIN tree ON t.parent_jti = tree.jti)
       UPDATE tokens SET revoked_at = ? WHERE jti IN (SELECT jti FROM tree) AND revoked_at IS NULL`,
    ).run(jti, at).changes
  }

  /** `jti` and every token derived from it, transitively. */
  subtreeJtis(jti: string): string[] {
    return (
      this.#stmt(
        `WITH RECURSIVE tree(jti) AS (SELECT jti FROM tokens WHERE jti = ? UNION SELECT t.jti FROM tokens t JOIN tree ON t.parent_jti = tree.jti)
       SELECT jti FROM tree`,
      ).all(jti) as { jti: string }[]
    ).map((r) => r.jti)
  }

  /** The latest `exp` among `jtis` (0 when none is known). */
  maxExpiry(jtis: readonly string[]): number {
    let max = 0
    const q = this.#stmt('SELECT exp FROM tokens WHERE jti = ?')
    for (const j of jtis) max = Math.max(max, (q.get(j) as { exp: number } | undefined)?.exp ?? 0)
    return max
  }

  /** Marks `jtis` revoked; returns how many were newly revoked. */
  markRevoked(jtis: readonly string[], at: number): number {
    const q = this.#stmt('UPDATE tokens SET revoked_at = ? WHERE jti = ? AND revoked_at IS NULL')
    let n = 0
    for (const j of jtis) n += q.run(at, j).changes
    return n
  }

  // revocations

  insertRevocation(r: Omit<StoredRevocation, 'seq'>): StoredRevocation {
    const info = this.#stmt(
      'INSERT INTO revocations (kind, value, jtis, reason, created_by, created_at, not_after, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    ).run(r.kind, r.value, r.jtis ? JSON.stringify(r.jtis) : null, r.reason ?? null, r.createdBy, r.createdAt, r.notAfter ?? null, r.expiresAt)
    return { ...r, seq: Number(info.lastInsertRowid) }
  }

  /** An unexpired revocation of this kind and value, if any (the newest). */
  findRevocation(kind: RevocationKind, value: string, now: number): StoredRevocation | undefined {
    const r = this.#stmt('SELECT * FROM revocations WHERE kind = ? AND value = ? AND expires_at > ? ORDER BY seq DESC LIMIT 1').get(kind, value, now) as
      RevocationRow | undefined
    return r ? toRevocation(r) : undefined
  }

  /** Revocations after `sinceSeq` in feed order; unexpired ones only unless asked. */
  listRevocations(opts: { sinceSeq?: number; now: number; includeExpired?: boolean }): StoredRevocation[] {
    const rows = (
      opts.includeExpired
        ? this.#stmt('SELECT * FROM revocations WHERE seq > ? ORDER BY seq').all(opts.sinceSeq ?? 0)
        : this.#stmt('SELECT * FROM revocations WHERE seq > ? AND expires_at > ? ORDER BY seq').all(opts.sinceSeq ?? 0, opts.now)
    ) as RevocationRow[]
    return rows.map(toRevocation)
  }

  /** Deletes revocations that expired at or before `now`; returns how many. */
  sweepRevocations(now: number): number {
    return this.#stmt('DELETE FROM revocations WHERE expires_at <= ?').run(now).changes
  }

  /** The highest seq ever assigned (0 when none); expired, swept entries included. */
  lastRevocationSeq(): number {
    const r = this.#stmt("SELECT seq FROM sqlite_sequence WHERE name = 'revocations'").get() as { seq: number } | undefined
    return r?.seq ?? 0
  }

  /** The latest `exp` of any token signed with `kid` (0 when none). */
  lastExpiryForKid(kid: string): number {
    return (this.#stmt('SELECT COALESCE(MAX(exp), 0) AS e FROM tokens WHERE kid = ?').get(kid) as { e: number }).e
  }

  countTokens(): number {
    return (this.#stmt('SELECT COUNT(*) AS n FROM tokens').get() as { n: number }).n
  }

  // signing keys

  listSigningKeys(): SigningKeyRecord[] {
    return (this.#stmt('SELECT * FROM signing_keys ORDER BY created_at, key_id').all() as KeyRow[]).map(toKey)
  }

  insertSigningKey(k: SigningKeyRecord): void {
    this.#stmt('INSERT INTO signing_keys (key_id, kid, alg, state, created_at, activated_at, publish_until) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
      k.keyId,
      k.kid,
      k.alg,
      k.state,
      k.createdAt,
      k.activatedAt ?? null,
      k.publishUntil ?? null,
    )
  }

  updateSigningKey(keyId: string, state: SigningKeyRecord['state'], fields: { activatedAt?: number; publishUntil?: number }): void {
    this.#stmt('UPDATE signing_keys SET state = ?, activated_at = COALESCE(?, activated_at), publish_until = COALESCE(?, publish_until) WHERE key_id = ?').run(
      state,
      fields.activatedAt ?? null,
      fields.publishUntil ?? null,
      keyId,
    )
  }

  deleteSigningKey(keyId: string): void {
    this.#stmt('DELETE FROM signing_keys WHERE key_id = ?').run(keyId)
  }

  close(): void {
    if (this.#queue.length > 0) this.#flush(true)
    if (this.#unsynced.length > 0) {
      const waiting = this.#unsynced
      this.#unsynced = []
      const e = this.#syncNow()
      for (const settle of waiting) settle(e)
    }
    this.#stmts.clear()
    if (this.#db.open) this.#db.close()
    // An fdatasync still running on the pool owns the fd until its callback.
    if (this.#syncing) this.#closeAfterSync = true
    else if (this.#walFd !== undefined) closeSync(this.#walFd)
  }
}
