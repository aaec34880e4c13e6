// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import { IdentityError } from '../../../../errors/index.js'
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { JoinToken } from '../../types.js'
import type { MemoryContext } from '../context.js'

export function joinTokensStore(ctx: MemoryContext): SyncStores['joinTokens'] {
  const { clock, copy } = ctx
  return {
    create(token) {
      checkString('tokenHash', token.tokenHash)
      checkString('spiffeId', token.spiffeId)
      checkTime('expiresAt', token.expiresAt, false)
      if (ctx.state.joinTokens.has(token.tokenHash)) throw new IdentityError('ERR_ALREADY_EXISTS', 'join token already exists')
      const record: JoinToken = {
        tokenHash: token.tokenHash,
        spiffeId: token.spiffeId,
        expiresAt: token.expiresAt,
        createdAt: clock.now(),
      }
      ctx.state.joinTokens.set(record.tokenHash, record)
      return copy(record)
    },
    consume(tokenHash) {
      const t = ctx.state.joinTokens.get(tokenHash)
      if (t === undefined) return undefined
      ctx.state.joinTokens.delete(tokenHash)
      return copy(t)
    },
    pruneExpired(now) {
      checkTime('now', now, false)
      const tokens = ctx.state.joinTokens
      const expired = [...tokens.values()].filter((t) => t.expiresAt < now)
      for (const t of expired) tokens.delete(t.tokenHash)
      return expired.length
    },
    count: () => ctx.state.joinTokens.size,
  }
}
