import { createHash } from 'node:crypto'
import { decodeJwt } from 'jose'
import { afterEach, describe, expect, it } from 'vitest'
import { parseAuditEvent, type AuditEventInput } from '../../../../src/audit/event.js'
import type { AuditReceipt, AuditSink } from '../../../../src/audit/sink.js'
import { parseIntentsConfig } from '../../../../src/broker/intents/config.js'
import type { ApprovalView } from '../../../../src/broker/intents/contract.js'
import { CIBA_GRANT_TYPE } from '../../../../src/broker/intents/intent.js'
import { coveringResource, IntentService, type IntentSignal } from '../../../../src/broker/intents/intent-service.js'
import { boundsCeilingSource } from '../../../../src/broker/ports.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { BoundsSet } from '../../../../src/spiffe/bounds/bounds-set.js'
import type { TokenRequest } from '../../../../src/broker/contract.js'
import { GRANT_TYPE } from '../../../../src/tokens/claims.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { StepUps } from '../../../../src/broker/step-ups.js'
import { A, API, B, BOUNDS, cc, client, dpop, exchange, fixture, refused, RS, td, type Fixture } from '../fixture.js'

class RecordingSink implements AuditSink {
  readonly events: AuditEventInput[] = []
  fail: Error | undefined
  async append(e: AuditEventInput): Promise<AuditReceipt> {
    if (this.fail) throw this.fail
    parseAuditEvent({ v: 1, time: new Date().toISOString(), ...e })
    this.events.push(e)
    return { seq: this.events.length, leafIndex: this.events.length - 1, chainHash: '0'.repeat(64), time: new Date().toISOString() }
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest('base64url')
const detail = (action: string, resource: string, extra: Record<string, unknown> = {}) => [
  { type: 'warrant_intent', actions: [action], locations: [resource], params_digest: digest(`${action} ${resource}`), ...extra },
]
const inline = (taskId: string, action: string, resource: string, extra: Record<string, unknown> = {}): TokenRequest => ({
  grantType: GRANT_TYPE.clientCredentials,
  resources: [],
  audiences: [],
  taskId,
  authorizationDetails: detail(action, resource, extra),
})
const ciba = (): TokenRequest => ({ grantType: CIBA_GRANT_TYPE, resources: [], audiences: [] })

let f: Fixture | undefined
let svc: IntentService | undefined
afterEach(async () => {
  svc?.close()
  svc = undefined
  await f?.cleanup()
  f = undefined
})

async function setup(extra: Record<string, unknown> = {}, o: { stepUps?: StepUps } = {}) {
  const sink = new RecordingSink()
  f = await fixture({ audit: sink, ...(o.stepUps ? { stepUps: o.stepUps } : {}) })
  const signals: IntentSignal[] = []
  const notified: ApprovalView[] = []
  const cfg = parseIntentsConfig(
    {
      poll_interval: '2s',
      actions: [
        { match: 'read', weight: 0 },
        { match: 'write', weight: 0.5 },
        { match: 'admin', forbid: true },
      ],
      namespaces: [{ prefix: 'spiffe://corp.example/agents/', approver_group: 'ops' }],
      approver_groups: { ops: {} },
      ...extra,
    },
    { baseDir: '/' },
  )!
  let attestation: string | undefined = 'tpm'
  svc = new IntentService({
    config: cfg,
    broker: f.svc,
    ceilings: boundsCeilingSource(() => BoundsSet.parse(td, BOUNDS)),
    requireTask: true,
    audit: sink,
    nodeAttestation: async () => attestation,
    signalsAbout: () => 0,
    raiseSignal: (s) => signals.push(s),
    notifier: { notify: (v) => notified.push(v) },
    ...(o.stepUps ? { stepUps: o.stepUps } : {}),
    clock: f.clock,
    log: f.log,
  })
  const changes: ApprovalView[] = []
  svc.onChange((v) => changes.push(v))
  const task = await f.task({ scopes: ['read', 'write', 'admin'] })
  return { sink, signals, notified, changes, task, svc, fx: f, setAttestation: (a: string | undefined) => (attestation = a) }
}

const settle = () => new Promise((r) => setImmediate(r))

describe('intents: declared, decided, bound into one token', () => {
  it('a low-risk intent is approved by rule and its token carries exactly that action on that resource, once', async () => {
    const { sink, task, svc, fx, changes } = await setup()
    const key = dpop()
    const res = (await svc.token(inline(task, 'read', `${API}/v1/orders/42`), undefined, client(A), key)) as unknown as Record<string, unknown>
    const claims = await fx.verify(res.access_token as string)
    expect(claims).toMatchObject({ sub: A, aud: API, scope: 'read', task_id: task, cnf: { jkt: key.jkt } })
    expect(claims.exp! - claims.iat!).toBe(60)
    expect(claims.authorization_details).toEqual([
      {
        type: 'warrant_intent',
        actions: ['read'],
        locations: [`${API}/v1/orders/42`],
        params_digest: digest(`read ${API}/v1/orders/42`),
        intent_id: res.intent_id,
        task,
      },
    ])
    expect(res.authorization_details).toEqual(claims.authorization_details)
    // never renewed nor delegated
    await refused(() => fx.svc.token(exchange(res.access_token as string), client(A), key), 'ERR_GRANT_INVALID')
    await refused(() => fx.svc.token(exchange(res.access_token as string, { mayAct: B }), client(A), key), 'ERR_GRANT_INVALID')
    await settle()
    const approval = sink.events.find((e) => e.type === 'approval')!
    expect(approval).toMatchObject({
      outcome: 'success',
      actor: { spiffe_id: A },
      attributes: { stage: 'declared', decision: 'auto-approve', rule: 'threshold:0.5' },
    })
    expect(sink.events.find((e) => e.type === 'token.exchanged')).toMatchObject({ token_id: claims.jti, attributes: { intent_id: res.intent_id } })
    const v = (await svc.get(res.intent_id as string))!
    expect(v).toMatchObject({ status: 'approved', decidedBy: 'threshold:0.5', approver: { id: 'rule:threshold:0.5', method: 'rule' }, tokenId: claims.jti })
    expect(v.custody).toMatchObject({ agentId: A, taskId: task, nodeAttestation: 'tpm', delegation: [A] })
    expect(changes.map((c) => c.id)).toContain(res.intent_id)
  })

  it('a risky intent waits for a human over CIBA: pending, slow_down, approved by a human, one token, then invalid_grant', async () => {
    const { sink, task, svc, fx, notified } = await setup()
    const r = await svc.bcAuthorize(
      { authorizationDetails: detail('write', `${API}/deploy`), taskId: task, bindingMessage: 'deploy v2', unsupported: [] },
      client(A),
    )
    expect(r).toMatchObject({ expires_in: 600, interval: 2 })
    expect(r.auth_req_id).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(notified).toHaveLength(1)
    expect(notified[0]).toMatchObject({ status: 'pending', approverGroup: 'ops', bindingMessage: 'deploy v2', action: 'write' })
    const key = dpop()
    await refused(() => svc.token(ciba(), r.auth_req_id, client(A), key), 'ERR_APPROVAL_PENDING')
    const fast = await refused(() => svc.token(ciba(), r.auth_req_id, client(A), key), 'ERR_APPROVAL_PENDING')
    expect((fast as unknown as IdentityError).details).toMatchObject({ oauth_error: 'slow_down' })
    fx.clock.advance(2000)
    const slow = await refused(() => svc.token(ciba(), r.auth_req_id, client(A), key), 'ERR_APPROVAL_PENDING')
    expect((slow as unknown as IdentityError).details?.oauth_error).toBeUndefined()
    // another client cannot use it
    await refused(() => svc.token(ciba(), r.auth_req_id, client(B), key), 'ERR_GRANT_INVALID')
    const list = await svc.list({ status: 'pending' })
    expect(list.map((v) => v.id)).toEqual([r.intent_id])
    const approved = await svc.approve(r.intent_id, { id: 'alice', method: 'webauthn' }, 'looks right')
    expect(approved).toMatchObject({ status: 'approved', approver: { id: 'alice', method: 'webauthn' }, reason: 'looks right' })
    await refused(() => svc.approve(r.intent_id, { id: 'bob', method: 'totp' }), 'ERR_INTENT_NOT_PENDING')
    fx.clock.advance(2000)
    const tok = await svc.token(ciba(), r.auth_req_id, client(A), key)
    const claims = decodeJwt(tok.access_token)
    expect(claims).toMatchObject({ scope: 'write', aud: API, authorization_details: [{ actions: ['write'], locations: [`${API}/deploy`] }] })
    fx.clock.advance(2000)
    await refused(() => svc.token(ciba(), r.auth_req_id, client(A), key), 'ERR_GRANT_INVALID')
    await settle()
    const stages = sink.events.filter((e) => e.type === 'approval').map((e) => (e.attributes as Record<string, unknown>).stage)
    expect(stages).toEqual(['declared', 'approved'])
    expect(sink.events.find((e) => (e.attributes as Record<string, unknown> | undefined)?.stage === 'approved')).toMatchObject({
      outcome: 'success',
      attributes: { approver: 'alice', approver_method: 'webauthn', intent_id: r.intent_id },
    })
  })

  it('a denied intent answers access_denied; an expired one expired_token, with an audit event', async () => {
    const { sink, task, svc, fx } = await setup()
    const denied = await svc.bcAuthorize({ authorizationDetails: detail('write', `${API}/a`), taskId: task, unsupported: [] }, client(A))
    await svc.deny(denied.intent_id, { id: 'cli:1000', method: 'unix-socket' }, 'no')
    await refused(() => svc.token(ciba(), denied.auth_req_id, client(A), dpop()), 'ERR_APPROVAL_DENIED')
    const late = await svc.bcAuthorize({ authorizationDetails: detail('write', `${API}/b`), taskId: task, requestedExpiry: '60', unsupported: [] }, client(A))
    expect(late.expires_in).toBe(60)
    fx.clock.advance(61_000)
    await refused(() => svc.token(ciba(), late.auth_req_id, client(A), dpop()), 'ERR_APPROVAL_EXPIRED')
    await refused(() => svc.approve(late.intent_id, { id: 'alice', method: 'webauthn' }), 'ERR_INTENT_NOT_PENDING')
    await refused(() => svc.approve('int-nope', { id: 'alice', method: 'webauthn' }), 'ERR_NOT_FOUND')
    await settle()
    expect(sink.events.filter((e) => e.type === 'approval').map((e) => [(e.attributes as Record<string, unknown>).stage, e.outcome, e.reason])).toEqual([
      ['declared', 'success', undefined],
      ['denied', 'refused', 'ERR_APPROVAL_DENIED'],
      ['declared', 'success', undefined],
      ['expired', 'refused', 'ERR_APPROVAL_EXPIRED'],
    ])
  })

  it('forbidden intents are refused and recorded with the rule; beyond the ceiling too; the history counts them', async () => {
    const { sink, task, svc } = await setup()
    await refused(() => svc.token(inline(task, 'admin', `${API}/x`), undefined, client(A), dpop()), 'ERR_INTENT_REFUSED')
    await refused(
      () => svc.bcAuthorize({ authorizationDetails: detail('read', 'https://elsewhere.example/x'), taskId: task, unsupported: [] }, client(A)),
      'ERR_INTENT_REFUSED',
    )
    await settle()
    const refusedEvents = sink.events.filter((e) => e.type === 'approval')
    expect(refusedEvents.map((e) => [e.outcome, e.reason, (e.attributes as Record<string, unknown>).rule])).toEqual([
      ['refused', 'ERR_INTENT_REFUSED', 'forbid:action:admin'],
      ['refused', 'ERR_INTENT_REFUSED', 'ceiling:resource'],
    ])
    const listed = await svc.list({ status: 'refused' })
    expect(listed).toHaveLength(2)
    // the next intent carries the recent refusals
    const res = (await svc.token(inline(task, 'read', `${API}/y`), undefined, client(A), dpop())) as unknown as { intent_id: string }
    const v = (await svc.get(res.intent_id))!
    expect(v.factors.find((x) => x.rule === 'history:refusals')).toMatchObject({ weight: 0.2, detail: '2 recent refusals' })
  })

  it('an inline intent that needs a human becomes a CIBA request the client polls', async () => {
    const { task, svc, fx } = await setup()
    const err = (await refused(
      () => svc.token(inline(task, 'write', `${API}/z`), undefined, client(A), dpop()),
      'ERR_APPROVAL_PENDING',
    )) as unknown as IdentityError
    const handle = err.details!.ciba as { auth_req_id: string; intent_id: string; interval: number }
    expect(handle.interval).toBe(2)
    await svc.approve(handle.intent_id, { id: 'cli:0', method: 'unix-socket' })
    fx.clock.advance(3000)
    expect((await svc.token(ciba(), handle.auth_req_id, client(A), dpop())).access_token).toBeTruthy()
  })

  it("a step-up sends the agent's next intent to a human whatever its risk; a human's approval satisfies it and tokens come again", async () => {
    const audited: AuditEventInput[] = []
    const stepUps = new StepUps({ log: captureLogger(), audit: (e) => audited.push(e) })
    const { sink, task, svc, fx } = await setup({}, { stepUps })
    // declared before the signal, approved after: its approver never saw the step-up, so it does not satisfy it
    const before = await svc.bcAuthorize({ authorizationDetails: detail('write', `${API}/early`), taskId: task, unsupported: [] }, client(A))
    const s = stepUps.add({
      target: 'instance',
      value: A,
      clearOnApproval: true,
      signal: { issuer: 'https://idp.example', jti: 'jti-7', eventType: 'credential-change' },
      reason: 'signal credential-change jti-7 from https://idp.example (rule 0)',
    })
    await refused(() => fx.svc.token(cc(task), client(A), dpop()), 'ERR_STEP_UP_REQUIRED')
    // a read is approved by rule otherwise: now it waits for a human, the rule naming the signal
    const pending = (await refused(
      () => svc.token(inline(task, 'read', `${API}/r/9`), undefined, client(A), dpop()),
      'ERR_APPROVAL_PENDING',
    )) as unknown as IdentityError
    const handle = pending.details!.ciba as { auth_req_id: string; intent_id: string }
    const view = (await svc.get(handle.intent_id))!
    expect(view).toMatchObject({ status: 'pending', decidedBy: 'human:step_up:credential-change:jti-7' })
    expect(view.factors).toContainEqual({ rule: `step_up:${s.id}`, weight: 0, detail: expect.stringContaining('jti-7 from https://idp.example') })
    await settle()
    expect(sink.events.find((e) => e.type === 'approval' && e.attributes?.intent_id === handle.intent_id)).toMatchObject({
      attributes: { stage: 'declared', decision: 'needs-human', rule: 'human:step_up:credential-change:jti-7' },
    })
    await svc.approve(before.intent_id, { id: 'alice', method: 'webauthn' })
    await refused(() => fx.svc.token(cc(task), client(A), dpop()), 'ERR_STEP_UP_REQUIRED')
    // a denial does not satisfy it either
    const denied = await svc.bcAuthorize({ authorizationDetails: detail('read', `${API}/r/10`), taskId: task, unsupported: [] }, client(A))
    await svc.deny(denied.intent_id, { id: 'alice', method: 'webauthn' })
    await refused(() => fx.svc.token(cc(task), client(A), dpop()), 'ERR_STEP_UP_REQUIRED')
    expect(audited).toEqual([])
    // the human approves the one that named it: satisfied, audited naming the signal; its token, then plain tokens again
    await svc.approve(handle.intent_id, { id: 'bob', method: 'totp' })
    expect(audited).toEqual([
      expect.objectContaining({
        type: 'signal',
        subject: A,
        attributes: expect.objectContaining({ stage: 'satisfied', jti: 'jti-7', intent_id: handle.intent_id, approver: 'bob' }),
      }),
    ])
    fx.clock.advance(3000)
    expect((await svc.token(ciba(), handle.auth_req_id, client(A), dpop())).access_token).toBeTruthy()
    expect((await fx.svc.token(cc(task), client(A), dpop())).access_token).toBeTruthy()
    expect((await svc.token(inline(task, 'read', `${API}/r/11`), undefined, client(A), dpop())).access_token).toBeTruthy()
  })

  it('outcome reports: a match consumes the token; a repeated use or another action is a mismatch, refused before, revoked and signalled', async () => {
    const { sink, task, svc, fx, signals } = await setup()
    const key = dpop()
    const res = (await svc.token(inline(task, 'read', `${API}/r/1`), undefined, client(A), key)) as unknown as { access_token: string; intent_id: string }
    const jti = decodeJwt(res.access_token).jti!
    expect((await fx.svc.introspect(res.access_token, client(RS))).active).toBe(true)
    const ok = await svc.outcome({ jti, action: 'read', resource: `${API}/r/1`, phase: 'before' }, client(RS))
    expect(ok).toEqual({ outcome: 'match', intent_id: res.intent_id, status: 'used', refused: false, reasons: [] })
    // the completion of the announced use is not a second use
    expect((await svc.outcome({ token: res.access_token, action: 'read', resource: `${API}/r/1`, phase: 'after' }, client(RS))).outcome).toBe('match')
    expect((await fx.svc.introspect(res.access_token, client(RS))).active).toBe(false)
    const again = await svc.outcome({ jti, action: 'read', resource: `${API}/r/1`, phase: 'before' }, client(RS))
    expect(again).toMatchObject({ outcome: 'mismatch', refused: true, reasons: ['reuse'], status: 'mismatch' })
    expect(signals).toEqual([{ event: 'session-revoked', subject: A, reason: expect.stringContaining('mismatch (reuse)'), confidence: 0.9 }])

    const other = (await svc.token(inline(task, 'read', `${API}/r/2`), undefined, client(A), key)) as unknown as { access_token: string; intent_id: string }
    const m = await svc.outcome(
      { jti: decodeJwt(other.access_token).jti!, action: 'write', resource: `${API}/r/3`, paramsDigest: digest('x'), phase: 'after' },
      client(RS),
    )
    expect(m).toMatchObject({ outcome: 'mismatch', refused: false, reasons: ['action', 'resource', 'params_digest'] })
    expect((await fx.svc.listRevocations()).map((r) => [r.kind, r.value])).toContainEqual(['token', decodeJwt(other.access_token).jti])
    await refused(() => svc.outcome({ jti: 'nope', action: 'read', resource: API }, client(RS)), 'ERR_NOT_FOUND')
    await settle()
    const outcomes = sink.events.filter((e) => (e.attributes as Record<string, unknown> | undefined)?.stage === 'outcome')
    expect(outcomes.map((e) => [e.outcome, e.reason, (e.attributes as Record<string, unknown>).mismatch])).toEqual([
      ['success', undefined, undefined],
      ['success', undefined, undefined],
      ['refused', 'ERR_INTENT_MISMATCH', 'reuse'],
      ['refused', 'ERR_INTENT_MISMATCH', 'action,resource,params_digest'],
    ])
    expect((await svc.get(other.intent_id))!.status).toBe('mismatch')
  })

  it('a human decision the audit log cannot record does not count', async () => {
    const { sink, task, svc } = await setup()
    const r = await svc.bcAuthorize({ authorizationDetails: detail('write', `${API}/q`), taskId: task, unsupported: [] }, client(A))
    sink.fail = new IdentityError('ERR_AUDIT_UNAVAILABLE', 'down')
    await refused(() => svc.approve(r.intent_id, { id: 'alice', method: 'webauthn' }), 'ERR_AUDIT_UNAVAILABLE')
    expect((await svc.get(r.intent_id))!.status).toBe('pending')
    sink.fail = undefined
    expect((await svc.approve(r.intent_id, { id: 'alice', method: 'webauthn' })).status).toBe('approved')
  })

  it('checks what it is given: the detail, the task, the hint, the approver', async () => {
    const { task, svc } = await setup()
    const bad = async (d: unknown[], code = 'ERR_INTENT_INVALID') =>
      refused(() => svc.bcAuthorize({ authorizationDetails: d as never, taskId: task, unsupported: [] }, client(A)), code)
    await bad([])
    await bad([{ type: 'warrant_intent', actions: ['read', 'write'], locations: [API], params_digest: digest('x') }])
    await bad([{ type: 'warrant_intent', actions: ['read'], locations: [API], params_digest: 'short' }])
    await bad([{ type: 'warrant_intent', actions: ['read'], locations: [API], params_digest: digest('x'), params: { amount: 1 } }])
    await bad([{ type: 'warrant_intent', actions: ['read'], locations: ['not a uri'], params_digest: digest('x') }])
    await bad([{ type: 'warrant_intent', actions: ['read'], locations: [API], params_digest: digest('x'), declared_risk: 2 }])
    await bad([{ type: 'warrant_intent', actions: ['read'], locations: [API], params_digest: digest('x'), task: 'other' }])
    await refused(() => svc.bcAuthorize({ authorizationDetails: detail('read', API), unsupported: [] }, client(A)), 'ERR_INTENT_INVALID')
    const hint = (await refused(
      () => svc.bcAuthorize({ authorizationDetails: detail('write', API), taskId: task, loginHint: 'friends', unsupported: [] }, client(A)),
      'ERR_INTENT_INVALID',
    )) as unknown as IdentityError
    expect(hint.details).toMatchObject({ oauth_error: 'unknown_user_id' })
    const msg = (await refused(
      () => svc.bcAuthorize({ authorizationDetails: detail('write', API), taskId: task, bindingMessage: '<a href=x>', unsupported: [] }, client(A)),
      'ERR_INTENT_INVALID',
    )) as unknown as IdentityError
    expect(msg.details).toMatchObject({ oauth_error: 'invalid_binding_message' })
    await refused(
      () => svc.bcAuthorize({ authorizationDetails: detail('read', API), taskId: task, unsupported: ['id_token_hint'] }, client(A)),
      'ERR_TOKEN_REQUEST_INVALID',
    )
    const r = await svc.bcAuthorize({ authorizationDetails: detail('write', API), taskId: task, loginHint: 'ops', unsupported: [] }, client(A))
    await refused(() => svc.approve(r.intent_id, { id: 'x', method: 'rule' }), 'ERR_INVALID_ARGUMENT')
    await refused(() => svc.list({ limit: 0 }), 'ERR_INVALID_ARGUMENT')
  })

  it('no agent floods approvers: at most max_pending_per_agent intents wait at once', async () => {
    const { task, svc, notified } = await setup({ max_pending_per_agent: 2 })
    const ask = (n: number) => svc.bcAuthorize({ authorizationDetails: detail('write', `${API}/p/${n}`), taskId: task, unsupported: [] }, client(A))
    const first = await ask(1)
    await ask(2)
    await refused(() => ask(3), 'ERR_RESOURCE_EXHAUSTED')
    expect(notified).toHaveLength(2)
    await svc.deny(first.intent_id, { id: 'cli:0', method: 'unix-socket' })
    await ask(4)
  })

  it('covering resource: equal, or below it, the longest', () => {
    expect(coveringResource([API, `${API}/v1/`], `${API}/v1/x`)).toBe(`${API}/v1/`)
    expect(coveringResource([API], API)).toBe(API)
    expect(coveringResource([API], `${API}x`)).toBeUndefined()
    expect(coveringResource([], API)).toBeUndefined()
  })
})
