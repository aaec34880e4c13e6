/** Row shapes of the PostgreSQL datastore and their mapping to domain records. */
import type { AttestedNode, RegistrationEntry, Selector } from '../types.js'

export interface EntryRow {
  id: string
  spiffe_id: string
  parent_id: string
  x509_ttl: number
  jwt_ttl: number
  hint: string
  admin: boolean
  downstream: boolean
  expires_at: number | null
  created_at: number
  updated_at: number
  revision: number
  selectors: [string, string][]
  dns_names: string[]
  federates_with: string[]
}

export interface NodeRow {
  agent_id: string
  attestor: string
  serial: string
  previous_serial: string
  expires_at: number
  banned: boolean
  can_reattest: boolean
  created_at: number
  updated_at: number
  selectors: [string, string][]
}

export const ENTRY_COLUMNS = `e.id, e.spiffe_id, e.parent_id, e.x509_ttl, e.jwt_ttl, e.hint, e.admin, e.downstream,
  e.expires_at, e.created_at, e.updated_at, e.revision, e.selectors, e.dns_names, e.federates_with`

export const NODE_COLUMNS = `n.agent_id, n.attestor, n.serial, n.previous_serial, n.expires_at, n.banned, n.can_reattest,
  n.created_at, n.updated_at, n.selectors`

/** The stored form of a sorted selector list (JSONB [[type, value], ...]). */
export const selectorsJson = (sorted: readonly Selector[]): string => JSON.stringify(sorted.map((s) => [s.type, s.value]))

const toSelectors = (pairs: [string, string][]): Selector[] => pairs.map(([type, value]) => ({ type, value }))

export function toEntry(r: EntryRow): RegistrationEntry {
  return {
    id: r.id,
    spiffeId: r.spiffe_id,
    parentId: r.parent_id,
    selectors: toSelectors(r.selectors),
    x509SvidTtl: r.x509_ttl,
    jwtSvidTtl: r.jwt_ttl,
    dnsNames: r.dns_names,
    federatesWith: r.federates_with,
    hint: r.hint,
    admin: r.admin,
    downstream: r.downstream,
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
    selectors: toSelectors(r.selectors),
    serial: r.serial,
    expiresAt: r.expires_at,
    previousSerial: r.previous_serial,
    banned: r.banned,
    canReattest: r.can_reattest,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  }
}
