/**
 * The PostgreSQL datastore's change feed. Writing: each operation records
 * which records it changes (entries, a node's standing, bundles,
 * revocations, and the kv namespaces other servers must follow); in the same
 * round trip as its COMMIT, the transaction numbers them from the one-row
 * `change_counter` (whose row lock orders those commits, so sequence numbers
 * are gapless and commit-ordered; it is held only while PostgreSQL runs that
 * last query), appends them to `changes` and NOTIFYs `warrant_changes`
 * (delivered at the commit). Reading: a listener on its own connection
 * LISTENs, and on each notification reads the rows after the last seq it
 * delivered. After a lost connection it reconnects with backoff and catches
 * up from that seq; a heartbeat checks the connection (and the head) every
 * 30 s. Rows older than the retention are pruned; a listener left behind
 * the pruned point is told to reload (`reset`).
 */
import type pg from 'pg'
import type { Logger } from '../../../common/log/logger.js'
import type { ChangeFeed, ChangeFeedEvent, DataStoreChange, DataStoreChangeKind } from '../types.js'
import { reasonOf } from './errors.js'

/** A change as an operation records it; the sequence number and time are assigned at commit. */
export interface ChangeRecord {
  kind: DataStoreChangeKind
  key: string
  op: 'put' | 'delete'
}

/** The kv namespaces whose changes the feed carries, and under which kind. */
export const KV_CHANGE_KINDS: Readonly<Record<string, DataStoreChangeKind>> = {
  bounds: 'bounds',
  federation: 'federation',
  ca_authorities: 'authority',
  tasks: 'task',
}

export function changeOfKv(namespace: string, key: string, op: 'put' | 'delete'): ChangeRecord | undefined {
  const kind = Object.hasOwn(KV_CHANGE_KINDS, namespace) ? KV_CHANGE_KINDS[namespace] : undefined
  return kind === undefined ? undefined : { kind, key, op }
}

export const CHANGE_CHANNEL = 'warrant_changes'
/** Rows read per query while catching up. */
const BATCH = 1000
const HEARTBEAT_MS = 30_000

/**
 * Commits a transaction with its changes: the changes are numbered from the `change_counter` row, appended to
 * `changes` and NOTIFYed, and the transaction commits, in one round trip (one simple query of two statements,
 * the values inlined as escaped literals). The counter's row lock, which orders the commits that carry changes,
 * is so held only while PostgreSQL runs that query, never across a round trip to this process. A failure of the
 * first statement skips the COMMIT (the caller rolls back). Throws when PostgreSQL answers the COMMIT with a
 * ROLLBACK (the transaction had failed).
 */
export async function commitWithChanges(client: pg.PoolClient, changes: readonly ChangeRecord[], now: number): Promise<void> {
  if (changes.length === 0) {
    const r = await client.query('COMMIT')
    if (r.command !== 'COMMIT') throw new RolledBack()
    return
  }
  // One record per changed record (the last operation on it), in the order of those last operations.
  const last = new Map<string, ChangeRecord>()
  for (const c of changes) {
    const k = `${c.kind}\u0000${c.key}`
    last.delete(k)
    last.set(k, c)
  }
  const list = [...last.values()]
  if (!Number.isSafeInteger(now)) throw new TypeError('commitWithChanges: now must be an integer')
  const lit = (v: string): string => client.escapeLiteral(v)
  const values = list.map((c, i) => `(${i + 1}, ${lit(c.kind)}, ${lit(c.key)}, ${lit(c.op)})`).join(', ')
  const n = list.length
  // A missing counter row inserts nothing: the cast then fails the statement (its text is in the error), so the
  // COMMIT after it does not run; a change the feed would not carry is never committed.
  const flush = `WITH c AS (UPDATE change_counter SET last = last + ${n} WHERE id = 1 RETURNING last),
      ins AS (
        INSERT INTO changes (seq, kind, key, op, at)
        SELECT c.last - ${n} + u.ord, u.kind, u.key, u.op, ${now}
        FROM c, (VALUES ${values}) AS u(ord, kind, key, op)
        RETURNING seq)
    SELECT pg_notify('${CHANGE_CHANNEL}', MAX(seq)::text),
      CASE WHEN COUNT(*) = ${n} THEN COUNT(*) ELSE ('the change log counter row is missing: ' || COUNT(*))::int END AS n FROM ins`
  const results = (await client.query(`${flush}; COMMIT`)) as unknown as pg.QueryResult[]
  if (results[1]?.command !== 'COMMIT') throw new RolledBack()
}

/** PostgreSQL answered COMMIT with ROLLBACK: the transaction had failed, nothing was committed. */
export class RolledBack extends Error {
  constructor() {
    super('PostgreSQL rolled the transaction back')
    this.name = 'RolledBack'
  }
}

