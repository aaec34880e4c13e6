import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { brokerAdminCall as call } from '../broker-admin-client.js'

import { DEFAULT_BROKER_ADMIN_SOCKET } from '../broker-admin-client.js'

export const usage = [
  '  task create --agent ID|PREFIX/ --scope S [--scope S] [--resource URI] [--ttl 1h] [--max-renewals N] [--task-id ID] [--orchestration-id ID]',
  '  task show TASK_ID | task list [--agent ID] [--orchestration-id ID] [--all] | task end TASK_ID   (--socket PATH, --output json)',
].join('\n')

interface TaskWire {
  task_id: string
  orchestration_id?: string
  agent: string
  scopes: string[]
  resources: string[]
  ttl_seconds: number
  max_renewals: number
  created_by: string
  created_at: number
  expires_at: number
  ended_at?: number
  state: string
}

function parseTtl(v: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(v)
  if (!m) throw new IdentityError('ERR_INVALID_ARGUMENT', '--ttl must be a duration such as 90s, 30m, 2h or 1d')
  return Number(m[1]) * ({ s: 1, m: 60, h: 3600, d: 86_400 }[(m[2] ?? 's') as 's'] ?? 1)
}

function printTask(t: TaskWire): void {
  const lines = [
    `Task:          ${t.task_id} (${t.state})`,
    ...(t.orchestration_id ? [`Orchestration: ${t.orchestration_id}`] : []),
    `Agent:         ${t.agent}`,
    `Scopes:        ${t.scopes.join(' ') || '(none)'}`,
    `Resources:     ${t.resources.join(' ') || '(none)'}`,
    `Max renewals:  ${t.max_renewals}`,
    `Created by:    ${t.created_by} at ${new Date(t.created_at * 1000).toISOString()}`,
    `Expires:       ${new Date(t.expires_at * 1000).toISOString()}`,
    ...(t.ended_at !== undefined ? [`Ended:         ${new Date(t.ended_at * 1000).toISOString()}`] : []),
  ]
  process.stdout.write(`${lines.join('\n')}\n`)
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  const common = { socket: { type: 'string' as const }, output: { type: 'string' as const } }
  switch (cmd) {
    case 'create': {
      const { values } = parseFlags(rest, {
        ...common,
        agent: { type: 'string' },
        scope: { type: 'string', multiple: true },
        resource: { type: 'string', multiple: true },
        ttl: { type: 'string' },
        'max-renewals': { type: 'string' },
        'task-id': { type: 'string' },
        'orchestration-id': { type: 'string' },
      })
      const fmt = outputFormat(values.output)
      if (!values.agent) throw new IdentityError('ERR_INVALID_ARGUMENT', '--agent is required')
      if (values['max-renewals'] !== undefined && !/^\d+$/.test(values['max-renewals']))
        throw new IdentityError('ERR_INVALID_ARGUMENT', '--max-renewals must be a whole number')
      const body = {
        agent: values.agent,
        scopes: values.scope ?? [],
        resources: values.resource ?? [],
        ttl_seconds: parseTtl(values.ttl ?? '1h'),
        max_renewals: Number(values['max-renewals'] ?? 0),
        ...(values['task-id'] ? { task_id: values['task-id'] } : {}),
        ...(values['orchestration-id'] ? { orchestration_id: values['orchestration-id'] } : {}),
      }
      const t = await call<TaskWire>(values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET, 'POST', '/v1/tasks', body)
      if (fmt === 'json') printJson(t)
      else printTask(t)
      return 0
    }
    case 'show':
    case 'end': {
      const { values, positionals } = parseFlags(rest, common, { positionals: true })
      const fmt = outputFormat(values.output)
      if (positionals.length !== 1) throw new IdentityError('ERR_INVALID_ARGUMENT', `usage: warrant task ${cmd} TASK_ID`)
      const id = encodeURIComponent(positionals[0]!)
      const t = await call<TaskWire>(
        values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET,
        cmd === 'end' ? 'POST' : 'GET',
        cmd === 'end' ? `/v1/tasks/${id}/end` : `/v1/tasks/${id}`,
      )
      if (fmt === 'json') printJson(t)
      else printTask(t)
      return 0
    }
    case 'list': {
      const { values } = parseFlags(rest, { ...common, agent: { type: 'string' }, 'orchestration-id': { type: 'string' }, all: { type: 'boolean' } })
      const fmt = outputFormat(values.output)
      const q = new URLSearchParams()
      if (values.agent) q.set('agent', values.agent)
      if (values['orchestration-id']) q.set('orchestration_id', values['orchestration-id'])
      if (values.all) q.set('include_ended', 'true')
      const qs = q.toString()
      const r = await call<{ tasks: TaskWire[] }>(values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET, 'GET', `/v1/tasks${qs ? `?${qs}` : ''}`)
      if (fmt === 'json') printJson(r)
      else if (r.tasks.length === 0) process.stdout.write('No tasks.\n')
      else
        for (const t of r.tasks)
          process.stdout.write(`${t.task_id}\t${t.state}\t${t.agent}\t${t.scopes.join(' ')}\texpires ${new Date(t.expires_at * 1000).toISOString()}\n`)
      return 0
    }
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}
