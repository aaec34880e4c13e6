import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { AuditEventInput } from '../../../src/audit/event.js'
import { parseAuditEvent } from '../../../src/audit/event.js'
import { signalRef, stepUpToWire, StepUps, type StepUpRequest } from '../../../src/broker/step-ups.js'
import { SsfStore } from '../../../src/broker/store/ssf-store.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { tempDir } from '../../helpers/temp.js'

const A = 'spiffe://example.org/agents/ci/a'
const B = 'spiffe://example.org/agents/ci/b'
const OTHER = 'spiffe://example.org/agents/web/c'
const SIGNAL = { issuer: 'https://idp.example', jti: 'jti-1', eventType: 'credential-change' }
const req = (over: Partial<StepUpRequest> = {}): StepUpRequest => ({
  target: 'instance',
  value: A,
  clearOnApproval: true,
  signal: SIGNAL,
  reason: 'signal credential-change jti-1 from https://idp.example (rule 0)',
  ...over,
})

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c()
})

function setup(o: { store?: SsfStore; now?: { t: number } } = {}) {
  const now = o.now ?? { t: 1_000 }
  const audited: AuditEventInput[] = []
  const s = new StepUps({ log: captureLogger(), nowSec: () => now.t, audit: (e) => audited.push(e) })
  if (o.store) s.attach(o.store)
  return { s, now, audited }
}

