// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { SqliteContext } from '../context.js'

export function liveInstancesStore(ctx: SqliteContext): SyncStores['liveInstances'] {
  const { stmt, read } = ctx
  return {
    put: read('put live instance', (i) => {
      checkString('prefix', i.prefix)
      checkString('instanceKey', i.instanceKey)
      checkTime('expiresAt', i.expiresAt, false)
      const row = stmt(`INSERT INTO live_instances (prefix, instance_key, expires_at) VALUES (?, ?, ?)
      ON CONFLICT (prefix, instance_key) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)
      RETURNING expires_at`).get(i.prefix, i.instanceKey, i.expiresAt) as { expires_at: number }
      return { prefix: i.prefix, instanceKey: i.instanceKey, expiresAt: row.expires_at }
    }),
    list: read('list live instances', (prefix, now) => {
      checkTime('now', now, false)
      const rows = stmt('SELECT instance_key, expires_at FROM live_instances WHERE prefix = ? AND expires_at > ? ORDER BY instance_key').all(prefix, now) as {
        instance_key: string
        expires_at: number
      }[]
      return rows.map((r) => ({ prefix, instanceKey: r.instance_key, expiresAt: r.expires_at }))
    }),
    release: read('release live instance', (instanceKey) => stmt('DELETE FROM live_instances WHERE instance_key = ?').run(instanceKey).changes),
    pruneExpired: read('prune live instances', (now) => {
      checkTime('now', now, false)
      return stmt('DELETE FROM live_instances WHERE expires_at <= ?').run(now).changes
    }),
  }
}
