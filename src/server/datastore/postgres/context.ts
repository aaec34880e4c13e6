/**
 * What every store of the PostgreSQL datastore shares: the statement runner
 * an operation is handed (`Exec`: on the pool, in the operation's own
 * transaction, or in the caller's), how an operation declares itself (`op`),
 * positional parameters, and the paged list and count queries.
 */
import type { Clock } from '../../../common/clock.js'
import { cutPage, pageStart } from '../internal/page.js'
import type { Page } from '../types.js'
import type { ChangeRecord } from './changes.js'

/** Runs the statements of one operation. */
export interface Exec {
  /** One statement; its rows. */
  rows<R>(sql: string, params?: readonly unknown[]): Promise<R[]>
  /** One statement; the number of rows it changed. */
  count(sql: string, params?: readonly unknown[]): Promise<number>
  /** Records a change for the change feed, committed with the operation's writes (call it before the statements). */
  change(c: ChangeRecord): void
  readonly clock: Clock
  /**
   * The operation (declared `alone`) runs by itself outside any transaction: its one statement commits on its
   * own, so it writes its change-log rows in that statement (`changeLogCte`) instead of calling `change`. False
   * inside a transaction, where it records its changes with `change` as any other write.
   */
  readonly alone: boolean
}

export interface OpSpec {
  /** For messages: "create entry". */
  name: string
  kind: 'read' | 'write'
  /**
   * A write of exactly one statement: outside a transaction it runs on its
   * own (autocommit) unless it records a change, and inside one it needs no
   * savepoint (a statement is atomic by itself).
   */
  single?: boolean
  /**
   * Running it twice has the effect and the result of running it once: it is
   * retried even when a lost connection leaves unknown whether it committed.
   */
  idempotent?: boolean
  /**
   * Outside a transaction it runs as exactly one statement that commits on its own and carries its own
   * change-log rows (`Exec.alone`); inside one, it is an ordinary write (a savepoint, `change`).
   */
  alone?: boolean
  /**
   * Its statements are fixed texts: each is prepared once per connection (named by a hash of its text) and its
   * plan reused, instead of parsed and planned at every call. Only for a bounded set of texts (no SQL built from
   * the arguments).
   */
  prepare?: boolean
}

export interface Op<A extends unknown[] = never[], R = unknown> {
  readonly spec: OpSpec
  readonly fn: (x: Exec, ...args: A) => Promise<R>
}

export function op<A extends unknown[], R>(spec: OpSpec, fn: (x: Exec, ...args: A) => Promise<R>): Op<A, R> {
  return { spec, fn }
}

/** An object of operations shaped like a store interface. */
export type OpsOf<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => Promise<infer R> ? Op<A, R> : never
}

/** Positional parameters ($1, $2, …) collected while a statement is built. */
export class Params {
  readonly values: unknown[] = []
  add(v: unknown): string {
    this.values.push(v)
    return `$${this.values.length}`
  }
}

/** SQL conditions joined with AND, and their parameters. */
export interface Where {
  clauses: string[]
  params: Params
}

export const whereSql = (w: Where): string => (w.clauses.length > 0 ? ` WHERE ${w.clauses.join(' AND ')}` : '')

/** One page of `table` ordered by `key`, and the token of the next page ('' at the end). */
export async function paged<Row, T>(
  x: Exec,
  q: { table: string; alias: string; columns: string; key: string; where: Where },
  page: Page | undefined,
  map: (r: Row) => T,
  keyOf: (t: T) => string,
): Promise<{ items: T[]; next: string }> {
  const { size, after } = pageStart(page)
  const clauses = [...q.where.clauses]
  const params = q.where.params
  if (after !== undefined) clauses.push(`${q.alias}.${q.key} > ${params.add(after)}`)
  const limit = size === 0 ? '' : ` LIMIT ${params.add(size + 1)}`
  const sql = `SELECT ${q.columns} FROM ${q.table} ${q.alias}${whereSql({ clauses, params })} ORDER BY ${q.alias}.${q.key}${limit}`
  return cutPage((await x.rows<Row>(sql, params.values)).map(map), size, keyOf)
}

export async function countWhere(x: Exec, table: string, alias: string, where: Where): Promise<number> {
  const rows = await x.rows<{ n: number }>(`SELECT COUNT(*) AS n FROM ${table} ${alias}${whereSql(where)}`, where.params.values)
  return rows[0]?.n ?? 0
}
