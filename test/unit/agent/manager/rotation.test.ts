import { describe, expect, it } from 'vitest'
import { isDue, isExpired, renewalTime, retryAt, rotateNow, scheduleRenewal } from '../../../../src/agent/manager/rotation.js'

describe('rotation decisions', () => {
  it('a fresh SVID renews at half its lifetime, jittered by at most ±10% of the half-life', () => {
    expect(scheduleRenewal(1000, 101_000, false, () => 0.5)).toBe(51_000)
    expect(scheduleRenewal(1000, 101_000, false, () => 0)).toBe(46_000)
    expect(scheduleRenewal(1000, 101_000, false, () => 1)).toBe(56_000)
    expect(renewalTime(1000, 101_000, () => 0.5)).toBe(51_000)
  })

  it('an SVID whose entry changed while it was minted renews at once', () => {
    expect(scheduleRenewal(1000, 101_000, true, () => 0.5)).toBe(1000)
  })

  it('is due from its rotation time on and expired from its expiry on', () => {
    const s = { expiresAt: 100, rotateAt: 50 }
    expect([isDue(s, 49), isDue(s, 50), isDue(s, 51)]).toEqual([false, true, true])
    expect([isExpired(s, 99), isExpired(s, 100)]).toEqual([false, true])
  })

  it('an entry change renews now; a signing failure defers to the end of the backoff', () => {
    const s = { expiresAt: 100, rotateAt: 50 }
    rotateNow(s, 10)
    expect(s).toEqual({ expiresAt: 100, rotateAt: 10 })
    retryAt(s, 70)
    expect(s).toEqual({ expiresAt: 100, rotateAt: 70 })
  })
})
