import { randomUUID } from 'node:crypto'
import { chmodSync, closeSync, constants, mkdirSync, openSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { type Clock, systemClock } from '../../../common/clock.js'
import { F, type Logger, nullLogger } from '../../../common/log/logger.js'
import { IdentityError } from '../../../errors/index.js'
import {
  type NormalizedEntryFilter,
  type NormalizedNodeFilter,
  normalizeEntryFilter,
  normalizeNodeFilter,
} from '../internal/filters.js'
import { createLockedDataStore, type SyncStores, type TxDriver } from '../internal/locked-store.js'
import {
  checkEntryFields,
  checkNewEntry,
  checkNodeFields,
  checkString,
  checkTime,
  compareSelectors,
  decodePageToken,
  encodePageToken,
  entryExists,
  entryNotFound,
  entryUniqueKey,
  nodeNotFound,
  normalizeSelectors,
  pageSizeOf,
  revisionMismatch,
} from '../internal/normalize.js'
import type { AttestedNode, BundleRecord, DataStore, JoinToken, Page, RegistrationEntry, Selector } from '../types.js'
import { MIGRATIONS, type Migration } from './migrations.js'

export interface SqliteDataStoreOptions {
  /** Database file; created (0600, directory 0700) when missing. ':memory:' for a throwaway store. */
  path: string
  log?: Logger
  /** Source of createdAt / updatedAt; defaults to the system clock. */
  clock?: Clock
  /** How long to wait for another process's write lock (ms). Default 5000. */
  busyTimeoutMs?: number
}

type Db = Database.Database
type Stmt = Database.Statement<unknown[], unknown>

interface EntryRow {
  id: string
  spiffe_id: string
  parent_id: string
  x509_ttl: number
  jwt_ttl: number
  hint: string
  admin: number
  downstream: number
  expires_at: number | null
  created_at: number
  updated_at: number
  revision: number
  selectors: string
  dns_names: string
  federates_with: string
}

interface NodeRow {
  agent_id: string
  attestor: string
  serial: string
  previous_serial: string
  expires_at: number
  banned: number
  can_reattest: number
  created_at: number
  updated_at: number
  selectors: string
}

const ENTRY_COLUMNS = `e.id, e.spiffe_id, e.parent_id, e.x509_ttl, e.jwt_ttl, e.hint, e.admin, e.downstream,
  e.expires_at, e.created_at, e.updated_at, e.revision,
  (SELECT json_group_array(json_array(s.type, s.value)) FROM entry_selectors s WHERE s.entry_id = e.id) AS selectors,
  (SELECT json_group_array(d.dns_name ORDER BY d.position) FROM entry_dns_names d WHERE d.entry_id = e.id) AS dns_names,
  (SELECT json_group_array(f.trust_domain ORDER BY f.position) FROM entry_federates_with f WHERE f.entry_id = e.id) AS federates_with`

const NODE_COLUMNS = `n.agent_id, n.attestor, n.serial, n.previous_serial, n.expires_at, n.banned, n.can_reattest,
  n.created_at, n.updated_at,
  (SELECT json_group_array(json_array(s.type, s.value)) FROM node_selectors s WHERE s.agent_id = n.agent_id) AS selectors`

/** Entry ids whose selectors include members of @sel (a JSON array of [type, value]), via the (type, value) index. */
// CROSS JOIN pins json_each as the outer loop (SQLite never reorders it), so every
// given selector is one lookup in the (type, value) index whatever the statistics say.
const ENTRY_SELECTOR_HITS = `SELECT s.entry_id FROM json_each(@sel) j
  CROSS JOIN entry_selectors s ON s.type = j.value ->> 0 AND s.value = j.value ->> 1`

function parseSelectors(json: string): Selector[] {
  const pairs = JSON.parse(json) as [string, string][]
  return pairs.map(([type, value]) => ({ type, value })).sort(compareSelectors)
}

function toEntry(r: EntryRow): RegistrationEntry {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    parentId: r.parent_id,
    selectors: parseSelectors(r.selectors),
    x509SvidTtl: r.x509_ttl,
    jwtSvidTtl: r.jwt_ttl,
    dnsNames: JSON.parse(r.dns_names) as string[],
    federatesWith: JSON.parse(r.federates_with) as string[],
    hint: r.hint,
    admin: r.admin === 1,
    downstream: r.downstream === 1,
    expiresAt: r.expires_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    revision: r.revision,
  }
}

