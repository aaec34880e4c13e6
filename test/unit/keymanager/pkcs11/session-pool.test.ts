import { describe, expect, it } from 'vitest'
import { SessionPool } from '../../../../src/keymanager/pkcs11/session-pool.js'
import type { Pkcs11 } from '../../../../src/keymanager/pkcs11/module.js'
import { captureLogger } from '../../../helpers/capture-logger.js'

/** A fake module: sessions are numbered buffers; `loginError` makes C_Login fail once per listed name. */
function fakeModule(opts: { loginErrors?: string[] } = {}) {
  const loginErrors = [...(opts.loginErrors ?? [])]
  const state = { opened: 0, open: new Set<number>(), logins: 0, logouts: 0, closed: [] as number[] }
  const p = {
    C_OpenSession: () => {
      state.opened += 1
      state.open.add(state.opened)
      return Buffer.from([state.opened])
    },
    C_Login: (_s: Buffer, _u: number, _pin: string) => {
      const e = loginErrors.shift()
      if (e !== undefined) throw new Error(e)
      state.logins += 1
    },
    C_Logout: () => {
      state.logouts += 1
    },
    C_CloseSession: (s: Buffer) => {
      state.open.delete(s[0]!)
      state.closed.push(s[0]!)
    },
  }
  return { p: p as unknown as Pkcs11, state }
}

const slot = Buffer.from([1])
const log = captureLogger()

describe('SessionPool', () => {
  it('opens the sessions, logs in once, and never runs two calls on one session at a time', async () => {
    const { p, state } = fakeModule()
    const pool = SessionPool.open(p, slot, { pin: '1111', size: 3, log })
    expect(pool.size).toBe(3)
    expect(state.opened).toBe(3)
    expect(state.logins).toBe(1)
    const busy = new Set<number>()
    let maxParallel = 0
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        pool.use(async (s) => {
          const id = s[0]!
          expect(busy.has(id), `session ${id} in use twice`).toBe(false)
          busy.add(id)
          maxParallel = Math.max(maxParallel, busy.size)
          await new Promise((r) => setImmediate(r))
          busy.delete(id)
          return i
        }),
      ),
    )
    expect(results).toEqual(Array.from({ length: 30 }, (_, i) => i))
    expect(maxParallel).toBe(3)
  })

  it.each(['CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED', 'CKR_USER_NOT_LOGGED_IN'])('re-opens, logs in again and retries once after %s', async (ckr) => {
    const { p, state } = fakeModule({ loginErrors: [] })
    const pool = SessionPool.open(p, slot, { pin: '1111', size: 1, log })
    let calls = 0
    const seen: number[] = []
    const out = await pool.use((s) => {
      calls += 1
      seen.push(s[0]!)
      if (calls === 1) throw new Error(ckr)
      return 'ok'
    })
    expect(out).toBe('ok')
    expect(seen).toEqual([1, 2])
    expect(state.closed).toEqual([1])
    expect(state.logins).toBe(2)
  })

  it('gives up after one retry and passes other errors through untouched', async () => {
    const { p, state } = fakeModule()
    const pool = SessionPool.open(p, slot, { pin: '1111', size: 1, log })
    await expect(pool.use(() => Promise.reject(new Error('CKR_SESSION_HANDLE_INVALID')))).rejects.toThrow('CKR_SESSION_HANDLE_INVALID')
    expect(state.opened).toBe(2)
    const boom = new Error('CKR_MECHANISM_INVALID')
    await expect(pool.use(() => Promise.reject(boom))).rejects.toBe(boom)
    expect(state.opened).toBe(2)
    // the pool still works
    expect(await pool.use(() => 7)).toBe(7)
  })

  it.each([
    { ckr: 'CKR_PIN_INCORRECT', code: 'ERR_HSM_LOGIN_FAILED' },
    { ckr: 'CKR_PIN_LEN_RANGE', code: 'ERR_HSM_LOGIN_FAILED' },
    { ckr: 'CKR_PIN_LOCKED', code: 'ERR_HSM_LOGIN_FAILED' },
    { ckr: 'CKR_TOKEN_NOT_PRESENT', code: 'ERR_HSM_UNAVAILABLE' },
  ])('maps a login failure $ckr to $code, closes its sessions and keeps the PIN out of the error', ({ ckr, code }) => {
    const { p, state } = fakeModule({ loginErrors: [ckr] })
    let err: unknown
    try {
      SessionPool.open(p, slot, { pin: 'pin-7777', size: 2, log })
    } catch (e) {
      err = e
    }
    expect(err).toMatchObject({ code })
    expect(JSON.stringify({ m: (err as Error).message, d: (err as { details?: unknown }).details })).not.toContain('7777')
    expect(state.open.size).toBe(0)
  })

  it('accepts CKR_USER_ALREADY_LOGGED_IN (another user of the module logged in first)', () => {
    const { p } = fakeModule({ loginErrors: ['CKR_USER_ALREADY_LOGGED_IN'] })
    expect(SessionPool.open(p, slot, { pin: '1', size: 1, log }).size).toBe(1)
  })

  it('close waits for in-flight calls, logs out, closes every session and refuses new calls', async () => {
    const { p, state } = fakeModule()
    const pool = SessionPool.open(p, slot, { pin: '1111', size: 2, log })
    let release!: () => void
    const inflight = pool.use(() => new Promise<string>((r) => (release = () => r('done'))))
    const closing = pool.close({ logout: true })
    await expect(pool.use(() => 1)).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' })
    expect(state.open.size).toBe(2)
    release()
    expect(await inflight).toBe('done')
    await closing
    expect(state.logouts).toBe(1)
    expect(state.open.size).toBe(0)
    await pool.close({ logout: true })
    expect(state.logouts).toBe(1)
  })
})
