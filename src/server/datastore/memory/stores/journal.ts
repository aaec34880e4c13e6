// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString } from '../../internal/normalize.js'
import type { MemoryContext } from '../context.js'

export function journalStore(ctx: MemoryContext): SyncStores['journal'] {
  return {
    get: (name) => ctx.state.journal.get(name),
    put(name, json) {
      checkString('name', name)
      checkString('json', json)
      ctx.state.journal.set(name, json)
    },
  }
}
