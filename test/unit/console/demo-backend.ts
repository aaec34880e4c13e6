/**
 * A ConsoleBackend with demo data and an in-memory ApprovalQueue (the
 * intents contract), for the console's unit tests, the browser test of the
 * session rules and scripts/console-screenshots.ts.
 */
import { IdentityError } from '../../../src/errors/identity-error.js'
import type { ApprovalQueue, ApprovalView, Approver, IntentStatus } from '../../../src/broker/intents/contract.js'
import type { AuditStatus, ConsoleBackend, LiveInstance, RateBucket, RevocationLevel, RevocationView, SignalView } from '../../../src/console/ports.js'

export class MemoryApprovalQueue implements ApprovalQueue {
  readonly #items = new Map<string, ApprovalView>()
  readonly #listeners = new Set<(v: ApprovalView) => void>()

  add(v: ApprovalView): void {
    this.#items.set(v.id, v)
  }

  async list(opts: { status?: IntentStatus; limit?: number } = {}): Promise<ApprovalView[]> {
    return [...this.#items.values()].filter((v) => opts.status === undefined || v.status === opts.status).slice(0, opts.limit ?? 1000)
  }

  async get(id: string): Promise<ApprovalView | undefined> {
    return this.#items.get(id)
  }

  async approve(id: string, approver: Approver, reason?: string): Promise<ApprovalView> {
    return this.#decide(id, 'approved', approver, reason)
  }

  async deny(id: string, approver: Approver, reason?: string): Promise<ApprovalView> {
    return this.#decide(id, 'denied', approver, reason)
  }

  #decide(id: string, status: IntentStatus, approver: Approver, reason: string | undefined): ApprovalView {
    const v = this.#items.get(id)
    if (!v) throw new IdentityError('ERR_NOT_FOUND', 'no such intent')
    if (v.status !== 'pending') throw new IdentityError('ERR_INTENT_NOT_PENDING', 'intent is not pending')
    const next: ApprovalView = { ...v, status, approver, ...(reason !== undefined ? { reason } : {}) }
    this.#items.set(id, next)
    for (const l of this.#listeners) l(next)
    return next
  }

  onChange(fn: (v: ApprovalView) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }
}

const TD = 'spiffe://demo.example'

export function demoIntent(id: string, over: Partial<ApprovalView> = {}): ApprovalView {
  const now = Math.floor(Date.now() / 1000)
  return {
    id,
    action: 'api:execute',
    resource: 'https://control.demo.example/breaker-reset',
    paramsDigest: 'n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg',
    declaredRisk: 0.3,
    risk: 0.85,
    factors: [
      { rule: 'action:api:execute', weight: 0.45, detail: 'executes on a control system' },
      { rule: 'resource:control', weight: 0.25, detail: 'control-plane resource class' },
      { rule: 'node:join_token', weight: 0.15, detail: 'node attested by join token, not TPM' },
      { rule: 'history:clean', weight: -0.05, detail: 'no refusal in 24h' },
      { rule: 'declared', weight: 0.05, detail: 'declared 0.30' },
    ],
    status: 'pending',
    decidedBy: 'threshold:0.7',
    approverGroup: 'ops',
    custody: {
      agentId: `${TD}/agents/planner/instance/7f3a`,
      instanceId: '7f3a',
      taskId: 'task-incident-42',
      nodeAttestation: 'join_token',
      delegation: [`${TD}/orchestrators/incident`],
    },
    createdAt: now - 40,
    expiresAt: now + 260,
    ...over,
  }
}

export interface DemoBackend extends ConsoleBackend {
  readonly approvals: MemoryApprovalQueue
  readonly revoked: { level: RevocationLevel; value: string; reason: string; by: string }[]
}

export function demoBackend(): DemoBackend {
  const now = Math.floor(Date.now() / 1000)
  const approvals = new MemoryApprovalQueue()
  approvals.add(demoIntent('int-1'))
  approvals.add(
    demoIntent('int-2', {
      action: 'db:write',
      resource: 'https://db.demo.example/orders',
      risk: 0.74,
      declaredRisk: 0.5,
      custody: { agentId: `${TD}/agents/billing/instance/19c2`, instanceId: '19c2', taskId: 'task-billing-7', nodeAttestation: 'tpm', delegation: [] },
    }),
  )
  approvals.add(
    demoIntent('int-0', {
      action: 'api:read',
      risk: 0.2,
      status: 'approved',
      approver: { id: 'rule:below-threshold', method: 'rule' },
      createdAt: now - 600,
    }),
  )
  const revoked: DemoBackend['revoked'] = []
  const revocations: RevocationView[] = []
  let instances: LiveInstance[] = [
    {
      spiffeId: `${TD}/agents/planner/instance/7f3a`,
      tokens: [
        {
          jti: '3f0c1a9e-6a1e-4c3b-9e0f-2b1d5d7a9c11',
          kind: 'access',
          sub: `${TD}/agents/planner/instance/7f3a`,
          clientId: `${TD}/agents/planner/instance/7f3a`,
          taskId: 'task-incident-42',
          rootJti: '3f0c1a9e-6a1e-4c3b-9e0f-2b1d5d7a9c11',
          scopes: ['incidents:read', 'control:read'],
          audiences: ['https://control.demo.example/'],
          actors: [],
          binding: 'dpop',
          iat: now - 60,
          exp: now + 240,
        },
      ],
    },
    {
      spiffeId: `${TD}/agents/researcher/instance/a1b2`,
      tokens: [
        {
          jti: '9b7e2c44-0d5f-4f0e-8a53-6c1f2e3d4b55',
          kind: 'access',
          sub: `${TD}/orchestrators/incident`,
          clientId: `${TD}/agents/researcher/instance/a1b2`,
          taskId: 'task-incident-42',
          parentJti: '3f0c1a9e-6a1e-4c3b-9e0f-2b1d5d7a9c11',
          rootJti: '3f0c1a9e-6a1e-4c3b-9e0f-2b1d5d7a9c11',
          scopes: ['incidents:read'],
          audiences: ['https://control.demo.example/'],
          actors: [`${TD}/agents/researcher/instance/a1b2`, `${TD}/agents/planner/instance/7f3a`],
          binding: 'mtls',
          iat: now - 30,
          exp: now + 200,
        },
      ],
    },
  ]
  const rates: RateBucket[] = Array.from({ length: 60 }, (_, i) => ({
    start: (Math.floor(Date.now() / 60_000) - 59 + i) * 60_000,
    issued: Math.round(20 + 15 * Math.sin(i / 6) + (i % 7)),
    refused: Math.round(2 + 2 * Math.cos(i / 4) + (i % 11 === 0 ? 9 : 0)),
  }))
  const status: AuditStatus = {
    size: 1843,
    verification: 'ok',
    problems: [],
    verifiedAt: Date.now(),
    checkpoint: {
      size: 1840,
      note: 'demo.example/warrant/broker-audit\n1840\nq3Yb8Z2Vd2o7WcYt3ZB7o2m6N1sXn9m4a0P3c7kQ1eI=\n\n— demo.example/warrant/broker-audit Ab12Cd34MEUCIQDdemo=\n',
      createdAt: Date.now() - 45_000,
    },
    verifierKey: 'demo.example/warrant/broker-audit+ab12cd34+AgMBdemo',
  }
  const signals: SignalView[] = [
    {
      id: 1,
      issuer: 'https://a.demo.example',
      jti: 'set-1',
      eventType: 'https://schemas.openid.net/secevent/caep/event-type/session-revoked',
      subject: JSON.stringify({ format: 'uri', uri: `${TD}/agents/researcher/instance/0c0c` }),
      action: `revoke instance ${TD}/agents/researcher/instance/0c0c`,
      outcome: 'applied',
      receivedAt: now - 300,
    },
    {
      id: 2,
      issuer: 'https://a.demo.example',
      jti: 'set-2',
      eventType: 'https://schemas.openid.net/secevent/caep/event-type/credential-change',
      subject: JSON.stringify({ format: 'opaque', id: 'stream-1' }),
      action: 'record (no_rule)',
      outcome: 'recorded',
      receivedAt: now - 120,
    },
  ]
  return {
    approvals,
    revoked,
    async instances() {
      return instances
    },
    async revoke(req, by) {
      revoked.push({ ...req, by: `${by.id}/${by.method}` })
      const seq = revocations.length + 1
      revocations.push({ seq, kind: req.level, value: req.value, reason: req.reason, createdBy: 'admin', createdAt: now, expiresAt: now + 600 })
      if (req.level === 'instance') instances = instances.filter((i) => i.spiffeId !== req.value)
      return { seq, created: true, tokens: 1 }
    },
    async revocations() {
      return revocations
    },
    audit: {
      async recent() {
        return [
          {
            seq: 1841,
            time: new Date().toISOString(),
            type: 'token.exchanged',
            outcome: 'success',
            actor: `${TD}/agents/planner/instance/7f3a`,
            subject: `${TD}/agents/planner/instance/7f3a`,
            tokenId: '3f0c1a9e-6a1e-4c3b-9e0f-2b1d5d7a9c11',
          },
          {
            seq: 1842,
            time: new Date().toISOString(),
            type: 'token.delegated',
            outcome: 'success',
            actor: `${TD}/agents/researcher/instance/a1b2`,
            subject: `${TD}/agents/researcher/instance/a1b2`,
            tokenId: '9b7e2c44-0d5f-4f0e-8a53-6c1f2e3d4b55',
          },
          { seq: 1843, time: new Date().toISOString(), type: 'signal', outcome: 'success', reason: 'caep.session-revoked' },
        ]
      },
      async status() {
        return status
      },
    },
    signals: {
      async received() {
        return signals
      },
    },
    rates: () => rates,
  }
}
