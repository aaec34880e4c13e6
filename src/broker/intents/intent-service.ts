/**
 * Intents: an agent declares what it is about to do, the risk engine decides
 * (approve automatically, ask a human, refuse), and an approved intent
 * becomes one action-bound token; the resource server reports the outcome.
 *
 * - Declaration, two ways, both authenticated like the token endpoint (the
 *   wire does it): OpenID CIBA (`bcAuthorize`: an `auth_req_id` the client
 *   polls with the CIBA grant) or inline at the token endpoint
 *   (`client_credentials` with a `warrant_intent` authorization detail: the
 *   token in the same answer when approved automatically, else the CIBA
 *   handle to poll with).
 * - Every decision is an audit event (`approval`, with the rule that
 *   decided); an automatic approval is durable before its token is released,
 *   a human's before the approval is acknowledged.
 * - The token: `authorization_details` with exactly that action on that
 *   resource, valid once (never renewed or delegated, consumed by the first
 *   outcome report), within `token_ttl`, bound like every broker token.
 * - Outcome reports: a mismatch (another action or resource, another
 *   parameters digest, a repeated use) is refused when not yet done, recorded,
 *   the token revoked (which the revocation feed and SSF carry), and a signal
 *   about the agent raised through the broker's transmitter.
 *
 * It is also the `ApprovalQueue` of the admin socket and the console.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { decodeJwt } from 'jose'
import type { AuditEventInput } from '../../audit/event.js'
import type { AuditSink } from '../../audit/sink.js'
import { systemClock, type Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { ErrorCode } from '../../errors/codes.js'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { GRANT_TYPE } from '../../tokens/claims.js'
import type { AuthenticatedClient, KeyBinding, RevocationRequest, StoredRevocation, Task, TokenRequest, TokenResponse } from '../contract.js'
import type { CeilingSource } from '../ports.js'
import type { ActionTokenRequest } from '../service.js'
import type { BrokerStore } from '../store/broker-store.js'
import { IntentStore, type IntentOutcome, type IntentRecord } from '../store/intent-store.js'
import type { IntentsConfig } from './config.js'
import type { ApprovalQueue, ApprovalView, Approver, IntentStatus } from './contract.js'
import { CIBA_GRANT_TYPE, INTENT_STATUSES, parseIntentDetails, toApprovalView, tokenDetail, type DeclaredIntent } from './intent.js'
import { assessRisk, type RiskAssessment } from './risk.js'
import { signalRef, type StepUpPort } from '../step-ups.js'

/** What the intents need from the broker's domain (BrokerServiceImpl). */
export interface IntentBroker {
  readonly store: BrokerStore
  issueActionToken(a: ActionTokenRequest, client: AuthenticatedClient, binding: KeyBinding): Promise<TokenResponse & { authorization_details: unknown[] }>
  revokeAt(req: RevocationRequest, by: 'admin'): Promise<{ entry: StoredRevocation; created: boolean; tokens: number }>
  readonly revocations: { covering(rec: { jti: string; sub: string; clientId: string; taskId: string | undefined; actors: readonly string[] }): unknown }
}

/** A Shared Signals event about an agent (the composition sends it through the broker's SSF transmitter). */
export interface IntentSignal {
  readonly event: 'session-revoked' | 'credential-compromise'
  readonly subject: string
  readonly reason: string
  readonly confidence: number
}

export interface IntentServiceDeps {
  readonly config: IntentsConfig
  readonly broker: IntentBroker
  readonly ceilings: CeilingSource
  /** client_credentials needs a task (the broker's `requireTask`): an intent needs one too. */
  readonly requireTask: boolean
  readonly audit?: AuditSink
  /** The node attestation kind (`tpm`, `join_token`, ...) of the node serving `agent`, when the broker can know it. */
  readonly nodeAttestation?: (agent: string) => Promise<string | undefined>
  /** How many Shared Signals about `agent` were received since `sinceSec`. */
  readonly signalsAbout?: (agent: string, sinceSec: number) => number
  readonly raiseSignal?: (s: IntentSignal) => void
  /** Step-ups a Shared Signal put on agents (src/broker/step-ups.ts): their next intent needs a human; a human's approval satisfies them. */
  readonly stepUps?: StepUpPort
  readonly notifier?: { notify(v: ApprovalView): void }
  readonly clock?: Clock
  readonly log: Logger
}

