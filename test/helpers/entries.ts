import type { NewEntry } from '../../src/server/datastore/types.js'

/**
 * A registration entry to create, with every field at the value a test means
 * when it does not mention it (server-default TTLs, no DNS names, no federation,
 * not admin or downstream, no expiry). Pass the fields the test is about.
 */
export function newEntry(overrides: Partial<NewEntry> = {}): NewEntry {
  return {
    spiffeId: 'spiffe://example.org/workload',
    parentId: 'spiffe://example.org/warrant/agent/join_token/n1',
    selectors: [{ type: 'unix', value: 'uid:1000' }],
    x509SvidTtl: 0,
    jwtSvidTtl: 0,
    dnsNames: [],
    federatesWith: [],
    hint: '',
    admin: false,
    downstream: false,
    expiresAt: null,
    ...overrides,
  }
}