function toNode(r: NodeRow): AttestedNode {
  return {
    agentId: r.agent_id,
    attestor: r.attestor,
    selectors: parseSelectors(r.selectors),
    serial: r.serial,
    expiresAt: r.expires_at,
    previousSerial: r.previous_serial,
    banned: r.banned === 1,
    canReattest: r.can_reattest === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }
}

const selectorJson = (set: readonly Selector[]): string => JSON.stringify(set.map((s) => [s.type, s.value]))

function entryWhere(f: NormalizedEntryFilter): { clauses: string[]; params: Record<string, unknown> } {
  const clauses: string[] = []
  const params: Record<string, unknown> = {}
  if (f.spiffeId !== undefined) (clauses.push('e.spiffe_id = @spiffeId'), (params.spiffeId = f.spiffeId))
  if (f.parentId !== undefined) (clauses.push('e.parent_id = @parentId'), (params.parentId = f.parentId))
  if (f.hint !== undefined) (clauses.push('e.hint = @hint'), (params.hint = f.hint))
  if (f.federatesWith !== undefined) {
    clauses.push('EXISTS (SELECT 1 FROM entry_federates_with fw WHERE fw.entry_id = e.id AND fw.trust_domain = @fed)')
    params.fed = f.federatesWith
  }
  if (f.selectors !== undefined) {
    const n = f.selectors.set.length
    const withSet = (): void => {
      params.sel = selectorJson(f.selectors?.set ?? [])
      params.n = n
    }
    switch (f.selectors.match) {
      case 'any':
        if (n === 0) clauses.push('0')
        else (clauses.push(`e.id IN (${ENTRY_SELECTOR_HITS})`), withSet())
        break
      case 'superset':
        if (n > 0) (clauses.push(`e.id IN (${ENTRY_SELECTOR_HITS} GROUP BY s.entry_id HAVING COUNT(*) = @n)`), withSet())
        break
      case 'exact':
        if (n === 0) clauses.push('e.selector_count = 0')
        else {
          clauses.push(`e.selector_count = @n AND e.id IN (${ENTRY_SELECTOR_HITS} GROUP BY s.entry_id HAVING COUNT(*) = @n)`)
          withSet()
        }
        break
      case 'subset':
        // Candidates come from the (type, value) index; an entry qualifies when every one of its selectors was hit.
        if (n === 0) clauses.push('0')
        else {
          clauses.push(
            `e.selector_count > 0 AND e.id IN (${ENTRY_SELECTOR_HITS} JOIN entries x ON x.id = s.entry_id
              GROUP BY s.entry_id HAVING COUNT(*) = MAX(x.selector_count))`,
          )
          withSet()
        }
        break
    }
  }
  return { clauses, params }
}

function nodeWhere(f: NormalizedNodeFilter): { clauses: string[]; params: Record<string, unknown> } {
  const clauses: string[] = []
  const params: Record<string, unknown> = {}
  if (f.attestor !== undefined) (clauses.push('n.attestor = @attestor'), (params.attestor = f.attestor))
  if (f.banned !== undefined) (clauses.push('n.banned = @banned'), (params.banned = f.banned ? 1 : 0))
  if (f.expiresBefore !== undefined) (clauses.push('n.expires_at < @expiresBefore'), (params.expiresBefore = f.expiresBefore))
  if (f.selectors !== undefined && f.selectors.length > 0) {
    clauses.push(`n.agent_id IN (SELECT s.agent_id FROM json_each(@sel) j
      CROSS JOIN node_selectors s ON s.type = j.value ->> 0 AND s.value = j.value ->> 1
      GROUP BY s.agent_id HAVING COUNT(*) = @n)`)
    params.sel = selectorJson(f.selectors)
    params.n = f.selectors.length
  }
  return { clauses, params }
}

