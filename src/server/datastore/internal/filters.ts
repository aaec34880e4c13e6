import {
  MAX_PARENT_IDS,
  type AttestedNode,
  type AttestedNodeFilter,
  type EntryFilter,
  type RegistrationEntry,
  type Selector,
  type SelectorMatch,
} from '../types.js'
import { checkBool, checkString, checkTime, normalizeSelectors } from './normalize.js'

const MATCHES: readonly SelectorMatch[] = ['exact', 'subset', 'superset', 'any']

export interface NormalizedEntryFilter {
  spiffeId?: string
  parentId?: string
  /** Distinct, in the order given. */
  parentIds?: string[]
  selectors?: { set: Selector[]; match: SelectorMatch }
  federatesWith?: string
  hint?: string
}

/** Checks the filter's shape (TypeError) and normalizes its selector set. */
export function normalizeEntryFilter(filter: EntryFilter | undefined): NormalizedEntryFilter {
  const out: NormalizedEntryFilter = {}
  if (filter === undefined) return out
  if (filter === null || typeof filter !== 'object') throw new TypeError('filter must be an object')
  if (filter.spiffeId !== undefined) {
    checkString('filter.spiffeId', filter.spiffeId)
    out.spiffeId = filter.spiffeId
  }
  if (filter.parentId !== undefined) {
    checkString('filter.parentId', filter.parentId)
    out.parentId = filter.parentId
  }
  if (filter.parentIds !== undefined) {
    const ids: unknown = filter.parentIds
    if (!Array.isArray(ids)) throw new TypeError('filter.parentIds must be an array of strings')
    if (ids.length > MAX_PARENT_IDS) throw new TypeError(`filter.parentIds may name at most ${MAX_PARENT_IDS} parents`)
    const list: string[] = []
    for (const id of ids as unknown[]) {
      checkString('filter.parentIds[]', id)
      list.push(id as string)
    }
    out.parentIds = [...new Set(list)]
  }
  if (filter.hint !== undefined) {
    checkString('filter.hint', filter.hint)
    out.hint = filter.hint
  }
  if (filter.federatesWith !== undefined) {
    checkString('filter.federatesWith', filter.federatesWith)
    out.federatesWith = filter.federatesWith
  }
  if (filter.selectors !== undefined) {
    const { set, match } = filter.selectors
    if (!MATCHES.includes(match)) throw new TypeError(`filter.selectors.match must be one of ${MATCHES.join(', ')}`)
    out.selectors = { set: normalizeSelectors(set), match }
  }
  return out
}

export interface NormalizedNodeFilter {
  attestor?: string
  banned?: boolean
  selectors?: Selector[]
  expiresBefore?: number
}

export function normalizeNodeFilter(filter: AttestedNodeFilter | undefined): NormalizedNodeFilter {
  const out: NormalizedNodeFilter = {}
  if (filter === undefined) return out
  if (filter === null || typeof filter !== 'object') throw new TypeError('filter must be an object')
  if (filter.attestor !== undefined) {
    checkString('filter.attestor', filter.attestor)
    out.attestor = filter.attestor
  }
  if (filter.banned !== undefined) {
    checkBool('filter.banned', filter.banned)
    out.banned = filter.banned
  }
  if (filter.expiresBefore !== undefined) {
    checkTime('filter.expiresBefore', filter.expiresBefore, false)
    out.expiresBefore = filter.expiresBefore
  }
  if (filter.selectors !== undefined) out.selectors = normalizeSelectors(filter.selectors)
  return out
}

const key = (s: Selector): string => JSON.stringify([s.type, s.value])

/** The reference semantics of the selector match modes (the SQL must agree). */
export function selectorsMatch(entrySelectors: readonly Selector[], set: readonly Selector[], match: SelectorMatch): boolean {
  const given = new Set(set.map(key))
  const mine = entrySelectors.map(key)
  const shared = mine.filter((k) => given.has(k)).length
  switch (match) {
    case 'exact':
      return mine.length === given.size && shared === given.size
    case 'subset':
      // An entry without selectors never matches by subset: it would match every workload.
      return mine.length > 0 && shared === mine.length
    case 'superset':
      return shared === given.size
    case 'any':
      return shared > 0
  }
}

export function entryMatches(e: RegistrationEntry, f: NormalizedEntryFilter): boolean {
  if (f.spiffeId !== undefined && e.spiffeId !== f.spiffeId) return false
  if (f.parentId !== undefined && e.parentId !== f.parentId) return false
  if (f.parentIds !== undefined && !f.parentIds.includes(e.parentId)) return false
  if (f.hint !== undefined && e.hint !== f.hint) return false
  if (f.federatesWith !== undefined && !e.federatesWith.includes(f.federatesWith)) return false
  if (f.selectors !== undefined && !selectorsMatch(e.selectors, f.selectors.set, f.selectors.match)) return false
  return true
}

export function nodeMatches(n: AttestedNode, f: NormalizedNodeFilter): boolean {
  if (f.attestor !== undefined && n.attestor !== f.attestor) return false
  if (f.banned !== undefined && n.banned !== f.banned) return false
  if (f.expiresBefore !== undefined && !(n.expiresAt < f.expiresBefore)) return false
  if (f.selectors !== undefined && !selectorsMatch(n.selectors, f.selectors, 'superset')) return false
  return true
}
