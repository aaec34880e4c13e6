import { parse } from 'smol-toml'
import { describe, expect, it } from 'vitest'
import { federationConfigSchema, relationshipsFromConfig } from '../../../../src/server/federation/config.js'
import { validateRelationship } from '../../../../src/server/federation/relationships.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

const TOML = `
[bundle_endpoint]
address = "0.0.0.0:8443"
refresh_hint = "5m"

[federates_with."partner.example"]
bundle_endpoint_url = "https://partner.example:8443"
bundle_endpoint_profile = "https_spiffe"
endpoint_spiffe_id = "spiffe://partner.example/warrant/server"

[federates_with."web.example"]
bundle_endpoint_url = "https://web.example/bundle"
bundle_endpoint_profile = "https_web"
web_ca_file = "/etc/ca.pem"
refresh_hint = "1m"
`

describe('federation config', () => {
  it('parses SPIRE-like federation settings into valid relationships', () => {
    const cfg = federationConfigSchema.parse(parse(TOML))
    expect(cfg.bundle_endpoint).toMatchObject({ address: '0.0.0.0:8443', refresh_hint: 300_000, profile: 'https_spiffe' })
    const rels = relationshipsFromConfig(cfg)
    expect(rels).toEqual([
      {
        trustDomain: 'partner.example',
        bundleEndpointUrl: 'https://partner.example:8443',
        profile: 'https_spiffe',
        endpointSpiffeId: 'spiffe://partner.example/warrant/server',
      },
      { trustDomain: 'web.example', bundleEndpointUrl: 'https://web.example/bundle', profile: 'https_web', webCaFile: '/etc/ca.pem', refreshHintSeconds: 60 },
    ])
    for (const r of rels) expect(() => validateRelationship(r, TrustDomain.fromString('local.test'))).not.toThrow()
  })

  it.each([
    ['unknown key', { bundle_endpoint: { address: ':8443', colour: 'red' } }],
    ['https_web endpoint without files', { bundle_endpoint: { address: ':8443', profile: 'https_web' } }],
    ['files with https_spiffe', { bundle_endpoint: { address: ':8443', cert_file: '/c.pem', key_file: '/k.pem' } }],
    ['bad profile', { federates_with: { 'a.test': { bundle_endpoint_url: 'https://a.test', bundle_endpoint_profile: 'https' } } }],
    ['bad duration', { federates_with: { 'a.test': { bundle_endpoint_url: 'https://a.test', bundle_endpoint_profile: 'https_web', refresh_hint: 'soon' } } }],
  ])('rejects %s', (_n, raw) => {
    expect(federationConfigSchema.safeParse(raw).success).toBe(false)
  })
})