type SqliteError = InstanceType<typeof Database.SqliteError>

function isSqliteError(err: unknown): err is SqliteError {
  return err instanceof Database.SqliteError
}

function passThrough(err: unknown): boolean {
  return err instanceof IdentityError || err instanceof TypeError || err instanceof RangeError
}

/** Chains a SQLite failure as ERR_DATASTORE; the message names the operation, never the values. */
function datastoreError(op: string, err: unknown): IdentityError {
  return new IdentityError('ERR_DATASTORE', `datastore: ${op} failed`, {
    cause: err,
    ...(isSqliteError(err) ? { details: { sqliteCode: err.code } } : {}),
  })
}

/** Creates the directory (0700) and the file (0600) when missing; tightens the file if it is looser. */
function prepareFile(path: string, log: Logger): void {
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 })
  const fd = openSync(path, constants.O_CREAT | constants.O_RDWR, 0o600)
  closeSync(fd)
  for (const p of [path, `${path}-wal`, `${path}-shm`]) {
    let mode: number
    try {
      mode = statSync(p).mode & 0o777
    } catch {
      continue
    }
    if ((mode & 0o077) !== 0) {
      chmodSync(p, 0o600)
      log.warn({ [F.PATH]: p, mode: mode.toString(8) }, 'Tightened datastore file permissions to 0600')
    }
  }
}

