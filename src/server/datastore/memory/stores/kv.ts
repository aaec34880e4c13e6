// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString } from '../../internal/normalize.js'
import type { MemoryContext } from '../context.js'

export function kvStore(ctx: MemoryContext): SyncStores['kv'] {
  return {
    get: (namespace, key) => ctx.state.kv.get(namespace)?.get(key),
    put(namespace, key, value) {
      checkString('namespace', namespace)
      checkString('key', key)
      checkString('value', value)
      let ns = ctx.state.kv.get(namespace)
      if (ns === undefined) ctx.state.kv.set(namespace, (ns = new Map<string, string>()))
      ns.set(key, value)
    },
    delete: (namespace, key) => ctx.state.kv.get(namespace)?.delete(key) ?? false,
    list(namespace) {
      const ns = ctx.state.kv.get(namespace)
      if (ns === undefined) return []
      return [...ns.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([key, value]) => ({ key, value }))
    },
  }
}
