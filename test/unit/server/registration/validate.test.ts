import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import type { NewEntry } from '../../../../src/server/datastore/types.js'
import { AGENT_PATH_PREFIX, isAgentId, serverIdOf, validateEntry, type EntryLimits } from '../../../../src/server/registration/validate.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { newEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('example.org')
const limits: EntryLimits = { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 }

function entry(over: Partial<NewEntry> = {}): NewEntry {
  return newEntry({ spiffeId: 'spiffe://example.org/ns/web', parentId: 'spiffe://example.org/warrant/agent/join_token/abc', ...over })
}

function issuesOf(e: NewEntry): { path: string; message: string }[] {
  try {
    validateEntry(e, limits)
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError)
    expect((err as IdentityError).code).toBe('ERR_ENTRY_INVALID')
    return (err as IdentityError).details!.issues as { path: string; message: string }[]
  }
  throw new Error('expected ERR_ENTRY_INVALID')
}

describe('validateEntry', () => {
  it.each<{ title: string; over: Partial<NewEntry>; path: string }>([
    { title: 'malformed spiffe_id', over: { spiffeId: 'not-an-id' }, path: 'spiffe_id' },
    { title: 'spiffe_id in another trust domain', over: { spiffeId: 'spiffe://other.org/ns/web' }, path: 'spiffe_id' },
    { title: 'spiffe_id without a path', over: { spiffeId: 'spiffe://example.org' }, path: 'spiffe_id' },
    { title: 'reserved /warrant/ spiffe_id (agent)', over: { spiffeId: 'spiffe://example.org/warrant/agent/x' }, path: 'spiffe_id' },
    { title: 'reserved /warrant/ spiffe_id (server)', over: { spiffeId: 'spiffe://example.org/warrant/server' }, path: 'spiffe_id' },
    { title: 'malformed parent_id', over: { parentId: 'http://example.org/x' }, path: 'parent_id' },
    { title: 'parent_id in another trust domain', over: { parentId: 'spiffe://other.org/warrant/agent/x' }, path: 'parent_id' },
    { title: 'self-parent', over: { parentId: 'spiffe://example.org/ns/web' }, path: 'parent_id' },
    { title: 'no selectors', over: { selectors: [] }, path: 'selectors' },
    { title: 'selectors not an array', over: { selectors: undefined as unknown as [] }, path: 'selectors' },
    {
      title: 'selector with a bad type',
      over: {
        selectors: [
          { type: 'unix', value: 'uid:1' },
          { type: 'Bad-Type', value: 'x' },
        ],
      },
      path: 'selectors.1',
    },
    { title: 'selector with an empty value', over: { selectors: [{ type: 'unix', value: '' }] }, path: 'selectors.0' },
    { title: 'negative x509 TTL', over: { x509SvidTtl: -1 }, path: 'x509_svid_ttl' },
    { title: 'x509 TTL over the limit', over: { x509SvidTtl: 86_401 }, path: 'x509_svid_ttl' },
    { title: 'fractional x509 TTL', over: { x509SvidTtl: 1.5 }, path: 'x509_svid_ttl' },
    { title: 'negative JWT TTL', over: { jwtSvidTtl: -5 }, path: 'jwt_svid_ttl' },
    { title: 'JWT TTL over the limit', over: { jwtSvidTtl: 3_601 }, path: 'jwt_svid_ttl' },
    { title: 'NaN JWT TTL', over: { jwtSvidTtl: Number.NaN }, path: 'jwt_svid_ttl' },
    { title: 'DNS name with underscore', over: { dnsNames: ['ok.example.org', 'bad_name.example'] }, path: 'dns_names.1' },
    { title: 'DNS name with a leading dash', over: { dnsNames: ['-web.example.org'] }, path: 'dns_names.0' },
    { title: 'empty DNS name', over: { dnsNames: [''] }, path: 'dns_names.0' },
    { title: 'DNS label over 63 characters', over: { dnsNames: [`${'a'.repeat(64)}.example.org`] }, path: 'dns_names.0' },
    { title: 'wildcard in the middle', over: { dnsNames: ['a.*.example.org'] }, path: 'dns_names.0' },
    { title: 'federating with the local trust domain', over: { federatesWith: ['example.org'] }, path: 'federates_with.0' },
    { title: 'invalid federated trust domain', over: { federatesWith: ['partner.example', 'Not A TD!'] }, path: 'federates_with.1' },
    { title: 'hint over 1024 bytes', over: { hint: 'h'.repeat(1025) }, path: 'hint' },
    { title: 'hint over 1024 bytes in UTF-8', over: { hint: 'é'.repeat(513) }, path: 'hint' },
    { title: 'hint not a string', over: { hint: 3 as unknown as string }, path: 'hint' },
    { title: 'expires_at zero', over: { expiresAt: 0 }, path: 'expires_at' },
    { title: 'expires_at negative', over: { expiresAt: -1 }, path: 'expires_at' },
    { title: 'expires_at infinite', over: { expiresAt: Number.POSITIVE_INFINITY }, path: 'expires_at' },
  ])('$title → ERR_ENTRY_INVALID at $path', ({ over, path }) => {
    const issues = issuesOf(entry(over))
    expect(issues.map((i) => i.path)).toContain(path)
    for (const i of issues) expect(i.message.length).toBeGreaterThan(0)
  })

  it('reports several problems together, and the message names each path', () => {
    const e = entry({
      spiffeId: 'spiffe://other.org/x',
      selectors: [],
      x509SvidTtl: -1,
      dnsNames: ['bad name'],
      federatesWith: ['example.org'],
      hint: 'x'.repeat(2000),
      expiresAt: -3,
    })
    let err: IdentityError | undefined
    try {
      validateEntry(e, limits)
    } catch (x) {
      err = x as IdentityError
    }
    expect(err?.code).toBe('ERR_ENTRY_INVALID')
    const paths = (err!.details!.issues as { path: string }[]).map((i) => i.path)
    expect(paths).toEqual(expect.arrayContaining(['spiffe_id', 'selectors', 'x509_svid_ttl', 'dns_names.0', 'federates_with.0', 'hint', 'expires_at']))
    for (const p of paths) expect(err!.message).toContain(`${p}:`)
  })

  it.each<{ title: string; over: Partial<NewEntry> }>([
    { title: 'the server as parent', over: { parentId: serverIdOf(td).toString() } },
    { title: 'TTLs at the limits', over: { x509SvidTtl: 86_400, jwtSvidTtl: 3_600 } },
    { title: 'wildcard DNS name', over: { dnsNames: ['*.example.org', 'localhost', 'a-b.c'] } },
    { title: 'a hint of 1024 bytes', over: { hint: 'h'.repeat(1024) } },
    { title: 'an expiry', over: { expiresAt: Date.UTC(2030, 0, 1) } },
    { title: 'a parent that is another workload', over: { parentId: 'spiffe://example.org/ns/parent' } },
  ])('accepts $title', ({ over }) => {
    expect(() => validateEntry(entry(over), limits)).not.toThrow()
  })

  it('normalises: sorted unique selectors, deduplicated DNS names, sorted unique federates_with', () => {
    const out = validateEntry(
      entry({
        selectors: [
          { type: 'unix', value: 'uid:1000' },
          { type: 'k8s', value: 'ns:a' },
          { type: 'unix', value: 'uid:1000' },
          { type: 'unix', value: 'gid:5' },
        ],
        dnsNames: ['b.example.org', 'a.example.org', 'b.example.org'],
        federatesWith: ['zeta.example', 'alpha.example', 'zeta.example'],
      }),
      limits,
    )
    expect(out.selectors).toEqual([
      { type: 'k8s', value: 'ns:a' },
      { type: 'unix', value: 'gid:5' },
      { type: 'unix', value: 'uid:1000' },
    ])
    expect(out.dnsNames).toEqual(['b.example.org', 'a.example.org'])
    expect(out.federatesWith).toEqual(['alpha.example', 'zeta.example'])
    expect(out.spiffeId).toBe('spiffe://example.org/ns/web')
    expect(out.admin).toBe(false)
  })

  it('does not modify its input', () => {
    const e = entry({
      selectors: [
        { type: 'z', value: '1' },
        { type: 'a', value: '1' },
      ],
      federatesWith: ['b.example', 'a.example'],
    })
    const copy = structuredClone(e)
    validateEntry(e, limits)
    expect(e).toEqual(copy)
  })
})

describe('server and agent IDs', () => {
  it.each([
    ['spiffe://example.org/warrant/agent/join_token/abc', true],
    ['spiffe://example.org/warrant/agent/tpm/x', true],
    ['spiffe://example.org/warrant/server', false],
    ['spiffe://example.org/warrant/agentx', false],
    ['spiffe://example.org/ns/warrant/agent/x', false],
  ])('isAgentId(%s) = %s', (id, expected) => {
    expect(isAgentId(SpiffeId.fromString(id))).toBe(expected)
  })
  it('serverIdOf', () => {
    expect(serverIdOf(td).toString()).toBe('spiffe://example.org/warrant/server')
    expect(AGENT_PATH_PREFIX).toBe('/warrant/agent/')
  })
})
