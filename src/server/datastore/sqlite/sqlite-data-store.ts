import { chmodSync, closeSync, constants, mkdirSync, openSync, statSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { type Clock, systemClock } from '../../../common/clock.js'
import { F, type Logger, nullLogger } from '../../../common/log/logger.js'
import { IdentityError } from '../../../errors/index.js'
import { createLockedDataStore, type SyncStores, type TxDriver } from '../internal/locked-store.js'
import type { DataStore } from '../types.js'
import { datastoreError, sqliteContext, type Db } from './context.js'
import { MIGRATIONS, type Migration } from './migrations.js'
import { bundlesStore } from './stores/bundles.js'
import { entriesStore } from './stores/entries.js'
import { journalStore } from './stores/journal.js'
import { joinTokensStore } from './stores/join-tokens.js'
import { kvStore } from './stores/kv.js'
import { liveInstancesStore } from './stores/live-instances.js'
import { nodesStore } from './stores/nodes.js'
import { revocationsStore } from './stores/revocations.js'

/*
 * The SQLite datastore: opening the file (permissions, pragmas, migrations)
 * and the transaction driver here; the shared statement cache and error
 * mapping in context.ts; row shapes and mappers in rows.ts; WHERE building in
 * where.ts; one module per store under stores/.
 */

export interface SqliteDataStoreOptions {
  /** Database file; created (0600, directory 0700) when missing. ':memory:' for a throwaway store. */
  path: string
  log?: Logger
  /** Source of createdAt / updatedAt; defaults to the system clock. */
  clock?: Clock
  /** How long to wait for another process's write lock (ms). Default 5000. */
  busyTimeoutMs?: number
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
  const current = (): number => (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v
  const apply = db.transaction(() => {
    const from = current()
    if (from > latest) {
      throw new IdentityError('ERR_DATASTORE', `datastore schema version ${from} is newer than this build of warrant supports (${latest}); upgrade warrant`, {
        details: { schemaVersion: from, supportedVersion: latest },
      })
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
  const ctx = sqliteContext(db, clock)
  return {
    entries: entriesStore(ctx),
    nodes: nodesStore(ctx),
    joinTokens: joinTokensStore(ctx),
    bundles: bundlesStore(ctx),
    journal: journalStore(ctx),
    kv: kvStore(ctx),
    liveInstances: liveInstancesStore(ctx),
    revocations: revocationsStore(ctx),
  }
}
