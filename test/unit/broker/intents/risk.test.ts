import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { parseIntentsConfig } from '../../../../src/broker/intents/config.js'
import { assessRisk, globMatch, namespaceFor, utcMinutes, type RiskInput, type RiskPolicy } from '../../../../src/broker/intents/risk.js'

const TD = 'spiffe://corp.example'
const policy = (over: Record<string, unknown> = {}): RiskPolicy =>
  parseIntentsConfig(
    {
      base_risk: 0.1,
      max_autonomous_risk: 0.5,
      actions: [
        { match: 'db:drop', forbid: true },
        { match: 'payments:*', weight: 0.3, human: true },
        { match: 'api:execute', weight: 0.3 },
        { match: 'repo:read', weight: -0.05 },
      ],
      resources: [
        { match: 'https://grid.example/control/*', weight: 0.2 },
        { match: 'https://secrets.example/*', forbid: true },
      ],
      namespaces: [
        { prefix: `${TD}/agents/`, approver_group: 'ops' },
        { prefix: `${TD}/agents/ops/`, max_autonomous_risk: 0.3, human_actions: ['deploy:*'], forbidden_actions: ['rm:*'], approver_group: 'sre' },
      ],
      approver_groups: { ops: {}, sre: {} },
      ...over,
    },
    { baseDir: '/' },
  )!.policy

const NOON = Date.UTC(2026, 0, 1, 12) / 1000
/** A RiskInput whose optional members may be given as undefined (dropped). */
type Loose = { [K in keyof RiskInput]?: RiskInput[K] | undefined }
const clean = (i: Loose): RiskInput => Object.fromEntries(Object.entries(i).filter(([, v]) => v !== undefined)) as unknown as RiskInput
const input = (over: Loose = {}): RiskInput =>
  clean({
    agent: `${TD}/agents/a`,
    action: 'repo:read',
    resource: 'https://git.example/repo',
    nowSec: NOON,
    nodeAttestation: 'tpm',
    history: { refusals: 0, denials: 0, mismatches: 0, signals: 0 },
    ...over,
  })

