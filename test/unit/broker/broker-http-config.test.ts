import { describe, expect, it } from 'vitest'
import { isIdentityError } from '../../../src/errors/identity-error.js'
import { matchesIdList, toEmbeddedBrokerConfig, toStandaloneBrokerConfig } from '../../../src/broker/config.js'

const issues = (fn: () => unknown): { path: string; message: string }[] => {
  try {
    fn()
  } catch (err) {
    if (isIdentityError(err, 'ERR_CONFIG_INVALID')) return err.details!.issues as { path: string; message: string }[]
    throw err
  }
  return []
}

describe('broker config', () => {
  it('embedded: defaults under the server data dir, durations and lists typed', () => {
    const c = toEmbeddedBrokerConfig(
      {
        issuer: 'https://broker.example/b',
        orchestrators: ['spiffe://example.org/orch/', 'spiffe://example.org/o1'],
        federated_trust_domains: ['partner.org'],
        default_token_ttl: '2m',
        dpop: { nonce_required: false, iat_window: '30s' },
      },
      '/etc/warrant',
      '/var/lib/warrant',
    )!
    expect(c).toMatchObject({
      issuer: 'https://broker.example/b',
      bindAddress: { host: '127.0.0.1', port: 8443 },
      adminSocketPath: '/var/lib/warrant/private/broker-admin.sock',
      storePath: '/var/lib/warrant/broker.sqlite3',
      defaultTokenTtlSeconds: 120,
      keyManager: undefined,
    })
    expect(c.dpop).toMatchObject({ nonceRequired: false, iatWindowSeconds: 30 })
    expect(c.federatedTrustDomains.map((t) => t.name)).toEqual(['partner.org'])
    expect(matchesIdList(c.orchestrators, 'spiffe://example.org/orch/x')).toBe(true)
    expect(matchesIdList(c.orchestrators, 'spiffe://example.org/o1')).toBe(true)
    expect(matchesIdList(c.orchestrators, 'spiffe://example.org/o1/sub')).toBe(false)
    expect(matchesIdList(c.orchestrators, 'spiffe://example.org/orchestra')).toBe(false)
    expect(toEmbeddedBrokerConfig(undefined, '/', '/')).toBeUndefined()
  })

  it('relative paths resolve against the config file directory', () => {
    const c = toEmbeddedBrokerConfig(
      { issuer: 'https://b.example', admin_socket_path: 'run/b.sock', store_path: 'db/b.sqlite3', key_manager: { disk: { keys_path: 'keys' } } },
      '/etc/warrant',
      '/data',
    )!
    expect(c.adminSocketPath).toBe('/etc/warrant/run/b.sock')
    expect(c.storePath).toBe('/etc/warrant/db/b.sqlite3')
    expect(c.keyManager?.name).toBe('disk')
  })

  it('reports every problem with its path', () => {
    const found = issues(() =>
      toEmbeddedBrokerConfig({ issuer: 'http://b.example/?q', orchestrators: ['not-an-id'], dpop: { algorithms: ['HS256'] }, unknown_key: 1 }, '/', '/'),
    )
    const paths = found.map((i) => i.path)
    expect(paths).toEqual(expect.arrayContaining(['broker.orchestrators.0', 'broker.dpop.algorithms.0']))
    expect(found.some((i) => i.path === 'broker' || i.path.startsWith('broker'))).toBe(true)
    const issuerIssues = issues(() => toEmbeddedBrokerConfig({ issuer: 'http://b.example/?q' }, '/', '/'))
    expect(issuerIssues.map((i) => i.message)).toEqual(expect.arrayContaining([expect.stringContaining('https'), expect.stringContaining('query')]))
    expect(issues(() => toEmbeddedBrokerConfig({ issuer: 'https://b.example', key_manager: { disk: {}, memory: {} } }, '/', '/')).map((i) => i.path)).toContain(
      'broker.key_manager',
    )
    expect(issues(() => toEmbeddedBrokerConfig({ issuer: 'https://b.example', default_token_ttl: '2h' }, '/', '/')).map((i) => i.path)).toContain(
      'broker.default_token_ttl',
    )
    expect(issues(() => toEmbeddedBrokerConfig({ issuer: 'https://b.example', log_level: 'debug' }, '/', '/')).map((i) => i.path)).toContain('broker.log_level')
    expect(
      issues(() => toEmbeddedBrokerConfig({ issuer: 'https://b.example', orchestrators: ['spiffe://example.org/'] }, '/', '/')).map((i) => i.path),
    ).toContain('broker.orchestrators.0')
  })

  it('standalone: needs the Workload API socket and a key manager', () => {
    expect(issues(() => toStandaloneBrokerConfig({ broker: { issuer: 'https://b.example' } }, '/etc')).map((i) => i.path)).toContain('workload_api')
    expect(
      issues(() => toStandaloneBrokerConfig({ broker: { issuer: 'https://b.example' }, workload_api: { socket_path: 'a.sock' } }, '/etc')).map((i) => i.path),
    ).toContain('broker.key_manager')
    const c = toStandaloneBrokerConfig(
      {
        broker: { issuer: 'https://b.example', key_manager: { memory: {} }, bounds_document_path: 'bounds.jws', log_level: 'debug' },
        workload_api: { socket_path: 'a.sock' },
      },
      '/etc/w',
    )
    expect(c).toMatchObject({
      workloadApiSocket: '/etc/w/a.sock',
      boundsDocumentPath: '/etc/w/bounds.jws',
      storePath: '/etc/w/.warrant/broker/broker.sqlite3',
      logLevel: 'debug',
    })
  })
})
