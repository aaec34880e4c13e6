import { describe, expect, it } from 'vitest'
import { parse as parseToml } from 'smol-toml'
import type { ConfigIssue } from '../../../../src/common/config/issues.js'
import { BoundsConfigSchema, boundsFromConfig } from '../../../../src/server/bounds/config.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

const td = TrustDomain.fromString('corp.example')

function load(toml: string): { issues: ConfigIssue[]; json: unknown } {
  const raw = (parseToml(toml) as { server: { bounds: unknown } }).server.bounds
  const r = BoundsConfigSchema.safeParse(raw)
  if (!r.success) return { issues: r.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })), json: undefined }
  const issues: ConfigIssue[] = []
  const set = boundsFromConfig(r.data, td, issues)
  return { issues, json: set.toJSON() }
}

describe('server.bounds config', () => {
  it('reads the issue example', () => {
    const { issues, json } = load(`
[server.bounds."/agents/payments"]
x509_svid_ttl = "15m"
jwt_svid_ttl = "5m"
jwt_audiences = ["spiffe://corp.example/svc/payments-api", "https://payments.corp.example"]
dns_suffixes = []
federates_with = ["partner.example"]
max_instances = 50
require_node_selectors = ["tpm:pcr_policy:prod"]
`)
    expect(issues).toEqual([])
    expect(json).toEqual([
      {
        prefix: '/agents/payments',
        x509_svid_ttl: 900,
        jwt_svid_ttl: 300,
        jwt_audiences: ['https://payments.corp.example', 'spiffe://corp.example/svc/payments-api'],
        dns_suffixes: [],
        federates_with: ['partner.example'],
        max_instances: 50,
        require_node_selectors: ['tpm:pcr_policy:prod'],
      },
    ])
  })

  it.each([
    ['an unknown key', '[server.bounds."/a"]\nttl = "5m"', ['/a']],
    ['a bad duration', '[server.bounds."/a"]\njwt_svid_ttl = "5 minutes"', ['/a.jwt_svid_ttl']],
    ['a sub-second TTL', '[server.bounds."/a"]\njwt_svid_ttl = "1500ms"', ['server.bounds./a.jwt_svid_ttl']],
    [
      'a child wider than its parent',
      '[server.bounds."/a"]\njwt_svid_ttl = "5m"\n[server.bounds."/a/b"]\njwt_svid_ttl = "10m"',
      ['server.bounds./a/b.jwt_svid_ttl'],
    ],
    ['overlapping prefixes', '[server.bounds."/a"]\n[server.bounds."/a/"]', ['server.bounds./a/']],
    ['a cyclic (dot-segment) prefix', '[server.bounds."/a/./b"]', ['server.bounds./a/./b']],
  ])('refuses %s with its path', (_t, toml, paths) => {
    expect(load(toml).issues.map((i) => i.path)).toEqual(paths)
  })
})
