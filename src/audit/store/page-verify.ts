/**
 * One page of `verify`: the rows of a seq range read from the file and
 * hashed where they are read (the main thread or a worker, each with its own
 * read-only connection), so neither the reading nor the hashing funnels
 * through one thread and no event bytes are copied between threads.
 *
 * For the rows with seq in (lo, hi], in seq order: each event's leaf hash,
 * its chain link (chain_seq = SHA-256(stored chain_{seq-1} || bytes) against
 * the stored chain_seq, where chain_{seq-1} is the stored value of the row
 * before it, read from the file for the first row of the page), optionally
 * the event check, and for a whole aligned page the root of its subtree.
 * Exactly what `LogVerifier.push` computes row by row.
 */
import type Database from 'better-sqlite3'
import { chainHash, GENESIS } from '../hash-chain.js'
import { leafHash, MerkleAccumulator } from '../merkle.js'
import { checkEventBytes } from '../verify.js'

export const PAGE_HEIGHT = 12
export const PAGE = 2 ** PAGE_HEIGHT

export interface PageResult {
  /** The seq of each row read, in order. */
  seqs: Float64Array
  /** 32 bytes per row: its leaf hash. */
  leaves: Uint8Array
  /** The root of the page's subtree when its rows are the PAGE events of an aligned range (seq k·PAGE+1 .. (k+1)·PAGE). */
  root?: Uint8Array
  /** The first seq whose chain link fails, 0 when none. */
  brokenLink: number
  /** The first event that fails the event check. */
  eventProblem?: { seq: number; kind: 'event_invalid' | 'non_canonical'; message: string }
}

/** The bounds of page `i` of `pages`: seq in (lo, hi]; the first and last pages are open-ended, so together they cover every row. */
export function pageBounds(i: number, pages: number): { lo: number; hi: number } {
  return { lo: i === 0 ? Number.MIN_SAFE_INTEGER : i * PAGE, hi: i === pages - 1 ? Number.MAX_SAFE_INTEGER : (i + 1) * PAGE }
}

/** How many pages cover a log whose largest seq is `maxSeq` (at least one). */
export function pageCount(maxSeq: number): number {
  return Math.max(1, Math.ceil(maxSeq / PAGE))
}

/** A connection's read of a page in one statement: aggregates over the rows of (lo, hi] in seq order. */
const BULK = `SELECT count(*), min(seq), max(seq), min(length(chain_hash)), max(length(chain_hash)),
  group_concat(length(event), ','), CAST(group_concat(chain_hash, '') AS BLOB), CAST(group_concat(event, '') AS BLOB)
  FROM (SELECT seq, event, chain_hash FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq)`

type Bulk = [number, number | null, number | null, number | null, number | null, string | null, Buffer | null, Buffer | null]

/** Reads and hashes pages of one connection. */
export class PageVerifier {
  readonly #rows: Database.Statement
  readonly #bulk: Database.Statement | undefined
  readonly #prev: Database.Statement

  constructor(db: Database.Database) {
    // the file is read front to back once: mapped, SQLite walks it without a read() per page
    db.pragma('mmap_size = 1073741824')
    this.#rows = db.prepare('SELECT seq, event, chain_hash FROM audit_events WHERE seq > ? AND seq <= ? ORDER BY seq').raw(true)
    // blobs pass through group_concat byte for byte only in a UTF-8 database (as warrant creates them)
    this.#bulk = db.pragma('encoding', { simple: true }) === 'UTF-8' ? db.prepare(BULK).raw(true) : undefined
    this.#prev = db.prepare('SELECT chain_hash FROM audit_events WHERE seq <= ? ORDER BY seq DESC LIMIT 1').pluck(true)
  }

  /**
   * The rows of (lo, hi] as [seq, event, stored chain]: for a page of
   * contiguous seqs whose chain values are all 32 bytes (any log not
   * tampered with), from one row of aggregates (three strings instead of
   * thousands of rows of buffers; several times cheaper), else row by row.
   */
  #read(lo: number, hi: number): [number, Buffer, Buffer][] {
    const b = this.#bulk?.get(lo, hi) as Bulk | undefined
    if (b !== undefined) {
      const [count, min, max, minChain, maxChain, lens, chains, events] = b
      if (count > 0 && min !== null && max === min + count - 1 && minChain === 32 && maxChain === 32 && lens !== null && chains !== null && events !== null) {
        const sizes = lens.split(',')
        if (sizes.length === count && chains.byteLength === 32 * count) {
          const rows = new Array<[number, Buffer, Buffer]>(count)
          let at = 0
          for (let i = 0; i < count; i++) {
            const end = at + Number(sizes[i])
            rows[i] = [min + i, events.subarray(at, end), chains.subarray(32 * i, 32 * i + 32)]
            at = end
          }
          if (at === events.byteLength) return rows
        }
      }
      if (count === 0) return []
    }
    return this.#rows.all(lo, hi) as [number, Buffer, Buffer][]
  }

  verify(lo: number, hi: number, checkEvents: boolean): PageResult {
    const rows = this.#read(lo, hi)
    const before = lo === Number.MIN_SAFE_INTEGER ? undefined : (this.#prev.get(lo) as Buffer | undefined)
    let prev: Uint8Array = before !== undefined && before.byteLength === 32 ? before : GENESIS
    const n = rows.length
    const seqs = new Float64Array(n)
    const leaves = new Uint8Array(32 * n)
    // PAGE distinct seqs in order, from an aligned first to first + PAGE - 1: a whole subtree of the log's tree
    const first = n > 0 ? rows[0]![0] : 0
    const whole = n === PAGE && first >= 1 && (first - 1) % PAGE === 0 && rows[n - 1]![0] === first + PAGE - 1
    const tree = whole ? new MerkleAccumulator() : undefined
    let brokenLink = 0
    let eventProblem: PageResult['eventProblem']
    for (let i = 0; i < n; i++) {
      const [seq, bytes, stored] = rows[i]!
      seqs[i] = seq
      if (checkEvents && eventProblem === undefined) {
        const p = checkEventBytes(bytes)
        if (p) eventProblem = { seq, kind: p.kind, message: `event ${seq} ${p.message}` }
      }
      const leaf = leafHash(bytes)
      leaves.set(leaf, 32 * i)
      tree?.push(leaf)
      if (brokenLink === 0 && !chainHash(prev, bytes).equals(stored)) brokenLink = seq
      // the next link is checked from the stored value, as LogVerifier.push does
      prev = stored.byteLength === 32 ? stored : GENESIS
    }
    return { seqs, leaves, ...(tree ? { root: new Uint8Array(tree.root()) } : {}), brokenLink, ...(eventProblem ? { eventProblem } : {}) }
  }
}
