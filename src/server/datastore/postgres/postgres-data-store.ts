import type { ConnectionOptions } from 'node:tls'
import pg from 'pg'
import { type Clock, systemClock } from '../../../common/clock.js'
import { configError } from '../../../common/config/issues.js'
import { F, type Logger, nullLogger } from '../../../common/log/logger.js'
import { IdentityError } from '../../../errors/index.js'
import type { ChangeFeed, ChangeFeedEvent, DataStore } from '../types.js'
import { ChangeListener, commitWithChanges, pruneChanges } from './changes.js'
import { checkConnectionString, type ConnectionTarget } from './connection.js'
import { datastoreError, isConnectionError, reasonOf, sqlState } from './errors.js'
import { MIGRATIONS, type Migration } from './migrations.js'
import { createPostgresRunner, LOCK_CLASS, LOCK_MIGRATE, type StoreOps } from './runner.js'
import { bundlesStore } from './stores/bundles.js'
import { entriesStore } from './stores/entries.js'
import { journalStore } from './stores/journal.js'
import { joinTokensStore } from './stores/join-tokens.js'
import { kvStore } from './stores/kv.js'
import { liveInstancesStore } from './stores/live-instances.js'
import { nodesStore } from './stores/nodes.js'
import { revocationsStore } from './stores/revocations.js'

/*
 * The PostgreSQL datastore: the pool, opening (migrations under an advisory
 * lock) and the composition here; transactions, locking, retries and error
 * mapping in runner.ts and errors.ts; the statement runner and paging in
 * context.ts; the change feed (log, NOTIFY, listeners, pruning) in
 * changes.ts; connection-string and TLS rules in connection.ts; row shapes in
 * rows.ts; WHERE building in where.ts; one module per store under stores/.
 */

export interface PostgresDataStoreOptions {
  /** `postgresql://user@host:port/database`: no password (refused), no TLS parameters (see `ssl`). */
  connectionString: string
  /** The password (from a file or the environment); undefined leaves it to the driver (PGPASSWORD, ~/.pgpass) or to a password-less method. */
  password?: string
  /** TLS to the database (node:tls options, verified); false for none. Default: none. */
  ssl?: false | ConnectionOptions
  /** Most connections the pool opens (default 10); each change feed holds one more. */
  poolSize?: number
  /** How long to wait for a connection before an operation fails as unavailable (ms, default 5000). */
  connectTimeoutMs?: number
  /** How long the change log keeps a change (ms, default 24 h): a change feed disconnected for longer reloads. */
  changeRetentionMs?: number
  log?: Logger
  /** Source of createdAt / updatedAt; defaults to the system clock. */
  clock?: Clock
}

/** BIGINT columns (times, TTLs, sequence numbers, COUNT) come back as numbers: every value stored is a safe integer. */
const INT8_OID = 20
const parseInt8 = (v: string): number => Number(v)
const TYPES = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary'): unknown =>
    oid === INT8_OID ? parseInt8 : (pg.types.getTypeParser as (o: number, f?: 'text' | 'binary') => unknown)(oid, format)) as typeof pg.types.getTypeParser,
}

