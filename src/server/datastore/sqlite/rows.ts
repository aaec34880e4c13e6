/** Row shapes of the SQLite datastore and their mapping to domain records. */
import { compareSelectors } from '../internal/normalize.js'
import type { AttestedNode, RegistrationEntry, Selector } from '../types.js'

export interface EntryRow {
  id: string
  spiffe_id: string
  parent_id: string
  x509_ttl: number
  jwt_ttl: number
  hint: string
  admin: number
  downstream: number
  expires_at: number | null
  created_at: number
  updated_at: number
  revision: number
  selectors: string
  dns_names: string
  federates_with: string
}

export interface NodeRow {
  agent_id: string
  attestor: string
  serial: string
  previous_serial: string
  expires_at: number
  banned: number
  can_reattest: number
  created_at: number
  updated_at: number
  selectors: string
}

export const ENTRY_COLUMNS = `e.id, e.spiffe_id, e.parent_id, e.x509_ttl, e.jwt_ttl, e.hint, e.admin, e.downstream,
  e.expires_at, e.created_at, e.updated_at, e.revision,
  (SELECT json_group_array(json_array(s.type, s.value)) FROM entry_selectors s WHERE s.entry_id = e.id) AS selectors,
  (SELECT json_group_array(d.dns_name ORDER BY d.position) FROM entry_dns_names d WHERE d.entry_id = e.id) AS dns_names,
  (SELECT json_group_array(f.trust_domain ORDER BY f.position) FROM entry_federates_with f WHERE f.entry_id = e.id) AS federates_with`

export const NODE_COLUMNS = `n.agent_id, n.attestor, n.serial, n.previous_serial, n.expires_at, n.banned, n.can_reattest,
  n.created_at, n.updated_at,
  (SELECT json_group_array(json_array(s.type, s.value)) FROM node_selectors s WHERE s.agent_id = n.agent_id) AS selectors`

function parseSelectors(json: string): Selector[] {
  const pairs = JSON.parse(json) as [string, string][]
  return pairs.map(([type, value]) => ({ type, value })).sort(compareSelectors)
}

export function toEntry(r: EntryRow): RegistrationEntry {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    parentId: r.parent_id,
    selectors: parseSelectors(r.selectors),
    x509SvidTtl: r.x509_ttl,
    jwtSvidTtl: r.jwt_ttl,
    dnsNames: JSON.parse(r.dns_names) as string[],
    federatesWith: JSON.parse(r.federates_with) as string[],
    hint: r.hint,
    admin: r.admin === 1,
    downstream: r.downstream === 1,
    expiresAt: r.expires_at,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    revision: r.revision,
  }
}

export function toNode(r: NodeRow): AttestedNode {
  return {
    agentId: r.agent_id,
    attestor: r.attestor,
    selectors: parseSelectors(r.selectors),
    serial: r.serial,
    expiresAt: r.expires_at,
    previousSerial: r.previous_serial,
    banned: r.banned === 1,
    canReattest: r.can_reattest === 1,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }
}
