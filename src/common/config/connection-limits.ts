import { z } from 'zod'
import type { ConnectionGuardLimits } from '../net/connection-guard.js'
import { duration } from './duration.js'

const positiveDuration = () => duration().refine((ms) => ms > 0, 'must be greater than zero')

/**
 * `[agent.connection_limits]` / `[server.connection_limits]`: every key is
 * optional and falls back to the listener's default
 * (`DEFAULT_WORKLOAD_API_LIMITS`, `DEFAULT_AGENT_API_LIMITS`).
 */
export const ConnectionLimitsSchema = z
  .object({
    /** Concurrent connections per peer uid (Workload API) or source address (agent API). */
    max_per_peer: z.number().int('must be an integer').min(1, 'must be at least 1').max(1_000_000).optional(),
    /** TLS handshake (TCP) and HTTP/2 client preface must complete within this time. */
    handshake_timeout: positiveDuration().optional(),
    /** A connection without open streams is closed after this time. */
    idle_timeout: positiveDuration().optional(),
    /** How long an erroring, unresponsive or closing connection may linger. */
    grace: positiveDuration().optional(),
  })
  .strict()

export type ConnectionLimitsFile = z.infer<typeof ConnectionLimitsSchema>

/** The keys that were set, as guard limits (the guard fills in its defaults). */
export function toConnectionLimits(f: ConnectionLimitsFile | undefined): Partial<ConnectionGuardLimits> {
  const out: Partial<ConnectionGuardLimits> = {}
  if (f?.max_per_peer !== undefined) out.maxPerPeer = f.max_per_peer
  if (f?.handshake_timeout !== undefined) out.handshakeTimeoutMs = f.handshake_timeout
  if (f?.idle_timeout !== undefined) out.idleTimeoutMs = f.idle_timeout
  if (f?.grace !== undefined) out.graceMs = f.grace
  return out
}
