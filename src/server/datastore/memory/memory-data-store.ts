import { randomUUID } from 'node:crypto'
import { type Clock, systemClock } from '../../../common/clock.js'
import { IdentityError } from '../../../errors/index.js'
import { entryMatches, nodeMatches, normalizeEntryFilter, normalizeNodeFilter } from '../internal/filters.js'
import { createLockedDataStore, type SyncStores } from '../internal/locked-store.js'
import {
  checkEntryFields,
  checkNewEntry,
  checkNodeFields,
  checkString,
  checkTime,
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
import type { AttestedNode, BundleRecord, DataStore, JoinToken, Page, RegistrationEntry } from '../types.js'

interface State {
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
}

export interface MemoryDataStoreOptions {
  /** Source of createdAt / updatedAt; defaults to the system clock. */
  clock?: Clock
}

function emptyState(): State {
  return {
    entries: new Map(),
    entryKeys: new Map(),
    nodes: new Map(),
    joinTokens: new Map(),
    bundles: new Map(),
    journal: new Map(),
    kv: new Map(),
    liveInstances: new Map(),
  }
}

function paginate<T>(items: T[], keyOf: (t: T) => string, page: Page | undefined): { items: T[]; next: string } {
  const size = pageSizeOf(page)
  const after = decodePageToken(page?.pageToken)
  const sorted = items.sort((a, b) => (keyOf(a) < keyOf(b) ? -1 : keyOf(a) > keyOf(b) ? 1 : 0))
  const start = after === undefined ? sorted : sorted.filter((t) => keyOf(t) > after)
  if (size === 0 || start.length <= size) return { items: start, next: '' }
  const items2 = start.slice(0, size)
  return { items: items2, next: encodePageToken(keyOf(items2[items2.length - 1] as T)) }
}

/**
 * An in-memory DataStore with the same semantics as the SQLite one (the shared
 * conformance suite checks both), for unit tests of other components.
 * Transactions snapshot the state and restore it on rollback.
 */
export function createMemoryDataStore(opts: MemoryDataStoreOptions = {}): DataStore {
  const clock = opts.clock ?? systemClock
  let state = emptyState()
  const snapshots: State[] = []
  const copy = <T>(v: T): T => structuredClone(v)

  const stores: SyncStores = {
    entries: {
      create(input) {
        checkNewEntry(input)
        const selectors = normalizeSelectors(input.selectors)
        const uniqueKey = entryUniqueKey(input.spiffeId, input.parentId, selectors)
        const id = input.id ?? randomUUID()
        if (state.entries.has(id)) throw entryExists(id)
        const existing = state.entryKeys.get(uniqueKey)
        if (existing !== undefined) throw entryExists(existing)
        const now = clock.now()
        const entry: RegistrationEntry = {
          id,
          spiffeId: input.spiffeId,
          parentId: input.parentId,
          selectors,
          x509SvidTtl: input.x509SvidTtl,
          jwtSvidTtl: input.jwtSvidTtl,
          dnsNames: [...input.dnsNames],
          federatesWith: [...input.federatesWith],
          hint: input.hint,
          admin: input.admin,
          downstream: input.downstream,
          expiresAt: input.expiresAt,
          createdAt: now,
          updatedAt: now,
          revision: 1,
        }
        state.entries.set(id, entry)
        state.entryKeys.set(uniqueKey, id)
        return copy(entry)
      },
      get(id) {
        const e = state.entries.get(id)
        if (e === undefined) throw entryNotFound()
        return copy(e)
      },
      find(id) {
        const e = state.entries.get(id)
        return e === undefined ? undefined : copy(e)
      },
      update(id, patch, options) {
        if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
        checkEntryFields(patch, false)
        const old = state.entries.get(id)
        if (old === undefined) throw entryNotFound()
        const expected = options?.expectedRevision
        if (expected !== undefined && expected !== old.revision) throw revisionMismatch(expected, old.revision)
        const defined = Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined))
        const next: RegistrationEntry = {
          ...old,
          ...copy(defined),
          id: old.id,
          createdAt: old.createdAt,
          updatedAt: clock.now(),
          revision: old.revision + 1,
        }
        next.selectors = normalizeSelectors(next.selectors)
        const oldKey = entryUniqueKey(old.spiffeId, old.parentId, old.selectors)
        const newKey = entryUniqueKey(next.spiffeId, next.parentId, next.selectors)
        if (newKey !== oldKey) {
          const clash = state.entryKeys.get(newKey)
          if (clash !== undefined) throw entryExists(clash)
          state.entryKeys.delete(oldKey)
          state.entryKeys.set(newKey, id)
        }
        state.entries.set(id, next)
        return copy(next)
      },
      delete(id) {
        const e = state.entries.get(id)
        if (e === undefined) throw entryNotFound()
        state.entries.delete(id)
        state.entryKeys.delete(entryUniqueKey(e.spiffeId, e.parentId, e.selectors))
        return copy(e)
      },
      list(filter, page) {
        const f = normalizeEntryFilter(filter)
        const matched = [...state.entries.values()].filter((e) => entryMatches(e, f))
        const { items, next } = paginate(matched, (e) => e.id, page)
        return { entries: items.map(copy), nextPageToken: next }
      },
      count(filter) {
        const f = normalizeEntryFilter(filter)
        let n = 0
        for (const e of state.entries.values()) if (entryMatches(e, f)) n++
        return n
      },
      pruneExpired(now) {
        checkTime('now', now, false)
        const pruned: RegistrationEntry[] = []
        for (const e of [...state.entries.values()].sort((a, b) => (a.id < b.id ? -1 : 1))) {
          if (e.expiresAt !== null && e.expiresAt < now) {
            state.entries.delete(e.id)
            state.entryKeys.delete(entryUniqueKey(e.spiffeId, e.parentId, e.selectors))
            pruned.push(e)
          }
        }
        return pruned
      },
    },
    nodes: {
      upsert(input) {
        checkNodeFields(input as unknown as Record<string, unknown>, true)
        const now = clock.now()
        const old = state.nodes.get(input.agentId)
        const node: AttestedNode = {
          agentId: input.agentId,
          attestor: input.attestor,
          selectors: normalizeSelectors(input.selectors),
          serial: input.serial,
          expiresAt: input.expiresAt,
          previousSerial: input.previousSerial,
          banned: input.banned,
          canReattest: input.canReattest,
          createdAt: old?.createdAt ?? now,
          updatedAt: now,
        }
        state.nodes.set(node.agentId, node)
        return copy(node)
      },
      find(agentId) {
        const n = state.nodes.get(agentId)
        return n === undefined ? undefined : copy(n)
      },
      get(agentId) {
        const n = state.nodes.get(agentId)
        if (n === undefined) throw nodeNotFound()
        return copy(n)
      },
      update(agentId, patch) {
        if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
        checkNodeFields(patch as Record<string, unknown>, false)
        const old = state.nodes.get(agentId)
        if (old === undefined) throw nodeNotFound()
        const next: AttestedNode = { ...old, updatedAt: clock.now() }
        if (patch.serial !== undefined) next.serial = patch.serial
        if (patch.previousSerial !== undefined) next.previousSerial = patch.previousSerial
        if (patch.expiresAt !== undefined) next.expiresAt = patch.expiresAt
        if (patch.banned !== undefined) next.banned = patch.banned
        if (patch.selectors !== undefined) next.selectors = normalizeSelectors(patch.selectors)
        state.nodes.set(agentId, next)
        return copy(next)
      },
      delete(agentId) {
        const n = state.nodes.get(agentId)
        if (n === undefined) throw nodeNotFound()
        state.nodes.delete(agentId)
        return copy(n)
      },
      list(filter, page) {
        const f = normalizeNodeFilter(filter)
        const matched = [...state.nodes.values()].filter((n) => nodeMatches(n, f))
        const { items, next } = paginate(matched, (n) => n.agentId, page)
        return { nodes: items.map(copy), nextPageToken: next }
      },
      count(filter) {
        const f = normalizeNodeFilter(filter)
        let n = 0
        for (const node of state.nodes.values()) if (nodeMatches(node, f)) n++
        return n
      },
    },
    joinTokens: {
      create(token) {
        checkString('tokenHash', token.tokenHash)
        checkString('spiffeId', token.spiffeId)
        checkTime('expiresAt', token.expiresAt, false)
        if (state.joinTokens.has(token.tokenHash)) throw new IdentityError('ERR_ALREADY_EXISTS', 'join token already exists')
        const record: JoinToken = {
          tokenHash: token.tokenHash,
          spiffeId: token.spiffeId,
          expiresAt: token.expiresAt,
          createdAt: clock.now(),
        }
        state.joinTokens.set(record.tokenHash, record)
        return copy(record)
      },
      consume(tokenHash) {
        const t = state.joinTokens.get(tokenHash)
        if (t === undefined) return undefined
        state.joinTokens.delete(tokenHash)
        return copy(t)
      },
      pruneExpired(now) {
        checkTime('now', now, false)
        let n = 0
        for (const t of [...state.joinTokens.values()]) {
          if (t.expiresAt < now) {
            state.joinTokens.delete(t.tokenHash)
            n++
          }
        }
        return n
      },
      count() {
        return state.joinTokens.size
      },
    },
    bundles: {
      put(record) {
        checkString('trustDomain', record.trustDomain)
        checkString('document', record.document)
        checkTime('sequence', record.sequence, false)
        const stored: BundleRecord = {
          trustDomain: record.trustDomain,
          document: record.document,
          sequence: record.sequence,
          updatedAt: clock.now(),
        }
        state.bundles.set(stored.trustDomain, stored)
        return copy(stored)
      },
      get(trustDomain) {
        const b = state.bundles.get(trustDomain)
        return b === undefined ? undefined : copy(b)
      },
      list() {
        return [...state.bundles.values()].sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : 1)).map(copy)
      },
      delete(trustDomain) {
        if (!state.bundles.delete(trustDomain)) throw new IdentityError('ERR_NOT_FOUND', 'bundle not found')
      },
    },
    journal: {
      get(name) {
        return state.journal.get(name)
      },
      put(name, json) {
        checkString('name', name)
        checkString('json', json)
        state.journal.set(name, json)
      },
    },
    kv: {
      get(namespace, key) {
        return state.kv.get(namespace)?.get(key)
      },
      put(namespace, key, value) {
        checkString('namespace', namespace)
        checkString('key', key)
        checkString('value', value)
        let ns = state.kv.get(namespace)
        if (ns === undefined) state.kv.set(namespace, (ns = new Map()))
        ns.set(key, value)
      },
      delete(namespace, key) {
        return state.kv.get(namespace)?.delete(key) ?? false
      },
      list(namespace) {
        const ns = state.kv.get(namespace)
        if (ns === undefined) return []
        return [...ns.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, value]) => ({ key, value }))
      },
    },
    liveInstances: {
      put(i) {
        checkString('prefix', i.prefix)
        checkString('instanceKey', i.instanceKey)
        checkTime('expiresAt', i.expiresAt, false)
        let p = state.liveInstances.get(i.prefix)
        if (p === undefined) state.liveInstances.set(i.prefix, (p = new Map()))
        const expiresAt = Math.max(p.get(i.instanceKey) ?? i.expiresAt, i.expiresAt)
        p.set(i.instanceKey, expiresAt)
        return { prefix: i.prefix, instanceKey: i.instanceKey, expiresAt }
      },
      list(prefix, now) {
        checkTime('now', now, false)
        const p = state.liveInstances.get(prefix)
        if (p === undefined) return []
        return [...p.entries()]
          .filter(([, exp]) => exp > now)
          .sort(([a], [b]) => (a < b ? -1 : 1))
          .map(([instanceKey, expiresAt]) => ({ prefix, instanceKey, expiresAt }))
      },
      release(instanceKey) {
        let n = 0
        for (const p of state.liveInstances.values()) if (p.delete(instanceKey)) n++
        return n
      },
      pruneExpired(now) {
        checkTime('now', now, false)
        let n = 0
        for (const p of state.liveInstances.values()) {
          for (const [k, exp] of p) {
            if (exp <= now) {
              p.delete(k)
              n++
            }
          }
        }
        return n
      },
    },
  }

  return createLockedDataStore(stores, {
    begin() {
      snapshots.push(structuredClone(state))
    },
    commit() {
      snapshots.pop()
    },
    rollback() {
      const s = snapshots.pop()
      if (s !== undefined) state = s
    },
    close() {
      state = emptyState()
      snapshots.length = 0
    },
  })
}
