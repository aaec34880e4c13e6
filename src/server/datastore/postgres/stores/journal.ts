// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { checkString } from '../../internal/normalize.js'
import type { CaJournalStore } from '../../types.js'
import { op, type OpsOf } from '../context.js'

export function journalStore(): OpsOf<CaJournalStore> {
  return {
    get: op(
      { name: 'get CA journal', kind: 'read' },
      async (x, name) => (await x.rows<{ json: string }>('SELECT json FROM ca_journal WHERE name = $1', [name]))[0]?.json,
    ),
    put: op({ name: 'put CA journal', kind: 'write', single: true, idempotent: true }, async (x, name, json) => {
      checkString('name', name)
      checkString('json', json)
      await x.count('INSERT INTO ca_journal (name, json) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET json = excluded.json', [name, json])
    }),
  }
}