/** A backchannel authentication request (OpenID CIBA Core §7.1) after form parsing. */
export interface CibaRequest {
  readonly authorizationDetails?: TokenRequest['authorizationDetails']
  readonly loginHint?: string
  readonly bindingMessage?: string
  readonly requestedExpiry?: string
  readonly scope?: string
  readonly taskId?: string
  /** Parameters this broker does not support (`login_hint_token`, `id_token_hint`, `user_code`, `request`). */
  readonly unsupported: readonly string[]
}

export interface OutcomeReport {
  readonly jti?: string
  readonly token?: string
  readonly action?: string
  readonly resource?: string
  readonly paramsDigest?: string
  readonly phase?: string
}

export interface OutcomeResult {
  readonly outcome: 'match' | 'mismatch'
  readonly intent_id: string
  readonly status: IntentStatus
  /** The action was refused (a mismatch reported before it was done). */
  readonly refused: boolean
  readonly reasons: readonly string[]
}

/** CIBA §11 errors the wire answers as themselves (not in errors/oauth.ts), carried in `details.oauth_error`. */
export type CibaWireError = 'slow_down' | 'unknown_user_id' | 'invalid_binding_message' | 'invalid_request'

function cibaError(code: ErrorCode, error: CibaWireError, msg: string, extra: Record<string, unknown> = {}): IdentityError {
  return new IdentityError(code, msg, { details: { oauth_error: error, ...extra } })
}

