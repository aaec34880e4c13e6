/**
 * The approval queue on the broker's admin socket (`warrant approval`):
 *
 *   GET  /v1/approvals[?status=pending&limit=N]
 *   GET  /v1/approvals/:id
 *   POST /v1/approvals/:id/approve   {"uid": <the CLI's uid>, "reason"?: "..."}
 *   POST /v1/approvals/:id/deny      same
 *
 * Whoever can open the 0600 socket is an operator; the decision is recorded
 * with approver `cli:<uid>` and method `unix-socket`.
 */
import type { FastifyInstance, FastifyReply } from 'fastify'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { ApprovalQueue, IntentStatus } from './contract.js'
import { approvalToWire, INTENT_STATUSES } from './intent.js'

function status(code: string | undefined): number {
  switch (code) {
    case 'ERR_INVALID_ARGUMENT':
    case 'ERR_REQUEST_MALFORMED':
      return 400
    case 'ERR_NOT_FOUND':
      return 404
    case 'ERR_INTENT_NOT_PENDING':
      return 409
    case 'ERR_AUDIT_UNAVAILABLE':
    case 'ERR_UNAVAILABLE':
      return 503
    default:
      return 500
  }
}

function idParam(params: unknown): string {
  const id = (params as { id?: unknown } | null)?.id
  if (typeof id !== 'string' || !/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'invalid intent id')
  return id
}

export function registerApprovalAdminRoutes(app: FastifyInstance, o: { queue: ApprovalQueue; log: Logger }): void {
  const fail = (reply: FastifyReply, err: unknown, endpoint: string) => {
    const code = isIdentityError(err) ? err.code : undefined
    const st = status(code)
    const fields = { endpoint, [F.ERROR_CODE]: code ?? 'internal', [F.ERR]: err instanceof Error ? err.message : String(err) }
    if (st >= 500) o.log.error(fields, 'Admin request failed')
    else o.log.info(fields, 'Admin request refused')
    return reply
      .code(st)
      .send({ error: code ?? 'ERR_INTERNAL', message: st >= 500 && st !== 503 ? 'internal error' : err instanceof Error ? err.message : String(err) })
  }
  app.get('/v1/approvals', async (req, reply) => {
    try {
      const q = req.query as { status?: unknown; limit?: unknown }
      if (q.status !== undefined && (typeof q.status !== 'string' || !INTENT_STATUSES.includes(q.status as IntentStatus)))
        throw new IdentityError('ERR_INVALID_ARGUMENT', `status must be one of ${INTENT_STATUSES.join(', ')}`)
      const limit = q.limit === undefined ? undefined : Number(q.limit)
      const list = await o.queue.list({ ...(q.status !== undefined ? { status: q.status as IntentStatus } : {}), ...(limit !== undefined ? { limit } : {}) })
      return reply.send({ approvals: list.map(approvalToWire) })
    } catch (err) {
      return fail(reply, err, 'approvals.list')
    }
  })
  app.get('/v1/approvals/:id', async (req, reply) => {
    try {
      const v = await o.queue.get(idParam(req.params))
      if (!v) throw new IdentityError('ERR_NOT_FOUND', 'intent not found')
      return reply.send(approvalToWire(v))
    } catch (err) {
      return fail(reply, err, 'approvals.get')
    }
  })
  for (const verb of ['approve', 'deny'] as const) {
    app.post(`/v1/approvals/:id/${verb}`, async (req, reply) => {
      try {
        const id = idParam(req.params)
        const b = (req.body ?? {}) as { uid?: unknown; reason?: unknown }
        if (typeof b.uid !== 'number' || !Number.isSafeInteger(b.uid) || b.uid < 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'uid is required')
        if (b.reason !== undefined && typeof b.reason !== 'string') throw new IdentityError('ERR_INVALID_ARGUMENT', 'reason must be a string')
        const approver = { id: `cli:${b.uid}`, method: 'unix-socket' as const }
        const v = verb === 'approve' ? await o.queue.approve(id, approver, b.reason) : await o.queue.deny(id, approver, b.reason)
        o.log.info(
          { endpoint: `approvals.${verb}`, intent_id: id, approver: approver.id },
          verb === 'approve' ? 'Intent approved by admin' : 'Intent denied by admin',
        )
        return reply.send(approvalToWire(v))
      } catch (err) {
        return fail(reply, err, `approvals.${verb}`)
      }
    })
  }
}
