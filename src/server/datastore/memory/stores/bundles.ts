// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import { IdentityError } from '../../../../errors/index.js'
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { BundleRecord } from '../../types.js'
import type { MemoryContext } from '../context.js'

export function bundlesStore(ctx: MemoryContext): SyncStores['bundles'] {
  const { clock, copy, paged, take } = ctx
  return {
    put(record) {
      checkString('trustDomain', record.trustDomain)
      checkString('document', record.document)
      checkTime('sequence', record.sequence, false)
      const stored: BundleRecord = {
        trustDomain: record.trustDomain,
        document: record.document,
        sequence: record.sequence,
        updatedAt: clock.now(),
      }
      ctx.state.bundles.set(stored.trustDomain, stored)
      return copy(stored)
    },
    get(trustDomain) {
      const b = ctx.state.bundles.get(trustDomain)
      return b === undefined ? undefined : copy(b)
    },
    list: () =>
      paged(
        ctx.state.bundles.values(),
        () => true,
        (b) => b.trustDomain,
        undefined,
      ).items,
    delete(trustDomain) {
      take(ctx.state.bundles, trustDomain, () => new IdentityError('ERR_NOT_FOUND', 'bundle not found'))
    },
  }
}
