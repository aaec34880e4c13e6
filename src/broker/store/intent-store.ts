/**
 * Declared intents in the broker's store (the `intents` table, migration 4):
 * rows in, rows out, and the conditional updates that make each transition
 * happen once (pending → approved/denied/expired, approved → token issued,
 * issued → used/mismatch). Synchronous, on the broker store's connection;
 * callers group writes with `BrokerStore.tx` / `txQueued`.
 */
import type { AuthorizationDetail } from '../../tokens/claims.js'
import type { Approver, IntentStatus, RiskFactor } from '../intents/contract.js'
import type { IntentDecision } from '../intents/risk.js'
import type { BrokerStore } from './broker-store.js'

/** What an outcome report said, as recorded. */
export interface IntentOutcome {
  readonly phase: 'before' | 'after'
  readonly action: string
  readonly resource: string
  readonly match: boolean
  /** Why it did not match (`action`, `resource`, `params_digest`, `reuse`, `token`). */
  readonly reasons: readonly string[]
  readonly reporter: string
}

export interface IntentRecord {
  readonly id: string
  /** The CIBA request carrying it; absent for an intent declared at the token endpoint. */
  readonly authReqId?: string
  readonly agent: string
  readonly clientId: string
  readonly taskId?: string
  readonly action: string
  readonly resource: string
  /** The `aud` of its token: the allowed resource that covers `resource`. */
  readonly audience: string
  readonly paramsDigest: string
  readonly declaredRisk?: number
  readonly risk: number
  readonly factors: readonly RiskFactor[]
  readonly decision: IntentDecision
  readonly decidedBy: string
  readonly status: IntentStatus
  readonly approverGroup?: string
  readonly approver?: Approver
  readonly reason?: string
  readonly bindingMessage?: string
  readonly nodeAttestation?: string
  readonly delegation: readonly string[]
  /** The `authorization_details` entry its token carries. */
  readonly detail: AuthorizationDetail
  readonly createdAt: number
  readonly expiresAt: number
  readonly decidedAt?: number
  readonly tokenJti?: string
  readonly tokenExp?: number
  readonly outcome?: IntentOutcome
  readonly outcomeAt?: number
}

interface Row {
  id: string
  auth_req_id: string | null
  agent: string
  client_id: string
  task_id: string | null
  action: string
  resource: string
  audience: string
  params_digest: string
  declared_risk: number | null
  risk: number
  factors: string
  decision: IntentDecision
  decided_by: string
  status: IntentStatus
  approver_group: string | null
  approver_id: string | null
  approver_method: string | null
  reason: string | null
  binding_message: string | null
  node_attestation: string | null
  delegation: string
  detail: string
  created_at: number
  expires_at: number
  decided_at: number | null
  token_jti: string | null
  token_exp: number | null
  outcome: string | null
  outcome_at: number | null
}

const opt = <K extends string, V>(k: K, v: V | null): { [P in K]?: V } => (v === null ? {} : ({ [k]: v } as { [P in K]?: V }))

function toRecord(r: Row): IntentRecord {
  return Object.freeze({
    id: r.id,
    ...opt('authReqId', r.auth_req_id),
    agent: r.agent,
    clientId: r.client_id,
    ...opt('taskId', r.task_id),
    action: r.action,
    resource: r.resource,
    audience: r.audience,
    paramsDigest: r.params_digest,
    ...opt('declaredRisk', r.declared_risk),
    risk: r.risk,
    factors: JSON.parse(r.factors) as RiskFactor[],
    decision: r.decision,
    decidedBy: r.decided_by,
    status: r.status,
    ...opt('approverGroup', r.approver_group),
    ...(r.approver_id !== null ? { approver: { id: r.approver_id, method: r.approver_method as Approver['method'] } } : {}),
    ...opt('reason', r.reason),
    ...opt('bindingMessage', r.binding_message),
    ...opt('nodeAttestation', r.node_attestation),
    delegation: JSON.parse(r.delegation) as string[],
    detail: JSON.parse(r.detail) as AuthorizationDetail,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    ...opt('decidedAt', r.decided_at),
    ...opt('tokenJti', r.token_jti),
    ...opt('tokenExp', r.token_exp),
    ...(r.outcome !== null ? { outcome: JSON.parse(r.outcome) as IntentOutcome } : {}),
    ...opt('outcomeAt', r.outcome_at),
  })
}

/** The statuses an intent can still leave by itself (expiry). */
const LIVE: readonly IntentStatus[] = ['pending', 'approved']

export class IntentStore {
  readonly #s: BrokerStore

  constructor(store: BrokerStore) {
    this.#s = store
  }

  insert(r: IntentRecord): void {
    this.#s
      .statement(
        `INSERT INTO intents (id, auth_req_id, agent, client_id, task_id, action, resource, audience, params_digest, declared_risk, risk, factors,
           decision, decided_by, status, approver_group, approver_id, approver_method, reason, binding_message, node_attestation, delegation, detail,
           created_at, expires_at, decided_at, token_jti, token_exp, outcome, outcome_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL)`,
      )
      .run(
        r.id,
        r.authReqId ?? null,
        r.agent,
        r.clientId,
        r.taskId ?? null,
        r.action,
        r.resource,
        r.audience,
        r.paramsDigest,
        r.declaredRisk ?? null,
        r.risk,
        JSON.stringify(r.factors),
        r.decision,
        r.decidedBy,
        r.status,
        r.approverGroup ?? null,
        r.approver?.id ?? null,
        r.approver?.method ?? null,
        r.reason ?? null,
        r.bindingMessage ?? null,
        r.nodeAttestation ?? null,
        JSON.stringify(r.delegation),
        JSON.stringify(r.detail),
        r.createdAt,
        r.expiresAt,
        r.decidedAt ?? null,
        r.tokenJti ?? null,
        r.tokenExp ?? null,
      )
  }

