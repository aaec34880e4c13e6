/**
 * Runs the PostgreSQL datastore's operations on the pool and gives them the
 * DataStore contract:
 *
 * - Outside `tx`, a read runs on any pooled connection; a write runs in its
 *   own transaction (a write of one statement on its own) and waits while this
 *   process has a transaction open, so no outside write lands inside one.
 *   Each retries a serialization failure or deadlock (PostgreSQL rolled it
 *   back) and a connection that fails before the commit is sent; a connection
 *   lost while committing is retried only for idempotent operations, else
 *   reported as ERR_DATASTORE_UNAVAILABLE with the outcome unknown.
 * - `tx` takes a dedicated connection: BEGIN, then a transaction-level
 *   advisory lock, so transactions run one at a time across every server of
 *   the database, as within one process (READ COMMITTED: each statement sees
 *   what committed before it). The callback is never replayed: a conflict or
 *   lost connection inside it rejects (ERR_DATASTORE_CONFLICT,
 *   ERR_DATASTORE_UNAVAILABLE) and nothing is committed. An operation inside
 *   runs under a savepoint (unless it is one statement), so a failed one can
 *   be caught and the rest commits; a nested `tx` is a savepoint too.
 * - A write that changes records the feed carries sends its change-log rows
 *   and COMMIT as one query (changes.ts `commitWithChanges`), so the
 *   change_counter row lock that orders those commits is held only inside
 *   PostgreSQL, never across a round trip to this process. An `alone`
 *   operation (an entry created outside a transaction) is one statement that
 *   writes its row, its selector rows and its change-log row and commits by
 *   itself: one round trip. A write outside `tx` takes no advisory lock (only
 *   `tx` serializes). Operations declared `prepare` (fixed statement texts)
 *   run as named statements, parsed and planned once per connection.
 * - An AsyncLocalStorage tells which transaction a call comes from, to refuse
 *   the outer store inside `tx` (a TypeError instead of a deadlock). It is
 *   enabled only while a transaction is open.
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import { createHash } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type pg from 'pg'
import type { Clock } from '../../../common/clock.js'
import { IdentityError } from '../../../errors/index.js'
import type { DataStore } from '../types.js'
import { RolledBack, type ChangeRecord } from './changes.js'
import type { Exec, Op } from './context.js'
import { closedError, datastoreError, isConnectionError, isRetryableConflict, passThrough, unavailableError } from './errors.js'
import { Mutex, RwLock } from './locks.js'

/** Advisory lock keys (class, object): 'WARR' and what the lock guards. */
export const LOCK_CLASS = 0x57415252
export const LOCK_MIGRATE = 1
export const LOCK_TX = 2

/** Attempts of an operation outside a transaction (and of opening one) before its failure is reported. */
const MAX_ATTEMPTS = 3
const backoff = (attempt: number): Promise<void> => sleep(20 * 4 ** (attempt - 1) * (0.5 + Math.random()))

export const STORE_NAMES = ['entries', 'nodes', 'joinTokens', 'bundles', 'journal', 'kv', 'liveInstances', 'revocations'] as const
export type StoreName = (typeof STORE_NAMES)[number]
export type StoreOps = Record<StoreName, Record<string, Op<never[], unknown>>>

/**
 * One transaction's connection, shared by its savepoint levels. It is taken
 * (BEGIN and the lock) by the first statement: the callback starts at once,
 * and a transaction that runs no statement costs nothing.
 */
interface TxState {
  client: pg.PoolClient | undefined
  begun: Promise<pg.PoolClient> | undefined
  /** The connection failed: nothing more can run, nothing commits. */
  lost: boolean
}

/** The root (no transaction), an open transaction, or a savepoint inside it. */
interface Level {
  readonly depth: number
  readonly parent: Level | undefined
  active: boolean
  readonly tx: TxState | undefined
  /** Operations of this level run one at a time (one connection); a nested tx holds it. */
  readonly lock: Mutex
  /** Changes of the operations committed so far at this level. */
  readonly changes: ChangeRecord[]
  /** A statement failed outside a savepoint: PostgreSQL aborted the transaction from this level on. */
  doomed: boolean
}

