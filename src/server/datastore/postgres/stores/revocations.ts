// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { checkNewRevocation, checkRevocationId, checkTime, revocationActive, revocationNotFound } from '../../internal/normalize.js'
import type { Revocation, RevocationKind, RevocationStore } from '../../types.js'
import { op, type OpsOf } from '../context.js'

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

export function revocationsStore(): OpsOf<RevocationStore> {
  return {
    create: op({ name: 'create revocation', kind: 'write' }, async (x, r) => {
      checkNewRevocation(r)
      const now = x.clock.now()
      // Another server may store the same kind and value at the same moment: then its record is the one returned.
      for (let attempt = 0; ; attempt++) {
        const [existing] = await x.rows<RevocationRow>(`SELECT ${COLUMNS} FROM revocations WHERE kind = $1 AND value = $2 FOR UPDATE`, [r.kind, r.value])
        if (existing !== undefined) {
          const rec = fromRow(existing)
          if (revocationActive(rec, now)) return { revocation: rec, created: false }
          x.change({ kind: 'revocation', key: String(rec.id), op: 'delete' })
          await x.count('DELETE FROM revocations WHERE id = $1', [rec.id])
        }
        const [row] = await x.rows<RevocationRow>(
          `INSERT INTO revocations (kind, value, reason, created_at, not_after, expires_at) VALUES ($1, $2, $3, $4, $5, $6)
          ON CONFLICT (kind, value) DO NOTHING RETURNING ${COLUMNS}`,
          [r.kind, r.value, r.reason, now, r.notAfter, r.expiresAt],
        )
        if (row !== undefined) {
          x.change({ kind: 'revocation', key: String(row.id), op: 'put' })
          return { revocation: fromRow(row), created: true }
        }
        if (attempt >= 3) throw new Error('revocation create kept conflicting')
      }
    }),
    find: op({ name: 'find revocation', kind: 'read' }, async (x, id) => {
      checkRevocationId(id)
      const [row] = await x.rows<RevocationRow>(`SELECT ${COLUMNS} FROM revocations WHERE id = $1`, [id])
      return row === undefined ? undefined : fromRow(row)
    }),
    list: op({ name: 'list revocations', kind: 'read' }, async (x, opts) => {
      const now = opts?.now
      if (now === undefined) return (await x.rows<RevocationRow>(`SELECT ${COLUMNS} FROM revocations ORDER BY id`)).map(fromRow)
      checkTime('now', now, false)
      return (await x.rows<RevocationRow>(`SELECT ${COLUMNS} FROM revocations WHERE expires_at IS NULL OR expires_at > $1 ORDER BY id`, [now])).map(fromRow)
    }),
    delete: op({ name: 'delete revocation', kind: 'write', single: true }, async (x, id) => {
      checkRevocationId(id)
      x.change({ kind: 'revocation', key: String(id), op: 'delete' })
      const [row] = await x.rows<RevocationRow>(`DELETE FROM revocations WHERE id = $1 RETURNING ${COLUMNS}`, [id])
      if (row === undefined) throw revocationNotFound()
      return fromRow(row)
    }),
    pruneExpired: op({ name: 'prune revocations', kind: 'write' }, async (x, now) => {
      checkTime('now', now, false)
      const rows = await x.rows<RevocationRow>(`DELETE FROM revocations WHERE expires_at IS NOT NULL AND expires_at <= $1 RETURNING ${COLUMNS}`, [now])
      for (const r of rows) x.change({ kind: 'revocation', key: String(r.id), op: 'delete' })
      return rows.map(fromRow).sort((a, b) => a.id - b.id)
    }),
  }
}
