/**
 * What every store of the memory datastore shares (the twin of
 * sqlite/context.ts): the state, the clock, copies in and out (callers never
 * hold a reference into the state), and the list, count and take-or-throw
 * operations the stores repeat.
 */
import type { Clock } from '../../../common/clock.js'
import { cutPage, pageStart } from '../internal/page.js'
import type { AttestedNode, BundleRecord, JoinToken, Page, RegistrationEntry, Revocation } from '../types.js'

/** Everything the memory datastore holds; a transaction snapshots and restores it whole. */
export interface MemoryState {
  entries: Map<string, RegistrationEntry>
  /** uniqueKey → entry id */
  entryKeys: Map<string, string>
  nodes: Map<string, AttestedNode>
  joinTokens: Map<string, JoinToken>
  bundles: Map<string, BundleRecord>
  journal: Map<string, string>
  kv: Map<string, Map<string, string>>
  /** prefix → instance key → expiresAt */
  liveInstances: Map<string, Map<string, number>>
  /** id → revocation */
  revocations: Map<number, Revocation>
  /** The last revocation id assigned (ids are never reused). */
  revocationSeq: number
}

export function emptyState(): MemoryState {
  return {
    entries: new Map(),
    entryKeys: new Map(),
    nodes: new Map(),
    joinTokens: new Map(),
    bundles: new Map(),
    journal: new Map(),
    kv: new Map(),
    liveInstances: new Map(),
    revocations: new Map(),
    revocationSeq: 0,
  }
}

export interface MemoryContext {
  readonly clock: Clock
  /** The current state. A rollback replaces it: read it on every call, never keep it. */
  readonly state: MemoryState
  /** A deep copy: what goes in or out of the state. */
  copy<T>(v: T): T
  /** One page (copies) of the values matching `match`, ordered by `keyOf`, and the next page's token ('' at the end). */
  paged<T>(values: Iterable<T>, match: (t: T) => boolean, keyOf: (t: T) => string, page: Page | undefined): { items: T[]; next: string }
  /** How many values match. */
  countWhere<T>(values: Iterable<T>, match: (t: T) => boolean): number
  /** Removes `key` from `map` and returns (a copy of) what it held; throws `notFound()` when absent. */
  take<T>(map: Map<string, T>, key: string, notFound: () => Error): T
}

export function memoryContext(clock: Clock, current: () => MemoryState): MemoryContext {
  const copy = <T>(v: T): T => structuredClone(v)
  return {
    clock,
    get state() {
      return current()
    },
    copy,
    paged(values, match, keyOf, page) {
      const { size, after } = pageStart(page)
      const rows = [...values].filter((t) => match(t) && (after === undefined || keyOf(t) > after))
      rows.sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0))
      const { items, next } = cutPage(rows, size, keyOf)
      return { items: items.map(copy), next }
    },
    countWhere(values, match) {
      let n = 0
      for (const t of values) if (match(t)) n++
      return n
    },
    take(map, key, notFound) {
      const v = map.get(key)
      if (v === undefined) throw notFound()
      map.delete(key)
      return copy(v)
    },
  }
}
