/**
 * The server's revocations (the SVID side: revoked instances and quarantined
 * SPIFFE ID prefixes) over the admin socket, for `warrant instance` and
 * `warrant revoke`.
 */
import { adminClient } from './admin-client.js'

export interface ServerRevocation {
  id: number
  kind: 'instance' | 'prefix'
  value: string
  reason: string
  /** Epoch ms. */
  createdAt: number
  /** Epoch ms; undefined = none. */
  notAfter: number | undefined
  /** Epoch ms; undefined = never. */
  expiresAt: number | undefined
}

interface RevocationMsg {
  id: string
  kind: string
  value: string
  reason: string
  created_at: string
  not_after: string
  expires_at: string
}

const fromMsg = (m: RevocationMsg): ServerRevocation => ({
  id: Number(m.id),
  kind: m.kind as ServerRevocation['kind'],
  value: m.value,
  reason: m.reason,
  createdAt: Number(m.created_at),
  notAfter: Number(m.not_after) || undefined,
  expiresAt: Number(m.expires_at) || undefined,
})

async function withClient<T>(socketPath: string, fn: (c: ReturnType<typeof adminClient>) => Promise<T>): Promise<T> {
  const c = adminClient('Revocations', socketPath)
  try {
    return await fn(c)
  } finally {
    c.close()
  }
}

/**
 * Revokes an instance (`value`: its instance ID or SPIFFE ID) or quarantines a
 * SPIFFE ID prefix (optionally until `notAfter`, a Date or epoch ms). The same
 * kind and value again returns the record in force. Rejects with the gRPC
 * error (`x-error-code` ERR_REVOCATION_INVALID for bad input).
 */
export function revokeOnServer(
  socketPath: string,
  r: { kind: 'instance' | 'prefix'; value: string; reason?: string; notAfter?: Date | number },
): Promise<ServerRevocation> {
  const notAfter = r.notAfter === undefined ? 0 : typeof r.notAfter === 'number' ? r.notAfter : r.notAfter.getTime()
  return withClient(socketPath, async (c) =>
    fromMsg(await c.call<RevocationMsg>('Revoke', { kind: r.kind, value: r.value, reason: r.reason ?? '', not_after: String(notAfter) })),
  )
}

/** The revocations in force (with `includeExpired`, also those not yet swept), by id. */
export function listServerRevocations(socketPath: string, opts: { includeExpired?: boolean } = {}): Promise<ServerRevocation[]> {
  return withClient(socketPath, async (c) =>
    (await c.call<{ revocations: RevocationMsg[] }>('List', { include_expired: !!opts.includeExpired })).revocations.map(fromMsg),
  )
}

/** Deletes a revocation (a finished or mistaken quarantine); returns it. NOT_FOUND when absent. */
export function deleteServerRevocation(socketPath: string, id: number): Promise<ServerRevocation> {
  return withClient(socketPath, async (c) => fromMsg(await c.call<RevocationMsg>('Delete', { id: String(id) })))
}