/**
 * The change log inside one statement that commits on its own (an `alone` operation, `Exec.alone`): `ctes` number
 * one change of record `key` (a parameter reference) from the counter row when CTE `when` (at most one row)
 * has a row, and append it; `check` (a select-list expression evaluated once: the number logged) NOTIFYs it and
 * fails the statement when the counter row is missing. The row lock is taken in the statement and released by its own commit, so the
 * sequence stays gapless and commit-ordered as with `commitWithChanges`.
 */
export function changeLogSql(o: { kind: DataStoreChangeKind; key: string; op: 'put' | 'delete'; at: string; when: string }): {
  ctes: string
  check: string
} {
  const known: readonly string[] = ['entry', 'node', 'bundle', 'revocation', ...Object.values(KV_CHANGE_KINDS)]
  if (!known.includes(o.kind) || (o.op !== 'put' && o.op !== 'delete')) throw new TypeError(`changeLogSql: unknown change ${o.kind} ${o.op}`)
  return {
    ctes: `_log_c AS (UPDATE change_counter SET last = last + 1 WHERE id = 1 AND EXISTS (SELECT 1 FROM ${o.when}) RETURNING last),
      _log AS (INSERT INTO changes (seq, kind, key, op, at) SELECT _log_c.last, '${o.kind}', ${o.key}, '${o.op}', ${o.at} FROM _log_c RETURNING seq)`,
    check: `(SELECT CASE WHEN COUNT(*) = (SELECT COUNT(*) FROM ${o.when}) THEN COUNT(*) ELSE ('the change log counter row is missing: ' || COUNT(*))::int END
      FROM _log, LATERAL (SELECT pg_notify('${CHANGE_CHANNEL}', _log.seq::text)) _notified)`,
  }
}

/** Deletes the changes older than `before` (epoch ms); returns how many. */
export async function pruneChanges(pool: pg.Pool, before: number): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `WITH d AS (DELETE FROM changes WHERE seq <= (SELECT MAX(seq) FROM changes WHERE at < $1) RETURNING seq),
      u AS (UPDATE change_counter SET pruned_through = GREATEST(pruned_through, (SELECT MAX(seq) FROM d)) WHERE id = 1 AND EXISTS (SELECT 1 FROM d))
    SELECT COUNT(*)::int AS n FROM d`,
    [before],
  )
  return r.rows[0]?.n ?? 0
}

interface CatchUpRow {
  last: number
  pruned_through: number
  seq: number | null
  kind: DataStoreChangeKind | null
  key: string | null
  op: 'put' | 'delete' | null
  at: number | null
}

interface ChangeRow {
  seq: number
  kind: DataStoreChangeKind
  key: string
  op: 'put' | 'delete'
  at: number
}

export interface ListenerOptions {
  /** A new, unconnected client with the datastore's connection settings. */
  newClient: () => pg.Client
  log: Logger
  fromSeq: number | undefined
  onEvent: (event: ChangeFeedEvent) => void | Promise<void>
  /** Runs the subscriber's callback outside any transaction's async context. */
  detach: <T>(fn: () => T) => T
  onClosed: (feed: ChangeListener) => void
}

/** One subscriber's LISTEN connection and its position. */
export class ChangeListener implements ChangeFeed {
  readonly #o: ListenerOptions
  #seq = 0
  #client: pg.Client | undefined
  #closed = false
  /** A catch-up is running; `#again` asks for one more after it. */
  #running: Promise<void> | undefined
  #again = false
  #retry: NodeJS.Timeout | undefined
  #heartbeat: NodeJS.Timeout | undefined
  #failures = 0

  constructor(o: ListenerOptions) {
    this.#o = o
  }

  get seq(): number {
    return this.#seq
  }

  /** Connects, listens and delivers what happened after `fromSeq` (or starts at the head); rejects when it cannot connect. */
  async start(): Promise<void> {
    const client = await this.#connect()
    if (this.#o.fromSeq === undefined) {
      this.#seq = (await client.query<{ last: number }>('SELECT last FROM change_counter WHERE id = 1')).rows[0]?.last ?? 0
    } else this.#seq = this.#o.fromSeq
    this.#heartbeat = setInterval(() => this.#beat(), HEARTBEAT_MS)
    this.#heartbeat.unref()
    this.#kick()
  }

