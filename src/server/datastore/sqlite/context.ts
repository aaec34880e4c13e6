/**
 * What every store of the SQLite datastore shares: the database, the clock,
 * prepared statements (cached by SQL text), the wrappers that run an
 * operation atomically or as a single read and map SQLite failures to
 * ERR_DATASTORE, and the paged list and count queries.
 */
import Database from 'better-sqlite3'
import type { Clock } from '../../../common/clock.js'
import { IdentityError } from '../../../errors/index.js'
import { cutPage, pageStart } from '../internal/page.js'
import type { Page } from '../types.js'
import type { Where } from './where.js'

export type Db = Database.Database
export type Stmt = Database.Statement<unknown[], unknown>
export type SqliteError = InstanceType<typeof Database.SqliteError>

export function isSqliteError(err: unknown): err is SqliteError {
  return err instanceof Database.SqliteError
}

export function passThrough(err: unknown): boolean {
  return err instanceof IdentityError || err instanceof TypeError || err instanceof RangeError
}

/** Chains a SQLite failure as ERR_DATASTORE; the message names the operation, never the values. */
export function datastoreError(op: string, err: unknown): IdentityError {
  return new IdentityError('ERR_DATASTORE', `datastore: ${op} failed`, {
    cause: err,
    ...(isSqliteError(err) ? { details: { sqliteCode: err.code } } : {}),
  })
}

export interface SqliteContext {
  readonly db: Db
  readonly clock: Clock
  /** The prepared statement for `sql` (prepared once). */
  stmt(sql: string): Stmt
  /** Runs one operation atomically (a savepoint when inside tx) and maps SQLite failures. */
  atomic<A extends unknown[], R>(op: string, fn: (...args: A) => R): (...args: A) => R
  /** A single read statement: no transaction needed. */
  read<A extends unknown[], R>(op: string, fn: (...args: A) => R): (...args: A) => R
  /** One page of `table` ordered by `key`, and the token of the next page ('' at the end). */
  paged<Row, T>(
    table: string,
    alias: string,
    columns: string,
    key: string,
    where: Where,
    page: Page | undefined,
    map: (r: Row) => T,
    keyOf: (t: T) => string,
  ): { items: T[]; next: string }
  countWhere(table: string, alias: string, where: Where): number
}

export function sqliteContext(db: Db, clock: Clock): SqliteContext {
  const cache = new Map<string, Stmt>()
  const stmt = (sql: string): Stmt => {
    let s = cache.get(sql)
    if (s === undefined) {
      s = db.prepare(sql)
      cache.set(sql, s)
    }
    return s
  }
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

  function paged<Row, T>(
    table: string,
    alias: string,
    columns: string,
    key: string,
    where: Where,
    page: Page | undefined,
    map: (r: Row) => T,
    keyOf: (t: T) => string,
  ): { items: T[]; next: string } {
    const { size, after } = pageStart(page)
    const clauses = [...where.clauses]
    const params = { ...where.params }
    if (after !== undefined) {
      clauses.push(`${alias}.${key} > @after`)
      params.after = after
    }
    params.limit = size === 0 ? -1 : size + 1
    const sql = `SELECT ${columns} FROM ${table} ${alias}${clauses.length > 0 ? ` WHERE ${clauses.join(' AND ')}` : ''}
      ORDER BY ${alias}.${key} LIMIT @limit`
    return cutPage((stmt(sql).all(params) as Row[]).map(map), size, keyOf)
  }

  const countWhere = (table: string, alias: string, where: Where): number => {
    const sql = `SELECT COUNT(*) AS n FROM ${table} ${alias}${where.clauses.length > 0 ? ` WHERE ${where.clauses.join(' AND ')}` : ''}`
    return (stmt(sql).get(where.params) as { n: number }).n
  }

  return { db, clock, stmt, atomic, read, paged, countWhere }
}
