/**
 * Step-ups: a signal's `step_up` action (src/signals/policy.ts) routes an
 * agent's next request through a human. While a step-up stands for an agent:
 *
 * - its next intent needs a human whatever its risk (the intents' risk
 *   engine gets the step-up as a factor, `step_up:<id>`, and decides
 *   `human:step_up:<event>:<jti>`, naming the signal);
 * - the broker issues it no plain token (client credentials, exchange,
 *   renewal, delegation, Txn-Token): ERR_STEP_UP_REQUIRED, on the wire
 *   `interaction_required`, telling it to declare an intent at /bc-authorize.
 *
 * A human approving an intent whose assessment named the step-up satisfies it
 * for that agent (one agent for `instance`; each agent under a `prefix` on
 * its own), unless it was made with `clearOnApproval = false`: then it holds
 * until its end. It ends at `notAfter` in any case, or when an operator clears
 * it (`warrant signal clear-step-up`). Every satisfaction and clearing is a
 * `signal` audit event naming the signal (the step-up itself is audited by the
 * receiver with the signal's other actions). Kept in the SSF store, so a
 * restart keeps what stands; checked in memory on the token path.
 */
import type { AuditEventInput } from '../audit/event.js'
import { isSpiffeId } from '../audit/event.js'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import type { StepUpTarget } from '../signals/policy.js'
import { underPrefix } from '../tokens/revocation.js'

/** The signal a step-up came from. */
export interface StepUpSignal {
  readonly issuer: string
  readonly jti: string
  /** The event type's short name (`credential-change`). */
  readonly eventType: string
}

export interface StepUpRequest {
  readonly target: StepUpTarget
  /** A SPIFFE ID: the agent (`instance`), or it and everything under it (`prefix`). */
  readonly value: string
  /** A human's approval of one intent satisfies it for that agent; false: it holds until `notAfter`. */
  readonly clearOnApproval: boolean
  /** Unix seconds; absent: until satisfied or cleared. */
  readonly notAfter?: number
  readonly signal: StepUpSignal
  /** `signal <event> <jti> from <issuer> (rule N)`, as the revocations a signal makes. */
  readonly reason: string
}

export interface StepUpSatisfaction {
  readonly agent: string
  readonly intentId: string
  readonly approver: string
  readonly at: number
}

export interface StepUp extends StepUpRequest {
  readonly id: number
  readonly createdAt: number
  readonly cleared?: { readonly at: number; readonly by: string; readonly reason?: string }
  /** The agents a human's approval satisfied it for. */
  readonly satisfied: readonly StepUpSatisfaction[]
}

/** Where step-ups are kept (the SSF store). */
export interface StepUpStore {
  addStepUp(r: StepUpRequest, nowSec: number): StepUp
  listStepUps(nowSec: number, includeEnded?: boolean): StepUp[]
  getStepUp(id: number): StepUp | undefined
  satisfyStepUp(id: number, s: { agent: string; intentId: string; approver: string }, at: number): boolean
  clearStepUp(id: number, c: { by: string; reason?: string }, at: number): boolean
}

/** What the broker's token endpoint asks: does a step-up stand for any of these SPIFFE IDs? */
export interface StepUpGate {
  covering(ids: readonly string[]): StepUp | undefined
}

/** What the intents ask and tell (src/broker/intents/intent-service.ts). */
export interface StepUpPort {
  /** The step-ups standing for `agent` now, oldest first. */
  standing(agent: string): StepUp[]
  /** A human approved `intentId` of `agent`, whose assessment named the step-ups `ids`: each that clears on approval is satisfied for it. */
  satisfy(agent: string, ids: readonly number[], by: { intentId: string; approver: string }): StepUp[]
}

/** The compact name of a step-up's signal, for rule names: `<event>:<jti>` (the jti reduced to a code's characters, at most 96). */
export function signalRef(s: StepUpSignal): string {
  const safe = (v: string, n: number) => v.replace(/[^A-Za-z0-9._~@+=-]/g, '_').slice(0, n)
  return `${safe(s.eventType, 64)}:${safe(s.jti, 96)}`
}

/** Does step-up `s` cover the SPIFFE ID `id` (ignoring its state)? */
export function stepUpCovers(s: Pick<StepUp, 'target' | 'value'>, id: string): boolean {
  return s.target === 'instance' ? id === s.value : underPrefix(id, s.value)
}

export class StepUps implements StepUpGate, StepUpPort {
  readonly #nowSec: () => number
  readonly #log: Logger
  readonly #audit: ((e: AuditEventInput) => void) | undefined
  #store: StepUpStore | undefined
  #list: StepUp[] = []
  #nextId = 1

  constructor(o: { log: Logger; nowSec?: () => number; audit?: (e: AuditEventInput) => void }) {
    this.#nowSec = o.nowSec ?? (() => Math.floor(Date.now() / 1000))
    this.#log = o.log
    this.#audit = o.audit
  }

  /** Keeps step-ups in `store` from now on, and takes the ones standing there (a restart keeps them). */
  attach(store: StepUpStore): void {
    this.#store = store
    this.#list = store.listStepUps(this.#nowSec())
  }

