import { IdentityError } from '../../errors/identity-error.js'
import type { AttestedNode, BundleRecord, NewEntry, RegistrationEntry, Revocation } from '../datastore/types.js'
import type { Revocation as RevocationMsg } from '../../gen/warrant/types/v1/Revocation.js'
import type { Entry, Entry__Output } from '../../gen/warrant/types/v1/Entry.js'
import type { AttestedNode as AttestedNodeMsg } from '../../gen/warrant/types/v1/AttestedNode.js'
import type { Bundle } from '../../gen/warrant/types/v1/Bundle.js'

/** Domain ↔ wire conversions for the server APIs (gen types stay in api/). */
export function entryToMsg(e: RegistrationEntry): Entry {
  return {
    id: e.id,
    spiffe_id: e.spiffeId,
    parent_id: e.parentId,
    selectors: e.selectors.map((s) => ({ type: s.type, value: s.value })),
    x509_svid_ttl: e.x509SvidTtl,
    jwt_svid_ttl: e.jwtSvidTtl,
    dns_names: e.dnsNames,
    federates_with: e.federatesWith,
    hint: e.hint,
    admin: e.admin,
    downstream: e.downstream,
    expires_at: String(e.expiresAt ?? 0),
    created_at: String(e.createdAt),
    revision: String(e.revision),
  }
}

export function msgToNewEntry(m: Entry__Output): NewEntry {
  const num = (v: string | number | undefined) => Number(v ?? 0)
  if (!m.spiffe_id) throw new IdentityError('ERR_ENTRY_INVALID', 'invalid entry: spiffe_id: required')
  if (!m.parent_id) throw new IdentityError('ERR_ENTRY_INVALID', 'invalid entry: parent_id: required')
  return {
    spiffeId: m.spiffe_id,
    parentId: m.parent_id,
    selectors: (m.selectors ?? []).map((s) => ({ type: s.type, value: s.value })),
    x509SvidTtl: m.x509_svid_ttl ?? 0,
    jwtSvidTtl: m.jwt_svid_ttl ?? 0,
    dnsNames: m.dns_names ?? [],
    federatesWith: m.federates_with ?? [],
    hint: m.hint ?? '',
    admin: !!m.admin,
    downstream: !!m.downstream,
    expiresAt: num(m.expires_at) > 0 ? num(m.expires_at) : null,
  }
}

export function nodeToMsg(n: AttestedNode): AttestedNodeMsg {
  return {
    agent_id: n.agentId,
    attestor: n.attestor,
    selectors: n.selectors,
    serial: n.serial,
    expires_at: String(n.expiresAt),
    banned: n.banned,
    can_reattest: n.canReattest,
    created_at: String(n.createdAt),
    updated_at: String(n.updatedAt),
  }
}

export function bundleToMsg(b: BundleRecord): Bundle {
  return { trust_domain: b.trustDomain, document: b.document, sequence: String(b.sequence) }
}

/** A revocation as a wire message (0 for an absent time). */
export function revocationToMsg(r: Revocation): RevocationMsg {
  return {
    id: String(r.id),
    kind: r.kind,
    value: r.value,
    reason: r.reason,
    created_at: String(r.createdAt),
    not_after: String(r.notAfter ?? 0),
    expires_at: String(r.expiresAt ?? 0),
  }
}
