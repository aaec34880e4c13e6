import { describe, expect, it } from 'vitest'
import { narrowedCeilingSource, Narrowings } from '../../../src/broker/narrowings.js'
import { boundsCeilingSource } from '../../../src/broker/ports.js'
import { decide, parseSignalPolicy } from '../../../src/signals/policy.js'
import { EVENT_TYPES } from '../../../src/signals/event-types.js'
import { BoundsSet } from '../../../src/spiffe/bounds/bounds-set.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'

const TD = TrustDomain.fromString('example.org')
const bounds = BoundsSet.parse(TD, {
  '/agents': { scopes: ['admin', 'read', 'write'], resources: ['https://a.example', 'https://b.example'] },
})
const id = (p: string) => SpiffeId.fromString(`spiffe://example.org${p}`)

describe('ceiling narrowings', () => {
  it('hold the agents under a prefix to the scopes (and resources, when given) left, until they end; others are untouched', async () => {
    let now = 1000
    const n = new Narrowings({ nowSec: () => now })
    const src = narrowedCeilingSource(
      boundsCeilingSource(() => bounds),
      n,
    )
    n.add({ prefix: 'spiffe://example.org/agents/ci', scopes: ['read', 'deploy'], notAfter: 1060, reason: 'test' })
    expect((await src.ceilingFor(id('/agents/ci/i-1'))).scopes).toEqual(['read'])
    expect((await src.ceilingFor(id('/agents/ci'))).scopes).toEqual(['read'])
    expect((await src.ceilingFor(id('/agents/ci/i-1'))).resources).toEqual(['https://a.example', 'https://b.example'])
    expect((await src.ceilingFor(id('/agents/cid'))).scopes).toEqual(['admin', 'read', 'write'])
    expect((await src.ceilingFor(id('/agents/other'))).scopes).toEqual(['admin', 'read', 'write'])
    n.add({ prefix: 'spiffe://example.org/agents', scopes: ['read', 'write'], resources: ['https://b.example'], notAfter: 2000, reason: 'test' })
    expect(await src.ceilingFor(id('/agents/ci/i-1'))).toMatchObject({ scopes: ['read'], resources: ['https://b.example'] })
    expect(await src.ceilingFor(id('/agents/other'))).toMatchObject({ scopes: ['read', 'write'], resources: ['https://b.example'] })
    now = 1060
    expect((await src.ceilingFor(id('/agents/ci/i-1'))).scopes).toEqual(['read', 'write'])
    now = 2000
    expect(await src.ceilingFor(id('/agents/ci/i-1'))).toMatchObject({
      scopes: ['admin', 'read', 'write'],
      resources: ['https://a.example', 'https://b.example'],
    })
    expect(n.active()).toEqual([])
  })

  it('a narrow rule needs scopes and a duration (at most 30 days) and decides the prefix from the rule or the subject', () => {
    expect(() => parseSignalPolicy([{ event: 'credential-change', match: { prefix: 'spiffe://example.org/agents' }, action: 'narrow', scopes: [] }])).toThrow(
      /duration/,
    )
    expect(() =>
      parseSignalPolicy([{ event: 'credential-change', match: { prefix: 'spiffe://example.org/agents' }, action: 'narrow', duration: '1h' }]),
    ).toThrow(/scopes/)
    expect(() =>
      parseSignalPolicy([{ event: 'credential-change', match: { prefix: 'spiffe://example.org/agents' }, action: 'narrow', scopes: [], duration: '31d' }]),
    ).toThrow(/30 days/)
    const policy = parseSignalPolicy([
      { event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/ci' }, action: 'narrow', scopes: ['read'], duration: '10m' },
      {
        event: 'credential-change',
        match: { prefix: 'spiffe://example.org/agents' },
        action: 'narrow',
        prefix: 'spiffe://example.org/agents/',
        scopes: [],
        resources: [],
        duration: '1s',
      },
    ])
    const o = { nowSec: 100, tokenIssuer: 'https://broker.example' }
    expect(decide(policy, { eventType: EVENT_TYPES.credentialChange, agent: { spiffeId: 'spiffe://example.org/agents/ci/x' } }, o)).toEqual({
      action: 'narrow',
      rule: 0,
      prefix: 'spiffe://example.org/agents/ci/x',
      scopes: ['read'],
      notAfter: 700,
    })
    expect(decide(policy, { eventType: EVENT_TYPES.credentialChange, agent: { spiffeId: 'spiffe://example.org/agents/y' } }, o)).toEqual({
      action: 'narrow',
      rule: 1,
      prefix: 'spiffe://example.org/agents',
      scopes: [],
      resources: [],
      notAfter: 101,
    })
    // no SPIFFE ID path to narrow: recorded only
    expect(decide(policy, { eventType: EVENT_TYPES.credentialChange, agent: { instanceId: 'i-1' } }, o)).toMatchObject({ action: 'record' })
  })
})

describe('bounds document narrowings', () => {
  it('names each prefix whose scopes a new bounds set removed (a prefix gone: none left), with the scopes left; widening or no change names none', async () => {
    const { boundsNarrowings } = await import('../../../src/cli/broker-composition.js')
    const prev = BoundsSet.parse(TD, {
      '/agents/ci': { scopes: ['read', 'write'] },
      '/agents/ops': { scopes: ['read'] },
      '/agents/old': { scopes: ['read'] },
      '/agents/same': { scopes: ['read'] },
    })
    const next = BoundsSet.parse(TD, {
      '/agents/ci': { scopes: ['read'] },
      '/agents/ops': { scopes: ['read', 'write'] },
      '/agents/same': { scopes: ['read'] },
    })
    expect(boundsNarrowings(prev, next, TD).sort((a, b) => a.prefix.localeCompare(b.prefix))).toEqual([
      { prefix: 'spiffe://example.org/agents/ci', scopes: ['read'] },
      { prefix: 'spiffe://example.org/agents/old', scopes: [] },
    ])
    expect(boundsNarrowings(next, next, TD)).toEqual([])
  })
})
