import { describe, expect, it } from 'vitest'
import { jwtKey, JwtSvidCache } from '../../../../src/agent/manager/jwt-svid-cache.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

/** A cache on a fake clock and a mint that counts its calls (tokens live 100 s from the clock's now). */
function rig(maxSize = 10) {
  const clock = new FakeClock(1_000_000)
  const log = captureLogger()
  const cache = new JwtSvidCache({ clock, log, maxSize })
  let mints = 0
  let fail: Error | undefined
  const mint = async () => {
    mints++
    if (fail) throw fail
    const now = clock.now()
    return { token: `t${mints}`, issuedAt: now, expiresAt: now + 100_000 }
  }
  return { clock, log, cache, mint, mints: () => mints, failWith: (e: Error | undefined) => (fail = e) }
}

describe('JwtSvidCache', () => {
  it('keys by subject and sorted audience', () => {
    expect(jwtKey('spiffe://td/a', ['x', 'y'])).toBe('spiffe://td/a\nx\ny')
    expect(jwtKey('i1', ['x'])).not.toBe(jwtKey('i1', ['x', 'y']))
  })

  it('serves a cached token until half its lifetime, then mints a new one', async () => {
    const r = rig()
    const o = { spiffeId: 'spiffe://td/a' }
    expect((await r.cache.get('k', r.mint, o)).token).toBe('t1')
    expect(r.cache.fresh('k')?.token).toBe('t1')
    r.clock.advance(49_999)
    expect((await r.cache.get('k', r.mint, o)).token).toBe('t1')
    r.clock.advance(1)
    expect(r.cache.fresh('k')).toBeUndefined()
    expect((await r.cache.get('k', r.mint, o)).token).toBe('t2')
    expect(r.mints()).toBe(2)
  })

  it('shares one mint between concurrent callers of a key', async () => {
    const r = rig()
    const [a, b] = await Promise.all([r.cache.get('k', r.mint, { spiffeId: 'a' }), r.cache.get('k', r.mint, { spiffeId: 'a' })])
    expect(a).toBe(b)
    expect(r.mints()).toBe(1)
  })

  it('serves the cached token while it is valid when a refresh fails (logged), then fails typed', async () => {
    const r = rig()
    await r.cache.get('k', r.mint, { spiffeId: 'spiffe://td/a' })
    r.clock.advance(60_000)
    r.failWith(new Error('server down'))
    expect((await r.cache.get('k', r.mint, { spiffeId: 'spiffe://td/a' })).token).toBe('t1')
    expect(r.log.lines.some((l) => l.level === 'warn' && l.fields.spiffe_id === 'spiffe://td/a')).toBe(true)
    r.clock.advance(40_000) // expired
    await expect(r.cache.get('k', r.mint, { spiffeId: 'a' })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
    r.failWith(new IdentityError('ERR_ID_NOT_AUTHORIZED', 'no'))
    await expect(r.cache.get('k', r.mint, { spiffeId: 'a' })).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
  })

  it('evicts the least recently used token beyond its size', async () => {
    const r = rig(2)
    for (const k of ['a', 'b']) await r.cache.get(k, r.mint, { spiffeId: k })
    r.cache.fresh('a') // a is now the most recently used
    await r.cache.get('c', r.mint, { spiffeId: 'c' })
    expect(r.cache.size).toBe(2)
    expect(r.cache.fresh('b')).toBeUndefined()
    expect(r.cache.fresh('a')).toBeDefined()
  })

  it('keeps nothing when keep() says no, and tells onKept what it kept', async () => {
    const r = rig()
    const kept: string[] = []
    await r.cache.get('gone', r.mint, { spiffeId: 'a', keep: () => false, onKept: (k) => kept.push(k) })
    await r.cache.get('live', r.mint, { spiffeId: 'a', keep: () => true, onKept: (k) => kept.push(k) })
    expect(kept).toEqual(['live'])
    expect(r.cache.fresh('gone')).toBeUndefined()
    r.cache.delete('live')
    expect(r.cache.size).toBe(0)
  })

  it('refuses a size below 1', () => {
    expect(() => new JwtSvidCache({ clock: new FakeClock(), log: captureLogger(), maxSize: 0 })).toThrow(RangeError)
  })
})
