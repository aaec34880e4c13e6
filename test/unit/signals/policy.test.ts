import { describe, expect, it } from 'vitest'
import { EVENT_TYPES } from '../../../src/signals/event-types.js'
import { decide, parseSignalPolicy, signalOf, type Signal } from '../../../src/signals/policy.js'
import type { VerifiedSet } from '../../../src/signals/set.js'
import type { AgentSubject } from '../../../src/signals/subject.js'

const NOW = 1_800_000_000
const BROKER = 'https://broker.example.org'
const AGENT = 'spiffe://example.org/agents/ci/i-1'
const opts = { nowSec: NOW, tokenIssuer: BROKER }

const signal = (agent: AgentSubject, eventType: Signal['eventType'] = EVENT_TYPES.credentialCompromise, confidence?: number): Signal => ({
  eventType,
  agent,
  ...(confidence !== undefined ? { confidence } : {}),
})

const issues = (raw: unknown): { path: string; message: string }[] => {
  try {
    parseSignalPolicy(raw, 'broker.signals.policy')
  } catch (e) {
    const err = e as { code: string; details: { issues: { path: string; message: string }[] } }
    expect(err.code).toBe('ERR_CONFIG_INVALID')
    return err.details.issues
  }
  throw new Error('expected a refusal')
}

