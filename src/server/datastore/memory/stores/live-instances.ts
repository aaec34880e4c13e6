// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { MemoryContext } from '../context.js'

export function liveInstancesStore(ctx: MemoryContext): SyncStores['liveInstances'] {
  return {
    put(i) {
      checkString('prefix', i.prefix)
      checkString('instanceKey', i.instanceKey)
      checkTime('expiresAt', i.expiresAt, false)
      let p = ctx.state.liveInstances.get(i.prefix)
      if (p === undefined) ctx.state.liveInstances.set(i.prefix, (p = new Map<string, number>()))
      const expiresAt = Math.max(p.get(i.instanceKey) ?? i.expiresAt, i.expiresAt)
      p.set(i.instanceKey, expiresAt)
      return { prefix: i.prefix, instanceKey: i.instanceKey, expiresAt }
    },
    list(prefix, now) {
      checkTime('now', now, false)
      const p = ctx.state.liveInstances.get(prefix)
      if (p === undefined) return []
      return [...p.entries()]
        .filter(([, exp]) => exp > now)
        .sort(([a], [b]) => (a < b ? -1 : 1))
        .map(([instanceKey, expiresAt]) => ({ prefix, instanceKey, expiresAt }))
    },
    release(instanceKey) {
      let n = 0
      for (const p of ctx.state.liveInstances.values()) if (p.delete(instanceKey)) n++
      return n
    },
    pruneExpired(now) {
      checkTime('now', now, false)
      let n = 0
      for (const p of ctx.state.liveInstances.values()) {
        for (const [k, exp] of p) {
          if (exp <= now) {
            p.delete(k)
            n++
          }
        }
      }
      return n
    },
  }
}