function migrate(db: Db, log: Logger, migrations: readonly Migration[]): number {
  db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    applied_at INTEGER NOT NULL
  ) STRICT`)
  const latest = migrations[migrations.length - 1]?.version ?? 0
  const current = (): number =>
    (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v
  const apply = db.transaction(() => {
    const from = current()
    if (from > latest) {
      throw new IdentityError(
        'ERR_DATASTORE',
        `datastore schema version ${from} is newer than this build of warrant supports (${latest}); upgrade warrant`,
        { details: { schemaVersion: from, supportedVersion: latest } },
      )
    }
    for (const m of migrations) {
      if (m.version <= from) continue
      db.exec(m.sql)
      db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, Date.now())
      log.info({ version: m.version, name: m.name }, 'Applied datastore migration')
    }
    return Math.max(from, latest)
  })
  return apply.immediate()
}

/**
 * Opens (creating and migrating as needed) the SQLite datastore.
 *
 * Durability: WAL with `synchronous=FULL`, so every acknowledged commit is
 * fsynced to the WAL before the promise resolves. NORMAL would survive a
 * process crash but may lose the last commits on power loss or an OS crash,
 * which could silently undo a join-token consume (letting a one-use token be
 * replayed) or an agent SVID serial. The server's write rate is low, so the
 * fsync per commit is cheap insurance.
 */
export async function openSqliteDataStore(opts: SqliteDataStoreOptions): Promise<DataStore> {
  if (opts === null || typeof opts !== 'object') throw new TypeError('options must be an object')
  if (typeof opts.path !== 'string' || opts.path === '') throw new TypeError('path must be a non-empty string')
  const log = opts.log ?? nullLogger
  const clock = opts.clock ?? systemClock
  const inMemory = opts.path === ':memory:'
  const path = inMemory ? opts.path : resolve(opts.path)

  let db: Db | undefined
  let version: number
  try {
    if (!inMemory) prepareFile(path, log)
    db = new Database(path)
    db.pragma(`busy_timeout = ${Math.max(0, Math.floor(opts.busyTimeoutMs ?? 5000))}`)
    if (!inMemory) {
      const mode = db.pragma('journal_mode = WAL', { simple: true })
      if (mode !== 'wal') throw new Error(`journal_mode is ${String(mode)}, expected wal`)
    }
    db.pragma('synchronous = FULL')
    if (db.pragma('synchronous', { simple: true }) !== 2) throw new Error('synchronous=FULL was not applied')
    db.pragma('temp_store = MEMORY')
    db.pragma('foreign_keys = ON')
    if (db.pragma('foreign_keys', { simple: true }) !== 1) throw new Error('foreign keys are not enforced')
    version = migrate(db, log, MIGRATIONS)
  } catch (err) {
    db?.close()
    if (err instanceof IdentityError) throw err
    throw new IdentityError('ERR_DATASTORE', 'datastore: cannot open the SQLite database', {
      cause: err,
      details: { path },
    })
  }
  log.info({ [F.PATH]: path, schemaVersion: version }, 'Opened SQLite datastore')
  return createLockedDataStore(sqliteStores(db, clock), sqliteDriver(db))
}

function sqliteDriver(db: Db): TxDriver {
  return {
    begin(depth) {
      try {
        db.exec(depth === 0 ? 'BEGIN IMMEDIATE' : `SAVEPOINT warrant_tx_${depth}`)
      } catch (err) {
        throw datastoreError('begin transaction', err)
      }
    },
    commit(depth) {
      try {
        db.exec(depth === 0 ? 'COMMIT' : `RELEASE warrant_tx_${depth}`)
      } catch (err) {
        if (depth === 0 && db.inTransaction) db.exec('ROLLBACK')
        else if (depth > 0) db.exec(`ROLLBACK TO warrant_tx_${depth}; RELEASE warrant_tx_${depth}`)
        throw datastoreError('commit', err)
      }
    },
    rollback(depth) {
      try {
        if (depth === 0) {
          if (db.inTransaction) db.exec('ROLLBACK')
        } else db.exec(`ROLLBACK TO warrant_tx_${depth}; RELEASE warrant_tx_${depth}`)
      } catch (err) {
        throw datastoreError('rollback', err)
      }
    },
    close() {
      try {
        db.pragma('optimize')
      } catch {
        // best effort
      }
      db.close()
    },
  }
}

function sqliteStores(db: Db, clock: Clock): SyncStores {
  const cache = new Map<string, Stmt>()
  const stmt = (sql: string): Stmt => {
    let s = cache.get(sql)
    if (s === undefined) {
      s = db.prepare(sql)
      cache.set(sql, s)
    }
    return s
  }
  /** Runs one operation atomically (a savepoint when inside tx) and maps SQLite failures. */
  const atomic = <A extends unknown[], R>(op: string, fn: (...args: A) => R): ((...args: A) => R) => {
    const t = db.transaction(fn)
    return (...args: A): R => {
      try {
        return t.immediate(...args)
      } catch (err) {
        if (passThrough(err)) throw err
        throw datastoreError(op, err)
      }
    }
  }
  /** A single read statement: no transaction needed. */
  const read = <A extends unknown[], R>(op: string, fn: (...args: A) => R): ((...args: A) => R) => {
    return (...args: A): R => {
      try {
        return fn(...args)
      } catch (err) {
        if (passThrough(err)) throw err
        throw datastoreError(op, err)
      }
    }
  }

  const findEntry = (id: string): RegistrationEntry | undefined => {
    const row = stmt(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.id = ?`).get(id) as EntryRow | undefined
    return row === undefined ? undefined : toEntry(row)
  }
  const findNode = (agentId: string): AttestedNode | undefined => {
    const row = stmt(`SELECT ${NODE_COLUMNS} FROM attested_nodes n WHERE n.agent_id = ?`).get(agentId) as NodeRow | undefined
    return row === undefined ? undefined : toNode(row)
  }
  const idByUniqueKey = (key: string): string | undefined =>
    (stmt('SELECT id FROM entries WHERE unique_key = ?').get(key) as { id: string } | undefined)?.id

  const writeSelectors = (id: string, selectors: readonly Selector[]): void => {
    stmt('DELETE FROM entry_selectors WHERE entry_id = ?').run(id)
    const ins = stmt('INSERT INTO entry_selectors (entry_id, type, value) VALUES (?, ?, ?)')
    for (const s of selectors) ins.run(id, s.type, s.value)
  }
  const writeList = (table: 'entry_dns_names' | 'entry_federates_with', column: string, id: string, values: readonly string[]): void => {
    stmt(`DELETE FROM ${table} WHERE entry_id = ?`).run(id)
    const ins = stmt(`INSERT INTO ${table} (entry_id, position, ${column}) VALUES (?, ?, ?)`)
    values.forEach((v, i) => ins.run(id, i, v))
  }
  const writeNodeSelectors = (agentId: string, selectors: readonly Selector[]): void => {
    stmt('DELETE FROM node_selectors WHERE agent_id = ?').run(agentId)
    const ins = stmt('INSERT INTO node_selectors (agent_id, type, value) VALUES (?, ?, ?)')
    for (const s of selectors) ins.run(agentId, s.type, s.value)
  }

  /** Maps a unique-constraint failure on entries to ERR_ALREADY_EXISTS. */
  const onEntryConflict = (err: unknown, id: string, uniqueKey: string): never => {
    if (isSqliteError(err) && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw entryExists(id)
    if (isSqliteError(err) && err.code === 'SQLITE_CONSTRAINT_UNIQUE') {
      const existing = idByUniqueKey(uniqueKey)
      throw entryExists(existing)
    }
    throw err
  }

  function paged<Row, T>(
    table: string,
    alias: string,
    columns: string,
    key: string,
    where: { clauses: string[]; params: Record<string, unknown> },
    page: Page | undefined,
    map: (r: Row) => T,
    keyOf: (t: T) => string,
  ): { items: T[]; next: string } {
    const size = pageSizeOf(page)
    const after = decodePageToken(page?.pageToken)
    const clauses = [...where.clauses]
    const params = { ...where.params }
    if (after !== undefined) (clauses.push(`${alias}.${key} > @after`), (params.after = after))
    params.limit = size === 0 ? -1 : size + 1
    const sql = `SELECT ${columns} FROM ${table} ${alias}${clauses.length > 0 ? ` WHERE ${clauses.join(' AND ')}` : ''}
      ORDER BY ${alias}.${key} LIMIT @limit`
    const items = (stmt(sql).all(params) as Row[]).map(map)
    if (size === 0 || items.length <= size) return { items, next: '' }
    items.length = size
    return { items, next: encodePageToken(keyOf(items[size - 1] as T)) }
  }

  const countWhere = (table: string, alias: string, where: { clauses: string[]; params: Record<string, unknown> }): number => {
    const sql = `SELECT COUNT(*) AS n FROM ${table} ${alias}${where.clauses.length > 0 ? ` WHERE ${where.clauses.join(' AND ')}` : ''}`
    return (stmt(sql).get(where.params) as { n: number }).n
  }

  return {
    entries: {
      create: atomic('create entry', (input) => {
        checkNewEntry(input)
        const selectors = normalizeSelectors(input.selectors)
        const uniqueKey = entryUniqueKey(input.spiffeId, input.parentId, selectors)
        const id = input.id ?? randomUUID()
        const now = clock.now()
        try {
          stmt(`INSERT INTO entries (id, spiffe_id, parent_id, x509_ttl, jwt_ttl, hint, admin, downstream, expires_at,
            created_at, updated_at, revision, selector_count, unique_key)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`).run(
            id,
            input.spiffeId,
            input.parentId,
            input.x509SvidTtl,
            input.jwtSvidTtl,
            input.hint,
            input.admin ? 1 : 0,
            input.downstream ? 1 : 0,
            input.expiresAt,
            now,
            now,
            selectors.length,
            uniqueKey,
          )
        } catch (err) {
          onEntryConflict(err, id, uniqueKey)
        }
        writeSelectors(id, selectors)
        writeList('entry_dns_names', 'dns_name', id, input.dnsNames)
        writeList('entry_federates_with', 'trust_domain', id, input.federatesWith)
        return findEntry(id) as RegistrationEntry
      }),
      get: read('get entry', (id) => {
        const e = findEntry(id)
        if (e === undefined) throw entryNotFound()
        return e
      }),
      find: read('find entry', (id) => findEntry(id)),
      update: atomic('update entry', (id, patch, options) => {
        if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
        checkEntryFields(patch, false)
        const old = findEntry(id)
        if (old === undefined) throw entryNotFound()
        const expected = options?.expectedRevision
        if (expected !== undefined && expected !== old.revision) throw revisionMismatch(expected, old.revision)
        const pick = <K extends keyof RegistrationEntry>(k: K): RegistrationEntry[K] =>
          (patch as Partial<RegistrationEntry>)[k] ?? old[k]
        const selectors = patch.selectors === undefined ? old.selectors : normalizeSelectors(patch.selectors)
        const spiffeId = pick('spiffeId')
        const parentId = pick('parentId')
        const uniqueKey = entryUniqueKey(spiffeId, parentId, selectors)
        const expiresAt = patch.expiresAt === undefined ? old.expiresAt : patch.expiresAt
        try {
          stmt(`UPDATE entries SET spiffe_id = ?, parent_id = ?, x509_ttl = ?, jwt_ttl = ?, hint = ?, admin = ?,
            downstream = ?, expires_at = ?, updated_at = ?, revision = revision + 1, selector_count = ?, unique_key = ?
            WHERE id = ?`).run(
            spiffeId,
            parentId,
            pick('x509SvidTtl'),
            pick('jwtSvidTtl'),
            pick('hint'),
            pick('admin') ? 1 : 0,
            pick('downstream') ? 1 : 0,
            expiresAt,
            clock.now(),
            selectors.length,
            uniqueKey,
            id,
          )
        } catch (err) {
          onEntryConflict(err, id, uniqueKey)
        }
        if (patch.selectors !== undefined) writeSelectors(id, selectors)
        if (patch.dnsNames !== undefined) writeList('entry_dns_names', 'dns_name', id, patch.dnsNames)
        if (patch.federatesWith !== undefined) writeList('entry_federates_with', 'trust_domain', id, patch.federatesWith)
        return findEntry(id) as RegistrationEntry
      }),
      delete: atomic('delete entry', (id) => {
        const e = findEntry(id)
        if (e === undefined) throw entryNotFound()
        stmt('DELETE FROM entries WHERE id = ?').run(id)
        return e
      }),
      list: read('list entries', (filter, page) => {
        const where = entryWhere(normalizeEntryFilter(filter))
        const { items, next } = paged<EntryRow, RegistrationEntry>('entries', 'e', ENTRY_COLUMNS, 'id', where, page, toEntry, (e) => e.id)
        return { entries: items, nextPageToken: next }
      }),
      count: read('count entries', (filter) => countWhere('entries', 'e', entryWhere(normalizeEntryFilter(filter)))),
      pruneExpired: atomic('prune entries', (now) => {
        checkTime('now', now, false)
        const rows = stmt(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.expires_at IS NOT NULL AND e.expires_at < ? ORDER BY e.id`).all(
          now,
        ) as EntryRow[]
        stmt('DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at < ?').run(now)
        return rows.map(toEntry)
      }),
    },
    nodes: {
      upsert: atomic('upsert attested node', (input) => {
        checkNodeFields(input as unknown as Record<string, unknown>, true)
        const now = clock.now()
        stmt(`INSERT INTO attested_nodes (agent_id, attestor, serial, previous_serial, expires_at, banned, can_reattest,
            created_at, updated_at) VALUES (@agentId, @attestor, @serial, @previousSerial, @expiresAt, @banned, @canReattest, @now, @now)
          ON CONFLICT (agent_id) DO UPDATE SET attestor = excluded.attestor, serial = excluded.serial,
            previous_serial = excluded.previous_serial, expires_at = excluded.expires_at, banned = excluded.banned,
            can_reattest = excluded.can_reattest, updated_at = excluded.updated_at`).run({
          agentId: input.agentId,
          attestor: input.attestor,
          serial: input.serial,
          previousSerial: input.previousSerial,
          expiresAt: input.expiresAt,
          banned: input.banned ? 1 : 0,
          canReattest: input.canReattest ? 1 : 0,
          now,
        })
        writeNodeSelectors(input.agentId, normalizeSelectors(input.selectors))
        return findNode(input.agentId) as AttestedNode
      }),
      find: read('find attested node', (agentId) => findNode(agentId)),
      get: read('get attested node', (agentId) => {
        const n = findNode(agentId)
        if (n === undefined) throw nodeNotFound()
        return n
      }),
      update: atomic('update attested node', (agentId, patch) => {
        if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
        checkNodeFields(patch as Record<string, unknown>, false)
        const old = findNode(agentId)
        if (old === undefined) throw nodeNotFound()
        stmt(`UPDATE attested_nodes SET serial = ?, previous_serial = ?, expires_at = ?, banned = ?, updated_at = ?
          WHERE agent_id = ?`).run(
          patch.serial ?? old.serial,
          patch.previousSerial ?? old.previousSerial,
          patch.expiresAt ?? old.expiresAt,
          (patch.banned ?? old.banned) ? 1 : 0,
          clock.now(),
          agentId,
        )
        if (patch.selectors !== undefined) writeNodeSelectors(agentId, normalizeSelectors(patch.selectors))
        return findNode(agentId) as AttestedNode
      }),
      delete: atomic('delete attested node', (agentId) => {
        const n = findNode(agentId)
        if (n === undefined) throw nodeNotFound()
        stmt('DELETE FROM attested_nodes WHERE agent_id = ?').run(agentId)
        return n
      }),
      list: read('list attested nodes', (filter, page) => {
        const where = nodeWhere(normalizeNodeFilter(filter))
        const { items, next } = paged<NodeRow, AttestedNode>(
          'attested_nodes',
          'n',
          NODE_COLUMNS,
          'agent_id',
          where,
          page,
          toNode,
          (n) => n.agentId,
        )
        return { nodes: items, nextPageToken: next }
      }),
      count: read('count attested nodes', (filter) => countWhere('attested_nodes', 'n', nodeWhere(normalizeNodeFilter(filter)))),
    },
    joinTokens: {
      create: read('create join token', (token) => {
        checkString('tokenHash', token.tokenHash)
        checkString('spiffeId', token.spiffeId)
        checkTime('expiresAt', token.expiresAt, false)
        const record: JoinToken = {
          tokenHash: token.tokenHash,
          spiffeId: token.spiffeId,
          expiresAt: token.expiresAt,
          createdAt: clock.now(),
        }
        try {
          stmt('INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, created_at) VALUES (?, ?, ?, ?)').run(
            record.tokenHash,
            record.spiffeId,
            record.expiresAt,
            record.createdAt,
          )
        } catch (err) {
          if (isSqliteError(err) && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
            throw new IdentityError('ERR_ALREADY_EXISTS', 'join token already exists')
          }
          throw err
        }
        return record
      }),
      consume: read('consume join token', (tokenHash) => {
        const row = stmt(
          'DELETE FROM join_tokens WHERE token_hash = ? RETURNING token_hash, spiffe_id, expires_at, created_at',
        ).get(tokenHash) as { token_hash: string; spiffe_id: string; expires_at: number; created_at: number } | undefined
        if (row === undefined) return undefined
        return { tokenHash: row.token_hash, spiffeId: row.spiffe_id, expiresAt: row.expires_at, createdAt: row.created_at }
      }),
      pruneExpired: read('prune join tokens', (now) => {
        checkTime('now', now, false)
        return stmt('DELETE FROM join_tokens WHERE expires_at < ?').run(now).changes
      }),
      count: read('count join tokens', () => (stmt('SELECT COUNT(*) AS n FROM join_tokens').get() as { n: number }).n),
    },
    bundles: {
      put: read('put bundle', (record) => {
        checkString('trustDomain', record.trustDomain)
        checkString('document', record.document)
        checkTime('sequence', record.sequence, false)
        const stored: BundleRecord = {
          trustDomain: record.trustDomain,
          document: record.document,
          sequence: record.sequence,
          updatedAt: clock.now(),
        }
        stmt(`INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES (?, ?, ?, ?)
          ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
            updated_at = excluded.updated_at`).run(stored.trustDomain, stored.document, stored.sequence, stored.updatedAt)
        return stored
      }),
      get: read('get bundle', (trustDomain) => {
        const row = stmt('SELECT trust_domain, document, sequence, updated_at FROM bundles WHERE trust_domain = ?').get(trustDomain) as
          | { trust_domain: string; document: string; sequence: number; updated_at: number }
          | undefined
        return row === undefined
          ? undefined
          : { trustDomain: row.trust_domain, document: row.document, sequence: row.sequence, updatedAt: row.updated_at }
      }),
      list: read('list bundles', () => {
        const rows = stmt('SELECT trust_domain, document, sequence, updated_at FROM bundles ORDER BY trust_domain').all() as {
          trust_domain: string
          document: string
          sequence: number
          updated_at: number
        }[]
        return rows.map((r) => ({ trustDomain: r.trust_domain, document: r.document, sequence: r.sequence, updatedAt: r.updated_at }))
      }),
      delete: read('delete bundle', (trustDomain) => {
        if (stmt('DELETE FROM bundles WHERE trust_domain = ?').run(trustDomain).changes === 0) {
          throw new IdentityError('ERR_NOT_FOUND', 'bundle not found')
        }
      }),
    },
    journal: {
      get: read('get CA journal', (name) => {
        const row = stmt('SELECT json FROM ca_journal WHERE name = ?').get(name) as { json: string } | undefined
        return row?.json
      }),
      put: read('put CA journal', (name, json) => {
        checkString('name', name)
        checkString('json', json)
        stmt('INSERT INTO ca_journal (name, json) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET json = excluded.json').run(name, json)
      }),
    },
    kv: {
      get: read('get kv', (namespace, key) => {
        const row = stmt('SELECT value FROM kv WHERE namespace = ? AND key = ?').get(namespace, key) as { value: string } | undefined
        return row?.value
      }),
      put: read('put kv', (namespace, key, value) => {
        checkString('namespace', namespace)
        checkString('key', key)
        checkString('value', value)
        stmt(`INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?)
          ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value`).run(namespace, key, value)
      }),
      delete: read('delete kv', (namespace, key) => stmt('DELETE FROM kv WHERE namespace = ? AND key = ?').run(namespace, key).changes > 0),
      list: read('list kv', (namespace) =>
        stmt('SELECT key, value FROM kv WHERE namespace = ? ORDER BY key').all(namespace) as { key: string; value: string }[],
      ),
    },
    liveInstances: {
      put: read('put live instance', (i) => {
        checkString('prefix', i.prefix)
        checkString('instanceKey', i.instanceKey)
        checkTime('expiresAt', i.expiresAt, false)
        const row = stmt(`INSERT INTO live_instances (prefix, instance_key, expires_at) VALUES (?, ?, ?)
          ON CONFLICT (prefix, instance_key) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)
          RETURNING expires_at`).get(i.prefix, i.instanceKey, i.expiresAt) as { expires_at: number }
        return { prefix: i.prefix, instanceKey: i.instanceKey, expiresAt: row.expires_at }
      }),
      list: read('list live instances', (prefix, now) => {
        checkTime('now', now, false)
        const rows = stmt('SELECT instance_key, expires_at FROM live_instances WHERE prefix = ? AND expires_at > ? ORDER BY instance_key').all(prefix, now) as {
          instance_key: string
          expires_at: number
        }[]
        return rows.map((r) => ({ prefix, instanceKey: r.instance_key, expiresAt: r.expires_at }))
      }),
      release: read('release live instance', (instanceKey) => stmt('DELETE FROM live_instances WHERE instance_key = ?').run(instanceKey).changes),
      pruneExpired: read('prune live instances', (now) => {
        checkTime('now', now, false)
        return stmt('DELETE FROM live_instances WHERE expires_at <= ?').run(now).changes
      }),
    },
  }
}
