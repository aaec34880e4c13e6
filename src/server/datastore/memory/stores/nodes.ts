// One store of the memory datastore; see memory-data-store.ts for how the stores are put together.
import { nodeMatches, normalizeNodeFilter } from '../../internal/filters.js'
import type { SyncStores } from '../../internal/locked-store.js'
import { checkNodeFields, nodeNotFound, normalizeSelectors } from '../../internal/normalize.js'
import type { AttestedNode } from '../../types.js'
import type { MemoryContext } from '../context.js'

export function nodesStore(ctx: MemoryContext): SyncStores['nodes'] {
  const { clock, copy, paged, countWhere, take } = ctx
  return {
    upsert(input) {
      checkNodeFields(input, true)
      const now = clock.now()
      const old = ctx.state.nodes.get(input.agentId)
      const node: AttestedNode = {
        agentId: input.agentId,
        attestor: input.attestor,
        selectors: normalizeSelectors(input.selectors),
        serial: input.serial,
        expiresAt: input.expiresAt,
        previousSerial: input.previousSerial,
        banned: input.banned,
        canReattest: input.canReattest,
        createdAt: old?.createdAt ?? now,
        updatedAt: now,
      }
      ctx.state.nodes.set(node.agentId, node)
      return copy(node)
    },
    find(agentId) {
      const n = ctx.state.nodes.get(agentId)
      return n === undefined ? undefined : copy(n)
    },
    get(agentId) {
      const n = ctx.state.nodes.get(agentId)
      if (n === undefined) throw nodeNotFound()
      return copy(n)
    },
    update(agentId, patch) {
      if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
      checkNodeFields(patch, false)
      const old = ctx.state.nodes.get(agentId)
      if (old === undefined) throw nodeNotFound()
      const next: AttestedNode = { ...old, updatedAt: clock.now() }
      if (patch.serial !== undefined) next.serial = patch.serial
      if (patch.previousSerial !== undefined) next.previousSerial = patch.previousSerial
      if (patch.expiresAt !== undefined) next.expiresAt = patch.expiresAt
      if (patch.banned !== undefined) next.banned = patch.banned
      if (patch.selectors !== undefined) next.selectors = normalizeSelectors(patch.selectors)
      ctx.state.nodes.set(agentId, next)
      return copy(next)
    },
    delete: (agentId) => take(ctx.state.nodes, agentId, nodeNotFound),
    list(filter, page) {
      const f = normalizeNodeFilter(filter)
      const { items, next } = paged(
        ctx.state.nodes.values(),
        (n) => nodeMatches(n, f),
        (n) => n.agentId,
        page,
      )
      return { nodes: items, nextPageToken: next }
    },
    count(filter) {
      const f = normalizeNodeFilter(filter)
      return countWhere(ctx.state.nodes.values(), (n) => nodeMatches(n, f))
    },
  }
}
