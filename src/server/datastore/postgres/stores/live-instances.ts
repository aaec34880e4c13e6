// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { checkString, checkTime } from '../../internal/normalize.js'
import type { LiveInstanceStore } from '../../types.js'
import { op, type OpsOf } from '../context.js'

export function liveInstancesStore(): OpsOf<LiveInstanceStore> {
  return {
    put: op({ name: 'put live instance', kind: 'write', single: true, idempotent: true }, async (x, i) => {
      checkString('prefix', i.prefix)
      checkString('instanceKey', i.instanceKey)
      checkTime('expiresAt', i.expiresAt, false)
      const [row] = await x.rows<{ expires_at: number }>(
        `INSERT INTO live_instances AS l (prefix, instance_key, expires_at) VALUES ($1, $2, $3)
        ON CONFLICT (prefix, instance_key) DO UPDATE SET expires_at = GREATEST(l.expires_at, excluded.expires_at)
        RETURNING expires_at`,
        [i.prefix, i.instanceKey, i.expiresAt],
      )
      return { prefix: i.prefix, instanceKey: i.instanceKey, expiresAt: (row as { expires_at: number }).expires_at }
    }),
    list: op({ name: 'list live instances', kind: 'read' }, async (x, prefix, now) => {
      checkTime('now', now, false)
      const rows = await x.rows<{ instance_key: string; expires_at: number }>(
        'SELECT instance_key, expires_at FROM live_instances WHERE prefix = $1 AND expires_at > $2 ORDER BY instance_key',
        [prefix, now],
      )
      return rows.map((r) => ({ prefix, instanceKey: r.instance_key, expiresAt: r.expires_at }))
    }),
    release: op({ name: 'release live instance', kind: 'write', single: true }, async (x, instanceKey) =>
      x.count('DELETE FROM live_instances WHERE instance_key = $1', [instanceKey]),
    ),
    pruneExpired: op({ name: 'prune live instances', kind: 'write', single: true }, async (x, now) => {
      checkTime('now', now, false)
      return x.count('DELETE FROM live_instances WHERE expires_at <= $1', [now])
    }),
  }
}
