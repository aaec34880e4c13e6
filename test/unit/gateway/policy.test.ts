import { describe, expect, it } from 'vitest'
import { agentAllowed, decide } from '../../../src/gateway/policy.js'
import { parseToolDocument } from '../../../src/gateway/registry.js'
import type { Ceiling } from '../../../src/spiffe/bounds/ceiling.js'

const tool = parseToolDocument(
  't.json',
  JSON.stringify({
    client_id: 'https://tools.example/pay',
    client_name: 'Pay',
    warrant_tool: {
      name: 'pay',
      endpoint: 'https://pay.internal',
      audience: 'https://pay.example/',
      scopes: ['pay:write', 'pay:read'],
      allowed_agents: ['spiffe://td/agents/', 'spiffe://td/ops/one'],
    },
  }),
)

const ceiling = (over: Partial<Ceiling> = {}): Ceiling => ({
  scopes: ['pay:write', 'pay:read', 'other'],
  resources: ['https://pay.example/'],
  maxDelegationDepth: 5,
  mayDelegateTo: [],
  allowBearer: false,
  prefixes: ['/agents/'],
  ...over,
})

describe('gateway policy', () => {
  it('allows an allowed agent within its ceiling (and its token scope)', () => {
    expect(decide(tool, { spiffeId: 'spiffe://td/agents/a1' }, ceiling())).toEqual({ allow: true })
    expect(decide(tool, { spiffeId: 'spiffe://td/ops/one', tokenScopes: ['pay:read', 'pay:write'] }, ceiling())).toEqual({ allow: true })
  })

  it('refuses a caller outside allowed_agents (exact IDs and path-segment prefixes)', () => {
    for (const id of ['spiffe://td/agentsX/a1', 'spiffe://td/ops/one/two', 'spiffe://other/agents/a1', 'spiffe://td/agents']) {
      expect(decide(tool, { spiffeId: id }, ceiling())).toMatchObject({ allow: false, reason: 'agent_not_allowed', error: 'access_denied' })
    }
    expect(agentAllowed(['spiffe://td/agents/'], 'spiffe://td/agents/x')).toBe(true)
    expect(agentAllowed(['spiffe://td/agents/'], 'spiffe://td/agents/')).toBe(false)
  })

  it('refuses when the ceiling lacks a tool scope', () => {
    expect(decide(tool, { spiffeId: 'spiffe://td/agents/a1' }, ceiling({ scopes: ['pay:read'] }))).toMatchObject({
      allow: false,
      reason: 'ceiling.scopes',
    })
  })

  it("refuses when the ceiling lacks the tool's audience as a resource", () => {
    expect(decide(tool, { spiffeId: 'spiffe://td/agents/a1' }, ceiling({ resources: ['https://other.example/'] }))).toMatchObject({
      allow: false,
      reason: 'ceiling.resources',
    })
  })

  it("refuses when the caller's token lacks a tool scope, even within the ceiling", () => {
    expect(decide(tool, { spiffeId: 'spiffe://td/agents/a1', tokenScopes: ['pay:read'] }, ceiling())).toMatchObject({
      allow: false,
      reason: 'token.scope',
      error: 'insufficient_scope',
    })
  })
})