describe('risk engine', () => {
  it('approves a low-risk intent automatically, naming the threshold', () => {
    const a = assessRisk(policy(), input())
    expect(a.decision).toBe('auto-approve')
    expect(a.rule).toBe('threshold:0.5')
    expect(a.approverGroup).toBe('ops')
    expect(a.factors.map((f) => f.rule)).toEqual(['base', 'action:repo:read', 'node:tpm'])
    expect(a.risk).toBeCloseTo(0.1 - 0.05 - 0.05, 6)
  })

  it('sends a risky intent to a human (threshold), with its breakdown', () => {
    const a = assessRisk(policy(), input({ action: 'api:execute', resource: 'https://grid.example/control/breaker-reset', declaredRisk: 0.85 }))
    expect(a.decision).toBe('needs-human')
    expect(a.rule).toBe('threshold:0.5')
    expect(Object.fromEntries(a.factors.map((f) => [f.rule, f.weight]))).toEqual({
      base: 0.1,
      'action:api:execute': 0.3,
      'resource:https://grid.example/control/*': 0.2,
      'node:tpm': -0.05,
      declared: 0.425,
    })
    expect(a.risk).toBe(0.975)
  })

  it('refuses forbidden actions and resources whatever the risk, and says which rule', () => {
    expect(assessRisk(policy(), input({ action: 'db:drop' }))).toMatchObject({ decision: 'refuse', rule: 'forbid:action:db:drop' })
    expect(assessRisk(policy(), input({ resource: 'https://secrets.example/k' }))).toMatchObject({
      decision: 'refuse',
      rule: 'forbid:resource:https://secrets.example/*',
    })
    expect(assessRisk(policy(), input({ agent: `${TD}/agents/ops/x`, action: 'rm:all' }))).toMatchObject({
      decision: 'refuse',
      rule: `forbid:namespace:${TD}/agents/ops/:rm:*`,
    })
  })

  it('always asks a human for the actions that say so, even at low risk', () => {
    expect(assessRisk(policy(), input({ action: 'payments:refund' }))).toMatchObject({ decision: 'needs-human', rule: 'human:action:payments:*' })
    const ops = assessRisk(policy(), input({ agent: `${TD}/agents/ops/x`, action: 'deploy:prod' }))
    expect(ops).toMatchObject({ decision: 'needs-human', rule: `human:namespace:${TD}/agents/ops/:deploy:*`, approverGroup: 'sre' })
  })

  it('uses the longest namespace prefix: its own threshold and approver group', () => {
    const p = policy()
    expect(namespaceFor(p, `${TD}/agents/ops/x`)?.prefix).toBe(`${TD}/agents/ops/`)
    // 0.1 + 0.3 - 0.05 = 0.35: below the global 0.5, above ops' 0.3
    expect(assessRisk(p, input({ action: 'api:execute' })).decision).toBe('auto-approve')
    expect(assessRisk(p, input({ agent: `${TD}/agents/ops/x`, action: 'api:execute' }))).toMatchObject({
      decision: 'needs-human',
      rule: `threshold:${TD}/agents/ops/:0.3`,
      threshold: 0.3,
      approverGroup: 'sre',
    })
  })

  it('weighs a join-token node above a TPM-attested one, and an unknown node in between', () => {
    const p = policy()
    const tpm = assessRisk(p, input({ nodeAttestation: 'tpm' })).risk
    const jt = assessRisk(p, input({ nodeAttestation: 'join_token' })).risk
    const unknown = assessRisk(p, input({ nodeAttestation: undefined })).risk
    expect(tpm).toBeLessThan(unknown)
    expect(unknown).toBeLessThan(jt)
    expect(assessRisk(p, input({ nodeAttestation: undefined })).factors.find((f) => f.rule === 'node:unknown')?.detail).toContain('not known')
  })

  it('adds the time of day outside the UTC window, across midnight too, and may require a human there', () => {
    const p = policy({ hours: { utc: '22:00-06:00', outside_weight: 0.25, outside_requires_human: true } })
    const at = (h: number) => Date.UTC(2026, 0, 1, h, 30) / 1000
    expect(assessRisk(p, input({ nowSec: at(23) })).factors.some((f) => f.rule === 'hours:outside')).toBe(false)
    expect(assessRisk(p, input({ nowSec: at(3) })).factors.some((f) => f.rule === 'hours:outside')).toBe(false)
    expect(assessRisk(p, input({ nowSec: at(12) }))).toMatchObject({ decision: 'needs-human', rule: 'human:hours:outside' })
    expect(utcMinutes(at(12))).toBe(12 * 60 + 30)
  })

  it('counts recent refusals, mismatches and signals, capped', () => {
    const p = policy()
    const a = assessRisk(p, input({ history: { refusals: 2, denials: 0, mismatches: 1, signals: 5 } }))
    const hist = a.factors.filter((f) => f.rule.startsWith('history:'))
    expect(hist.map((f) => f.rule)).toEqual(['history:refusals', 'history:mismatches', 'history:signals'])
    expect(hist.reduce((s, f) => s + f.weight, 0)).toBeCloseTo(0.6, 6)
    expect(a.decision).toBe('needs-human')
  })

  it('refuses by score only at refuse_at', () => {
    const p = policy({ refuse_at: 0.9 })
    expect(assessRisk(p, input({ action: 'api:execute', resource: 'https://grid.example/control/x', declaredRisk: 1 }))).toMatchObject({
      decision: 'refuse',
      rule: 'refuse_at:0.9',
    })
  })

  it('a step-up sends the intent to a human whatever its risk, naming the signal; forbidding rules still refuse', () => {
    const p = policy()
    const stepUps = [
      { id: 7, signal: 'credential-change:jti-1', reason: 'signal credential-change jti-1 from https://idp.example (rule 0)' },
      { id: 9, signal: 'session-revoked:jti-2', reason: 'signal session-revoked jti-2 from https://idp.example (rule 1)' },
    ]
    const low = assessRisk(p, input())
    expect(low.decision).toBe('auto-approve')
    const stepped = assessRisk(p, input({ stepUps }))
    expect(stepped).toMatchObject({ decision: 'needs-human', rule: 'human:step_up:credential-change:jti-1', approverGroup: 'ops' })
    // listed for the approver, weighing nothing: the risk is the same
    expect(stepped.risk).toBe(low.risk)
    expect(stepped.factors.filter((f) => f.rule.startsWith('step_up:'))).toEqual([
      { rule: 'step_up:7', weight: 0, detail: 'step-up required by signal credential-change jti-1 from https://idp.example (rule 0)' },
      { rule: 'step_up:9', weight: 0, detail: 'step-up required by signal session-revoked jti-2 from https://idp.example (rule 1)' },
    ])
    // it decides before the other human rules, so the decision names the signal
    expect(assessRisk(p, input({ action: 'payments:refund', stepUps }))).toMatchObject({
      decision: 'needs-human',
      rule: 'human:step_up:credential-change:jti-1',
    })
    expect(assessRisk(p, input({ action: 'db:drop', stepUps }))).toMatchObject({ decision: 'refuse', rule: 'forbid:action:db:drop' })
    expect(
      assessRisk(policy({ refuse_at: 0.9 }), input({ action: 'api:execute', resource: 'https://grid.example/control/x', declaredRisk: 1, stepUps })),
    ).toMatchObject({
      decision: 'refuse',
      rule: 'refuse_at:0.9',
    })
    // no step-up, or an empty list: as before
    expect(assessRisk(p, input({ stepUps: [] }))).toEqual(low)
  })

  it('globs: * spans any characters, the rest is literal', () => {
    expect(globMatch('payments:*', 'payments:transfer')).toBe(true)
    expect(globMatch('https://a.example/*', 'https://a.example/x/y?z')).toBe(true)
    expect(globMatch('a.b', 'axb')).toBe(false)
    expect(globMatch('*', '')).toBe(true)
    expect(globMatch('x(y)+', 'x(y)+')).toBe(true)
  })

  describe('properties', () => {
    const histories = fc.record({ refusals: fc.nat(20), denials: fc.nat(20), mismatches: fc.nat(20), signals: fc.nat(20) })
    const inputs = fc.record({
      agent: fc.constantFrom(`${TD}/agents/a`, `${TD}/agents/ops/x`, `${TD}/tools/t`),
      action: fc.constantFrom('repo:read', 'api:execute', 'payments:transfer', 'deploy:prod', 'db:drop', 'rm:x', 'other'),
      resource: fc.constantFrom('https://git.example/r', 'https://grid.example/control/x', 'https://secrets.example/k'),
      declaredRisk: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
      nodeAttestation: fc.option(fc.constantFrom('tpm', 'join_token', 'x509pop', 'weird'), { nil: undefined }),
      nowSec: fc.integer({ min: 0, max: 4_000_000_000 }),
      history: histories,
    })

    it('risk is always within [0, 1] and the factors are what it adds up from', () => {
      const p = policy({ hours: { utc: '08:00-18:00' } })
      fc.assert(
        fc.property(inputs, (i) => {
          const a = assessRisk(p, clean(i))
          expect(a.risk).toBeGreaterThanOrEqual(0)
          expect(a.risk).toBeLessThanOrEqual(1)
          const sum = a.factors.reduce((s, f) => s + f.weight, 0)
          expect(a.risk).toBeCloseTo(Math.min(1, Math.max(0, sum)), 3)
          expect(a.rule.length).toBeGreaterThan(0)
        }),
      )
    })

    it('declaring a higher risk never lowers the risk nor turns a human decision into an automatic one', () => {
      const p = policy()
      const rank = { 'auto-approve': 0, 'needs-human': 1, refuse: 2 } as const
      fc.assert(
        fc.property(inputs, fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), (i, x, y) => {
          const [lo, hi] = x <= y ? [x, y] : [y, x]
          const a = assessRisk(p, clean({ ...i, declaredRisk: lo }))
          const b = assessRisk(p, clean({ ...i, declaredRisk: hi }))
          expect(b.risk).toBeGreaterThanOrEqual(a.risk)
          expect(rank[b.decision]).toBeGreaterThanOrEqual(rank[a.decision])
          // and declaring nothing is never riskier than declaring something
          expect(assessRisk(p, clean({ ...i, declaredRisk: undefined })).risk).toBeLessThanOrEqual(a.risk)
        }),
      )
    })

    it('a step-up never lets an intent through automatically, and never changes a refusal', () => {
      const p = policy()
      fc.assert(
        fc.property(inputs, (i) => {
          const without = assessRisk(p, clean(i))
          const withStepUp = assessRisk(p, clean({ ...i, stepUps: [{ id: 1, signal: 'credential-change:x', reason: 'signal credential-change x' }] }))
          expect(withStepUp.decision).not.toBe('auto-approve')
          expect(withStepUp.risk).toBe(without.risk)
          if (without.decision === 'refuse') expect(withStepUp).toMatchObject({ decision: 'refuse', rule: without.rule })
          else expect(withStepUp.rule).toBe('human:step_up:credential-change:x')
        }),
      )
    })

    it('a worse history never lowers the risk', () => {
      const p = policy()
      fc.assert(
        fc.property(inputs, histories, (i, extra) => {
          const worse = {
            refusals: i.history.refusals + extra.refusals,
            denials: i.history.denials + extra.denials,
            mismatches: i.history.mismatches + extra.mismatches,
            signals: i.history.signals + extra.signals,
          }
          expect(assessRisk(p, clean({ ...i, history: worse })).risk).toBeGreaterThanOrEqual(assessRisk(p, clean(i)).risk)
        }),
      )
    })

    it('a forbidden action is refused whatever else is true; an auto-approval is always at or below its threshold', () => {
      const p = policy()
      fc.assert(
        fc.property(inputs, (i) => {
          const a = assessRisk(p, clean(i))
          if (i.action === 'db:drop' || i.resource.startsWith('https://secrets.example/')) expect(a.decision).toBe('refuse')
          if (a.decision === 'auto-approve') expect(a.risk).toBeLessThanOrEqual(a.threshold)
          if (i.action === 'payments:transfer') expect(a.decision).not.toBe('auto-approve')
        }),
      )
    })
  })
})

