// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import { randomUUID } from 'node:crypto'
import { entryMatches, normalizeEntryFilter } from '../../internal/filters.js'
import type { SyncStores } from '../../internal/locked-store.js'
import {
  checkEntryFields,
  checkNewEntry,
  checkTime,
  entryExists,
  entryNotFound,
  entryUniqueKey,
  normalizeSelectors,
  revisionMismatch,
} from '../../internal/normalize.js'
import type { RegistrationEntry } from '../../types.js'
import type { MemoryContext } from '../context.js'

export function entriesStore(ctx: MemoryContext): SyncStores['entries'] {
  const { clock, copy, paged, countWhere, take } = ctx
  const uniqueKeyOf = (e: RegistrationEntry): string => entryUniqueKey(e.spiffeId, e.parentId, e.selectors)
  const remove = (id: string): RegistrationEntry => {
    const e = take(ctx.state.entries, id, entryNotFound)
    ctx.state.entryKeys.delete(uniqueKeyOf(e))
    return e
  }

  return {
    create(input) {
      checkNewEntry(input)
      const { entries, entryKeys } = ctx.state
      const selectors = normalizeSelectors(input.selectors)
      const uniqueKey = entryUniqueKey(input.spiffeId, input.parentId, selectors)
      const id = input.id ?? randomUUID()
      if (entries.has(id)) throw entryExists(id)
      const existing = entryKeys.get(uniqueKey)
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
      entries.set(id, entry)
      entryKeys.set(uniqueKey, id)
      return copy(entry)
    },
    get(id) {
      const e = ctx.state.entries.get(id)
      if (e === undefined) throw entryNotFound()
      return copy(e)
    },
    find(id) {
      const e = ctx.state.entries.get(id)
      return e === undefined ? undefined : copy(e)
    },
    update(id, patch, options) {
      if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
      checkEntryFields(patch, false)
      const { entries, entryKeys } = ctx.state
      const old = entries.get(id)
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
      const oldKey = uniqueKeyOf(old)
      const newKey = uniqueKeyOf(next)
      if (newKey !== oldKey) {
        const clash = entryKeys.get(newKey)
        if (clash !== undefined) throw entryExists(clash)
        entryKeys.delete(oldKey)
        entryKeys.set(newKey, id)
      }
      entries.set(id, next)
      return copy(next)
    },
    delete: remove,
    list(filter, page) {
      const f = normalizeEntryFilter(filter)
      const { items, next } = paged(
        ctx.state.entries.values(),
        (e) => entryMatches(e, f),
        (e) => e.id,
        page,
      )
      return { entries: items, nextPageToken: next }
    },
    count(filter) {
      const f = normalizeEntryFilter(filter)
      return countWhere(ctx.state.entries.values(), (e) => entryMatches(e, f))
    },
    pruneExpired(now) {
      checkTime('now', now, false)
      const expired = [...ctx.state.entries.values()].filter((e) => e.expiresAt !== null && e.expiresAt < now)
      return expired.sort((a, b) => (a.id < b.id ? -1 : 1)).map((e) => remove(e.id))
    },
  }
}
