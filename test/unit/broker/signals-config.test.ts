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
      transmitters: [],
      policy: { rules: [] },
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

  it('configures the receiver: transmitters and the response policy, checked in the same pass', () => {
    const c = toEmbeddedBrokerConfig(
      {
        issuer: ISSUER,
        signals: {
          transmitters: [{ issuer: 'https://idp.example.com/ssf', ca_file: 'idp-ca.pem', default_confidence: 0.5 }],
          policy: [{ event: 'credential-compromise', match: { prefix: 'spiffe://example.org/agents/' }, action: 'revoke', level: 'instance' }],
        },
      },
      '/etc/warrant',
      '/var/lib/warrant',
    )!
    expect(c.signals!.receivers).toEqual({ ids: [], prefixes: [] })
    expect(c.signals!.transmitters).toEqual([
      { issuer: 'https://idp.example.com/ssf', caFile: '/etc/warrant/idp-ca.pem', defaultConfidence: 0.5, delivery: 'poll' },
    ])
    expect(c.signals!.policy.rules).toHaveLength(1)
    const paths = issuesOf({
      issuer: ISSUER,
      signals: {
        transmitters: [{ issuer: 'http://idp.example.com' }, { issuer: ISSUER }],
        policy: [{ event: 'credential-compromise', match: {}, action: 'revoke', level: 'instance' }],
      },
    }).map((i) => i.path)
    expect(paths).toEqual(['broker.signals.policy.0.match'])
    const second = issuesOf({ issuer: ISSUER, signals: { transmitters: [{ issuer: 'http://idp.example.com' }, { issuer: ISSUER }] } }).map((i) => i.path)
    expect(second).toEqual(['broker.signals.transmitters.0.issuer', 'broker.signals.transmitters.1.issuer'])
    expect(issuesOf({ issuer: ISSUER, signals: { policy: [{ event: 'session-revoked', match: { task: 't' }, action: 'record' }] } })).toEqual([
      { path: 'broker.signals.policy', message: 'a response policy needs at least one transmitter' },
    ])
  })

  it('a step_up rule needs [broker.intents] (on), reported with the rule', () => {
    const signals = {
      transmitters: [{ issuer: 'https://idp.example.com/ssf' }],
      policy: [
        { event: 'credential-compromise', match: { task: 't' }, action: 'record' },
        { event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/' }, action: 'step_up', target: 'instance' },
      ],
    }
    const message = 'step_up needs [broker.intents] (the agent is routed through human approval)'
    expect(issuesOf({ issuer: ISSUER, signals })).toEqual([{ path: 'broker.signals.policy.1.action', message }])
    expect(issuesOf({ issuer: ISSUER, signals, intents: { enabled: false } })).toEqual([{ path: 'broker.signals.policy.1.action', message }])
    const c = toEmbeddedBrokerConfig({ issuer: ISSUER, signals, intents: {} }, '/etc/warrant', '/var/lib/warrant')!
    expect(c.signals!.policy.rules[1]).toMatchObject({ action: 'step_up', target: 'instance', clear_on_approval: true })
  })
})
