/**
 * Console sessions, server side: the cookie carries only a random id (256
 * bits); everything else stays here. A session is either a pre-login one
 * (holds the CSRF token and a pending WebAuthn challenge), a setup one
 * (a bootstrap token was used: may only register a credential), or an
 * operator's (after a login, with the method that proved it). Every login
 * creates a new id (no fixation); each session has an idle and an absolute
 * expiry; the CSRF token is per session (synchronizer token).
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'

export type SessionKind = 'pre' | 'setup' | 'operator'

export interface Session {
  readonly id: string
  readonly kind: SessionKind
  readonly csrf: string
  readonly operator?: string
  readonly method?: 'webauthn' | 'totp' | 'bootstrap'
  readonly createdAt: number
  lastSeen: number
  /** A pending WebAuthn challenge (registration or authentication). */
  challenge?: { value: string; purpose: 'register' | 'login'; at: number }
  /** A TOTP secret offered once during setup, until confirmed. */
  pendingTotp?: string
}

const token = () => randomBytes(32).toString('base64url')

export class SessionStore {
  readonly #sessions = new Map<string, Session>()
  readonly #idleMs: number
  readonly #ttlMs: number
  readonly #now: () => number
  /** Pre-login sessions live this long at most (a login page left open). */
  static readonly PRE_TTL_MS = 15 * 60_000
  static readonly MAX = 10_000

  constructor(o: { idleMs: number; ttlMs: number; now?: () => number }) {
    this.#idleMs = o.idleMs
    this.#ttlMs = o.ttlMs
    this.#now = o.now ?? Date.now
  }

  create(kind: SessionKind, fields: { operator?: string; method?: 'webauthn' | 'totp' | 'bootstrap' } = {}): Session {
    this.sweep()
    if (this.#sessions.size >= SessionStore.MAX) {
      // Drop the oldest pre-login sessions first; operators' sessions are never displaced by anonymous traffic.
      for (const [id, s] of this.#sessions) {
        if (s.kind === 'pre') this.#sessions.delete(id)
        if (this.#sessions.size < SessionStore.MAX) break
      }
    }
    const now = this.#now()
    const s: Session = {
      id: token(),
      kind,
      csrf: token(),
      createdAt: now,
      lastSeen: now,
      ...(fields.operator !== undefined ? { operator: fields.operator } : {}),
      ...(fields.method !== undefined ? { method: fields.method } : {}),
    }
    this.#sessions.set(s.id, s)
    return s
  }

  /** The live session of this id (touched), or undefined when unknown or expired (then it is gone). */
  get(id: string | undefined): Session | undefined {
    if (id === undefined || id.length === 0 || id.length > 64) return undefined
    const s = this.#sessions.get(id)
    if (!s) return undefined
    const now = this.#now()
    if (this.#expired(s, now)) {
      this.#sessions.delete(id)
      return undefined
    }
    s.lastSeen = now
    return s
  }

  destroy(id: string): void {
    this.#sessions.delete(id)
  }

  /** Ends every session of an operator (e.g. when a credential changes). */
  destroyOperator(operator: string): void {
    for (const [id, s] of this.#sessions) if (s.operator === operator) this.#sessions.delete(id)
  }

  #expired(s: Session, now: number): boolean {
    const ttl = s.kind === 'pre' ? SessionStore.PRE_TTL_MS : this.#ttlMs
    return now - s.lastSeen >= this.#idleMs || now - s.createdAt >= ttl
  }

  sweep(): void {
    const now = this.#now()
    for (const [id, s] of this.#sessions) if (this.#expired(s, now)) this.#sessions.delete(id)
  }

  get size(): number {
    return this.#sessions.size
  }
}

/** Constant-time comparison of a presented CSRF token with the session's. */
export function csrfMatches(session: Session, presented: unknown): boolean {
  if (typeof presented !== 'string' || presented.length === 0) return false
  const a = Buffer.from(session.csrf)
  const b = Buffer.from(presented)
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * Failed logins per key (client address, operator name) within a window: a
 * key over the limit is refused until its oldest failure leaves the window.
 */
export class LoginLimiter {
  readonly #failures = new Map<string, number[]>()
  readonly #limit: number
  readonly #windowMs: number
  readonly #now: () => number

  constructor(o: { limit: number; windowMs: number; now?: () => number }) {
    this.#limit = o.limit
    this.#windowMs = o.windowMs
    this.#now = o.now ?? Date.now
  }

  #recent(key: string): number[] {
    const now = this.#now()
    const list = (this.#failures.get(key) ?? []).filter((t) => now - t < this.#windowMs)
    if (list.length === 0) this.#failures.delete(key)
    else this.#failures.set(key, list)
    return list
  }

  blocked(keys: readonly string[]): boolean {
    return keys.some((k) => this.#recent(k).length >= this.#limit)
  }

  fail(keys: readonly string[]): void {
    if (this.#failures.size > 100_000) this.#failures.clear()
    for (const k of keys) this.#failures.set(k, [...this.#recent(k), this.#now()])
  }

  succeed(keys: readonly string[]): void {
    for (const k of keys) this.#failures.delete(k)
  }
}
