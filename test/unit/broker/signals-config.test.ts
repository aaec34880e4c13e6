import { describe, expect, it } from 'vitest'
import { toEmbeddedBrokerConfig } from '../../../src/broker/config.js'

const ISSUER = 'https://broker.example.org:8443'

const issuesOf = (raw: unknown): { path: string; message: string }[] => {
  try {
    toEmbeddedBrokerConfig(raw, '/etc/warrant', '/var/lib/warrant')
  } catch (e) {
    return (e as { details: { issues: { path: string; message: string }[] } }).details.issues
  }
  throw new Error('expected a refusal')
}

describe('[broker.signals]', () => {
  it('is off without receivers, and resolves the store path and limits when set', () => {
    expect(toEmbeddedBrokerConfig({ issuer: ISSUER }, '/etc/warrant', '/var/lib/warrant')!.signals).toBeUndefined()
    const c = toEmbeddedBrokerConfig(
      { issuer: ISSUER, signals: { receivers: ['spiffe://example.org/secops/rx', 'spiffe://example.org/soc/'], poll_wait: '10s' } },
      '/etc/warrant',
      '/var/lib/warrant',
    )!
    expect(c.signals).toEqual({
      receivers: { ids: ['spiffe://example.org/secops/rx'], prefixes: ['spiffe://example.org/soc/'] },
      storePath: '/var/lib/warrant/broker-ssf.sqlite3',
      pollWaitMs: 10_000,
      maxStreamsPerReceiver: 4,
      maxQueuedPerStream: 10_000,
    })
    expect(
      toEmbeddedBrokerConfig({ issuer: ISSUER, signals: { receivers: ['spiffe://example.org/rx'], store_path: 'ssf.db' } }, '/etc/warrant', '/x')!.signals!
        .storePath,
    ).toBe('/etc/warrant/ssf.db')
  })

  it('reports bad receivers, unknown keys and an out-of-range poll wait with their paths', () => {
    const paths = issuesOf({ issuer: ISSUER, signals: { receivers: ['not-an-id'], push: true } }).map((i) => i.path)
    expect(paths).toEqual(expect.arrayContaining(['broker.signals.receivers.0', 'broker.signals']))
    expect(issuesOf({ issuer: ISSUER, signals: { receivers: ['spiffe://example.org/rx'], poll_wait: '5m' } })).toEqual([
      { path: 'broker.signals.poll_wait', message: 'must be between 1s and 2m' },
    ])
  })
})
