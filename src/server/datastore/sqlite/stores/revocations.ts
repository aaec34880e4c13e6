// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkNewRevocation, checkRevocationId, checkTime, revocationActive, revocationNotFound } from '../../internal/normalize.js'
import type { Revocation, RevocationKind } from '../../types.js'
import type { SqliteContext } from '../context.js'

interface RevocationRow {
  id: number
  kind: RevocationKind
  value: string
  reason: string
  created_at: number
  not_after: number | null
  expires_at: number | null
}

const COLUMNS = 'id, kind, value, reason, created_at, not_after, expires_at'

const fromRow = (r: RevocationRow): Revocation => ({
  id: r.id,
  kind: r.kind,
  value: r.value,
  reason: r.reason,
  createdAt: r.created_at,
  notAfter: r.not_after,
  expiresAt: r.expires_at,
})

export function revocationsStore(ctx: SqliteContext): SyncStores['revocations'] {
  const { stmt, read, atomic, clock } = ctx
  return {
    create: atomic('create revocation', (r) => {
      checkNewRevocation(r)
      const now = clock.now()
      const existing = stmt(`SELECT ${COLUMNS} FROM revocations WHERE kind = ? AND value = ?`).get(r.kind, r.value) as RevocationRow | undefined
      if (existing !== undefined) {
        const rec = fromRow(existing)
        if (revocationActive(rec, now)) return { revocation: rec, created: false }
        stmt('DELETE FROM revocations WHERE id = ?').run(rec.id)
      }
      const row = stmt(`INSERT INTO revocations (kind, value, reason, created_at, not_after, expires_at) VALUES (?, ?, ?, ?, ?, ?) RETURNING ${COLUMNS}`).get(
        r.kind,
        r.value,
        r.reason,
        now,
        r.notAfter,
        r.expiresAt,
      ) as RevocationRow
      return { revocation: fromRow(row), created: true }
    }),
    find: read('find revocation', (id) => {
      checkRevocationId(id)
      const row = stmt(`SELECT ${COLUMNS} FROM revocations WHERE id = ?`).get(id) as RevocationRow | undefined
      return row === undefined ? undefined : fromRow(row)
    }),
    list: read('list revocations', (opts) => {
      const now = opts?.now
      if (now === undefined) return (stmt(`SELECT ${COLUMNS} FROM revocations ORDER BY id`).all() as RevocationRow[]).map(fromRow)
      checkTime('now', now, false)
      const rows = stmt(`SELECT ${COLUMNS} FROM revocations WHERE expires_at IS NULL OR expires_at > ? ORDER BY id`).all(now) as RevocationRow[]
      return rows.map(fromRow)
    }),
    delete: read('delete revocation', (id) => {
      checkRevocationId(id)
      const row = stmt(`DELETE FROM revocations WHERE id = ? RETURNING ${COLUMNS}`).get(id) as RevocationRow | undefined
      if (row === undefined) throw revocationNotFound()
      return fromRow(row)
    }),
    pruneExpired: read('prune revocations', (now) => {
      checkTime('now', now, false)
      const rows = stmt(`DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at <= ? RETURNING ${COLUMNS}`).all(now) as RevocationRow[]
      return rows.map(fromRow).sort((a, b) => a.id - b.id)
    }),
  }
}
