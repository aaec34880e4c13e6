// One store of the PostgreSQL datastore; see postgres-data-store.ts for how the stores are put together.
import { normalizeNodeFilter } from '../../internal/filters.js'
import { checkNodeFields, nodeNotFound, normalizeSelectors } from '../../internal/normalize.js'
import type { AttestedNode, AttestedNodeStore, Selector } from '../../types.js'
import { countWhere, op, paged, type Exec, type OpsOf } from '../context.js'
import { NODE_COLUMNS, selectorsJson, toNode, type NodeRow } from '../rows.js'
import { nodeWhere } from '../where.js'

async function findNode(x: Exec, agentId: string): Promise<AttestedNode | undefined> {
  const [row] = await x.rows<NodeRow>(`SELECT ${NODE_COLUMNS} FROM attested_nodes n WHERE n.agent_id = $1`, [agentId])
  return row === undefined ? undefined : toNode(row)
}

async function writeNodeSelectors(x: Exec, agentId: string, selectors: readonly Selector[]): Promise<void> {
  await x.count('DELETE FROM node_selectors WHERE agent_id = $1', [agentId])
  if (selectors.length === 0) return
  await x.count('INSERT INTO node_selectors (agent_id, type, value) SELECT $1, t, v FROM unnest($2::text[], $3::text[]) AS u(t, v)', [
    agentId,
    selectors.map((s) => s.type),
    selectors.map((s) => s.value),
  ])
}

export function nodesStore(): OpsOf<AttestedNodeStore> {
  return {
    upsert: op({ name: 'upsert attested node', kind: 'write', idempotent: true }, async (x, input) => {
      checkNodeFields(input, true)
      const selectors = normalizeSelectors(input.selectors)
      x.change({ kind: 'node', key: input.agentId, op: 'put' })
      const [row] = await x.rows<NodeRow>(
        `INSERT INTO attested_nodes AS n (agent_id, attestor, serial, previous_serial, expires_at, banned, can_reattest,
          selectors, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
        ON CONFLICT (agent_id) DO UPDATE SET attestor = excluded.attestor, serial = excluded.serial,
          previous_serial = excluded.previous_serial, expires_at = excluded.expires_at, banned = excluded.banned,
          can_reattest = excluded.can_reattest, selectors = excluded.selectors, updated_at = excluded.updated_at
        RETURNING ${NODE_COLUMNS}`,
        [
          input.agentId,
          input.attestor,
          input.serial,
          input.previousSerial,
          input.expiresAt,
          input.banned,
          input.canReattest,
          selectorsJson(selectors),
          x.clock.now(),
        ],
      )
      await writeNodeSelectors(x, input.agentId, selectors)
      return toNode(row as NodeRow)
    }),
    find: op({ name: 'find attested node', kind: 'read' }, async (x, agentId) => findNode(x, agentId)),
    get: op({ name: 'get attested node', kind: 'read' }, async (x, agentId) => {
      const n = await findNode(x, agentId)
      if (n === undefined) throw nodeNotFound()
      return n
    }),
    update: op({ name: 'update attested node', kind: 'write' }, async (x, agentId, patch) => {
      if (patch === null || typeof patch !== 'object') throw new TypeError('patch must be an object')
      checkNodeFields(patch, false)
      const selectors = patch.selectors === undefined ? undefined : normalizeSelectors(patch.selectors)
      // The feed carries what changes an agent's standing (a ban, its selectors), not every SVID renewal.
      if (patch.banned !== undefined || selectors !== undefined) x.change({ kind: 'node', key: agentId, op: 'put' })
      // COALESCE keeps what the patch leaves out; one statement, so concurrent patches of other fields are not lost.
      const [row] = await x.rows<NodeRow>(
        `UPDATE attested_nodes n SET serial = COALESCE($2, serial), previous_serial = COALESCE($3, previous_serial),
          expires_at = COALESCE($4, expires_at), banned = COALESCE($5, banned), selectors = COALESCE($6, selectors), updated_at = $7
        WHERE n.agent_id = $1 RETURNING ${NODE_COLUMNS}`,
        [
          agentId,
          patch.serial ?? null,
          patch.previousSerial ?? null,
          patch.expiresAt ?? null,
          patch.banned ?? null,
          selectors === undefined ? null : selectorsJson(selectors),
          x.clock.now(),
        ],
      )
      if (row === undefined) throw nodeNotFound()
      if (selectors !== undefined) await writeNodeSelectors(x, agentId, selectors)
      return toNode(row)
    }),
    delete: op({ name: 'delete attested node', kind: 'write', single: true }, async (x, agentId) => {
      x.change({ kind: 'node', key: agentId, op: 'delete' })
      const [row] = await x.rows<NodeRow>(`DELETE FROM attested_nodes n WHERE n.agent_id = $1 RETURNING ${NODE_COLUMNS}`, [agentId])
      if (row === undefined) throw nodeNotFound()
      return toNode(row)
    }),
    list: op({ name: 'list attested nodes', kind: 'read' }, async (x, filter, page) => {
      const where = nodeWhere(normalizeNodeFilter(filter))
      const { items, next } = await paged<NodeRow, AttestedNode>(
        x,
        { table: 'attested_nodes', alias: 'n', columns: NODE_COLUMNS, key: 'agent_id', where },
        page,
        toNode,
        (n) => n.agentId,
      )
      return { nodes: items, nextPageToken: next }
    }),
    count: op({ name: 'count attested nodes', kind: 'read' }, async (x, filter) =>
      countWhere(x, 'attested_nodes', 'n', nodeWhere(normalizeNodeFilter(filter))),
    ),
  }
}
