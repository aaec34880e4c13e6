import { describe, expect, it } from 'vitest'
import { parse as parseToml } from 'smol-toml'
import type { ConfigIssue } from '../../../../src/common/config/issues.js'
import { BoundsConfigSchema, boundsFromConfig } from '../../../../src/server/bounds/config.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

const td = TrustDomain.fromString('corp.example')

function load(toml: string): { issues: ConfigIssue[]; set: ReturnType<typeof boundsFromConfig> } {
  const issues: ConfigIssue[] = []
  const r = BoundsConfigSchema.safeParse(parseToml(toml))
  if (!r.success) throw new Error(r.error.message)
  return { issues, set: boundsFromConfig(r.data, td, issues) }
}

describe('server.bounds: broker ceiling keys', () => {
  it('reads every ceiling key; max_token_ttl is a duration', () => {
    const { issues, set } = load(`
["/agents"]
scopes = ["read", "write"]
resources = ["https://api.corp.example"]
max_token_ttl = "10m"
max_renewals = 4
max_delegation_depth = 2
may_delegate_to = ["spiffe://corp.example/agents/"]
allow_bearer = false
`)
    expect(issues).toEqual([])
    expect(set.get('/agents')).toEqual({
      scopes: ['read', 'write'],
      resources: ['https://api.corp.example'],
      maxTokenTtlSeconds: 600,
      maxRenewals: 4,
      maxDelegationDepth: 2,
      mayDelegateTo: ['spiffe://corp.example/agents/'],
      allowBearer: false,
    })
  })

  it('reports a fractional token TTL and a widening child with their paths', () => {
    const { issues } = load(`
["/agents"]
scopes = ["read"]
max_token_ttl = "1500ms"
["/agents/x"]
scopes = ["admin"]
`)
    expect(issues.map((i) => i.path)).toEqual(['server.bounds./agents.max_token_ttl'])
    const { issues: widen } = load(`
["/agents"]
scopes = ["read"]
["/agents/x"]
scopes = ["admin"]
`)
    expect(widen.map((i) => i.path)).toEqual(['server.bounds./agents/x.scopes'])
  })
})