  get(id: string): IntentRecord | undefined {
    const r = this.#s.statement('SELECT * FROM intents WHERE id = ?').get(id) as Row | undefined
    return r ? toRecord(r) : undefined
  }

  byAuthReqId(authReqId: string): IntentRecord | undefined {
    const r = this.#s.statement('SELECT * FROM intents WHERE auth_req_id = ?').get(authReqId) as Row | undefined
    return r ? toRecord(r) : undefined
  }

  byTokenJti(jti: string): IntentRecord | undefined {
    const r = this.#s.statement('SELECT * FROM intents WHERE token_jti = ?').get(jti) as Row | undefined
    return r ? toRecord(r) : undefined
  }

  /** Newest first. */
  list(filter: { status?: IntentStatus; agent?: string; limit: number }): IntentRecord[] {
    const where: string[] = []
    const args: unknown[] = []
    if (filter.status !== undefined) {
      where.push('status = ?')
      args.push(filter.status)
    }
    if (filter.agent !== undefined) {
      where.push('agent = ?')
      args.push(filter.agent)
    }
    const sql = `SELECT * FROM intents${where.length > 0 ? ` WHERE ${where.join(' AND ')}` : ''} ORDER BY created_at DESC, id DESC LIMIT ?`
    return (this.#s.statement(sql).all(...args, filter.limit) as Row[]).map(toRecord)
  }

  /** A human's (or the expiry's) decision on a pending intent; false when it is not pending any more. */
  decide(id: string, to: 'approved' | 'denied' | 'expired', f: { at: number; approver?: Approver; reason?: string; expiresAt?: number }): boolean {
    return (
      this.#s
        .statement(
          `UPDATE intents SET status = ?, decided_at = ?, approver_id = ?, approver_method = ?, reason = ?, expires_at = COALESCE(?, expires_at)
           WHERE id = ? AND status = 'pending'`,
        )
        .run(to, f.at, f.approver?.id ?? null, f.approver?.method ?? null, f.reason ?? null, f.expiresAt ?? null, id).changes === 1
    )
  }

  /** Undoes an approval or denial whose audit event could not be written (the intent waits again). */
  undecide(id: string, from: 'approved' | 'denied'): boolean {
    return (
      this.#s
        .statement(
          `UPDATE intents SET status = 'pending', decided_at = NULL, approver_id = NULL, approver_method = NULL, reason = NULL
           WHERE id = ? AND status = ? AND token_jti IS NULL`,
        )
        .run(id, from).changes === 1
    )
  }

  /** Records the one token of an approved intent; false when it has one already, or is not approved (or expired) any more. */
  claimToken(id: string, jti: string, exp: number, now: number): boolean {
    return (
      this.#s
        .statement(
          `UPDATE intents SET token_jti = ?, token_exp = ?, expires_at = ? WHERE id = ? AND status = 'approved' AND token_jti IS NULL AND expires_at > ?`,
        )
        .run(jti, exp, exp, id, now).changes === 1
    )
  }

  /** Records an outcome report: `used` (or `mismatch`) from `approved` with its token; false when already reported. */
  recordOutcome(id: string, status: 'used' | 'mismatch', outcome: IntentOutcome, at: number, from: readonly IntentStatus[] = ['approved']): boolean {
    const marks = from.map(() => '?').join(', ')
    return (
      this.#s
        .statement(`UPDATE intents SET status = ?, outcome = ?, outcome_at = ? WHERE id = ? AND token_jti IS NOT NULL AND status IN (${marks})`)
        .run(status, JSON.stringify(outcome), at, id, ...from).changes === 1
    )
  }

  /** Marks every live intent past its expiry as expired; returns them (as they are now). */
  expire(now: number): IntentRecord[] {
    const marks = LIVE.map(() => '?').join(', ')
    const ids = (this.#s.statement(`SELECT id FROM intents WHERE status IN (${marks}) AND expires_at <= ?`).all(...LIVE, now) as { id: string }[]).map(
      (r) => r.id,
    )
    const out: IntentRecord[] = []
    const upd = this.#s.statement(`UPDATE intents SET status = 'expired', decided_at = COALESCE(decided_at, ?) WHERE id = ? AND status IN (${marks})`)
    for (const id of ids) if (upd.run(now, id, ...LIVE).changes === 1) out.push(this.get(id)!)
    return out
  }

  /** How many intents of the agent wait for a human now. */
  pendingCount(agent: string): number {
    return (this.#s.statement("SELECT COUNT(*) AS n FROM intents WHERE agent = ? AND status = 'pending'").get(agent) as { n: number }).n
  }

  /** The agent's intents since `since` that a rule refused, a human denied, or that did not match their outcome. */
  history(agent: string, since: number): { refusals: number; denials: number; mismatches: number } {
    const rows = this.#s
      .statement(
        `SELECT status, COUNT(*) AS n FROM intents WHERE agent = ? AND created_at >= ? AND status IN ('refused', 'denied', 'mismatch') GROUP BY status`,
      )
      .all(agent, since) as { status: IntentStatus; n: number }[]
    const n = (s: IntentStatus) => rows.find((r) => r.status === s)?.n ?? 0
    return { refusals: n('refused'), denials: n('denied'), mismatches: n('mismatch') }
  }
}
