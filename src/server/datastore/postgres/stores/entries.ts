// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { randomUUID } from 'node:crypto'
import { normalizeEntryFilter } from '../../internal/filters.js'
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
import type { EntryStore, RegistrationEntry, Selector } from '../../types.js'
import { countWhere, op, paged, type Exec, type OpsOf } from '../context.js'
import { changeLogSql } from '../changes.js'
import { sqlState } from '../errors.js'
import { ENTRY_COLUMNS, selectorsJson, toEntry, type EntryRow } from '../rows.js'
import { entryWhere } from '../where.js'

async function findEntry(x: Exec, id: string, lock = false): Promise<RegistrationEntry | undefined> {
  const [row] = await x.rows<EntryRow>(`SELECT ${ENTRY_COLUMNS} FROM entries e WHERE e.id = $1${lock ? ' FOR UPDATE' : ''}`, [id])
  return row === undefined ? undefined : toEntry(row)
}

async function writeSelectors(x: Exec, id: string, selectors: readonly Selector[], replace: boolean): Promise<void> {
  if (replace) await x.count('DELETE FROM entry_selectors WHERE entry_id = $1', [id])
  if (selectors.length === 0) return
  await x.count('INSERT INTO entry_selectors (entry_id, type, value) SELECT $1, t, v FROM unnest($2::text[], $3::text[]) AS u(t, v)', [
    id,
    selectors.map((s) => s.type),
    selectors.map((s) => s.value),
  ])
}

