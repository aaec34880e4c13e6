import { IdentityError } from '../../errors/index.js'
import { F, type Logger } from '../../common/log/logger.js'
import { ckrName, isCkr, pkcs11js, type Handle, type Pkcs11 } from './module.js'

/** Errors after which a session is re-opened and logged in again, then the call retried once. */
const SESSION_LOST = ['CKR_SESSION_HANDLE_INVALID', 'CKR_SESSION_CLOSED', 'CKR_USER_NOT_LOGGED_IN']

interface PooledSession {
  handle: Handle
}

/**
 * A fixed set of logged-in R/W sessions on one token. Each session serves
 * one call at a time (PKCS#11 allows one active operation per session);
 * callers queue when all are busy. pkcs11js runs the `*Async` calls on the
 * libuv thread pool, so sessions sign in parallel.
 */
export class SessionPool {
  readonly #p: Pkcs11
  readonly #slot: Handle
  readonly #pin: () => string
  readonly #log: Logger
  readonly #sessions: PooledSession[] = []
  readonly #idle: PooledSession[] = []
  readonly #waiters: Array<(s: PooledSession) => void> = []
  #closed = false

  private constructor(p: Pkcs11, slot: Handle, pin: () => string, log: Logger) {
    this.#p = p
    this.#slot = slot
    this.#pin = pin
    this.#log = log
  }

  /** Opens `size` sessions and logs in. Throws ERR_HSM_LOGIN_FAILED / ERR_HSM_UNAVAILABLE. */
  static open(p: Pkcs11, slot: Handle, opts: { pin: string; size: number; log: Logger }): SessionPool {
    const pin = opts.pin
    const pool = new SessionPool(p, slot, () => pin, opts.log)
    try {
      for (let i = 0; i < opts.size; i++) {
        const s: PooledSession = { handle: pool.#openSession() }
        pool.#sessions.push(s)
        pool.#idle.push(s)
        // Login state is per token and application: the first login covers every session.
        if (i === 0) pool.#login(s.handle)
      }
    } catch (err) {
      pool.#closeAll()
      throw err
    }
    return pool
  }

  get size(): number {
    return this.#sessions.length
  }

  /** Runs `fn` on a session of its own; re-opens the session and retries once if it was lost. */
  async use<T>(fn: (session: Handle) => T | Promise<T>): Promise<T> {
    const s = await this.#acquire()
    try {
      try {
        return await fn(s.handle)
      } catch (err) {
        if (!isCkr(err, ...SESSION_LOST)) throw err
        this.#log.warn({ [F.REASON]: ckrName(err) }, 'PKCS#11 session lost; re-opening and logging in again')
        this.#reopen(s)
        return await fn(s.handle)
      }
    } finally {
      this.#release(s)
    }
  }

  /** Waits for in-flight calls, logs out (when `logout`) and closes every session. */
  async close(opts: { logout: boolean }): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    const all = this.#sessions.length
    const held: PooledSession[] = []
    while (held.length < all) held.push(await this.#acquireEvenIfClosed())
    if (opts.logout && held[0] !== undefined) {
      try {
        this.#p.C_Logout(held[0].handle)
      } catch {
        // Not logged in (e.g. sessions were closed behind our back): nothing to undo.
      }
    }
    this.#closeAll()
  }

  #openSession(): Handle {
    try {
      return this.#p.C_OpenSession(this.#slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION)
    } catch (cause) {
      throw new IdentityError('ERR_HSM_UNAVAILABLE', `cannot open a PKCS#11 session: ${ckrName(cause) ?? 'error'}`, { cause })
    }
  }

  #login(session: Handle): void {
    try {
      this.#p.C_Login(session, pkcs11js.CKU_USER, this.#pin())
    } catch (cause) {
      if (isCkr(cause, 'CKR_USER_ALREADY_LOGGED_IN')) return
      const name = ckrName(cause)
      if (name === 'CKR_PIN_INCORRECT' || name === 'CKR_PIN_LEN_RANGE' || name === 'CKR_PIN_INVALID') {
        throw new IdentityError('ERR_HSM_LOGIN_FAILED', 'PKCS#11 login failed: incorrect PIN', { details: { reason: name } })
      }
      if (name === 'CKR_PIN_LOCKED' || name === 'CKR_PIN_EXPIRED') {
        throw new IdentityError('ERR_HSM_LOGIN_FAILED', `PKCS#11 login failed: ${name === 'CKR_PIN_LOCKED' ? 'PIN is locked' : 'PIN has expired'}`, {
          details: { reason: name },
        })
      }
      throw new IdentityError('ERR_HSM_UNAVAILABLE', `PKCS#11 login failed: ${name ?? 'error'}`, { details: { reason: name } })
    }
  }

  #reopen(s: PooledSession): void {
    try {
      this.#p.C_CloseSession(s.handle)
    } catch {
      // Usually already gone: that is why we are here.
    }
    s.handle = this.#openSession()
    this.#login(s.handle)
  }

  #closeAll(): void {
    for (const s of this.#sessions) {
      try {
        this.#p.C_CloseSession(s.handle)
      } catch {
        // already closed
      }
    }
    this.#sessions.length = 0
    this.#idle.length = 0
  }

  #acquire(): Promise<PooledSession> {
    if (this.#closed) return Promise.reject(new IdentityError('ERR_HSM_UNAVAILABLE', 'PKCS#11 key manager is closed'))
    return this.#acquireEvenIfClosed()
  }

  #acquireEvenIfClosed(): Promise<PooledSession> {
    const s = this.#idle.pop()
    if (s !== undefined) return Promise.resolve(s)
    return new Promise((resolve) => this.#waiters.push(resolve))
  }

  #release(s: PooledSession): void {
    const next = this.#waiters.shift()
    if (next !== undefined) next(s)
    else this.#idle.push(s)
  }
}