const MAX_LIST = 500
const BINDING_MESSAGE = /^[\p{L}\p{N} .,:;!?@#()/+=_'-]{1,128}$/u
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/
const SWEEP_MS = 5_000
/** Once approved, at least this long to collect the token (an approval just before the expiry still counts). */
const COLLECT_GRACE_SECONDS = 60

const intersect = (a: readonly string[], b: readonly string[]): string[] => a.filter((x) => b.includes(x))

/** The allowed resource covering `location` (equal, or the location below it), the longest one; undefined when none. */
export function coveringResource(allowed: readonly string[], location: string): string | undefined {
  let best: string | undefined
  for (const r of allowed) {
    const covers = r === location || location.startsWith(r.endsWith('/') ? r : `${r}/`)
    if (covers && (best === undefined || r.length > best.length)) best = r
  }
  return best
}

export class IntentService implements ApprovalQueue {
  readonly #d: IntentServiceDeps
  readonly #store: IntentStore
  readonly #log: Logger
  readonly #clock: Clock
  readonly #listeners = new Set<(v: ApprovalView) => void>()
  /** auth_req_id → when it was last polled (ms), for `slow_down`. */
  readonly #polls = new Map<string, number>()
  #sweep: NodeJS.Timeout | undefined

  constructor(d: IntentServiceDeps) {
    this.#d = d
    this.#store = new IntentStore(d.broker.store)
    this.#log = d.log.child({ [F.SUBSYSTEM]: 'broker_intents' })
    this.#clock = d.clock ?? systemClock
  }

  get config(): IntentsConfig {
    return this.#d.config
  }

  /** Starts the expiry sweep (pending intents past their expiry become `expired`, with an audit event). */
  start(): void {
    this.#sweep ??= setInterval(() => this.#expireDue(), SWEEP_MS)
    this.#sweep.unref()
  }

  close(): void {
    clearInterval(this.#sweep)
    this.#sweep = undefined
  }

  #now(): number {
    return Math.floor(this.#clock.now() / 1000)
  }

  // ------------------------------------------------------------ declaration

  /** Everything about a declared intent up to the decision; nothing stored yet. */
  async #assess(client: AuthenticatedClient, declared: DeclaredIntent, o: { taskId?: string; loginHint?: string }): Promise<Omit<IntentRecord, 'status'>> {
    const agent = client.spiffeId
    const log = this.#log.child({ client_id: agent })
    const refuse = (code: ErrorCode, msg: string, reason: string): never => {
      log.warn({ [F.ERROR_CODE]: code, [F.REASON]: reason }, 'Intent refused before assessment')
      throw new IdentityError(code, msg)
    }
    if (!SpiffeId.isValid(agent)) refuse('ERR_CLIENT_UNAUTHORIZED', 'client not authorized', 'client ID is not a SPIFFE ID')
    if (declared.taskId !== undefined && o.taskId !== undefined && declared.taskId !== o.taskId)
      throw new IdentityError('ERR_INTENT_INVALID', 'invalid intent: task differs from task_id')
    const taskId = declared.taskId ?? o.taskId
    const now = this.#now()
    let task: Task | undefined
    if (taskId !== undefined) {
      task = this.#d.broker.store.getTask(taskId)
      if (!task) return refuse('ERR_TASK_NOT_FOUND', 'unknown task', 'task not found')
      if (task.endedAt !== undefined || task.expiresAt <= now) refuse('ERR_TASK_ENDED', 'task ended', 'task ended or expired')
      if (!(task.agent === agent || (task.agent.endsWith('/') && agent.startsWith(task.agent))))
        refuse('ERR_CLIENT_UNAUTHORIZED', 'client not authorized for this task', 'task is for another agent')
    } else if (this.#d.requireTask) throw new IdentityError('ERR_INTENT_INVALID', 'invalid intent: a task is required (task in the detail, or task_id)')
    if (this.#d.broker.revocations.covering({ jti: '', sub: agent, clientId: agent, taskId, actors: [] }) !== undefined)
      refuse('ERR_REVOKED', 'revoked', 'a revocation covers the agent or its task')
    const ceiling = await this.#d.ceilings.ceilingFor(SpiffeId.fromString(agent))
    const scopes = task ? intersect(task.scopes, ceiling.scopes) : [...ceiling.scopes]
    const resources = task ? intersect(task.resources, ceiling.resources) : [...ceiling.resources]
    const audience = coveringResource(resources, declared.resource)
    const nodeAttestation = this.#d.nodeAttestation ? await this.#d.nodeAttestation(agent).catch(() => undefined) : undefined
    const cfg = this.#d.config
    const since = now - cfg.historyWindowSeconds
    const h = this.#store.history(agent, since)
    const signals = this.#d.signalsAbout?.(agent, since) ?? 0
    const stepUps = (this.#d.stepUps?.standing(agent) ?? []).map((x) => ({ id: x.id, signal: signalRef(x.signal), reason: x.reason }))
    const a: RiskAssessment = assessRisk(cfg.policy, {
      agent,
      action: declared.action,
      resource: declared.resource,
      ...(declared.declaredRisk !== undefined ? { declaredRisk: declared.declaredRisk } : {}),
      ...(nodeAttestation !== undefined ? { nodeAttestation } : {}),
      nowSec: now,
      history: { ...h, signals },
      ...(stepUps.length > 0 ? { stepUps } : {}),
    })
    // The ceiling (task ∩ bounds) is not a risk: an action or resource beyond it is forbidden whatever the rules say.
    const ceilingRule = !scopes.includes(declared.action) ? 'ceiling:scope' : audience === undefined ? 'ceiling:resource' : undefined
    const decision = ceilingRule !== undefined ? 'refuse' : a.decision
    if (o.loginHint !== undefined && decision === 'needs-human' && o.loginHint !== a.approverGroup)
      throw cibaError('ERR_INTENT_INVALID', 'unknown_user_id', 'login_hint names no approver group of this agent')
    const id = `int-${randomUUID()}`
    return {
      id,
      agent,
      clientId: agent,
      ...(taskId !== undefined ? { taskId } : {}),
      action: declared.action,
      resource: declared.resource,
      audience: audience ?? declared.resource,
      paramsDigest: declared.paramsDigest,
      ...(declared.declaredRisk !== undefined ? { declaredRisk: declared.declaredRisk } : {}),
      risk: a.risk,
      factors: a.factors,
      decision,
      decidedBy: ceilingRule ?? a.rule,
      ...(decision === 'needs-human' ? { approverGroup: a.approverGroup } : {}),
      ...(decision === 'auto-approve' ? { approver: { id: `rule:${a.rule}`.slice(0, 256), method: 'rule' as const } } : {}),
      ...(nodeAttestation !== undefined ? { nodeAttestation } : {}),
      delegation: [agent],
      detail: tokenDetail(id, { ...declared, ...(taskId !== undefined ? { taskId } : {}) }),
      createdAt: now,
      expiresAt: now + cfg.approvalTtlSeconds,
      ...(decision !== 'needs-human' ? { decidedAt: now } : {}),
    }
  }

  /** Stores an intent that is not released at once (pending, refused, or approved for a CIBA poll) and records its decision. */
  async #record(r: IntentRecord): Promise<void> {
    if (r.status === 'pending' && this.#store.pendingCount(r.agent) >= this.#d.config.maxPendingPerAgent) {
      this.#log.warn({ client_id: r.agent, max: this.#d.config.maxPendingPerAgent }, 'Intent refused: too many waiting for a human')
      throw new IdentityError('ERR_RESOURCE_EXHAUSTED', 'too many intents waiting for approval')
    }
    await this.#d.broker.store.txQueued(() => this.#store.insert(r), 'process')
    const event = this.#decisionEvent(r)
    if (r.status === 'approved') await this.#auditDurably(event)
    else this.#auditQuietly(event)
    this.#log.info(
      { intent_id: r.id, client_id: r.agent, action: r.action, resource: r.resource, risk: r.risk, decision: r.decision, rule: r.decidedBy },
      r.status === 'refused' ? 'Intent refused' : r.status === 'pending' ? 'Intent waits for a human' : 'Intent approved by rule',
    )
    this.#emit(r)
    if (r.status === 'pending') this.#d.notifier?.notify(toApprovalView(r))
    if (r.status === 'refused') throw new IdentityError('ERR_INTENT_REFUSED', 'intent refused')
  }

  #statusOf(decision: IntentRecord['decision']): IntentStatus {
    return decision === 'refuse' ? 'refused' : decision === 'needs-human' ? 'pending' : 'approved'
  }

  /** OpenID CIBA backchannel authentication request carrying a `warrant_intent`: `{auth_req_id, expires_in, interval}`. */
  async bcAuthorize(req: CibaRequest, client: AuthenticatedClient): Promise<{ auth_req_id: string; expires_in: number; interval: number; intent_id: string }> {
    if (req.unsupported.length > 0)
      throw cibaError('ERR_TOKEN_REQUEST_INVALID', 'invalid_request', `unsupported parameter ${req.unsupported[0]!} (login_hint names an approver group)`)
    if (req.bindingMessage !== undefined && !BINDING_MESSAGE.test(req.bindingMessage))
      throw cibaError('ERR_INTENT_INVALID', 'invalid_binding_message', 'binding_message must be short plain text (at most 128 characters)')
    let ttl = this.#d.config.approvalTtlSeconds
    if (req.requestedExpiry !== undefined) {
      if (!/^[1-9][0-9]{0,6}$/.test(req.requestedExpiry))
        throw cibaError('ERR_TOKEN_REQUEST_INVALID', 'invalid_request', 'requested_expiry must be a number of seconds')
      ttl = Math.min(ttl, Math.max(30, Number(req.requestedExpiry)))
    }
    const declared = parseIntentDetails(req.authorizationDetails)
    const base = await this.#assess(client, declared, {
      ...(req.taskId !== undefined ? { taskId: req.taskId } : {}),
      ...(req.loginHint !== undefined ? { loginHint: req.loginHint } : {}),
    })
    const r: IntentRecord = {
      ...base,
      authReqId: randomBytes(32).toString('base64url'),
      status: this.#statusOf(base.decision),
      expiresAt: base.createdAt + ttl,
      ...(req.bindingMessage !== undefined ? { bindingMessage: req.bindingMessage } : {}),
    }
    await this.#record(r)
    return { auth_req_id: r.authReqId!, expires_in: ttl, interval: this.#d.config.pollIntervalSeconds, intent_id: r.id }
  }

  /** Is this token request one for the intents (the CIBA grant, or a `warrant_intent` authorization detail)? */
  handles(req: TokenRequest): boolean {
    return req.grantType === CIBA_GRANT_TYPE || (req.authorizationDetails?.some((d) => d.type === 'warrant_intent') ?? false)
  }

  /** The token endpoint for intents: the CIBA grant (`authReqId`), or an inline declaration (client_credentials). */
  async token(req: TokenRequest, authReqId: string | undefined, client: AuthenticatedClient, binding: KeyBinding): Promise<TokenResponse> {
    if (req.grantType === CIBA_GRANT_TYPE) {
      if (authReqId === undefined) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'parameter "auth_req_id" is required')
      if (req.authorizationDetails !== undefined || req.scopes !== undefined || req.resources.length > 0 || req.audiences.length > 0)
        throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'the CIBA grant takes auth_req_id only')
      return this.#cibaToken(authReqId, client, binding)
    }
    if (req.grantType !== GRANT_TYPE.clientCredentials)
      throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'an intent is declared with client_credentials or at the backchannel authentication endpoint')
    if (req.scopes !== undefined || req.resources.length > 0 || req.audiences.length > 0 || req.mayAct !== undefined || req.requestedTokenType !== undefined)
      throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'an intent request takes authorization_details (and task_id) only')
    const declared = parseIntentDetails(req.authorizationDetails)
    const base = await this.#assess(client, declared, req.taskId !== undefined ? { taskId: req.taskId } : {})
    if (base.decision !== 'auto-approve') {
      // Waits for a human (or is refused): recorded like a CIBA request, whose handle the client polls with.
      const r: IntentRecord = { ...base, authReqId: randomBytes(32).toString('base64url'), status: this.#statusOf(base.decision) }
      await this.#record(r)
      throw new IdentityError('ERR_APPROVAL_PENDING', 'the intent waits for a human', {
        details: { ciba: { auth_req_id: r.authReqId, expires_in: r.expiresAt - r.createdAt, interval: this.#d.config.pollIntervalSeconds, intent_id: r.id } },
      })
    }
    // Approved by rule: the intent, its decision event and its token in one step (the intent row in the token's transaction,
    // the decision event in the issuance's audit batch, both durable before the token is released).
    const r: IntentRecord = { ...base, status: 'approved' }
    let issued: IntentRecord = r
    const res = await this.#d.broker.issueActionToken(
      {
        sub: r.agent,
        ...(r.taskId !== undefined ? { taskId: r.taskId } : {}),
        audience: r.audience,
        scopes: SCOPE_TOKEN.test(r.action) ? [r.action] : [],
        detail: r.detail,
        ttlSeconds: this.#d.config.tokenTtlSeconds,
        grantType: req.grantType,
        claim: (jti, exp) => {
          issued = { ...r, tokenJti: jti, tokenExp: exp, expiresAt: exp }
          this.#store.insert(issued)
        },
        durability: 'process',
        audit: [this.#decisionEvent(r)],
      },
      client,
      binding,
    )
    this.#log.info({ intent_id: r.id, client_id: r.agent, action: r.action, resource: r.resource, risk: r.risk, rule: r.decidedBy }, 'Intent approved by rule')
    this.#emit(issued)
    return { ...res, intent_id: r.id } as TokenResponse
  }

  /** OpenID CIBA Core §10.1 / §11: the token of an approved request, or why not yet. */
  async #cibaToken(authReqId: string, client: AuthenticatedClient, binding: KeyBinding): Promise<TokenResponse> {
    const now = this.#now()
    const invalid = (reason: string): never => {
      this.#log.info({ client_id: client.spiffeId, [F.REASON]: reason }, 'CIBA token request refused')
      throw new IdentityError('ERR_GRANT_INVALID', 'invalid auth_req_id')
    }
    if (authReqId.length > 128) invalid('auth_req_id too long')
    let r = this.#store.byAuthReqId(authReqId)
    if (!r || r.clientId !== client.spiffeId) return invalid(r ? 'auth_req_id of another client' : 'unknown auth_req_id')
    if ((r.status === 'pending' || (r.status === 'approved' && r.tokenJti === undefined)) && r.expiresAt <= now) {
      this.#expireDue()
      r = this.#store.get(r.id)!
    }
    switch (r.status) {
      case 'pending': {
        const last = this.#polls.get(authReqId)
        const nowMs = this.#clock.now()
        this.#polls.set(authReqId, nowMs)
        // polled sooner than `interval` (a little leeway for the client's timers): slow_down, CIBA §11
        if (last !== undefined && nowMs - last < this.#d.config.pollIntervalSeconds * 1000 - 250)
          throw cibaError('ERR_APPROVAL_PENDING', 'slow_down', 'polling too fast')
        throw new IdentityError('ERR_APPROVAL_PENDING', 'authorization pending')
      }
      case 'denied':
      case 'refused':
        this.#polls.delete(authReqId)
        throw new IdentityError('ERR_APPROVAL_DENIED', 'access denied')
      case 'expired':
        this.#polls.delete(authReqId)
        throw new IdentityError('ERR_APPROVAL_EXPIRED', 'auth_req_id expired')
      case 'approved':
        if (r.tokenJti === undefined) break
        return invalid('auth_req_id already used')
      default:
        return invalid(`intent is ${r.status}`)
    }
    this.#polls.delete(authReqId)
    const intent = r
    const res = await this.#d.broker.issueActionToken(
      {
        sub: intent.agent,
        ...(intent.taskId !== undefined ? { taskId: intent.taskId } : {}),
        audience: intent.audience,
        scopes: SCOPE_TOKEN.test(intent.action) ? [intent.action] : [],
        detail: intent.detail,
        ttlSeconds: this.#d.config.tokenTtlSeconds,
        grantType: CIBA_GRANT_TYPE,
        claim: (jti, exp) => {
          if (!this.#store.claimToken(intent.id, jti, exp, now)) throw new IdentityError('ERR_GRANT_INVALID', 'invalid auth_req_id')
        },
        durability: 'disk',
      },
      client,
      binding,
    )
    this.#log.info({ intent_id: intent.id, client_id: intent.agent }, 'Action-bound token issued for an approved intent')
    this.#emit(this.#store.get(intent.id) ?? intent)
    return { ...res, intent_id: intent.id } as TokenResponse
  }

  // ----------------------------------------------------------------- outcome

  /** An outcome report by a resource server or gateway about an action-bound token (`jti`, or the token itself). */
  async outcome(rep: OutcomeReport, reporter: AuthenticatedClient): Promise<OutcomeResult> {
    const bad = (msg: string): never => {
      throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', msg)
    }
    const phase = rep.phase ?? 'after'
    if (phase !== 'before' && phase !== 'after') return bad('phase must be "before" or "after"')
    if (rep.action === undefined || rep.resource === undefined) bad('action and resource are required')
    let jti = rep.jti
    if (jti === undefined && rep.token !== undefined) {
      try {
        const j = decodeJwt(rep.token).jti
        if (typeof j === 'string') jti = j
      } catch {
        bad('token is not a JWT')
      }
    }
    if (jti === undefined || jti.length > 128) return bad('jti (or token) is required')
    const r = this.#store.byTokenJti(jti)
    if (!r) throw new IdentityError('ERR_NOT_FOUND', 'no intent for this token')
    const now = this.#now()
    const reasons: string[] = []
    if (rep.action !== r.action) reasons.push('action')
    if (rep.resource !== r.resource) reasons.push('resource')
    if (rep.paramsDigest !== undefined && rep.paramsDigest !== r.paramsDigest) reasons.push('params_digest')
    // the completion of a use announced before (same action and resource) is not a second use
    const completes = phase === 'after' && r.status === 'used' && r.outcome?.phase === 'before' && reasons.length === 0
    if (r.status === 'used' || r.status === 'mismatch') {
      if (!completes) reasons.push('reuse')
    } else if (r.status === 'expired' || (r.tokenExp !== undefined && r.tokenExp <= now)) reasons.push('expired')
    const outcome: IntentOutcome = { phase, action: rep.action!, resource: rep.resource!, match: reasons.length === 0, reasons, reporter: reporter.spiffeId }
    const log = this.#log.child({ intent_id: r.id, client_id: r.agent, [F.JTI]: jti, reporter: reporter.spiffeId, phase })
    if (reasons.length === 0) {
      const from: IntentStatus[] = completes ? ['used'] : ['approved']
      if (!this.#store.recordOutcome(r.id, 'used', outcome, now, from)) {
        // raced with another report of the same token: that one was the use
        return this.outcome(rep, reporter)
      }
      // consumed: introspection answers inactive from now on
      this.#d.broker.store.markRevoked([jti], now)
      this.#auditQuietly(this.#event(this.#store.get(r.id)!, 'outcome', 'success', undefined, { phase }))
      log.info({}, completes ? 'Intent outcome reported: done as declared' : 'Intent outcome reported: matches the declaration')
      this.#emit(this.#store.get(r.id)!)
      return { outcome: 'match', intent_id: r.id, status: 'used', refused: false, reasons: [] }
    }
    this.#store.recordOutcome(r.id, 'mismatch', outcome, now, ['approved', 'used', 'mismatch', 'expired'])
    const after = this.#store.get(r.id)!
    this.#auditQuietly(this.#event(after, 'outcome', 'refused', 'ERR_INTENT_MISMATCH', { phase, mismatch: reasons.join(','), reported_action: rep.action! }))
    log.warn({ reasons, reported_action: rep.action, reported_resource: rep.resource }, 'Intent outcome does not match the declaration')
    try {
      await this.#d.broker.revokeAt({ kind: 'token', value: jti, reason: `intent mismatch: ${reasons.join(', ')}` }, 'admin')
    } catch (err) {
      log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Revoking the mismatched token failed')
    }
    const sig = this.#d.config.mismatchSignal
    if (sig !== 'none' && this.#d.raiseSignal) {
      try {
        this.#d.raiseSignal({
          event: sig,
          subject: r.agent,
          reason: `warrant intent ${r.id} mismatch (${reasons.join(', ')})`,
          confidence: this.#d.config.mismatchConfidence,
        })
      } catch (err) {
        log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Raising the mismatch signal failed')
      }
    }
    this.#emit(after)
    return { outcome: 'mismatch', intent_id: r.id, status: after.status, refused: phase === 'before', reasons }
  }

  // ------------------------------------------------------------- the queue

  async list(opts: { status?: IntentStatus; limit?: number } = {}): Promise<ApprovalView[]> {
    if (opts.status !== undefined && !INTENT_STATUSES.includes(opts.status))
      throw new IdentityError('ERR_INVALID_ARGUMENT', `status must be one of ${INTENT_STATUSES.join(', ')}`)
    const limit = opts.limit ?? 100
    if (!Number.isSafeInteger(limit) || limit < 1 || limit > MAX_LIST) throw new IdentityError('ERR_INVALID_ARGUMENT', `limit must be from 1 to ${MAX_LIST}`)
    this.#expireDue()
    return this.#store.list({ ...(opts.status !== undefined ? { status: opts.status } : {}), limit }).map(toApprovalView)
  }

  async get(id: string): Promise<ApprovalView | undefined> {
    if (typeof id !== 'string' || id.length > 128) return undefined
    this.#expireDue()
    const r = this.#store.get(id)
    return r ? toApprovalView(r) : undefined
  }

  approve(id: string, approver: Approver, reason?: string): Promise<ApprovalView> {
    return this.#humanDecision(id, 'approved', approver, reason)
  }

  deny(id: string, approver: Approver, reason?: string): Promise<ApprovalView> {
    return this.#humanDecision(id, 'denied', approver, reason)
  }

  onChange(fn: (v: ApprovalView) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }

  async #humanDecision(id: string, to: 'approved' | 'denied', approver: Approver, reason: string | undefined): Promise<ApprovalView> {
    if (approver === null || typeof approver !== 'object' || typeof approver.id !== 'string' || approver.id.length === 0 || approver.id.length > 256)
      throw new IdentityError('ERR_INVALID_ARGUMENT', 'approver id is required (at most 256 characters)')
    if (!['webauthn', 'totp', 'unix-socket'].includes(approver.method))
      throw new IdentityError('ERR_INVALID_ARGUMENT', 'a human decides by webauthn, totp or unix-socket')
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > 512))
      throw new IdentityError('ERR_INVALID_ARGUMENT', 'reason: at most 512 characters')
    this.#expireDue()
    const cur = typeof id === 'string' ? this.#store.get(id) : undefined
    if (!cur) throw new IdentityError('ERR_NOT_FOUND', 'intent not found')
    if (cur.status !== 'pending') throw new IdentityError('ERR_INTENT_NOT_PENDING', `intent is ${cur.status}, not pending`)
    const now = this.#now()
    const decided = this.#store.decide(id, to, {
      at: now,
      approver: { id: approver.id, method: approver.method },
      ...(reason !== undefined && reason !== '' ? { reason } : {}),
      ...(to === 'approved' ? { expiresAt: Math.max(cur.expiresAt, now + COLLECT_GRACE_SECONDS) } : {}),
    })
    if (!decided) throw new IdentityError('ERR_INTENT_NOT_PENDING', 'intent is not pending any more')
    const r = this.#store.get(id)!
    // The decision is signed into the audit log (hash chain, signed checkpoints) before it counts; if it cannot be, it is undone.
    try {
      await this.#auditDurably(
        this.#event(
          r,
          to === 'approved' ? 'approved' : 'denied',
          to === 'approved' ? 'success' : 'refused',
          to === 'approved' ? undefined : 'ERR_APPROVAL_DENIED',
          {
            approver: approver.id,
            approver_method: approver.method,
          },
        ),
      )
    } catch (err) {
      this.#store.undecide(id, to)
      throw err
    }
    this.#log.info(
      { intent_id: id, approver: approver.id, method: approver.method, client_id: r.agent },
      to === 'approved' ? 'Intent approved' : 'Intent denied',
    )
    if (to === 'approved') this.#satisfyStepUps(r, approver.id)
    return this.#emit(r) ?? toApprovalView(r)
  }

  // ------------------------------------------------------------- internals

  /** A human approved `r`: the step-ups its assessment named (factors `step_up:<id>`) are satisfied for its agent. */
  #satisfyStepUps(r: IntentRecord, approver: string): void {
    const ids = r.factors.flatMap((f) => {
      const m = /^step_up:([0-9]{1,15})$/.exec(f.rule)
      return m ? [Number(m[1])] : []
    })
    if (ids.length === 0 || !this.#d.stepUps) return
    try {
      this.#d.stepUps.satisfy(r.agent, ids, { intentId: r.id, approver })
    } catch (err) {
      // the approval stands (it is durable); the step-up stays until an operator clears it
      this.#log.error({ intent_id: r.id, client_id: r.agent, [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Step-up not marked satisfied')
    }
  }

  #expireDue(): void {
    let gone: IntentRecord[]
    try {
      gone = this.#store.expire(this.#now())
    } catch (err) {
      this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Intent expiry sweep failed')
      return
    }
    for (const r of gone) {
      if (r.authReqId !== undefined) this.#polls.delete(r.authReqId)
      // an approved intent whose token was never collected, or a pending one nobody decided
      if (r.tokenJti === undefined) this.#auditQuietly(this.#event(r, 'expired', 'refused', 'ERR_APPROVAL_EXPIRED'))
      this.#emit(r)
    }
  }

  #emit(r: IntentRecord): ApprovalView | undefined {
    if (this.#listeners.size === 0) return undefined
    const v = toApprovalView(r)
    for (const fn of this.#listeners) {
      try {
        fn(v)
      } catch (err) {
        this.#log.warn({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Intent change listener failed')
      }
    }
    return v
  }

  #decisionEvent(r: IntentRecord): AuditEventInput {
    const outcome = r.status === 'refused' ? 'refused' : 'success'
    return this.#event(r, 'declared', outcome, outcome === 'refused' ? 'ERR_INTENT_REFUSED' : undefined, { actor: 'agent' })
  }

  /** The `approval` audit event of a step of an intent: the agent, what it declared, the risk and the rule that decided. */
  #event(
    r: IntentRecord,
    stage: string,
    outcome: 'success' | 'refused',
    reason: string | undefined,
    extra: Record<string, string | number> = {},
  ): AuditEventInput {
    const { actor, ...attrs } = extra
    return {
      type: 'approval',
      outcome,
      ...(reason !== undefined ? { reason } : {}),
      ...(actor === 'agent' ? { actor: { spiffe_id: r.agent } } : {}),
      subject: r.agent,
      ...(r.taskId !== undefined ? { task_id: r.taskId } : {}),
      resource: [r.resource],
      ...(SCOPE_TOKEN.test(r.action) ? { scope: [r.action] } : {}),
      ...(r.tokenJti !== undefined ? { token_id: r.tokenJti } : {}),
      attributes: {
        stage,
        intent_id: r.id,
        decision: r.decision,
        rule: r.decidedBy.slice(0, 256),
        // as text: the log's fast path takes integers only, and the text is exactly what was decided
        risk: String(r.risk),
        status: r.status,
        params_digest: r.paramsDigest,
        ...(r.declaredRisk !== undefined ? { declared_risk: String(r.declaredRisk) } : {}),
        ...(r.approverGroup !== undefined ? { approver_group: r.approverGroup } : {}),
        ...(r.nodeAttestation !== undefined ? { node_attestation: r.nodeAttestation.slice(0, 64) } : {}),
        ...Object.fromEntries(Object.entries(attrs).map(([k, v]) => [k, typeof v === 'string' ? v.slice(0, 256) : v])),
      },
    }
  }

  async #auditDurably(e: AuditEventInput): Promise<void> {
    const sink = this.#d.audit
    if (!sink) return
    try {
      await sink.append(e)
    } catch (err) {
      this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Audit append failed')
      throw new IdentityError('ERR_AUDIT_UNAVAILABLE', 'temporarily unavailable')
    }
  }

  #auditQuietly(e: AuditEventInput): void {
    this.#d.audit
      ?.append(e)
      .catch((err: unknown) => this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err), type: e.type }, 'Audit event lost'))
  }
}