describe('parseSignalPolicy', () => {
  it('accepts every action and normalises event names and prefixes', () => {
    const p = parseSignalPolicy([
      { event: 'credential-compromise', match: { prefix: 'spiffe://example.org/agents/' }, min_confidence: 0.8, action: 'revoke', level: 'instance' },
      { event: [EVENT_TYPES.sessionRevoked, 'credential-change'], match: { task: 't-1' }, action: 'revoke', level: 'task' },
      { event: 'assurance-level-change', match: { spiffe_id: AGENT }, action: 'quarantine', duration: '1h' },
      { event: 'token-claims-change', match: { instance: 'inst-1' }, action: 'record' },
      { event: 'session-revoked', match: { prefix: 'spiffe://example.org' }, action: 'revoke', level: 'prefix', prefix: 'spiffe://example.org/agents/ci/' },
    ])
    expect(p.rules[0]!.event).toEqual([EVENT_TYPES.credentialCompromise])
    expect(p.rules[0]!.match.prefix).toBe('spiffe://example.org/agents')
    expect(p.rules[1]!.event).toEqual([EVENT_TYPES.sessionRevoked, EVENT_TYPES.credentialChange])
    expect(p.rules[2]).toMatchObject({ action: 'quarantine', duration: 3_600_000 })
    expect(p.rules[4]).toMatchObject({ prefix: 'spiffe://example.org/agents/ci' })
    expect(parseSignalPolicy(undefined).rules).toEqual([])
  })

  it('reports every problem in one pass, each with its path', () => {
    const got = issues([
      { event: 'verification', match: { task: 't' }, action: 'record' },
      { event: 'credential-compromise', match: { task: 't', instance: 'i' }, action: 'revoke', level: 'instance' },
      { event: 'credential-compromise', match: { spiffe_id: 'not-an-id' }, action: 'revoke', level: 'galaxy' },
      { event: 'credential-compromise', match: { task: 't' }, action: 'teleport' },
      { event: 'credential-compromise', match: { task: 't' }, action: 'record', min_confidence: 2, extra: 1 },
      { event: 'credential-compromise', match: { task: 't' }, action: 'revoke', level: 'instance', prefix: 'spiffe://example.org/a' },
      { event: 'credential-compromise', match: { task: 't' }, action: 'quarantine', duration: '10ms', prefix: 'nope' },
      { event: [], match: { task: 't' }, action: 'record' },
    ])
    const paths = got.map((i) => i.path)
    expect(paths).toEqual(
      expect.arrayContaining([
        'broker.signals.policy.0.event',
        'broker.signals.policy.1.match',
        'broker.signals.policy.2.match.spiffe_id',
        'broker.signals.policy.2.level',
        'broker.signals.policy.3.action',
        'broker.signals.policy.4.min_confidence',
        'broker.signals.policy.4',
        'broker.signals.policy.5.prefix',
        'broker.signals.policy.6.duration',
        'broker.signals.policy.6.prefix',
        'broker.signals.policy.7.event',
      ]),
    )
    expect(got.find((i) => i.path === 'broker.signals.policy.0.event')!.message).toMatch(/unknown event type "verification"/)
  })

  it('step_up: a target (instance or prefix), an optional end, clearing on approval by default; checked in the same pass', () => {
    const p = parseSignalPolicy([
      { event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/' }, action: 'step_up', target: 'instance' },
      { event: 'session-revoked', match: { task: 't' }, action: 'step_up', target: 'prefix', prefix: 'spiffe://example.org/agents/ci/', duration: '4h' },
      { event: 'assurance-level-change', match: { task: 't' }, action: 'step_up', target: 'instance', duration: '1h', clear_on_approval: false },
    ])
    expect(p.rules[0]).toMatchObject({ action: 'step_up', target: 'instance', clear_on_approval: true })
    expect(p.rules[0]).not.toHaveProperty('duration')
    expect(p.rules[1]).toMatchObject({ target: 'prefix', prefix: 'spiffe://example.org/agents/ci', duration: 4 * 3_600_000, clear_on_approval: true })
    expect(p.rules[2]).toMatchObject({ duration: 3_600_000, clear_on_approval: false })
    const got = issues([
      { event: 'credential-change', match: { task: 't' }, action: 'step_up' },
      { event: 'credential-change', match: { task: 't' }, action: 'step_up', target: 'agent' },
      { event: 'credential-change', match: { task: 't' }, action: 'step_up', target: 'instance', prefix: 'spiffe://example.org/a' },
      { event: 'credential-change', match: { task: 't' }, action: 'step_up', target: 'instance', clear_on_approval: false },
      { event: 'credential-change', match: { task: 't' }, action: 'step_up', target: 'prefix', duration: '31d', level: 'instance' },
      { event: 'credential-change', match: { task: 't' }, action: 'step_up', target: 'prefix', prefix: 'not-an-id', duration: '10ms' },
    ])
    expect(got.map((i) => i.path)).toEqual(
      expect.arrayContaining([
        'broker.signals.policy.0.target',
        'broker.signals.policy.1.target',
        'broker.signals.policy.2.prefix',
        'broker.signals.policy.3.duration',
        'broker.signals.policy.4.duration',
        'broker.signals.policy.4',
        'broker.signals.policy.5.prefix',
        'broker.signals.policy.5.duration',
      ]),
    )
    expect(got.find((i) => i.path === 'broker.signals.policy.3.duration')!.message).toMatch(/required when clear_on_approval = false/)
    expect(got.find((i) => i.path === 'broker.signals.policy.2.prefix')!.message).toBe('only for target = "prefix"')
  })

  it('refuses a policy that is not a list', () => {
    expect(issues({ event: 'x' })[0]!.path).toBe('broker.signals.policy')
  })
})

describe('decide', () => {
  const policy = parseSignalPolicy([
    { event: 'credential-compromise', match: { prefix: 'spiffe://example.org/agents/ci' }, min_confidence: 0.8, action: 'revoke', level: 'instance' },
    { event: 'credential-compromise', match: { prefix: 'spiffe://example.org/agents/ci' }, action: 'record' },
    { event: 'session-revoked', match: { spiffe_id: AGENT }, action: 'revoke', level: 'token' },
    { event: 'session-revoked', match: { task: 'task-9' }, action: 'revoke', level: 'task' },
    { event: 'credential-change', match: { spiffe_id: AGENT }, action: 'revoke', level: 'chain' },
    { event: 'assurance-level-change', match: { prefix: 'spiffe://example.org/agents' }, action: 'quarantine', duration: '30m' },
    { event: 'token-claims-change', match: { instance: 'inst-7' }, action: 'quarantine', prefix: 'spiffe://example.org/agents/ci' },
    { event: 'token-claims-change', match: { prefix: 'spiffe://example.org' }, action: 'revoke', level: 'prefix' },
  ])

  it('applies the first matching rule, with its minimum confidence', () => {
    expect(decide(policy, signal({ spiffeId: AGENT }, EVENT_TYPES.credentialCompromise, 0.9), opts)).toEqual({
      action: 'revoke',
      rule: 0,
      level: 'instance',
      value: AGENT,
    })
    expect(decide(policy, signal({ spiffeId: AGENT }, EVENT_TYPES.credentialCompromise, 0.8), opts)).toMatchObject({ action: 'revoke', rule: 0 })
    // below the minimum, or without a confidence: the next rule
    expect(decide(policy, signal({ spiffeId: AGENT }, EVENT_TYPES.credentialCompromise, 0.5), opts)).toEqual({ action: 'record', rule: 1, reason: 'rule' })
    expect(decide(policy, signal({ spiffeId: AGENT }), opts)).toEqual({ action: 'record', rule: 1, reason: 'rule' })
  })

  it('matches the prefix by path segment, the SPIFFE ID exactly, the instance and the task', () => {
    expect(decide(policy, signal({ spiffeId: 'spiffe://example.org/agents/cicd' }, EVENT_TYPES.credentialCompromise, 1), opts)).toEqual({
      action: 'record',
      reason: 'no_rule',
    })
    expect(decide(policy, signal({ spiffeId: 'spiffe://example.org/agents/ci' }, EVENT_TYPES.credentialCompromise, 1), opts)).toMatchObject({ rule: 0 })
    expect(decide(policy, signal({ spiffeId: `${AGENT}/x`, token: { iss: BROKER, jti: 'j' } }, EVENT_TYPES.sessionRevoked), opts)).toEqual({
      action: 'record',
      reason: 'no_rule',
    })
    expect(decide(policy, signal({ taskId: 'task-9' }, EVENT_TYPES.sessionRevoked), opts)).toEqual({
      action: 'revoke',
      rule: 3,
      level: 'task',
      value: 'task-9',
    })
    expect(decide(policy, signal({ taskId: 'task-1' }, EVENT_TYPES.sessionRevoked), opts)).toEqual({ action: 'record', reason: 'no_rule' })
    expect(decide(policy, signal({ instanceId: 'inst-7' }, EVENT_TYPES.tokenClaimsChange), opts)).toEqual({
      action: 'quarantine',
      rule: 6,
      prefix: 'spiffe://example.org/agents/ci',
    })
  })

  it('reads the revocation target from the subject, and records when the subject lacks it', () => {
    const token = { iss: BROKER, jti: 'jti-1' }
    expect(decide(policy, signal({ spiffeId: AGENT, token }, EVENT_TYPES.sessionRevoked), opts)).toEqual({
      action: 'revoke',
      rule: 2,
      level: 'token',
      value: 'jti-1',
    })
    // a token of another issuer is not ours to revoke
    expect(decide(policy, signal({ spiffeId: AGENT, token: { iss: 'https://idp.example', jti: 'jti-1' } }, EVENT_TYPES.sessionRevoked), opts)).toEqual({
      action: 'record',
      rule: 2,
      reason: 'target_missing',
    })
    expect(decide(policy, signal({ spiffeId: AGENT }, EVENT_TYPES.sessionRevoked), opts)).toEqual({ action: 'record', rule: 2, reason: 'target_missing' })
    // chain: by the token when there is one, else by the agent as actor
    expect(decide(policy, signal({ spiffeId: AGENT, token }, EVENT_TYPES.credentialChange), opts)).toEqual({
      action: 'revoke',
      rule: 4,
      level: 'chain',
      value: 'jti-1',
    })
    expect(decide(policy, signal({ spiffeId: AGENT }, EVENT_TYPES.credentialChange), opts)).toEqual({ action: 'revoke', rule: 4, level: 'chain', value: AGENT })
  })

  it('quarantines for the duration, and never a bare trust domain taken from the subject', () => {
    expect(decide(policy, signal({ spiffeId: AGENT }, EVENT_TYPES.assuranceLevelChange), opts)).toEqual({
      action: 'quarantine',
      rule: 5,
      prefix: AGENT,
      notAfter: NOW + 1800,
    })
    expect(decide(policy, signal({ spiffeId: 'spiffe://example.org' }, EVENT_TYPES.tokenClaimsChange), opts)).toEqual({
      action: 'record',
      rule: 7,
      reason: 'target_missing',
    })
    expect(decide(policy, signal({ spiffeId: 'spiffe://example.org/agents/x' }, EVENT_TYPES.tokenClaimsChange), opts)).toEqual({
      action: 'revoke',
      rule: 7,
      level: 'prefix',
      value: 'spiffe://example.org/agents/x',
    })
  })

  it('steps up the subject (instance) or a prefix, with the end when the rule has one; a subject without the target is recorded', () => {
    const p = parseSignalPolicy([
      { event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/' }, action: 'step_up', target: 'instance' },
      { event: 'session-revoked', match: { prefix: 'spiffe://example.org/agents/' }, action: 'step_up', target: 'prefix', duration: '2h' },
      {
        event: 'assurance-level-change',
        match: { task: 't' },
        action: 'step_up',
        target: 'prefix',
        prefix: 'spiffe://example.org/agents/ci',
        duration: '1h',
        clear_on_approval: false,
      },
      { event: 'credential-compromise', match: { task: 't' }, action: 'step_up', target: 'instance' },
    ])
    expect(decide(p, signal({ spiffeId: AGENT }, EVENT_TYPES.credentialChange), opts)).toEqual({
      action: 'step_up',
      rule: 0,
      target: 'instance',
      value: AGENT,
      clearOnApproval: true,
    })
    expect(decide(p, signal({ spiffeId: AGENT }, EVENT_TYPES.sessionRevoked), opts)).toEqual({
      action: 'step_up',
      rule: 1,
      target: 'prefix',
      value: AGENT,
      clearOnApproval: true,
      notAfter: NOW + 7200,
    })
    expect(decide(p, signal({ taskId: 't' }, EVENT_TYPES.assuranceLevelChange), opts)).toEqual({
      action: 'step_up',
      rule: 2,
      target: 'prefix',
      value: 'spiffe://example.org/agents/ci',
      clearOnApproval: false,
      notAfter: NOW + 3600,
    })
    // an instance needs the subject's SPIFFE ID; a prefix from the subject is never a bare trust domain
    expect(decide(p, signal({ taskId: 't' }, EVENT_TYPES.credentialCompromise), opts)).toEqual({ action: 'record', rule: 3, reason: 'target_missing' })
    const prefixOnly = parseSignalPolicy([{ event: 'session-revoked', match: { task: 't' }, action: 'step_up', target: 'prefix' }])
    expect(decide(prefixOnly, signal({ taskId: 't', spiffeId: 'spiffe://example.org' }, EVENT_TYPES.sessionRevoked), opts)).toEqual({
      action: 'record',
      rule: 0,
      reason: 'target_missing',
    })
  })

  it('ignores invalid SPIFFE IDs in subjects and never acts on stream events', () => {
    for (const bad of ['spiffe://example.org/agents/ci/../x', 'spiffe://example.org/agents/ci//x', 'spiffe://Example.org/agents/ci/x'])
      expect(decide(policy, signal({ spiffeId: bad }, EVENT_TYPES.credentialCompromise, 1), opts)).toEqual({ action: 'record', reason: 'no_rule' })
    // a rule naming a stream event cannot be configured; even if one were, it would not act
    const forged = {
      rules: [
        { event: [EVENT_TYPES.verification], match: { prefix: 'spiffe://example.org' }, action: 'revoke', level: 'prefix', prefix: 'spiffe://example.org/a' },
      ],
    }
    expect(decide(forged as never, signal({ streamId: 's', spiffeId: AGENT }, EVENT_TYPES.verification), opts)).toEqual({ action: 'record', reason: 'no_rule' })
  })

  it("signalOf takes the event's confidence, else the stream's default", () => {
    const v = (event: Record<string, unknown>) => ({ eventType: EVENT_TYPES.credentialCompromise, agent: { spiffeId: AGENT }, event }) as unknown as VerifiedSet
    expect(signalOf(v({ confidence: 0.3 }), 0.9).confidence).toBe(0.3)
    expect(signalOf(v({}), 0.9).confidence).toBe(0.9)
    expect(signalOf(v({})).confidence).toBeUndefined()
  })
})