function alive(level: Level): boolean {
  for (let l: Level | undefined = level; l !== undefined; l = l.parent) if (!l.active) return false
  return true
}

function isAncestor(level: Level, of: Level | undefined): boolean {
  for (let l = of?.parent; l !== undefined; l = l.parent) if (l === level) return true
  return false
}

/** PostgreSQL text cannot hold NUL: refused before the statement is sent, so a transaction stays usable. */
function checkParams(params: readonly unknown[] | undefined): void {
  if (params === undefined) return
  const bad = (v: unknown): boolean => (typeof v === 'string' ? v.includes('\u0000') : Array.isArray(v) ? v.some(bad) : false)
  if (params.some(bad)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'datastore: text must not contain NUL characters')
}

/** Names of prepared statements by their text (the fixed texts of `prepare` operations, so the map stays small). */
const statementNames = new Map<string, string>()

/** The statement to send: named (prepared once per connection, its plan reused) for a `prepare` operation. */
function statement(sql: string, params: readonly unknown[] | undefined, prepare: boolean): pg.QueryConfig {
  if (!prepare) return { text: sql, values: params as unknown[] }
  let name = statementNames.get(sql)
  if (name === undefined) {
    name = `warrant_${createHash('sha256').update(sql).digest('hex').slice(0, 24)}`
    statementNames.set(sql, name)
  }
  return { name, text: sql, values: params as unknown[] }
}

interface ExecHooks {
  query: (q: pg.QueryConfig) => Promise<pg.QueryResult>
  /** OpSpec.prepare */
  prepare?: boolean
  /** Runs before each statement (a lazy BEGIN). */
  before?: () => Promise<void>
  changes: ChangeRecord[] | undefined
  /** A statement failed. */
  onFail?: () => void
  /** Exec.alone */
  alone?: boolean
}

function makeExec(clock: Clock, h: ExecHooks): Exec {
  const run = async (sql: string, params: readonly unknown[] | undefined): Promise<pg.QueryResult> => {
    checkParams(params)
    if (h.before !== undefined) await h.before()
    try {
      return await h.query(statement(sql, params, h.prepare === true))
    } catch (err) {
      h.onFail?.()
      throw err
    }
  }
  return {
    clock,
    rows: async <R>(sql: string, params?: readonly unknown[]) => (await run(sql, params)).rows as R[],
    count: async (sql, params) => (await run(sql, params)).rowCount ?? 0,
    change: (c) => {
      if (h.changes === undefined) throw new TypeError('datastore: a read operation recorded a change')
      h.changes.push(c)
    },
    alone: h.alone === true,
  }
}

export interface RunnerOptions {
  pool: pg.Pool
  clock: Clock
  ops: StoreOps
  /**
   * Writes the changes of a transaction and commits it, in one round trip (on the transaction's connection);
   * throws when it did not commit (a statement failed, or COMMIT answered ROLLBACK).
   */
  commit: (client: pg.PoolClient, changes: readonly ChangeRecord[]) => Promise<void>
  /** Extra members of the root store (the change feed): `guard` refuses a closed store and a call from inside tx; `detach` runs outside any transaction's context. */
  rootExtras?: (ctx: { guard: () => void; detach: <T>(fn: () => T) => T }) => Partial<DataStore>
  /** Runs once, when the store closes, after the running transaction (before the pool ends). */
  onClose: () => Promise<void>
  /** An operation failed for want of PostgreSQL; the next one that succeeds after that calls `restored`. */
  health?: { lost(err: unknown): void; restored(): void }
}

