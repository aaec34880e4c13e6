/**
 * Tasks on the wire (JSON, snake_case), shared by the HTTPS `/tasks`
 * endpoints for orchestrators and the admin API on the Unix socket.
 */
import { z } from 'zod'
import { IdentityError } from '../../errors/identity-error.js'
import type { Task, TaskSpec } from '../contract.js'

const ID = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z0-9._~-]+$/, 'letters, digits and ._~- only')

export const TaskSpecWire = z
  .object({
    task_id: ID.optional(),
    orchestration_id: ID.optional(),
    agent: z.string().min(1).max(2048),
    scopes: z.array(z.string().min(1).max(256)).max(256),
    resources: z.array(z.string().min(1).max(2048)).max(256).default([]),
    ttl_seconds: z
      .number()
      .int()
      .min(1)
      .max(31 * 86_400),
    max_renewals: z.number().int().min(0).max(1_000_000).default(0),
  })
  .strict()

export const TaskListQuery = z
  .object({
    agent: z.string().min(1).max(2048).optional(),
    orchestration_id: ID.optional(),
    include_ended: z.enum(['true', 'false']).optional(),
  })
  .strict()

export function taskSpecFromWire(body: unknown): TaskSpec {
  const r = TaskSpecWire.safeParse(body)
  if (!r.success) {
    const issues = r.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message }))
    throw new IdentityError('ERR_TASK_INVALID', `invalid task: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { details: { issues } })
  }
  const b = r.data
  return {
    ...(b.task_id !== undefined ? { taskId: b.task_id } : {}),
    ...(b.orchestration_id !== undefined ? { orchestrationId: b.orchestration_id } : {}),
    agent: b.agent,
    scopes: b.scopes,
    resources: b.resources,
    ttlSeconds: b.ttl_seconds,
    maxRenewals: b.max_renewals,
  }
}

export function taskListFilterFromWire(query: unknown): { agent?: string; orchestrationId?: string; includeEnded?: boolean } {
  const r = TaskListQuery.safeParse(query ?? {})
  if (!r.success) throw new IdentityError('ERR_INVALID_ARGUMENT', 'invalid task filter')
  return {
    ...(r.data.agent !== undefined ? { agent: r.data.agent } : {}),
    ...(r.data.orchestration_id !== undefined ? { orchestrationId: r.data.orchestration_id } : {}),
    ...(r.data.include_ended !== undefined ? { includeEnded: r.data.include_ended === 'true' } : {}),
  }
}

export function taskId(v: unknown): string {
  const r = ID.safeParse(v)
  if (!r.success) throw new IdentityError('ERR_TASK_NOT_FOUND', 'task not found')
  return r.data
}

export interface TaskWire {
  task_id: string
  orchestration_id?: string
  agent: string
  scopes: string[]
  resources: string[]
  ttl_seconds: number
  max_renewals: number
  created_by: string
  /** Seconds since the epoch, like the tokens' `iat` and `exp`. */
  created_at: number
  /** Seconds since the epoch. */
  expires_at: number
  /** Seconds since the epoch. */
  ended_at?: number
  state: 'active' | 'ended' | 'expired'
}

export function taskToWire(t: Task, nowMs: number): TaskWire {
  return {
    task_id: t.taskId,
    ...(t.orchestrationId !== undefined ? { orchestration_id: t.orchestrationId } : {}),
    agent: t.agent,
    scopes: [...t.scopes],
    resources: [...t.resources],
    ttl_seconds: t.ttlSeconds,
    max_renewals: t.maxRenewals,
    created_by: t.createdBy,
    created_at: t.createdAt,
    expires_at: t.expiresAt,
    ...(t.endedAt !== undefined ? { ended_at: t.endedAt } : {}),
    state: t.endedAt !== undefined ? 'ended' : t.expiresAt * 1000 <= nowMs ? 'expired' : 'active',
  }
}

/** HTTP status of a task-API error (JSON APIs, not the OAuth endpoints). */
export function taskErrorStatus(code: string | undefined): number {
  switch (code) {
    case 'ERR_TASK_INVALID':
    case 'ERR_INVALID_ARGUMENT':
    case 'ERR_REQUEST_MALFORMED':
    case 'ERR_SCOPE_INVALID':
    case 'ERR_TARGET_INVALID':
    case 'ERR_BOUNDS_INVALID':
    case 'ERR_REVOCATION_INVALID':
      return 400
    case 'ERR_CLIENT_AUTH_FAILED':
      return 401
    case 'ERR_CLIENT_UNAUTHORIZED':
    case 'ERR_ID_NOT_AUTHORIZED':
      return 403
    case 'ERR_TASK_NOT_FOUND':
    case 'ERR_NOT_FOUND':
      return 404
    case 'ERR_ALREADY_EXISTS':
    case 'ERR_TASK_ENDED':
      return 409
    case 'ERR_RESOURCE_EXHAUSTED':
    case 'ERR_UNAVAILABLE':
      return 503
    default:
      return 500
  }
}
