import { describe, expect, it } from 'vitest'
import { AUDIT_EVENT_TYPES, delegationChainHash, parseAuditEvent } from '../../../src/audit/event.js'
import { assertNoSecrets, hashIdentifier } from '../../../src/audit/redact.js'
import { canonicalJson } from '../../../src/audit/canonical.js'

const base = { v: 1, time: '2026-12-05T13:00:00.000Z', type: 'token.exchanged', outcome: 'success' } as const
const JWT = 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln'
const SALT = Buffer.alloc(32, 7)

function code(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code ?? (err as Error).name
  }
  return undefined
}

describe('audit events', () => {
  it('accepts a full event of every type and keeps it as given', () => {
    for (const type of AUDIT_EVENT_TYPES) {
      const outcome = type === 'node_attestation.refused' ? 'refused' : 'success'
      const e = {
        ...base,
        type,
        outcome,
        ...(outcome === 'refused' ? { reason: 'ERR_JOIN_TOKEN_INVALID' } : {}),
        actor: { spiffe_id: 'spiffe://example.org/agents/a', instance: 'i-7f3a' },
        subject: 'spiffe://example.org/agents/b',
        node: 'spiffe://example.org/spire/agent/join_token/x',
        task_id: 'task-1',
        orchestration_id: 'orch-9',
        resource: ['https://api.example.org/'],
        scope: ['read', 'tickets:write'],
        delegation_depth: 2,
        act_chain_hash: delegationChainHash(['spiffe://example.org/agents/a', 'spiffe://example.org/agents/b']),
        token_id: 'b1c2d3',
        key_id: 'kid-1',
        on_behalf_of: hashIdentifier(SALT, 'alice@example.org'),
        attributes: { ttl_seconds: 300, bound: true, binding: 'dpop' },
      }
      expect(parseAuditEvent(e)).toEqual(e)
    }
  })

  it.each([
    ['an unknown member', { ...base, prompt_text: 'hello' }],
    ['a missing time', { v: 1, type: 'token.exchanged', outcome: 'success' }],
    ['a local time', { ...base, time: '2026-12-05T13:00:00+01:00' }],
    ['an unknown type', { ...base, type: 'token.minted' }],
    ['a refusal without a reason', { ...base, outcome: 'refused' }],
    ['prose as a reason', { ...base, outcome: 'error', reason: 'the user alice typed a wrong PIN' }],
    ['a refused attestation marked success', { ...base, type: 'node_attestation.refused' }],
    ['a non-SPIFFE actor', { ...base, actor: { spiffe_id: 'https://example.org/a' } }],
    ['a plain personal identifier', { ...base, on_behalf_of: 'alice@example.org' }],
    ['a JWT in a resource', { ...base, resource: [`https://api.example.org/?t=${JWT}`] }],
    ['a JWT in an attribute', { ...base, attributes: { note: JWT } }],
    ['a PEM block in an attribute', { ...base, attributes: { cert: '-----BEGIN PRIVATE KEY-----' } }],
    ['an attribute named like a secret', { ...base, attributes: { access_token: 'x' } }],
    ['a depth out of range', { ...base, delegation_depth: 65 }],
  ])('refuses %s (ERR_AUDIT_EVENT_INVALID)', (_what, e) => {
    expect(code(() => parseAuditEvent(e))).toBe('ERR_AUDIT_EVENT_INVALID')
  })

  it('names the path of a problem, never the value', () => {
    try {
      parseAuditEvent({ ...base, attributes: { note: JWT } })
      expect.unreachable()
    } catch (err) {
      expect((err as Error).message).toContain('$.attributes.note')
      expect((err as Error).message).not.toContain(JWT)
    }
  })

  it('hashes identifiers with a keyed hash: stable per salt, different across salts, refuses short salts', () => {
    const a = hashIdentifier(SALT, 'alice@example.org')
    expect(a).toMatch(/^h1:[A-Za-z0-9_-]{43}$/)
    expect(hashIdentifier(SALT, 'alice@example.org')).toBe(a)
    expect(hashIdentifier(Buffer.alloc(32, 8), 'alice@example.org')).not.toBe(a)
    expect(a).not.toContain('alice')
    expect(() => hashIdentifier(Buffer.alloc(8), 'x')).toThrow(RangeError)
  })

  it('the secret guard walks arrays and keys', () => {
    expect(code(() => assertNoSecrets({ a: [{ b: ['x', JWT] }] }))).toBe('ERR_AUDIT_EVENT_INVALID')
    expect(code(() => assertNoSecrets({ [JWT]: 1 }))).toBe('ERR_AUDIT_EVENT_INVALID')
    expect(code(() => assertNoSecrets({ pin: '1234' }))).toBe('ERR_AUDIT_EVENT_INVALID')
    expect(() => assertNoSecrets({ spiffe_id: 'spiffe://example.org/a', n: 1, ok: true })).not.toThrow()
  })

  it('the delegation chain hash is SHA-256 over the canonical array, order-sensitive', () => {
    const h = delegationChainHash(['spiffe://a.org/x', 'spiffe://a.org/y'])
    expect(h).toMatch(/^[0-9a-f]{64}$/)
    expect(delegationChainHash(['spiffe://a.org/y', 'spiffe://a.org/x'])).not.toBe(h)
    expect(canonicalJson(['spiffe://a.org/x', 'spiffe://a.org/y'])).toBe('["spiffe://a.org/x","spiffe://a.org/y"]')
  })
})
