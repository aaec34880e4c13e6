/**
 * The revocations the server pushes over Sync (the full set on every change):
 * revoked per-instance identities (by instance ID or SPIFFE ID) and
 * quarantined SPIFFE ID prefixes. The manager neither serves nor renews an
 * SVID they cover, and drops the JWT-SVIDs it cached for it. A record stops
 * applying at its expiry (the end of a quarantine) by the agent's own clock.
 */
import type { AgentRevocation } from './ports.js'

/** Does the SPIFFE ID path prefix `prefix` cover `id` (the same ID, or one below it at a segment boundary)? */
function prefixCovers(prefix: string, id: string): boolean {
  if (!id.startsWith(prefix)) return false
  return id.length === prefix.length || prefix.endsWith('/') || id.charCodeAt(prefix.length) === 0x2f
}

export class Revocations {
  #list: AgentRevocation[] = []
  #ids = new Set<string>()
  #prefixes: AgentRevocation[] = []
  /** Earliest expiry of a record in force (epoch ms), Infinity without one. */
  #nextExpiry = Number.POSITIVE_INFINITY

  get size(): number {
    return this.#list.length
  }

  /** Replaces the set; true when it changed. */
  set(list: readonly AgentRevocation[]): boolean {
    const key = (l: readonly AgentRevocation[]) => l.map((r) => `${r.id}:${r.expiresAt}`).join(',')
    const changed = key(list) !== key(this.#list)
    this.#list = [...list]
    this.#ids = new Set(list.filter((r) => r.kind === 'instance').map((r) => r.value))
    this.#prefixes = list.filter((r) => r.kind === 'prefix')
    this.#nextExpiry = Math.min(Number.POSITIVE_INFINITY, ...list.filter((r) => r.expiresAt > 0).map((r) => r.expiresAt))
    return changed
  }

  /** Is an identity (its SPIFFE ID and, per-instance, its instance ID) covered by a record in force at `now`? */
  covers(spiffeId: string | undefined, instanceId: string | undefined, now: number): boolean {
    if (this.#list.length === 0) return false
    const live = (r: AgentRevocation) => r.expiresAt === 0 || r.expiresAt > now
    for (const r of this.#list) {
      if (r.kind !== 'instance' || !live(r)) continue
      if ((instanceId !== undefined && r.value === instanceId) || (spiffeId !== undefined && r.value === spiffeId)) return true
    }
    if (spiffeId !== undefined) for (const r of this.#prefixes) if (live(r) && prefixCovers(r.value, spiffeId)) return true
    return false
  }

  /** Drops the records expired at `now`; true when any was (what they covered may be served again). */
  expire(now: number): boolean {
    if (this.#nextExpiry > now) return false
    return this.set(this.#list.filter((r) => r.expiresAt === 0 || r.expiresAt > now))
  }

  /** Whether an instance ID is revoked by ID (used before the instance's SPIFFE ID is known). */
  hasInstanceId(instanceId: string): boolean {
    return this.#ids.has(instanceId)
  }
}
