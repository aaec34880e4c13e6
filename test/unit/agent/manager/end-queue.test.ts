import { describe, expect, it } from 'vitest'
import { Backoff } from '../../../../src/agent/manager/backoff.js'
import { EndQueue } from '../../../../src/agent/manager/end-queue.js'
import type { InstanceClient } from '../../../../src/agent/manager/ports.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

function setup(maxPending = 100) {
  const clock = new FakeClock()
  const state = { down: false, gone: new Set<string>(), ended: new Set<string>(), calls: 0, active: 0, maxActive: 0 }
  const client: InstanceClient = {
    registerInstance: async () => ({ instanceId: 'x', spiffeId: 'spiffe://example.org/x' }),
    endAllInstances: async () => 0,
    async endInstance(id) {
      state.calls++
      state.maxActive = Math.max(state.maxActive, ++state.active)
      await new Promise((r) => setImmediate(r))
      state.active--
      if (state.gone.has(id)) throw new IdentityError('ERR_NOT_FOUND', 'no such instance')
      if (state.down) throw new IdentityError('ERR_UNAVAILABLE', 'server down')
      state.ended.add(id)
    },
  }
  const log = captureLogger()
  const q = new EndQueue({ client, clock, log, backoff: new Backoff({ initialMs: 1000, maxMs: 4000, random: () => 0.5 }), maxPending, closed: () => false })
  return { clock, state, q, log }
}

describe('EndQueue', () => {
  it('an instance the server no longer knows counts as ended; the others stay queued while it is down', async () => {
    const { q, state } = setup()
    state.down = true
    state.gone.add('gone')
    q.add('gone')
    q.add('b')
    await q.flush()
    expect(q.size).toBe(1)
    expect(q.due(Number.MAX_SAFE_INTEGER)).toBe(true)
  })

  it('retries after the backoff, not before, and empties the queue when the server is back', async () => {
    const { q, clock, state, log } = setup()
    state.down = true
    q.add('a')
    q.add('b')
    await q.flush()
    expect(q.size).toBe(2)
    expect(q.due(clock.now())).toBe(false)
    expect(log.lines.some((l) => l.msg === 'Reporting instance ends failed; will retry' && l.fields.retry_in_ms === 1000)).toBe(true)
    state.down = false
    clock.advance(999)
    q.add('c') // still in the backoff: queued, not sent
    expect(state.ended.size).toBe(0)
    clock.advance(1)
    expect(q.due(clock.now())).toBe(true)
    await q.flush()
    expect(q.size).toBe(0)
    expect([...state.ended].sort()).toEqual(['a', 'b', 'c'])
  })

  it('sends at most 8 at a time', async () => {
    const { q, clock, state } = setup()
    state.down = true
    q.add('first')
    await q.flush()
    for (let i = 0; i < 20; i++) q.add(`i${i}`) // in the backoff: queued only
    expect(state.calls).toBe(1)
    state.down = false
    clock.advance(1000)
    await q.flush()
    expect(q.size).toBe(0)
    expect(state.calls).toBe(22)
    expect(state.maxActive).toBe(8)
  })

  it('drops the oldest end beyond its bound (logged)', async () => {
    const { q, state, log } = setup(2)
    state.down = true
    q.add('a')
    await q.flush()
    q.add('b')
    q.add('c')
    expect(q.size).toBe(2)
    expect(log.lines.filter((l) => l.msg.startsWith('Too many unreported instance ends')).map((l) => l.fields.instance_id)).toEqual(['a'])
    expect(() => setup(0)).toThrow(RangeError)
  })
})