export function createPostgresRunner(o: RunnerOptions): DataStore {
  const { pool, clock, ops } = o
  const als = new AsyncLocalStorage<Level>()
  const rootLock = new RwLock()
  let openTx = 0
  let closed = false

  function guard(level: Level): void {
    if (closed) throw closedError()
    if (!alive(level)) throw new TypeError('datastore: this transaction has already finished')
    const current = als.getStore()
    if (current !== undefined && current.active && isAncestor(level, current)) {
      throw new TypeError('datastore: called from inside tx() on an outer store; use the DataStore passed to the tx callback')
    }
  }

  function releaseClient(client: pg.PoolClient, destroy = false): void {
    client.release(destroy ? true : undefined)
  }

  async function readAtRoot(op: Op<never[], unknown>, args: never[]): Promise<unknown> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await op.fn(makeExec(clock, { query: (q) => pool.query(q), prepare: op.spec.prepare === true, changes: undefined }), ...args)
      } catch (err) {
        if (passThrough(err)) throw err
        if (attempt < MAX_ATTEMPTS && (isConnectionError(err) || isRetryableConflict(err))) {
          await backoff(attempt)
          continue
        }
        throw datastoreError(op.spec.name, err)
      }
    }
  }

  async function writeAtRoot(op: Op<never[], unknown>, args: never[]): Promise<unknown> {
    const release = await rootLock.shared()
    try {
      for (let attempt = 1; ; attempt++) {
        let client: pg.PoolClient | undefined
        let begun = false
        let autocommitSent = false
        let committing = false
        const changes: ChangeRecord[] = []
        try {
          guard(rootLevel)
          const c = await pool.connect()
          client = c
          const alone = op.spec.alone === true
          const x = makeExec(clock, {
            query: (q) => c.query(q),
            prepare: op.spec.prepare === true,
            changes,
            alone,
            before: async () => {
              if (begun) return
              // One statement and nothing for the change log (or it writes its own): it commits on its own.
              if ((op.spec.single === true || alone) && changes.length === 0) {
                if (autocommitSent) throw new TypeError(`datastore: ${op.spec.name} declared one statement but ran more`)
                autocommitSent = true
                return
              }
              await c.query('BEGIN')
              begun = true
            },
          })
          const result = await op.fn(x, ...args)
          if (autocommitSent && changes.length > 0) throw new TypeError(`datastore: ${op.spec.name} recorded a change after its statement`)
          if (begun) {
            committing = true
            await o.commit(c, changes)
          }
          releaseClient(c)
          return result
        } catch (err) {
          const lost = isConnectionError(err)
          if (client !== undefined) {
            let destroy = lost
            // After a failed commit query the transaction may still be open (its first statement failed): ROLLBACK
            // ends it, or only warns when the COMMIT ran.
            if (begun && !lost) await client.query('ROLLBACK').catch(() => (destroy = true))
            releaseClient(client, destroy)
          }
          if (passThrough(err)) throw err
          // Unknown whether it committed: the commit (or the one statement) was sent when the connection went.
          const outcomeUnknown = lost && (committing || autocommitSent)
          const idempotent = op.spec.idempotent === true
          if (attempt < MAX_ATTEMPTS && (isRetryableConflict(err) || (lost && (!outcomeUnknown || idempotent)))) {
            await backoff(attempt)
            continue
          }
          if (outcomeUnknown && !idempotent) throw unavailableError(op.spec.name, err, true)
          throw datastoreError(op.spec.name, err)
        }
      }
    } finally {
      release()
    }
  }

  async function inTx(level: Level, op: Op<never[], unknown>, args: never[]): Promise<unknown> {
    const release = await level.lock.acquire()
    try {
      guard(level)
      const state = level.tx as TxState
      if (state.lost) throw unavailableError(op.spec.name, new Error('Connection terminated'))
      for (let l: Level | undefined = level; l !== undefined && l.depth > 0; l = l.parent) {
        if (l.doomed) throw new IdentityError('ERR_DATASTORE', `datastore: ${op.spec.name}: an earlier failure aborted this transaction`)
      }
      const c = await connection(state, op.spec.name)
      const savepoint = op.spec.kind === 'write' && op.spec.single !== true
      const changes: ChangeRecord[] = []
      let failed = false
      const x = makeExec(clock, {
        query: (q) => c.query(q),
        prepare: op.spec.prepare === true,
        changes: op.spec.kind === 'write' ? changes : undefined,
        onFail: () => (failed = true),
      })
      if (savepoint) await c.query('SAVEPOINT warrant_op')
      try {
        const result = await op.fn(x, ...args)
        if (savepoint) await c.query('RELEASE SAVEPOINT warrant_op')
        level.changes.push(...changes)
        return result
      } catch (err) {
        if (isConnectionError(err)) state.lost = true
        else if (savepoint) {
          await c.query('ROLLBACK TO SAVEPOINT warrant_op; RELEASE SAVEPOINT warrant_op').catch((e: unknown) => {
            if (isConnectionError(e)) state.lost = true
            level.doomed = true
          })
        } else if (failed) level.doomed = true
        throw err
      }
    } catch (err) {
      if (isConnectionError(err)) (level.tx as TxState).lost = true
      throw datastoreError(op.spec.name, err)
    } finally {
      release()
    }
  }

  let down = false
  function watchHealth<R>(p: Promise<R>): Promise<R> {
    if (o.health === undefined) return p
    const h = o.health
    return p.then(
      (r) => {
        if (down) {
          down = false
          h.restored()
        }
        return r
      },
      (err: unknown) => {
        if (err instanceof IdentityError && err.code === 'ERR_DATASTORE_UNAVAILABLE') {
          down = true
          h.lost(err.cause ?? err)
        }
        throw err
      },
    )
  }

  async function runOp(level: Level, op: Op<never[], unknown>, args: never[]): Promise<unknown> {
    guard(level)
    if (level.depth > 0) return inTx(level, op, args)
    return watchHealth(op.spec.kind === 'read' ? readAtRoot(op, args) : writeAtRoot(op, args))
  }

  /** A connection with BEGIN and the transaction lock taken; a connection failure before that is retried. */
  async function begin(): Promise<pg.PoolClient> {
    for (let attempt = 1; ; attempt++) {
      let client: pg.PoolClient | undefined
      try {
        client = await pool.connect()
        await client.query(`BEGIN; SELECT pg_advisory_xact_lock(${LOCK_CLASS}, ${LOCK_TX})`)
        return client
      } catch (err) {
        if (client !== undefined) releaseClient(client, true)
        if (isConnectionError(err) && attempt < MAX_ATTEMPTS) {
          await backoff(attempt)
          continue
        }
        throw datastoreError('begin transaction', err)
      }
    }
  }

  /** The transaction's connection, begun on first use. */
  async function connection(state: TxState, op: string): Promise<pg.PoolClient> {
    if (state.lost) throw unavailableError(op, new Error('Connection terminated'))
    state.begun ??= begin().then(
      (c) => (state.client = c),
      (err: unknown) => {
        state.lost = true
        throw err
      },
    )
    return state.begun
  }

  /** Undoes a level after its callback threw or it cannot commit; never throws (the caller's error wins). */
  async function rollback(level: Level): Promise<void> {
    const state = level.tx as TxState
    await state.begun?.catch(() => undefined)
    const client = state.client
    if (client === undefined) return
    if (level.depth === 1) {
      let destroy = state.lost
      if (!state.lost) await client.query('ROLLBACK').catch(() => (destroy = true))
      releaseClient(client, destroy)
      return
    }
    if (state.lost) return
    const sp = `warrant_tx_${level.depth - 1}`
    await client.query(`ROLLBACK TO SAVEPOINT ${sp}; RELEASE SAVEPOINT ${sp}`).catch((err: unknown) => {
      if (isConnectionError(err)) state.lost = true
      ;(level.parent as Level).doomed = true
    })
  }

  async function commit(level: Level): Promise<void> {
    const state = level.tx as TxState
    const c = state.client
    if (c === undefined) return // no statement ran
    if (level.depth > 1) {
      try {
        await c.query(`RELEASE SAVEPOINT warrant_tx_${level.depth - 1}`)
      } catch (err) {
        if (isConnectionError(err)) state.lost = true
        ;(level.parent as Level).doomed = true
        throw datastoreError('commit', err)
      }
      ;(level.parent as Level).changes.push(...level.changes)
      return
    }
    try {
      await o.commit(c, level.changes)
      releaseClient(c)
    } catch (err) {
      const lost = isConnectionError(err)
      let destroy = lost
      if (!lost) await c.query('ROLLBACK').catch(() => (destroy = true))
      releaseClient(c, destroy)
      // The commit was sent with the changes: a connection lost now leaves the outcome unknown.
      if (lost) throw unavailableError('commit', err, true)
      // COMMIT of an aborted transaction answers ROLLBACK instead of failing.
      if (err instanceof RolledBack) throw new IdentityError('ERR_DATASTORE', 'datastore: commit: PostgreSQL rolled the transaction back')
      throw datastoreError('commit', err)
    }
  }

  async function tx<T>(level: Level, fn: (ds: DataStore) => Promise<T>): Promise<T> {
    if (typeof fn !== 'function') throw new TypeError('tx needs a function')
    guard(level)
    const release = level.depth === 0 ? await rootLock.exclusive() : await level.lock.acquire()
    try {
      guard(level)
      let state: TxState
      if (level.depth === 0) state = { client: undefined, begun: undefined, lost: false }
      else {
        state = level.tx as TxState
        try {
          await (await connection(state, 'begin transaction')).query(`SAVEPOINT warrant_tx_${level.depth}`)
        } catch (err) {
          if (isConnectionError(err)) state.lost = true
          throw datastoreError('begin transaction', err)
        }
      }
      const child: Level = { depth: level.depth + 1, parent: level, active: true, tx: state, lock: new Mutex(), changes: [], doomed: false }
      let result!: T
      let failure: { err: unknown } | undefined
      openTx++
      try {
        result = await als.run(child, () => fn(view(child)))
      } catch (err) {
        failure = { err }
      } finally {
        if (--openTx === 0) als.disable()
      }
      child.active = false
      // Wait for an operation or nested transaction the callback started but did not await (they now fail).
      const drain = await child.lock.acquire()
      drain()
      if (failure !== undefined) {
        await rollback(child)
        throw failure.err
      }
      if (!alive(level)) {
        await rollback(child)
        throw new TypeError('datastore: the enclosing transaction finished before this one')
      }
      if (state.lost) {
        await rollback(child)
        throw unavailableError('transaction', new Error('Connection terminated'))
      }
      if (child.doomed) {
        await rollback(child)
        throw new IdentityError('ERR_DATASTORE', 'datastore: an operation inside the transaction failed in PostgreSQL, so nothing was committed')
      }
      await commit(child)
      return result
    } finally {
      release()
    }
  }

  function view(level: Level): DataStore {
    const ds: Record<string, unknown> = {}
    for (const name of STORE_NAMES) {
      const store = ops[name]
      const wrapped: Record<string, unknown> = {}
      for (const [method, op] of Object.entries(store)) wrapped[method] = (...args: never[]) => runOp(level, op, args)
      ds[name] = Object.freeze(wrapped)
    }
    ds.tx = <T>(fn: (ds: DataStore) => Promise<T>): Promise<T> => (level.depth === 0 ? watchHealth(tx(level, fn)) : tx(level, fn))
    if (level.depth === 0) {
      ds.close = async (): Promise<void> => {
        if (closed) return
        const current = als.getStore()
        if (current !== undefined && current.active) throw new TypeError('datastore: close() called inside tx()')
        const release = await rootLock.exclusive()
        try {
          if (closed) return
          closed = true
          await o.onClose()
          await pool.end()
        } finally {
          release()
        }
      }
      Object.assign(ds, o.rootExtras?.({ guard: () => guard(level), detach: (fn) => als.exit(fn) }))
    } else ds.close = (): Promise<void> => Promise.reject(new TypeError('datastore: close() called on a transaction'))
    return Object.freeze(ds) as unknown as DataStore
  }

  const rootLevel: Level = { depth: 0, parent: undefined, active: true, tx: undefined, lock: new Mutex(), changes: [], doomed: false }
  return view(rootLevel)
}
