import { describe, expect, it } from 'vitest'
import { AccessToken } from '../../../src/broker-client/access-token.js'
import { renewalTime, TokenSource, unrefTimers, type Timers } from '../../../src/broker-client/token-source.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { FakeClock } from '../../helpers/fake-clock.js'

/** Timers driven by a FakeClock: `advance` runs what falls due, in order. */
class FakeTimers implements Timers {
  readonly #clock: FakeClock
  #next = 0
  readonly pending = new Map<number, { at: number; fn: () => void }>()
  constructor(clock: FakeClock) {
    this.#clock = clock
  }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.#next
    this.pending.set(id, { at: this.#clock.now() + ms, fn })
    return id
  }
  clearTimeout(h: unknown): void {
    this.pending.delete(h as number)
  }
  /** Due times of the pending timers. */
  due(): number[] {
    return [...this.pending.values()].map((t) => t.at).sort((a, b) => a - b)
  }
  async advance(ms: number): Promise<void> {
    const end = this.#clock.now() + ms
    for (;;) {
      const next = [...this.pending.entries()].sort((a, b) => a[1].at - b[1].at)[0]
      if (!next || next[1].at > end) break
      this.pending.delete(next[0])
      this.#clock.set(next[1].at)
      next[1].fn()
      for (let i = 0; i < 10; i++) await Promise.resolve()
    }
    this.#clock.set(end)
    for (let i = 0; i < 10; i++) await Promise.resolve()
  }
}

const T0 = Date.UTC(2026, 11, 5, 8)
let serial = 0
const tok = (clock: FakeClock, ttlSec: number) =>
  new AccessToken(`h.${Buffer.from(JSON.stringify({ jti: `j${++serial}` })).toString('base64url')}.s`, {
    tokenType: 'DPoP',
    issuedTokenType: 'urn:ietf:params:oauth:token-type:access_token',
    scopes: ['read'],
    receivedAt: clock.now(),
    expiresAt: clock.now() + ttlSec * 1000,
  })

function setup(o: { renew?: (n: number) => Promise<void> } = {}) {
  const clock = new FakeClock(T0)
  const timers = new FakeTimers(clock)
  const calls = { acquire: 0, renew: 0, renewedFrom: [] as (string | undefined)[] }
  const start = () =>
    TokenSource.start({
      clock,
      timers,
      acquire: async () => {
        calls.acquire++
        return tok(clock, 300)
      },
      renew: async (t) => {
        calls.renew++
        calls.renewedFrom.push(t.jti)
        await o.renew?.(calls.renew)
        return tok(clock, 300)
      },
    })
  return { clock, timers, calls, start }
}

describe('TokenSource: renewal at 75% of the TTL', () => {
  it('renewalTime is 75% of the way from receipt to expiry', () => {
    expect(renewalTime({ receivedAt: 1000, expiresAt: 1000 + 400_000 })).toBe(1000 + 300_000)
    expect(renewalTime({ receivedAt: 0, expiresAt: 1000 }, 0.5)).toBe(500)
  })

  it('schedules the renewal at 75%, replaces the token, and schedules the next from the new one', async () => {
    const { clock, timers, calls, start } = setup()
    const src = await start()
    const first = src.current
    const renewed: string[] = []
    src.on('renewed', (t) => renewed.push(t.jti!))
    expect(src.nextRenewalAt).toBe(T0 + 225_000)
    expect(timers.due()).toEqual([T0 + 225_000])
    await timers.advance(224_999)
    expect(calls.renew).toBe(0)
    expect(await src.getToken()).toBe(first)
    await timers.advance(1)
    expect(calls.renew).toBe(1)
    expect(calls.renewedFrom).toEqual([first.jti])
    expect(src.current).not.toBe(first)
    expect(renewed).toEqual([src.current.jti])
    expect(src.nextRenewalAt).toBe(clock.now() + 225_000)
    await timers.advance(225_000)
    expect(calls.renew).toBe(2)
    expect(src.renewals).toBe(2)
    expect(calls.acquire).toBe(1)
    src.close()
    expect(timers.pending.size).toBe(0)
  })

  it('a failed renewal is surfaced as an error and retried with doubling backoff while the token lives', async () => {
    const { timers, calls, start } = setup({
      renew: async (n) => {
        if (n <= 3) throw new IdentityError('ERR_UNAVAILABLE', 'broker down')
      },
    })
    const src = await start()
    const errors: { code: string; final: boolean; retryInMs?: number | undefined }[] = []
    src.on('error', (err, info) => errors.push({ code: err.code, ...info }))
    await timers.advance(225_000)
    expect(errors).toEqual([{ code: 'ERR_UNAVAILABLE', final: false, retryInMs: 1000 }])
    await timers.advance(1000)
    await timers.advance(2000)
    expect(errors.map((e) => e.retryInMs)).toEqual([1000, 2000, 4000])
    await timers.advance(4000)
    expect(calls.renew).toBe(4)
    expect(src.renewals).toBe(1)
    // the success resets the backoff and schedules from the new token
    expect(src.nextRenewalAt).toBe(T0 + 225_000 + 7000 + 225_000)
    src.close()
  })

  it('stops retrying when the next retry would fall after expiry; getToken then acquires a fresh token', async () => {
    const { clock, timers, calls, start } = setup({
      renew: async () => {
        throw new IdentityError('ERR_UNAVAILABLE', 'broker down')
      },
    })
    const src = await start()
    const finals: boolean[] = []
    src.on('error', (_e, info) => finals.push(info.final))
    await timers.advance(300_000)
    expect(finals.at(-1)).toBe(true)
    expect(finals.filter((f) => !f).length).toBeGreaterThan(3)
    expect(timers.pending.size).toBe(0)
    expect(clock.now()).toBe(T0 + 300_000)
    const fresh = await src.getToken()
    expect(calls.acquire).toBe(2)
    expect(fresh.expiresAt).toBe(clock.now() + 300_000)
    expect(src.nextRenewalAt).toBe(clock.now() + 225_000)
    src.close()
  })

  it('a refusal a retry cannot change (invalid_grant: renewal limit, revoked) is final at once', async () => {
    const { timers, calls, start } = setup({
      renew: async () => {
        throw new IdentityError('ERR_GRANT_INVALID', 'broker-client: renewal refused (invalid_grant)', { details: { oauth_error: 'invalid_grant' } })
      },
    })
    const src = await start()
    const errors: { code: string; final: boolean }[] = []
    src.on('error', (e, info) => errors.push({ code: e.code, final: info.final }))
    await timers.advance(225_000)
    expect(errors).toEqual([{ code: 'ERR_GRANT_INVALID', final: true }])
    expect(timers.pending.size).toBe(0)
    await timers.advance(60_000)
    expect(calls.renew).toBe(1)
    src.close()
  })

  it('getToken during a renewal still answers the valid current token; close stops everything and later calls fail', async () => {
    let release!: () => void
    const { timers, start } = setup({ renew: () => new Promise<void>((r) => (release = r)) })
    const src = await start()
    const first = src.current
    await timers.advance(225_000)
    expect(await src.getToken()).toBe(first)
    src.close()
    release()
    await timers.advance(1)
    expect(src.current).toBe(first)
    await expect(src.getToken()).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })

  it("the default timers are unref'd (a source never keeps the process alive)", () => {
    const h = unrefTimers.setTimeout(() => {}, 1_000_000) as NodeJS.Timeout
    expect(h.hasRef()).toBe(false)
    unrefTimers.clearTimeout(h)
  })
})