describe('[broker.intents] config', () => {
  it('defaults, durations and files resolved against the config directory', () => {
    const c = parseIntentsConfig(
      {
        approver_groups: { ops: { webhook_url: 'https://hooks.example/x', email: ['a@example.com'] } },
        smtp: { host: 'relay', from: 'w@example.com', ca_file: 'ca.pem' },
      },
      { baseDir: '/etc/warrant' },
    )!
    expect(c.tokenTtlSeconds).toBe(60)
    expect(c.approvalTtlSeconds).toBe(600)
    expect(c.pollIntervalSeconds).toBe(2)
    expect(c.policy.maxAutonomousRisk).toBe(0.5)
    expect(c.smtp).toMatchObject({ host: 'relay', port: 587, caFile: '/etc/warrant/ca.pem' })
    expect(c.mismatchSignal).toBe('session-revoked')
  })

  it('absent or disabled: no intents', () => {
    expect(parseIntentsConfig(undefined, { baseDir: '/' })).toBeUndefined()
    expect(parseIntentsConfig({ enabled: false }, { baseDir: '/' })).toBeUndefined()
  })

  it('every problem with its path', () => {
    const bad = () =>
      parseIntentsConfig(
        {
          token_ttl: '1h',
          refuse_at: 0.2,
          namespaces: [{ prefix: 'spiffe://corp.example/a/', approver_group: 'nobody' }],
          approver_groups: { g: { email: ['x@example.com'] } },
        },
        { baseDir: '/' },
      )
    expect(bad).toThrow(/broker\.intents\.token_ttl/)
    expect(bad).toThrow(/broker\.intents\.refuse_at/)
    expect(bad).toThrow(/broker\.intents\.namespaces\.0\.approver_group/)
    expect(bad).toThrow(/broker\.intents\.approver_groups\.g\.email/)
    expect(() => parseIntentsConfig({ max_autonomous_risk: 2, unknown_key: 1 }, { baseDir: '/' })).toThrow(
      /max_autonomous_risk[\s\S]*unknown_key|unknown_key[\s\S]*max_autonomous_risk/,
    )
  })
})
