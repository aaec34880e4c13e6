/**
 * The broker's admin API: the task operations as JSON over a Unix socket
 * (directory 0700, socket 0600, like the server's admin socket), for
 * `warrant task create|show|list|end`. Whoever can open the socket is the
 * operator: tasks are created and ended as 'admin'.
 *
 *   POST /v1/tasks              create (TaskSpec wire form)
 *   GET  /v1/tasks[?agent=&orchestration_id=&include_ended=true]
 *   GET  /v1/tasks/:id
 *   POST /v1/tasks/:id/end
 *   GET/POST /v1/approvals...   the approval queue (intents/admin-routes.ts)
 *   GET  /v1/step-ups[?all=true]  step-ups a signal put on agents (src/broker/step-ups.ts)
 *   POST /v1/step-ups/:id/clear   {"uid": <the CLI's uid>, "reason"?: "..."}: cleared as `cli:<uid>`
 *   POST /v1/signals/clients  {"name": "..."}: registers SSF client `ssf:<name>`; its secret is in this answer only
 *   GET  /v1/signals/clients
 *   POST /v1/signals/clients/:name/delete   (its streams too; its live tokens stop working at once)
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs'
import { dirname } from 'node:path'
import Fastify, { type FastifyReply } from 'fastify'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { BrokerService } from '../contract.js'
import { taskErrorStatus, taskId, taskListFilterFromWire, taskSpecFromWire, taskToWire } from '../http/task-wire.js'
import { revocationRequestFromWire } from '../http/revocation-wire.js'
import type { StoredRevocation } from '../store/broker-store.js'
import type { CredentialVault } from '../credentials.js'
import { manualSignalFromWire, type SsfTransmitter } from '../ssf-transmitter.js'
import { revocationEntryToWire } from '../../tokens/revocation.js'
import type { ApprovalQueue } from '../intents/contract.js'
import { registerApprovalAdminRoutes } from '../intents/admin-routes.js'
import { stepUpToWire, type StepUps } from '../step-ups.js'
import type { SsfClients } from '../ssf-clients.js'

export interface BrokerAdminServer {
  readonly socketPath: string
  close(): Promise<void>
}

function toolParam(params: unknown): string {
  const t = (params as { tool?: unknown } | null)?.tool
  return typeof t === 'string' ? t : ''
}

export async function startBrokerAdminServer(o: {
  service: BrokerService
  socketPath: string
  log: Logger
  now?: () => number
  credentials?: CredentialVault
  /** The SSF transmitter, for signals sent by hand (POST /v1/signals). */
  signals?: SsfTransmitter
  /** The approval queue of intents (`[broker.intents]`): `warrant approval`. */
  approvals?: ApprovalQueue
  /** Step-ups a signal put on agents: `warrant signal step-ups`, `warrant signal clear-step-up`. */
  stepUps?: StepUps
  /** Registered SSF receiver clients: `warrant signal client create|list|delete`. */
  ssfClients?: SsfClients
}): Promise<BrokerAdminServer> {
  const log = o.log.child({ [F.SUBSYSTEM]: 'broker_admin' })
  const now = o.now ?? Date.now
  const app = Fastify({ logger: false, bodyLimit: 64 * 1024, onProtoPoisoning: 'error', onConstructorPoisoning: 'error' })
  const fail = (reply: FastifyReply, err: unknown, endpoint: string) => {
    const code = isIdentityError(err) ? err.code : undefined
    const status = code === undefined && (err as { statusCode?: number }).statusCode === 400 ? 400 : taskErrorStatus(code)
    const fields = { endpoint, [F.ERROR_CODE]: code ?? 'internal', [F.ERR]: err instanceof Error ? err.message : String(err) }
    if (status >= 500) log.error(fields, 'Admin request failed')
    else log.info(fields, 'Admin request refused')
    // The operator gets the message (it is their own socket), never a stack.
    return reply.code(status).send({
      error: code ?? (status === 400 ? 'ERR_REQUEST_MALFORMED' : 'ERR_INTERNAL'),
      message: status >= 500 ? 'internal error' : err instanceof Error ? err.message : String(err),
    })
  }
  app.setErrorHandler((err, req, reply) => fail(reply, err, req.url))
  app.setNotFoundHandler((_req, reply) => reply.code(404).send({ error: 'ERR_NOT_FOUND', message: 'no such endpoint' }))

  app.post('/v1/tasks', async (req, reply) => {
    try {
      const t = await o.service.createTask(taskSpecFromWire(req.body), 'admin')
      log.info({ endpoint: 'tasks.create', task_id: t.taskId, agent: t.agent }, 'Task created by admin')
      return reply.code(201).send(taskToWire(t, now()))
    } catch (err) {
      return fail(reply, err, 'tasks.create')
    }
  })
  app.get('/v1/tasks', async (req, reply) => {
    try {
      const tasks = await o.service.listTasks(taskListFilterFromWire(req.query))
      return reply.send({ tasks: tasks.map((t) => taskToWire(t, now())) })
    } catch (err) {
      return fail(reply, err, 'tasks.list')
    }
  })
  app.get('/v1/tasks/:id', async (req, reply) => {
    try {
      return reply.send(taskToWire(await o.service.getTask(taskId((req.params as { id?: unknown }).id)), now()))
    } catch (err) {
      return fail(reply, err, 'tasks.get')
    }
  })
  app.post('/v1/tasks/:id/end', async (req, reply) => {
    try {
      const t = await o.service.endTask(taskId((req.params as { id?: unknown }).id), 'admin')
      log.info({ endpoint: 'tasks.end', task_id: t.taskId }, 'Task ended by admin')
      return reply.send(taskToWire(t, now()))
    } catch (err) {
      return fail(reply, err, 'tasks.end')
    }
  })

  // Tools' static credentials: put (sealed at once), list (never a value), delete.
  app.post('/v1/credentials/:tool', async (req, reply) => {
    try {
      if (!o.credentials)
        throw new IdentityError('ERR_UNSUPPORTED', 'credential shielding is not configured (broker credential_readers, a key manager that seals)')
      const b = (req.body ?? {}) as { header?: unknown; scheme?: unknown; value?: unknown }
      const tool = toolParam(req.params)
      const info = await o.credentials.put(
        {
          tool,
          header: typeof b.header === 'string' ? b.header : '',
          ...(typeof b.scheme === 'string' ? { scheme: b.scheme } : {}),
          value: typeof b.value === 'string' ? b.value : '',
        },
        'admin',
      )
      return reply.code(201).send(info)
    } catch (err) {
      return fail(reply, err, 'credentials.put')
    }
  })
  app.get('/v1/credentials', async (_req, reply) => {
    try {
      if (!o.credentials) throw new IdentityError('ERR_UNSUPPORTED', 'credential shielding is not configured')
      return reply.send({ credentials: o.credentials.list() })
    } catch (err) {
      return fail(reply, err, 'credentials.list')
    }
  })
  app.post('/v1/credentials/:tool/delete', async (req, reply) => {
    try {
      if (!o.credentials) throw new IdentityError('ERR_UNSUPPORTED', 'credential shielding is not configured')
      const gone = o.credentials.delete(toolParam(req.params), 'admin')
      return reply.send({ deleted: gone })
    } catch (err) {
      return fail(reply, err, 'credentials.delete')
    }
  })

  app.post('/v1/signals', async (req, reply) => {
    try {
      if (!o.signals) throw new IdentityError('ERR_UNSUPPORTED', 'no SSF transmitter ([broker.signals] receivers is empty)')
      return reply.code(201).send(o.signals.send(manualSignalFromWire(req.body)))
    } catch (err) {
      return fail(reply, err, 'signals.send')
    }
  })

  const ssfClients = (): SsfClients => {
    if (!o.ssfClients) throw new IdentityError('ERR_UNSUPPORTED', 'no SSF transmitter here ([broker.signals])')
    return o.ssfClients
  }
  app.post('/v1/signals/clients', async (req, reply) => {
    try {
      const c = ssfClients().create((req.body as { name?: unknown } | null)?.name)
      log.info({ endpoint: 'signals.clients.create', client_id: c.client_id }, 'SSF client created by admin')
      return reply.code(201).header('cache-control', 'no-store').send(c)
    } catch (err) {
      return fail(reply, err, 'signals.clients.create')
    }
  })
  app.get('/v1/signals/clients', async (_req, reply) => {
    try {
      return reply.send({ clients: ssfClients().list() })
    } catch (err) {
      return fail(reply, err, 'signals.clients.list')
    }
  })
  app.post('/v1/signals/clients/:name/delete', async (req, reply) => {
    try {
      const name = (req.params as { name?: unknown }).name
      const gone = ssfClients().delete(name)
      if (!gone) throw new IdentityError('ERR_NOT_FOUND', 'no such SSF client')
      log.info({ endpoint: 'signals.clients.delete', client_id: `ssf:${String(name)}` }, 'SSF client deleted by admin')
      return reply.send({ deleted: true })
    } catch (err) {
      return fail(reply, err, 'signals.clients.delete')
    }
  })

  if (o.approvals) registerApprovalAdminRoutes(app, { queue: o.approvals, log })

  app.get('/v1/step-ups', async (req, reply) => {
    try {
      if (!o.stepUps) throw new IdentityError('ERR_UNSUPPORTED', 'no step-ups here ([broker.signals] transmitters and a step_up rule)')
      const all = (req.query as { all?: unknown }).all === 'true'
      return reply.send({ step_ups: o.stepUps.list(all).map(stepUpToWire) })
    } catch (err) {
      return fail(reply, err, 'step_ups.list')
    }
  })
  app.post('/v1/step-ups/:id/clear', async (req, reply) => {
    try {
      if (!o.stepUps) throw new IdentityError('ERR_UNSUPPORTED', 'no step-ups here ([broker.signals] transmitters and a step_up rule)')
      const raw = (req.params as { id?: unknown }).id
      const id = typeof raw === 'string' && /^[1-9][0-9]{0,14}$/.test(raw) ? Number(raw) : undefined
      if (id === undefined) throw new IdentityError('ERR_INVALID_ARGUMENT', 'invalid step-up id')
      const b = (req.body ?? {}) as { uid?: unknown; reason?: unknown }
      if (typeof b.uid !== 'number' || !Number.isSafeInteger(b.uid) || b.uid < 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'uid is required')
      if (b.reason !== undefined && (typeof b.reason !== 'string' || b.reason.length > 256))
        throw new IdentityError('ERR_INVALID_ARGUMENT', 'reason must be a string of at most 256 characters')
      const s = o.stepUps.clear(id, `cli:${b.uid}`, b.reason)
      log.info({ endpoint: 'step_ups.clear', step_up: id, by: `cli:${b.uid}` }, 'Step-up cleared by admin')
      return reply.send(stepUpToWire(s))
    } catch (err) {
      return fail(reply, err, 'step_ups.clear')
    }
  })

  app.post('/v1/revocations', async (req, reply) => {
    try {
      const r = await o.service.revokeAt(revocationRequestFromWire(req.body), 'admin')
      log.info({ endpoint: 'revocations.create', seq: r.entry.seq, kind: r.entry.kind, created: r.created }, 'Revocation by admin')
      return reply.code(r.created ? 201 : 200).send({ ...revocationToWire(r.entry), created: r.created, tokens_revoked: r.tokens })
    } catch (err) {
      return fail(reply, err, 'revocations.create')
    }
  })
  app.get('/v1/revocations', async (req, reply) => {
    try {
      const q = req.query as { since?: unknown; include_expired?: unknown }
      const since = q.since === undefined ? 0 : Number(q.since)
      if (!Number.isSafeInteger(since) || since < 0) throw new IdentityError('ERR_REVOCATION_INVALID', 'since must be a sequence number')
      const list = await o.service.listRevocations(since, q.include_expired === 'true')
      return reply.send({ revocations: list.map(revocationToWire) })
    } catch (err) {
      return fail(reply, err, 'revocations.list')
    }
  })

  mkdirSync(dirname(o.socketPath), { recursive: true, mode: 0o700 })
  chmodSync(dirname(o.socketPath), 0o700)
  rmSync(o.socketPath, { force: true })
  try {
    await app.listen({ path: o.socketPath })
  } catch (err) {
    await app.close().catch(() => undefined)
    throw new IdentityError('ERR_CONFIG_INVALID', `broker admin API cannot listen on ${o.socketPath}: ${(err as Error).message}`, { cause: err })
  }
  // The directory is 0700 already, so nobody else could reach the socket before this.
  chmodSync(o.socketPath, 0o600)
  log.info({ [F.PATH]: o.socketPath }, 'Broker admin API listening')
  return {
    socketPath: o.socketPath,
    async close() {
      await app.close()
      rmSync(o.socketPath, { force: true })
    },
  }
}

function revocationToWire(e: StoredRevocation): Record<string, unknown> {
  return { ...revocationEntryToWire(e), created_by: e.createdBy, ...(e.reason !== undefined ? { reason: e.reason } : {}) }
}
