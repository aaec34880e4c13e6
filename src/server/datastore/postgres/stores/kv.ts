// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { checkString } from '../../internal/normalize.js'
import type { KvStore } from '../../types.js'
import { changeOfKv } from '../changes.js'
import { op, type OpsOf } from '../context.js'

export function kvStore(): OpsOf<KvStore> {
  return {
    get: op(
      { name: 'get kv', kind: 'read' },
      async (x, namespace, key) => (await x.rows<{ value: string }>('SELECT value FROM kv WHERE namespace = $1 AND key = $2', [namespace, key]))[0]?.value,
    ),
    put: op({ name: 'put kv', kind: 'write', single: true, idempotent: true }, async (x, namespace, key, value) => {
      checkString('namespace', namespace)
      checkString('key', key)
      checkString('value', value)
      const c = changeOfKv(namespace, key, 'put')
      if (c !== undefined) x.change(c)
      await x.count('INSERT INTO kv (namespace, key, value) VALUES ($1, $2, $3) ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value', [
        namespace,
        key,
        value,
      ])
    }),
    delete: op({ name: 'delete kv', kind: 'write', single: true }, async (x, namespace, key) => {
      const c = changeOfKv(namespace, key, 'delete')
      if (c !== undefined) x.change(c)
      return (await x.count('DELETE FROM kv WHERE namespace = $1 AND key = $2', [namespace, key])) > 0
    }),
    list: op({ name: 'list kv', kind: 'read' }, async (x, namespace) =>
      x.rows<{ key: string; value: string }>('SELECT key, value FROM kv WHERE namespace = $1 ORDER BY key', [namespace]),
    ),
  }
}
