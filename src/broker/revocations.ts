/**
 * The broker's revocations: made by an operator (admin socket, `warrant
 * revoke`), by a token's client (RFC 7009 `/revoke`), or by a revocation
 * admin; stored durably before they are acknowledged; held in memory as a
 * RevocationSet for the checks of every exchange, renewal, delegation and
 * introspection; and handed to listeners (the revocation feed) in order.
 * What each kind covers is decided by tokens/revocation.ts alone.
 */
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { type RevocableClaims, REVOCATION_KINDS, RevocationSet } from '../tokens/revocation.js'
import type { RevocationRequest, StoredRevocation } from './contract.js'
import type { BrokerStore, TokenRecord } from './store/broker-store.js'

export type { RevocationRequest }

export interface BrokerRevocationsOptions {
  /** The longest lifetime of any token the broker issues, seconds. */
  readonly maxTokenTtlSeconds: number
  /** How long an instance, task or actor revocation keeps refusing new tokens, seconds; default 7 days. */
  readonly retentionSeconds?: number
  readonly now: () => number
  readonly log: Logger
}

const FOREVER = 253_402_300_799 // 9999-12-31T23:59:59Z
const MAX_REASON = 512

export class BrokerRevocations {
  readonly set = new RevocationSet()
  readonly #store: BrokerStore
  readonly #o: BrokerRevocationsOptions
  readonly #listeners = new Set<(e: StoredRevocation) => void>()

  constructor(store: BrokerStore, o: BrokerRevocationsOptions) {
    this.#store = store
    this.#o = o
    for (const e of store.listRevocations({ now: o.now() })) this.set.apply(e)
  }

  /** Calls `fn` with each new revocation, after it is durable; returns the unsubscribe. */
  onRevocation(fn: (e: StoredRevocation) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  /** Unexpired revocations after `sinceSeq`, in feed order. */
  list(sinceSeq = 0, includeExpired = false): StoredRevocation[] {
    return this.#store.listRevocations({ sinceSeq, now: this.#o.now(), includeExpired })
  }

  get lastSeq(): number {
    return this.#store.lastRevocationSeq()
  }

  /** The revocation covering this token (or the token about to be issued), if any. */
  covering(rec: Pick<TokenRecord, 'jti' | 'sub' | 'clientId' | 'taskId' | 'actors'>): StoredRevocation | undefined {
    const c: RevocableClaims = {
      jti: rec.jti,
      sub: rec.sub,
      clientId: rec.clientId,
      ...(rec.taskId !== undefined ? { taskId: rec.taskId } : {}),
      actors: rec.actors,
    }
    return this.set.covering(c, this.#o.now()) as StoredRevocation | undefined
  }

  /**
   * Records a revocation (durably: synchronous=FULL) and applies it. The same
   * kind and value revoked again returns the existing unexpired entry (a
   * prefix with another end time is a new entry). Bad input throws
   * ERR_REVOCATION_INVALID and writes nothing.
   */
  revoke(req: RevocationRequest, by: string): { entry: StoredRevocation; created: boolean; tokens: number } {
    const now = this.#o.now()
    const bad = (msg: string): never => {
      throw new IdentityError('ERR_REVOCATION_INVALID', `invalid revocation: ${msg}`)
    }
    if (req === null || typeof req !== 'object') return bad('not an object')
    if (!(REVOCATION_KINDS as readonly string[]).includes(req.kind)) return bad(`kind must be one of ${REVOCATION_KINDS.join(', ')}`)
    if (typeof req.value !== 'string' || req.value.length === 0 || req.value.length > 2048) return bad('value must be a non-empty string')
    if (req.reason !== undefined && (typeof req.reason !== 'string' || req.reason.length > MAX_REASON))
      return bad(`reason must be a string of at most ${MAX_REASON}`)
    if (req.notAfter !== undefined) {
      if (req.kind !== 'prefix') return bad('an end time applies only to a prefix quarantine')
      if (!Number.isSafeInteger(req.notAfter) || req.notAfter <= now) return bad('the end time must be in the future')
    }
    const spiffe = (v: string): string => {
      try {
        return SpiffeId.fromString(v).toString()
      } catch {
        return bad('value must be a SPIFFE ID')
      }
    }
    const retention = this.#o.retentionSeconds ?? 7 * 86_400
    let value = req.value
    let jtis: string[] | undefined
    let expiresAt: number
    switch (req.kind) {
      case 'token':
      case 'chain': {
        if (req.kind === 'chain' && value.startsWith('spiffe://')) {
          value = spiffe(value)
          expiresAt = now + Math.max(retention, this.#o.maxTokenTtlSeconds)
          break
        }
        const rec = this.#store.getToken(value)
        if (!rec) return bad('unknown token')
        jtis = this.#store.subtreeJtis(req.kind === 'token' ? rec.jti : rec.rootJti)
        expiresAt = Math.max(this.#store.maxExpiry(jtis), now + 1)
        break
      }
      case 'instance':
        value = spiffe(value)
        expiresAt = now + Math.max(retention, this.#o.maxTokenTtlSeconds)
        break
      case 'prefix':
        value = spiffe(value)
        expiresAt = req.notAfter ?? FOREVER
        break
      case 'task': {
        const t = this.#store.getTask(value)
        if (!t) return bad('unknown task')
        expiresAt = Math.max(t.expiresAt, now) + this.#o.maxTokenTtlSeconds
        break
      }
    }
    const existing = this.#store.findRevocation(req.kind, value, now)
    if (existing && existing.notAfter === req.notAfter) return { entry: existing, created: false, tokens: 0 }
    let tokens = 0
    const entry = this.#store.tx(() => {
      const e = this.#store.insertRevocation({
        kind: req.kind,
        value,
        ...(jtis ? { jtis } : {}),
        ...(req.reason !== undefined ? { reason: req.reason } : {}),
        createdBy: by,
        createdAt: now,
        ...(req.notAfter !== undefined ? { notAfter: req.notAfter } : {}),
        expiresAt,
      })
      if (jtis) tokens = this.#store.markRevoked(jtis, now)
      if (req.kind === 'task') this.#store.endTask(value, now)
      return e
    })
    this.set.apply(entry)
    this.#o.log.warn(
      {
        [F.METHOD]: 'revoke',
        seq: entry.seq,
        kind: entry.kind,
        value: entry.value,
        covered_jtis: jtis?.length,
        reason: entry.reason,
        by,
        not_after: entry.notAfter,
      },
      'Revocation recorded',
    )
    for (const fn of this.#listeners) {
      try {
        fn(entry)
      } catch (err) {
        this.#o.log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Revocation listener failed')
      }
    }
    this.sweep()
    return { entry, created: true, tokens }
  }

  /** Drops expired entries from memory and the store. */
  sweep(): void {
    const now = this.#o.now()
    this.set.sweep(now)
    this.#store.sweepRevocations(now)
  }
}