export function entriesStore(): OpsOf<EntryStore> {
  return {
    create: op({ name: 'create entry', kind: 'write', alone: true, prepare: true }, async (x, input) => {
      checkNewEntry(input)
      const selectors = normalizeSelectors(input.selectors)
      const uniqueKey = entryUniqueKey(input.spiffeId, input.parentId, selectors)
      const id = input.id ?? randomUUID()
      const now = x.clock.now()
      const params = [
        id,
        input.spiffeId,
        input.parentId,
        input.x509SvidTtl,
        input.jwtSvidTtl,
        input.hint,
        input.admin,
        input.downstream,
        input.expiresAt,
        now,
        selectorsJson(selectors),
        selectors.length,
        [...input.dnsNames],
        [...input.federatesWith],
        uniqueKey,
        selectors.map((s) => s.type),
        selectors.map((s) => s.value),
      ]
      // The entry and its selector rows in one statement. A duplicate (same SPIFFE ID, parent and selectors) is no
      // error here; a taken id is (a unique violation; inside a transaction the operation's savepoint keeps the
      // transaction usable).
      const insert = `e AS (
          INSERT INTO entries AS e (id, spiffe_id, parent_id, x509_ttl, jwt_ttl, hint, admin, downstream, expires_at,
            created_at, updated_at, revision, selectors, selector_count, dns_names, federates_with, unique_key)
          VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, 1, $11, $12, $13, $14, $15)
          ON CONFLICT (unique_key) DO NOTHING
          RETURNING ${ENTRY_COLUMNS}),
        s AS (INSERT INTO entry_selectors (entry_id, type, value) SELECT e.id, u.t, u.v FROM e, unnest($16::text[], $17::text[]) AS u(t, v))`
      const taken = (err: unknown): never => {
        throw sqlState(err) === '23505' ? entryExists(id) : err
      }
      if (x.alone) {
        // Outside a transaction: one round trip that also logs the change and commits; when nothing was inserted
        // it answers why (the id is taken, or the entry that has the same identity).
        const log = changeLogSql({ kind: 'entry', key: '$1', op: 'put', at: '$10', when: 'e' })
        const [r] = await x
          .rows<EntryRow & { logged: number | null; taken_id: boolean; existing: string | null }>(
            `WITH ${insert}, ${log.ctes}
            SELECT e.*, ${log.check} AS logged,
              e.id IS NULL AND EXISTS (SELECT 1 FROM entries WHERE id = $1) AS taken_id,
              CASE WHEN e.id IS NULL THEN (SELECT id FROM entries WHERE unique_key = $15) END AS existing
            FROM (SELECT 1) AS one LEFT JOIN e ON true`,
            params,
          )
          .catch(taken)
        if (r === undefined || r.id === null) {
          if (r?.taken_id === true && input.id !== undefined) throw entryExists(id)
          throw entryExists(r?.existing ?? undefined)
        }
        return toEntry(r)
      }
      x.change({ kind: 'entry', key: id, op: 'put' })
      const inserted = await x.rows<EntryRow>(`WITH ${insert} SELECT * FROM e`, params).catch(taken)
      const row = inserted[0]
      if (row === undefined) {
        // A taken id is reported as such even when the identity is a duplicate too.
        if (input.id !== undefined && (await x.rows('SELECT 1 FROM entries WHERE id = $1', [id])).length > 0) throw entryExists(id)
        const [existing] = await x.rows<{ id: string }>('SELECT id FROM entries WHERE unique_key = $1', [uniqueKey])
        throw entryExists(existing?.id)
      }
      return toEntry(row)
    }),
    get: op({ name: 'get entry', kind: 'read', prepare: true }, async (x, id) => {
      const e = await findEntry(x, id)
      if (e === undefined) throw entryNotFound()
      return e
    }),
    find: op({ name: 'find entry', kind: 'read', prepare: true }, async (x, id) => findEntry(x, id)),
    update: op({ name: 'update entry', kind: 'write', prepare: true }, async (x, id, patch, options) => {
      if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
      checkEntryFields(patch, false)
      const old = await findEntry(x, id, true)
      if (old === undefined) throw entryNotFound()
      const expected = options?.expectedRevision
      if (expected !== undefined && expected !== old.revision) throw revisionMismatch(expected, old.revision)
      const pick = <K extends keyof RegistrationEntry>(k: K): RegistrationEntry[K] => (patch as Partial<RegistrationEntry>)[k] ?? old[k]
      const selectors = patch.selectors === undefined ? old.selectors : normalizeSelectors(patch.selectors)
      const spiffeId = pick('spiffeId')
      const parentId = pick('parentId')
      const uniqueKey = entryUniqueKey(spiffeId, parentId, selectors)
      const [dup] = await x.rows<{ id: string }>('SELECT id FROM entries WHERE unique_key = $1 AND id <> $2', [uniqueKey, id])
      if (dup !== undefined) throw entryExists(dup.id)
      x.change({ kind: 'entry', key: id, op: 'put' })
      let rows: EntryRow[]
      try {
        rows = await x.rows<EntryRow>(
          `UPDATE entries e SET spiffe_id = $1, parent_id = $2, x509_ttl = $3, jwt_ttl = $4, hint = $5, admin = $6,
            downstream = $7, expires_at = $8, updated_at = $9, revision = revision + 1, selectors = $10, selector_count = $11,
            dns_names = $12, federates_with = $13, unique_key = $14
          WHERE e.id = $15 RETURNING ${ENTRY_COLUMNS}`,
          [
            spiffeId,
            parentId,
            pick('x509SvidTtl'),
            pick('jwtSvidTtl'),
            pick('hint'),
            pick('admin'),
            pick('downstream'),
            patch.expiresAt === undefined ? old.expiresAt : patch.expiresAt,
            x.clock.now(),
            selectorsJson(selectors),
            selectors.length,
            [...pick('dnsNames')],
            [...pick('federatesWith')],
            uniqueKey,
            id,
          ],
        )
      } catch (err) {
        // Another server wrote the same identity between the check and the update.
        if (sqlState(err) === '23505') throw entryExists()
        throw err
      }
      if (patch.selectors !== undefined) await writeSelectors(x, id, selectors, true)
      return toEntry(rows[0] as EntryRow)
    }),
    delete: op({ name: 'delete entry', kind: 'write', single: true, prepare: true }, async (x, id) => {
      x.change({ kind: 'entry', key: id, op: 'delete' })
      const [row] = await x.rows<EntryRow>(`DELETE FROM entries e WHERE e.id = $1 RETURNING ${ENTRY_COLUMNS}`, [id])
      if (row === undefined) throw entryNotFound()
      return toEntry(row)
    }),
    list: op({ name: 'list entries', kind: 'read' }, async (x, filter, page) => {
      const where = entryWhere(normalizeEntryFilter(filter))
      const { items, next } = await paged<EntryRow, RegistrationEntry>(
        x,
        { table: 'entries', alias: 'e', columns: ENTRY_COLUMNS, key: 'id', where },
        page,
        toEntry,
        (e) => e.id,
      )
      return { entries: items, nextPageToken: next }
    }),
    count: op({ name: 'count entries', kind: 'read' }, async (x, filter) => countWhere(x, 'entries', 'e', entryWhere(normalizeEntryFilter(filter)))),
    pruneExpired: op({ name: 'prune entries', kind: 'write' }, async (x, now) => {
      checkTime('now', now, false)
      const rows = await x.rows<EntryRow>(`DELETE FROM entries e WHERE e.expires_at IS NOT NULL AND e.expires_at < $1 RETURNING ${ENTRY_COLUMNS}`, [now])
      for (const r of rows) x.change({ kind: 'entry', key: r.id, op: 'delete' })
      return rows.map(toEntry).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    }),
  }
}