  /** Not cleared, not ended, and (for one agent) not satisfied by it. */
  #inForce(s: StepUp, now: number): boolean {
    return (
      s.cleared === undefined && (s.notAfter === undefined || s.notAfter > now) && !(s.target === 'instance' && s.satisfied.some((x) => x.agent === s.value))
    )
  }

  /** Records a step-up (kept before it counts). */
  add(r: StepUpRequest): StepUp {
    const now = this.#nowSec()
    const s: StepUp = this.#store?.addStepUp(r, now) ?? { ...r, id: this.#nextId++, createdAt: now, satisfied: [] }
    this.#list = [...this.#list.filter((x) => this.#inForce(x, now)), s]
    this.#log.warn(
      { step_up: s.id, target: s.target, value: s.value, not_after: s.notAfter, clear_on_approval: s.clearOnApproval, [F.REASON]: s.reason },
      'Step-up required by a signal',
    )
    return s
  }

  standing(agent: string): StepUp[] {
    const now = this.#nowSec()
    return this.#list.filter((s) => this.#inForce(s, now) && stepUpCovers(s, agent) && !s.satisfied.some((x) => x.agent === agent))
  }

  covering(ids: readonly string[]): StepUp | undefined {
    if (this.#list.length === 0) return undefined
    for (const id of ids) {
      const s = this.standing(id)[0]
      if (s !== undefined) return s
    }
    return undefined
  }

  satisfy(agent: string, ids: readonly number[], by: { intentId: string; approver: string }): StepUp[] {
    const now = this.#nowSec()
    const out: StepUp[] = []
    for (const s of this.standing(agent)) {
      if (!ids.includes(s.id) || !s.clearOnApproval) continue
      const sat: StepUpSatisfaction = { agent, intentId: by.intentId, approver: by.approver, at: now }
      if (this.#store && !this.#store.satisfyStepUp(s.id, sat, now)) continue
      const next: StepUp = { ...s, satisfied: [...s.satisfied, sat] }
      this.#replace(next)
      out.push(next)
      this.#log.info({ step_up: s.id, client_id: agent, intent_id: by.intentId, approver: by.approver }, 'Step-up satisfied by a human approval')
      this.#auditQuietly(this.#event(next, 'satisfied', agent, { intent_id: by.intentId, approver: by.approver }))
    }
    return out
  }

  /** An operator clears a step-up for every agent it covers; ERR_NOT_FOUND when none stands with that id. */
  clear(id: number, by: string, reason?: string): StepUp {
    const now = this.#nowSec()
    const cur = this.#list.find((s) => s.id === id && this.#inForce(s, now)) ?? this.#store?.getStepUp(id)
    if (cur === undefined || !this.#inForce(cur, now)) throw new IdentityError('ERR_NOT_FOUND', `no step-up ${id} in force`)
    const c = { by, ...(reason !== undefined && reason !== '' ? { reason } : {}) }
    if (this.#store && !this.#store.clearStepUp(id, c, now)) throw new IdentityError('ERR_NOT_FOUND', `no step-up ${id} in force`)
    const next: StepUp = { ...cur, cleared: { at: now, ...c } }
    this.#replace(next)
    this.#log.warn({ step_up: id, by, [F.REASON]: reason }, 'Step-up cleared by an operator')
    this.#auditQuietly(this.#event(next, 'cleared', undefined, { cleared_by: by, ...(c.reason !== undefined ? { clear_reason: c.reason } : {}) }))
    return next
  }

  /** The step-ups in force (with `all`: also those cleared, satisfied or ended, as the store keeps them), oldest first. */
  list(all = false): StepUp[] {
    const now = this.#nowSec()
    const kept = this.#store ? this.#store.listStepUps(now, all) : [...this.#list]
    return all ? kept : kept.filter((s) => this.#inForce(s, now))
  }

  #replace(s: StepUp): void {
    this.#list = this.#list.map((x) => (x.id === s.id ? s : x))
  }

  /** The `signal` audit event of a step-up satisfied or cleared: the signal it came from, what it held, and how it ended. */
  #event(s: StepUp, stage: 'satisfied' | 'cleared', agent: string | undefined, extra: Record<string, string>): AuditEventInput {
    const subject = agent ?? s.value
    return {
      type: 'signal',
      outcome: 'success',
      ...(isSpiffeId(subject) ? { subject } : {}),
      attributes: {
        action: 'step_up',
        stage,
        step_up: s.id,
        issuer: s.signal.issuer.slice(0, 256),
        jti: s.signal.jti.slice(0, 256),
        event_type: s.signal.eventType.slice(0, 256),
        target: s.target,
        value: s.value.slice(0, 256),
        ...Object.fromEntries(Object.entries(extra).map(([k, v]) => [k, v.slice(0, 256)])),
      },
    }
  }

  #auditQuietly(e: AuditEventInput): void {
    try {
      this.#audit?.(e)
    } catch (err) {
      this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Audit event for a step-up lost')
    }
  }
}

/** A step-up on the admin socket's wire (`warrant signal step-ups`). */
export function stepUpToWire(s: StepUp): Record<string, unknown> {
  return {
    id: s.id,
    target: s.target,
    value: s.value,
    clear_on_approval: s.clearOnApproval,
    ...(s.notAfter !== undefined ? { not_after: s.notAfter } : {}),
    created_at: s.createdAt,
    reason: s.reason,
    signal: { issuer: s.signal.issuer, jti: s.signal.jti, event_type: s.signal.eventType },
    ...(s.cleared !== undefined
      ? { cleared: { at: s.cleared.at, by: s.cleared.by, ...(s.cleared.reason !== undefined ? { reason: s.cleared.reason } : {}) } }
      : {}),
    satisfied: s.satisfied.map((x) => ({ agent: x.agent, intent_id: x.intentId, approver: x.approver, at: x.at })),
  }
}
