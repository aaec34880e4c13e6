// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import type { SyncStores } from '../../internal/locked-store.js'
import { checkNewRevocation, checkRevocationId, checkTime, revocationActive, revocationNotFound } from '../../internal/normalize.js'
import type { Revocation } from '../../types.js'
import type { MemoryContext } from '../context.js'

export function revocationsStore(ctx: MemoryContext): SyncStores['revocations'] {
  const { clock, copy } = ctx
  const sorted = (): Revocation[] => [...ctx.state.revocations.values()].sort((a, b) => a.id - b.id)
  return {
    create(r) {
      checkNewRevocation(r)
      const now = clock.now()
      const existing = sorted().find((x) => x.kind === r.kind && x.value === r.value)
      if (existing !== undefined) {
        if (revocationActive(existing, now)) return { revocation: copy(existing), created: false }
        ctx.state.revocations.delete(existing.id)
      }
      const record: Revocation = {
        id: ++ctx.state.revocationSeq,
        kind: r.kind,
        value: r.value,
        reason: r.reason,
        createdAt: now,
        notAfter: r.notAfter,
        expiresAt: r.expiresAt,
      }
      ctx.state.revocations.set(record.id, record)
      return { revocation: copy(record), created: true }
    },
    find(id) {
      checkRevocationId(id)
      const r = ctx.state.revocations.get(id)
      return r === undefined ? undefined : copy(r)
    },
    list(opts) {
      const now = opts?.now
      if (now !== undefined) checkTime('now', now, false)
      return sorted()
        .filter((r) => now === undefined || revocationActive(r, now))
        .map(copy)
    },
    delete(id) {
      checkRevocationId(id)
      const r = ctx.state.revocations.get(id)
      if (r === undefined) throw revocationNotFound()
      ctx.state.revocations.delete(id)
      return copy(r)
    },
    pruneExpired(now) {
      checkTime('now', now, false)
      const expired = sorted().filter((r) => !revocationActive(r, now))
      for (const r of expired) ctx.state.revocations.delete(r.id)
      return expired.map(copy)
    },
  }
}
