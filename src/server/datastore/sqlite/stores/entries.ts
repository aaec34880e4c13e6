// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import { randomUUID } from 'node:crypto'
import { normalizeEntryFilter } from '../../internal/filters.js'
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
import type { RegistrationEntry, Selector } from '../../types.js'
import { isSqliteError, type SqliteContext } from '../context.js'
import { ENTRY_COLUMNS, toEntry, type EntryRow } from '../rows.js'
import { entryWhere } from '../where.js'

export function entriesStore(ctx: SqliteContext): SyncStores['entries'] {
  const { stmt, atomic, read, clock, paged, countWhere } = ctx
  const findEntry = (id: string): RegistrationEntry | undefined => {
    const row = stmt(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.id = ?`).get(id) as EntryRow | undefined
    return row === undefined ? undefined : toEntry(row)
  }
  const idByUniqueKey = (key: string): string | undefined => (stmt('SELECT id FROM entries WHERE unique_key = ?').get(key) as { id: string } | undefined)?.id

  const writeSelectors = (id: string, selectors: readonly Selector[]): void => {
    stmt('DELETE FROM entry_selectors WHERE entry_id = ?').run(id)
    const ins = stmt('INSERT INTO entry_selectors (entry_id, type, value) VALUES (?, ?, ?)')
    for (const s of selectors) ins.run(id, s.type, s.value)
  }
  const writeList = (table: 'entry_dns_names' | 'entry_federates_with', column: string, id: string, values: readonly string[]): void => {
    stmt(`DELETE FROM ${table} WHERE entry_id = ?`).run(id)
    const ins = stmt(`INSERT INTO ${table} (entry_id, position, ${column}) VALUES (?, ?, ?)`)
    values.forEach((v, i) => ins.run(id, i, v))
  }
  /** Maps a unique-constraint failure on entries to ERR_ALREADY_EXISTS. */
  const onEntryConflict = (err: unknown, id: string, uniqueKey: string): never => {
    if (isSqliteError(err) && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw entryExists(id)
    if (isSqliteError(err) && err.code === 'SQLITE_CONSTRAINT_UNIQUE') {
      const existing = idByUniqueKey(uniqueKey)
      throw entryExists(existing)
    }
    throw err
  }

  return {
    create: atomic('create entry', (input) => {
      checkNewEntry(input)
      const selectors = normalizeSelectors(input.selectors)
      const uniqueKey = entryUniqueKey(input.spiffeId, input.parentId, selectors)
      const id = input.id ?? randomUUID()
      const now = clock.now()
      try {
        stmt(`INSERT INTO entries (id, spiffe_id, parent_id, x509_ttl, jwt_ttl, hint, admin, downstream, expires_at,
        created_at, updated_at, revision, selector_count, unique_key)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)`).run(
          id,
          input.spiffeId,
          input.parentId,
          input.x509SvidTtl,
          input.jwtSvidTtl,
          input.hint,
          input.admin ? 1 : 0,
          input.downstream ? 1 : 0,
          input.expiresAt,
          now,
          now,
          selectors.length,
          uniqueKey,
        )
      } catch (err) {
        onEntryConflict(err, id, uniqueKey)
      }
      writeSelectors(id, selectors)
      writeList('entry_dns_names', 'dns_name', id, input.dnsNames)
      writeList('entry_federates_with', 'trust_domain', id, input.federatesWith)
      return findEntry(id) as RegistrationEntry
    }),
    get: read('get entry', (id) => {
      const e = findEntry(id)
      if (e === undefined) throw entryNotFound()
      return e
    }),
    find: read('find entry', (id) => findEntry(id)),
    update: atomic('update entry', (id, patch, options) => {
      if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
      checkEntryFields(patch, false)
      const old = findEntry(id)
      if (old === undefined) throw entryNotFound()
      const expected = options?.expectedRevision
      if (expected !== undefined && expected !== old.revision) throw revisionMismatch(expected, old.revision)
      const pick = <K extends keyof RegistrationEntry>(k: K): RegistrationEntry[K] => (patch as Partial<RegistrationEntry>)[k] ?? old[k]
      const selectors = patch.selectors === undefined ? old.selectors : normalizeSelectors(patch.selectors)
      const spiffeId = pick('spiffeId')
      const parentId = pick('parentId')
      const uniqueKey = entryUniqueKey(spiffeId, parentId, selectors)
      const expiresAt = patch.expiresAt === undefined ? old.expiresAt : patch.expiresAt
      try {
        stmt(`UPDATE entries SET spiffe_id = ?, parent_id = ?, x509_ttl = ?, jwt_ttl = ?, hint = ?, admin = ?,
        downstream = ?, expires_at = ?, updated_at = ?, revision = revision + 1, selector_count = ?, unique_key = ?
        WHERE id = ?`).run(
          spiffeId,
          parentId,
          pick('x509SvidTtl'),
          pick('jwtSvidTtl'),
          pick('hint'),
          pick('admin') ? 1 : 0,
          pick('downstream') ? 1 : 0,
          expiresAt,
          clock.now(),
          selectors.length,
          uniqueKey,
          id,
        )
      } catch (err) {
        onEntryConflict(err, id, uniqueKey)
      }
      if (patch.selectors !== undefined) writeSelectors(id, selectors)
      if (patch.dnsNames !== undefined) writeList('entry_dns_names', 'dns_name', id, patch.dnsNames)
      if (patch.federatesWith !== undefined) writeList('entry_federates_with', 'trust_domain', id, patch.federatesWith)
      return findEntry(id) as RegistrationEntry
    }),
    delete: atomic('delete entry', (id) => {
      const e = findEntry(id)
      if (e === undefined) throw entryNotFound()
      stmt('DELETE FROM entries WHERE id = ?').run(id)
      return e
    }),
    list: read('list entries', (filter, page) => {
      const where = entryWhere(normalizeEntryFilter(filter))
      const { items, next } = paged<EntryRow, RegistrationEntry>('entries', 'e', ENTRY_COLUMNS, 'id', where, page, toEntry, (e) => e.id)
      return { entries: items, nextPageToken: next }
    }),
    count: read('count entries', (filter) => countWhere('entries', 'e', entryWhere(normalizeEntryFilter(filter)))),
    pruneExpired: atomic('prune entries', (now) => {
      checkTime('now', now, false)
      const rows = stmt(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.expires_at IS NOT NULL AND e.expires_at < ? ORDER BY e.id`).all(now) as EntryRow[]
      stmt('DELETE FROM entries WHERE expires_at IS NOT NULL AND expires_at < ?').run(now)
      return rows.map(toEntry)
    }),
  }
}
