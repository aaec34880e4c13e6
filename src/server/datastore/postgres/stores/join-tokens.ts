// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { IdentityError } from '../../../../errors/index.js'
import { checkString, checkTime } from '../../internal/normalize.js'
import type { JoinToken, JoinTokenStore } from '../../types.js'
import { op, type OpsOf } from '../context.js'

interface TokenRow {
  token_hash: string
  spiffe_id: string
  expires_at: number
  created_at: number
}

const fromRow = (r: TokenRow): JoinToken => ({ tokenHash: r.token_hash, spiffeId: r.spiffe_id, expiresAt: r.expires_at, createdAt: r.created_at })

export function joinTokensStore(): OpsOf<JoinTokenStore> {
  return {
    create: op({ name: 'create join token', kind: 'write', single: true }, async (x, token) => {
      checkString('tokenHash', token.tokenHash)
      checkString('spiffeId', token.spiffeId)
      checkTime('expiresAt', token.expiresAt, false)
      const [row] = await x.rows<TokenRow>(
        `INSERT INTO join_tokens (token_hash, spiffe_id, expires_at, created_at) VALUES ($1, $2, $3, $4)
        ON CONFLICT (token_hash) DO NOTHING RETURNING token_hash, spiffe_id, expires_at, created_at`,
        [token.tokenHash, token.spiffeId, token.expiresAt, x.clock.now()],
      )
      if (row === undefined) throw new IdentityError('ERR_ALREADY_EXISTS', 'join token already exists')
      return fromRow(row)
    }),
    consume: op({ name: 'consume join token', kind: 'write', single: true }, async (x, tokenHash) => {
      const [row] = await x.rows<TokenRow>('DELETE FROM join_tokens WHERE token_hash = $1 RETURNING token_hash, spiffe_id, expires_at, created_at', [tokenHash])
      return row === undefined ? undefined : fromRow(row)
    }),
    pruneExpired: op({ name: 'prune join tokens', kind: 'write', single: true }, async (x, now) => {
      checkTime('now', now, false)
      return x.count('DELETE FROM join_tokens WHERE expires_at < $1', [now])
    }),
    count: op({ name: 'count join tokens', kind: 'read' }, async (x) => (await x.rows<{ n: number }>('SELECT COUNT(*) AS n FROM join_tokens'))[0]?.n ?? 0),
  }
}
