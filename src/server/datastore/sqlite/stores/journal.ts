// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString } from '../../internal/normalize.js'
import type { SqliteContext } from '../context.js'

export function journalStore(ctx: SqliteContext): SyncStores['journal'] {
  const { stmt, read } = ctx
  return {
    get: read('get CA journal', (name) => {
      const row = stmt('SELECT json FROM ca_journal WHERE name = ?').get(name) as { json: string } | undefined
      return row?.json
    }),
    put: read('put CA journal', (name, json) => {
      checkString('name', name)
      checkString('json', json)
      stmt('INSERT INTO ca_journal (name, json) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET json = excluded.json').run(name, json)
    }),
  }
}