async function migrate(pool: pg.Pool, log: Logger, migrations: readonly Migration[]): Promise<number> {
  const latest = migrations[migrations.length - 1]?.version ?? 0
  const client = await pool.connect()
  let ok = false
  try {
    await client.query('BEGIN')
    // Several servers may open the database at once: one migrates, the others wait here and find it done.
    await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_CLASS, LOCK_MIGRATE])
    await client.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
      version INTEGER PRIMARY KEY,
      name TEXT NOT NULL,
      applied_at BIGINT NOT NULL
    )`)
    const from = (await client.query<{ v: number }>('SELECT COALESCE(MAX(version), 0)::int AS v FROM schema_migrations')).rows[0]?.v ?? 0
    if (from > latest) {
      throw new IdentityError('ERR_DATASTORE', `datastore schema version ${from} is newer than this build of warrant supports (${latest}); upgrade warrant`, {
        details: { schemaVersion: from, supportedVersion: latest },
      })
    }
    for (const m of migrations) {
      if (m.version <= from) continue
      await client.query(m.sql)
      await client.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)', [m.version, m.name, Date.now()])
      log.info({ version: m.version, name: m.name }, 'Applied datastore migration')
    }
    await client.query('COMMIT')
    ok = true
    return Math.max(from, latest)
  } finally {
    if (!ok) await client.query('ROLLBACK').catch(() => undefined)
    client.release(!ok)
  }
}

function describe(t: ConnectionTarget): Record<string, string> {
  return { host: t.host || '(default)', port: t.port || '(default)', database: t.database || '(default)' }
}

/**
 * Opens the PostgreSQL datastore: checks the connection string, connects,
 * migrates (or waits for another server migrating), and returns the store.
 * Fails with ERR_CONFIG_INVALID (connection string), ERR_DATASTORE_UNAVAILABLE
 * (cannot connect) or ERR_DATASTORE (a newer schema, a failed migration).
 */
export async function openPostgresDataStore(opts: PostgresDataStoreOptions): Promise<DataStore> {
  if (opts === null || typeof opts !== 'object') throw new TypeError('options must be an object')
  const { issues, target } = checkConnectionString(opts.connectionString)
  if (target === undefined) throw configError(issues, 'postgres datastore configuration')
  if (opts.password !== undefined && (typeof opts.password !== 'string' || opts.password === '')) throw new TypeError('password must be a non-empty string')
  const poolSize = opts.poolSize ?? 10
  if (!Number.isSafeInteger(poolSize) || poolSize < 1) throw new RangeError('poolSize must be a positive integer')
  const retentionMs = opts.changeRetentionMs ?? 24 * 3_600_000
  if (!Number.isSafeInteger(retentionMs) || retentionMs < 0) throw new RangeError('changeRetentionMs must be a non-negative integer')
  const log = opts.log ?? nullLogger
  const clock = opts.clock ?? systemClock
  const where = describe(target)

  // The fields, not the string: the driver would let the string's (empty) password and TLS settings override these.
  const clientConfig: pg.ClientConfig = {
    ...(target.host !== '' ? { host: target.host } : {}),
    ...(target.port !== '' ? { port: Number(target.port) } : {}),
    ...(target.database !== '' ? { database: target.database } : {}),
    ...(target.user !== '' ? { user: target.user } : {}),
    ...(target.options !== undefined ? { options: target.options } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    ssl: opts.ssl ?? false,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 5000,
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
    application_name: target.applicationName ?? 'warrant',
    // A session stuck inside a transaction (a hung server) would hold the transaction lock of every server.
    idle_in_transaction_session_timeout: 60_000,
    types: TYPES,
  }
  const pool = new pg.Pool({ ...clientConfig, max: poolSize, idleTimeoutMillis: 30_000 })
  let lostLogged = 0
  const onLost = (err: unknown): void => {
    // A connection failed (the server stopped or restarted, the network dropped): the pool replaces it. Logged at most every 10 s.
    const now = Date.now()
    if (now - lostLogged < 10_000) return
    lostLogged = now
    log.warn({ ...where, [F.REASON]: reasonOf(err) }, 'PostgreSQL connection lost')
  }
  pool.on('error', onLost)
  pool.on('connect', (client) => client.on('error', onLost))

  let version = 0
  for (let attempt = 1; ; attempt++) {
    try {
      version = await migrate(pool, log, MIGRATIONS)
      break
    } catch (err) {
      if (isConnectionError(err) && attempt < 3) {
        await new Promise((r) => setTimeout(r, 100 * attempt))
        continue
      }
      await pool.end().catch(() => undefined)
      if (err instanceof IdentityError) throw err
      const at = `${where.host}:${where.port}/${where.database}`
      if (isConnectionError(err) || sqlState(err)?.startsWith('28') === true || sqlState(err) === '3D000') {
        const reason = reasonOf(err)
        throw new IdentityError('ERR_DATASTORE_UNAVAILABLE', `datastore: cannot connect to PostgreSQL at ${at} (${reason})`, {
          cause: err,
          details: { ...where, reason },
        })
      }
      const e = datastoreError('migrate', err)
      throw new IdentityError('ERR_DATASTORE', `datastore: cannot open the PostgreSQL database at ${at}: ${e.message}`, {
        cause: err,
        details: { ...where, ...(e instanceof IdentityError ? e.details : {}) },
      })
    }
  }
  log.info({ ...where, schemaVersion: version, tls: opts.ssl !== undefined && opts.ssl !== false }, 'Opened PostgreSQL datastore')

  const ops = {
    entries: entriesStore(),
    nodes: nodesStore(),
    joinTokens: joinTokensStore(),
    bundles: bundlesStore(),
    journal: journalStore(),
    kv: kvStore(),
    liveInstances: liveInstancesStore(),
    revocations: revocationsStore(),
  } as unknown as StoreOps

  const prune = (): void => {
    void pruneChanges(pool, clock.now() - retentionMs).then(
      (n) => {
        if (n > 0) log.debug({ [F.COUNT]: n }, 'Pruned the change log')
      },
      (err: unknown) => log.debug({ [F.REASON]: reasonOf(err) }, 'Change log prune failed; retried later'),
    )
  }
  prune()
  const pruneTimer = setInterval(prune, Math.min(3_600_000, Math.max(60_000, retentionMs / 4)))
  pruneTimer.unref()
  const feeds = new Set<ChangeListener>()

  return createPostgresRunner({
    pool,
    clock,
    ops,
    commit: (client, changes) => commitWithChanges(client, changes, clock.now()),
    rootExtras: ({ guard, detach }) => ({
      changes: async (o: { fromSeq?: number }, onEvent: (event: ChangeFeedEvent) => void | Promise<void>): Promise<ChangeFeed> => {
        guard()
        if (o === null || typeof o !== 'object') throw new TypeError('changes: options must be an object')
        if (o.fromSeq !== undefined && (!Number.isSafeInteger(o.fromSeq) || o.fromSeq < 0)) throw new RangeError('fromSeq must be a non-negative integer')
        if (typeof onEvent !== 'function') throw new TypeError('changes: onEvent must be a function')
        const feed = new ChangeListener({
          newClient: () => new pg.Client(clientConfig),
          log,
          fromSeq: o.fromSeq,
          onEvent,
          detach,
          onClosed: (f) => feeds.delete(f),
        })
        feeds.add(feed)
        try {
          await feed.start()
        } catch (err) {
          await feed.close()
          throw datastoreError('listen for changes', err)
        }
        return feed
      },
    }),
    onClose: async () => {
      clearInterval(pruneTimer)
      await Promise.all([...feeds].map((f) => f.close()))
    },
    health: {
      lost: onLost,
      restored: () => {
        lostLogged = 0
        log.info(where, 'PostgreSQL reachable again')
      },
    },
  })
}
