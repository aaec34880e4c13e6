// One store of the SQLite datastore; see sqlite-data-store.ts for how the stores are put together.
import { normalizeNodeFilter } from '../../internal/filters.js'
import type { SyncStores } from '../../internal/locked-store.js'
import { checkNodeFields, nodeNotFound, normalizeSelectors } from '../../internal/normalize.js'
import type { AttestedNode, Selector } from '../../types.js'
import type { SqliteContext } from '../context.js'
import { NODE_COLUMNS, toNode, type NodeRow } from '../rows.js'
import { nodeWhere } from '../where.js'

export function nodesStore(ctx: SqliteContext): SyncStores['nodes'] {
  const { stmt, atomic, read, clock, paged, countWhere } = ctx
  const findNode = (agentId: string): AttestedNode | undefined => {
    const row = stmt(`SELECT ${NODE_COLUMNS} FROM attested_nodes n WHERE n.agent_id = ?`).get(agentId) as NodeRow | undefined
    return row === undefined ? undefined : toNode(row)
  }
  const writeNodeSelectors = (agentId: string, selectors: readonly Selector[]): void => {
    stmt('DELETE FROM node_selectors WHERE agent_id = ?').run(agentId)
    const ins = stmt('INSERT INTO node_selectors (agent_id, type, value) VALUES (?, ?, ?)')
    for (const s of selectors) ins.run(agentId, s.type, s.value)
  }

  return {
    upsert: atomic('upsert attested node', (input) => {
      checkNodeFields(input, true)
      const now = clock.now()
      stmt(`INSERT INTO attested_nodes (agent_id, attestor, serial, previous_serial, expires_at, banned, can_reattest,
        created_at, updated_at) VALUES (@agentId, @attestor, @serial, @previousSerial, @expiresAt, @banned, @canReattest, @now, @now)
      ON CONFLICT (agent_id) DO UPDATE SET attestor = excluded.attestor, serial = excluded.serial,
        previous_serial = excluded.previous_serial, expires_at = excluded.expires_at, banned = excluded.banned,
        can_reattest = excluded.can_reattest, updated_at = excluded.updated_at`).run({
        agentId: input.agentId,
        attestor: input.attestor,
        serial: input.serial,
        previousSerial: input.previousSerial,
        expiresAt: input.expiresAt,
        banned: input.banned ? 1 : 0,
        canReattest: input.canReattest ? 1 : 0,
        now,
      })
      writeNodeSelectors(input.agentId, normalizeSelectors(input.selectors))
      return findNode(input.agentId) as AttestedNode
    }),
    find: read('find attested node', (agentId) => findNode(agentId)),
    get: read('get attested node', (agentId) => {
      const n = findNode(agentId)
      if (n === undefined) throw nodeNotFound()
      return n
    }),
    update: atomic('update attested node', (agentId, patch) => {
      if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
      checkNodeFields(patch, false)
      const old = findNode(agentId)
      if (old === undefined) throw nodeNotFound()
      stmt(`UPDATE attested_nodes SET serial = ?, previous_serial = ?, expires_at = ?, banned = ?, updated_at = ?
      WHERE agent_id = ?`).run(
        patch.serial ?? old.serial,
        patch.previousSerial ?? old.previousSerial,
        patch.expiresAt ?? old.expiresAt,
        (patch.banned ?? old.banned) ? 1 : 0,
        clock.now(),
        agentId,
      )
      if (patch.selectors !== undefined) writeNodeSelectors(agentId, normalizeSelectors(patch.selectors))
      return findNode(agentId) as AttestedNode
    }),
    delete: atomic('delete attested node', (agentId) => {
      const n = findNode(agentId)
      if (n === undefined) throw nodeNotFound()
      stmt('DELETE FROM attested_nodes WHERE agent_id = ?').run(agentId)
      return n
    }),
    list: read('list attested nodes', (filter, page) => {
      const where = nodeWhere(normalizeNodeFilter(filter))
      const { items, next } = paged<NodeRow, AttestedNode>('attested_nodes', 'n', NODE_COLUMNS, 'agent_id', where, page, toNode, (n) => n.agentId)
      return { nodes: items, nextPageToken: next }
    }),
    count: read('count attested nodes', (filter) => countWhere('attested_nodes', 'n', nodeWhere(normalizeNodeFilter(filter)))),
  }
}
