import { describe, expect, it } from 'vitest'
import { Backoff } from '../../../../src/agent/manager/backoff.js'
import { renewalTime } from '../../../../src/agent/manager/rotation.js'

describe('Backoff', () => {
  it('doubles up to the maximum, jitters within bounds, and resets', () => {
    const mid = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.5 })
    expect([1, 2, 3, 4, 5, 6].map(() => mid.next())).toEqual([100, 200, 400, 800, 1000, 1000])
    mid.reset()
    expect(mid.next()).toBe(100)
    const low = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0.2, random: () => 0 })
    const high = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0.2, random: () => 0.9999 })
    expect(low.next()).toBe(80)
    expect(high.next()).toBe(120)
  })

  it.each([[{ initialMs: 0 }], [{ initialMs: 10, maxMs: 5 }], [{ jitter: 1 }]])('rejects bad options %j', (opts) => {
    expect(() => new Backoff(opts)).toThrow(RangeError)
  })
})

describe('renewalTime', () => {
  it.each([
    [0, 1000],
    [0.5, 1500],
    [1, 2000],
  ])('random %d over a 2000 ms half-life gives ±10%%', (r, offset) => {
    expect(renewalTime(10_000, 10_000 + 4000 * 1, () => r, 0.1) - 10_000).toBe(2000 + ((offset - 1500) / 500) * 200)
  })
})
