// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { IdentityError } from '../../../../errors/index.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { BundleRecord, BundleStore } from '../../types.js'
import { op, type OpsOf } from '../context.js'

interface BundleRow {
  trust_domain: string
  document: string
  sequence: number
  updated_at: number
}

const COLUMNS = 'trust_domain, document, sequence, updated_at'
const fromRow = (r: BundleRow): BundleRecord => ({ trustDomain: r.trust_domain, document: r.document, sequence: r.sequence, updatedAt: r.updated_at })

export function bundlesStore(): OpsOf<BundleStore> {
  return {
    put: op({ name: 'put bundle', kind: 'write', single: true, idempotent: true }, async (x, record) => {
      checkString('trustDomain', record.trustDomain)
      checkString('document', record.document)
      checkTime('sequence', record.sequence, false)
      x.change({ kind: 'bundle', key: record.trustDomain, op: 'put' })
      const [row] = await x.rows<BundleRow>(
        `INSERT INTO bundles (trust_domain, document, sequence, updated_at) VALUES ($1, $2, $3, $4)
        ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, sequence = excluded.sequence,
          updated_at = excluded.updated_at
        RETURNING ${COLUMNS}`,
        [record.trustDomain, record.document, record.sequence, x.clock.now()],
      )
      return fromRow(row as BundleRow)
    }),
    get: op({ name: 'get bundle', kind: 'read' }, async (x, trustDomain) => {
      const [row] = await x.rows<BundleRow>(`SELECT ${COLUMNS} FROM bundles WHERE trust_domain = $1`, [trustDomain])
      return row === undefined ? undefined : fromRow(row)
    }),
    list: op({ name: 'list bundles', kind: 'read' }, async (x) =>
      (await x.rows<BundleRow>(`SELECT ${COLUMNS} FROM bundles ORDER BY trust_domain`)).map(fromRow),
    ),
    delete: op({ name: 'delete bundle', kind: 'write', single: true }, async (x, trustDomain) => {
      x.change({ kind: 'bundle', key: trustDomain, op: 'delete' })
      if ((await x.count('DELETE FROM bundles WHERE trust_domain = $1', [trustDomain])) === 0) throw new IdentityError('ERR_NOT_FOUND', 'bundle not found')
    }),
  }
}