describe('step-ups', () => {
  it('an instance step-up stands for that agent only, until a human approval of an intent naming it satisfies it', () => {
    const { s, audited } = setup()
    const u = s.add(req())
    expect(s.standing(A).map((x) => x.id)).toEqual([u.id])
    expect(s.standing(`${A}/sub`)).toEqual([])
    expect(s.covering([OTHER, A])?.id).toBe(u.id)
    expect(s.covering([OTHER])).toBeUndefined()
    // an approval whose assessment did not name it (an intent declared before the signal) does not count
    expect(s.satisfy(A, [u.id + 1], { intentId: 'int-0', approver: 'cli:0' })).toEqual([])
    expect(s.covering([A])?.id).toBe(u.id)
    const [done] = s.satisfy(A, [u.id], { intentId: 'int-1', approver: 'cli:1000' })
    expect(done!.satisfied).toEqual([{ agent: A, intentId: 'int-1', approver: 'cli:1000', at: 1_000 }])
    expect(s.covering([A])).toBeUndefined()
    // satisfied by its one agent: no longer in force, nothing for an operator to clear
    expect(s.list()).toEqual([])
    expect(() => s.clear(u.id, 'cli:0')).toThrow(expect.objectContaining({ code: 'ERR_NOT_FOUND' }))
    expect(audited).toEqual([
      {
        type: 'signal',
        outcome: 'success',
        subject: A,
        attributes: {
          action: 'step_up',
          stage: 'satisfied',
          step_up: u.id,
          issuer: SIGNAL.issuer,
          jti: SIGNAL.jti,
          event_type: SIGNAL.eventType,
          target: 'instance',
          value: A,
          intent_id: 'int-1',
          approver: 'cli:1000',
        },
      },
    ])
    // a valid audit event
    expect(() => parseAuditEvent({ v: 1, time: new Date().toISOString(), ...audited[0]! })).not.toThrow()
  })

  it('a prefix step-up is satisfied agent by agent; one held until its end is not satisfied by approvals', () => {
    const { s, now } = setup()
    const p = s.add(req({ target: 'prefix', value: 'spiffe://example.org/agents/ci' }))
    expect(s.covering([A])?.id).toBe(p.id)
    expect(s.covering([B])?.id).toBe(p.id)
    expect(s.covering(['spiffe://example.org/agents/cid'])).toBeUndefined()
    s.satisfy(A, [p.id], { intentId: 'int-a', approver: 'cli:0' })
    expect(s.covering([A])).toBeUndefined()
    expect(s.covering([B])?.id).toBe(p.id)

    const held = s.add(req({ value: OTHER, clearOnApproval: false, notAfter: 1_100 }))
    expect(s.satisfy(OTHER, [held.id], { intentId: 'int-c', approver: 'cli:0' })).toEqual([])
    expect(s.covering([OTHER])?.id).toBe(held.id)
    now.t = 1_100
    expect(s.covering([OTHER])).toBeUndefined()
    expect(s.list().map((x) => x.id)).toEqual([p.id])
  })

  it('an operator clears one for every agent it covers (audited, naming the signal); an unknown or cleared one is not found', () => {
    const { s, audited } = setup()
    const p = s.add(req({ target: 'prefix', value: 'spiffe://example.org/agents/ci' }))
    const c = s.clear(p.id, 'cli:1000', 'false positive')
    expect(c.cleared).toEqual({ at: 1_000, by: 'cli:1000', reason: 'false positive' })
    expect(s.covering([A, B])).toBeUndefined()
    expect(() => s.clear(p.id, 'cli:1000')).toThrow(expect.objectContaining({ code: 'ERR_NOT_FOUND' }))
    expect(() => s.clear(99, 'cli:1000')).toThrow(expect.objectContaining({ code: 'ERR_NOT_FOUND' }))
    expect(audited).toEqual([
      expect.objectContaining({
        type: 'signal',
        subject: 'spiffe://example.org/agents/ci',
        attributes: expect.objectContaining({ action: 'step_up', stage: 'cleared', jti: 'jti-1', cleared_by: 'cli:1000', clear_reason: 'false positive' }),
      }),
    ])
  })

  it('is kept in the SSF store: a restart keeps what stands, satisfied agents and clearings included', () => {
    const tmp = tempDir('wsu-')
    cleanups.push(tmp.cleanup)
    const path = join(tmp.dir, 'ssf.sqlite3')
    const now = { t: 1_000 }
    let store = SsfStore.open(path)
    const first = setup({ store, now })
    const p = first.s.add(req({ target: 'prefix', value: 'spiffe://example.org/agents/ci', notAfter: 5_000 }))
    const i = first.s.add(req({ value: OTHER, signal: { ...SIGNAL, jti: 'jti-2' } }))
    const gone = first.s.add(req({ value: 'spiffe://example.org/agents/x', signal: { ...SIGNAL, jti: 'jti-3' } }))
    first.s.satisfy(A, [p.id], { intentId: 'int-a', approver: 'cli:0' })
    first.s.clear(gone.id, 'cli:0')
    store.close()

    store = SsfStore.open(path)
    cleanups.push(() => store.close())
    const second = setup({ store, now })
    expect(second.s.covering([A])).toBeUndefined()
    expect(second.s.covering([B])?.id).toBe(p.id)
    expect(second.s.covering([OTHER])?.id).toBe(i.id)
    expect(second.s.covering(['spiffe://example.org/agents/x'])).toBeUndefined()
    expect(second.s.list().map((x) => x.id)).toEqual([p.id, i.id])
    expect(second.s.list(true).map((x) => x.id)).toEqual([p.id, i.id, gone.id])
    expect(stepUpToWire(second.s.list()[0]!)).toEqual({
      id: p.id,
      target: 'prefix',
      value: 'spiffe://example.org/agents/ci',
      clear_on_approval: true,
      not_after: 5_000,
      created_at: 1_000,
      reason: 'signal credential-change jti-1 from https://idp.example (rule 0)',
      signal: { issuer: SIGNAL.issuer, jti: 'jti-1', event_type: 'credential-change' },
      satisfied: [{ agent: A, intent_id: 'int-a', approver: 'cli:0', at: 1_000 }],
    })
    // satisfied again after the restart: nothing more to do
    expect(second.s.satisfy(A, [p.id], { intentId: 'int-b', approver: 'cli:0' })).toEqual([])
    now.t = 5_000
    expect(second.s.covering([B])).toBeUndefined()
  })

  it("names the signal compactly for rules: the jti reduced to a code's characters", () => {
    expect(signalRef(SIGNAL)).toBe('credential-change:jti-1')
    expect(signalRef({ ...SIGNAL, jti: 'a b/c"d' + 'x'.repeat(200) })).toBe(`credential-change:a_b_c_d${'x'.repeat(89)}`)
  })
})
