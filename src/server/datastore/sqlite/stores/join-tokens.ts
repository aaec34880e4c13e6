// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import { IdentityError } from '../../../../errors/index.js'
import type { SyncStores } from '../../internal/locked-store.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { JoinToken } from '../../types.js'
import { isSqliteError, type SqliteContext } from '../context.js'

export function joinTokensStore(ctx: SqliteContext): SyncStores['joinTokens'] {
  const { stmt, read, clock } = ctx
  return {
    create: read('create join token', (token) => {
      checkString('tokenHash', token.tokenHash)
      checkString('spiffeId', token.spiffeId)
      checkTime('expiresAt', token.expiresAt, false)
      const record: JoinToken = {
        tokenHash: token.tokenHash,
        spiffeId: token.spiffeId,
        expiresAt: token.expiresAt,
        createdAt: clock.now(),
      }
      try {
        stmt('INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, created_at) VALUES (?, ?, ?, ?)').run(
          record.tokenHash,
          record.spiffeId,
          record.expiresAt,
          record.createdAt,
        )
      } catch (err) {
        if (isSqliteError(err) && err.code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
          throw new IdentityError('ERR_ALREADY_EXISTS', 'join token already exists')
        }
        throw err
      }
      return record
    }),
    consume: read('consume join token', (tokenHash) => {
      const row = stmt('DELETE FROM join_tokens WHERE token_hash = ? RETURNING token_hash, spiffe_id, expires_at, created_at').get(tokenHash) as
        { token_hash: string; spiffe_id: string; expires_at: number; created_at: number } | undefined
      if (row === undefined) return undefined
      return { tokenHash: row.token_hash, spiffeId: row.spiffe_id, expiresAt: row.expires_at, createdAt: row.created_at }
    }),
    pruneExpired: read('prune join tokens', (now) => {
      checkTime('now', now, false)
      return stmt('DELETE FROM join_tokens WHERE expires_at < ?').run(now).changes
    }),
    count: read('count join tokens', () => (stmt('SELECT COUNT(*) AS n FROM join_tokens').get() as { n: number }).n),
  }
}
