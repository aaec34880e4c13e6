// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString } from '../../internal/normalize.js'
import type { SqliteContext } from '../context.js'

export function kvStore(ctx: SqliteContext): SyncStores['kv'] {
  const { stmt, read } = ctx
  return {
    get: read('get kv', (namespace, key) => {
      const row = stmt('SELECT value FROM kv WHERE namespace = ? AND key = ?').get(namespace, key) as { value: string } | undefined
      return row?.value
    }),
    put: read('put kv', (namespace, key, value) => {
      checkString('namespace', namespace)
      checkString('key', key)
      checkString('value', value)
      stmt(`INSERT INTO kv (namespace, key, value) VALUES (?, ?, ?)
      ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value`).run(namespace, key, value)
    }),
    delete: read('delete kv', (namespace, key) => stmt('DELETE FROM kv WHERE namespace = ? AND key = ?').run(namespace, key).changes > 0),
    list: read('list kv', (namespace) => stmt('SELECT key, value FROM kv WHERE namespace = ? ORDER BY key').all(namespace) as { key: string; value: string }[]),
  }
}
