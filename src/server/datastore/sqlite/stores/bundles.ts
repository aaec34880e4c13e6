// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import { IdentityError } from '../../../../errors/index.js'
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { BundleRecord } from '../../types.js'
import type { SqliteContext } from '../context.js'

export function bundlesStore(ctx: SqliteContext): SyncStores['bundles'] {
  const { stmt, read, clock } = ctx
  return {
    put: read('put bundle', (record) => {
      checkString('trustDomain', record.trustDomain)
      checkString('document', record.document)
      checkTime('sequence', record.sequence, false)
      const stored: BundleRecord = {
        trustDomain: record.trustDomain,
        document: record.document,
        sequence: record.sequence,
        updatedAt: clock.now(),
      }
      stmt(`INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES (?, ?, ?, ?)
      ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
        updated_at = excluded.updated_at`).run(stored.trustDomain, stored.document, stored.sequence, stored.updatedAt)
      return stored
    }),
    get: read('get bundle', (trustDomain) => {
      const row = stmt('SELECT trust_domain, document, sequence, updated_at FROM bundles WHERE trust_domain = ?').get(trustDomain) as
        { trust_domain: string; document: string; sequence: number; updated_at: number } | undefined
      return row === undefined ? undefined : { trustDomain: row.trust_domain, document: row.document, sequence: row.sequence, updatedAt: row.updated_at }
    }),
    list: read('list bundles', () => {
      const rows = stmt('SELECT trust_domain, document, sequence, updated_at FROM bundles ORDER BY trust_domain').all() as {
        trust_domain: string
        document: string
        sequence: number
        updated_at: number
      }[]
      return rows.map((r) => ({ trustDomain: r.trust_domain, document: r.document, sequence: r.sequence, updatedAt: r.updated_at }))
    }),
    delete: read('delete bundle', (trustDomain) => {
      if (stmt('DELETE FROM bundles WHERE trust_domain = ?').run(trustDomain).changes === 0) {
        throw new IdentityError('ERR_NOT_FOUND', 'bundle not found')
      }
    }),
  }
}