  async #connect(): Promise<pg.Client> {
    const client = this.#o.newClient()
    client.on('error', (err) => this.#lost(client, err))
    client.on('end', () => this.#lost(client, new Error('Connection terminated')))
    // The payload is the highest seq the commit carried: one this listener has delivered already needs no catch-up.
    client.on('notification', (n) => {
      const seq = Number(n.payload)
      if (!(Number.isSafeInteger(seq) && seq <= this.#seq)) this.#kick()
    })
    try {
      await client.connect()
      await client.query(`LISTEN ${CHANGE_CHANNEL}`)
    } catch (err) {
      client.removeAllListeners('end')
      await client.end().catch(() => undefined)
      throw err
    }
    if (this.#closed) {
      await client.end().catch(() => undefined)
      throw new Error('change feed closed')
    }
    this.#client = client
    return client
  }

  #lost(client: pg.Client, err: unknown): void {
    if (this.#client !== client) return
    this.#client = undefined
    client.removeAllListeners('end')
    void client.end().catch(() => undefined)
    if (this.#closed) return
    if (this.#failures === 0) this.#o.log.warn({ reason: reasonOf(err), seq: this.#seq }, 'Change feed connection lost; reconnecting')
    this.#scheduleReconnect()
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#retry !== undefined) return
    const delay = Math.min(5_000, 100 * 2 ** Math.min(this.#failures, 6)) * (0.5 + Math.random())
    this.#failures++
    this.#retry = setTimeout(() => {
      this.#retry = undefined
      void this.#connect().then(
        () => {
          this.#o.log.info({ seq: this.#seq }, 'Change feed reconnected; catching up')
          this.#failures = 0
          this.#kick()
        },
        () => this.#scheduleReconnect(),
      )
    }, delay)
    this.#retry.unref()
  }

  #beat(): void {
    const client = this.#client
    if (client === undefined || this.#closed) return
    // A liveness check of the LISTEN connection, and a safety net: a head past our seq is caught up.
    client.query<{ last: number }>('SELECT last FROM change_counter WHERE id = 1').then(
      (r) => {
        if ((r.rows[0]?.last ?? 0) > this.#seq) this.#kick()
      },
      (err: unknown) => this.#lost(client, err),
    )
  }

  /** Starts a catch-up, or asks the running one to go round again. */
  #kick(): void {
    if (this.#closed) return
    if (this.#running !== undefined) {
      this.#again = true
      return
    }
    this.#running = (async () => {
      try {
        do {
          this.#again = false
          await this.#catchUp()
        } while (this.#again && !this.#closed)
      } finally {
        this.#running = undefined
      }
    })()
  }

  async #catchUp(): Promise<void> {
    for (;;) {
      const client = this.#client
      if (client === undefined || this.#closed) return
      let rows: ChangeRow[]
      try {
        // The head and the rows after our seq in one query (a row of nulls when there is none after it).
        const r = (
          await client.query<CatchUpRow>({
            name: 'warrant_catch_up',
            text: `SELECT k.last, k.pruned_through, c.seq, c.kind, c.key, c.op, c.at FROM change_counter k
            LEFT JOIN LATERAL (SELECT seq, kind, key, op, at FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2) c ON true WHERE k.id = 1 ORDER BY c.seq`,
            values: [this.#seq, BATCH],
          })
        ).rows
        const counter = r[0]
        const head = counter?.last ?? 0
        if (head === this.#seq) return
        rows = head < this.#seq ? [] : (r.filter((x) => x.seq !== null) as ChangeRow[])
        // Sequence numbers have no gaps: a missing one was pruned (or the database is not the one the seq came from).
        // The subscriber reloads, then follows from the head.
        if (head < this.#seq || this.#seq < (counter?.pruned_through ?? 0) || rows[0]?.seq !== this.#seq + 1) {
          this.#o.log.warn({ seq: this.#seq, head }, 'Change feed cannot say what changed since its seq (pruned change log); the subscriber reloads')
          this.#seq = head
          await this.#deliver({ type: 'reset', seq: head })
          continue
        }
      } catch (err) {
        this.#lost(client, err)
        return
      }
      const changes: DataStoreChange[] = rows.map((r) => ({ seq: r.seq, kind: r.kind, key: r.key, op: r.op, at: r.at }))
      const seq = (changes[changes.length - 1] as DataStoreChange).seq
      this.#seq = seq
      await this.#deliver({ type: 'changes', changes, seq })
      if (rows.length < BATCH) return
    }
  }

  async #deliver(event: ChangeFeedEvent): Promise<void> {
    if (this.#closed) return
    try {
      await this.#o.detach(() => this.#o.onEvent(event))
    } catch (err) {
      this.#o.log.error({ err, seq: event.seq }, 'Change feed subscriber failed on an event')
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    clearTimeout(this.#retry)
    clearInterval(this.#heartbeat)
    const client = this.#client
    this.#client = undefined
    if (client !== undefined) {
      client.removeAllListeners('end')
      await client.end().catch(() => undefined)
    }
    this.#o.onClosed(this)
  }
}
