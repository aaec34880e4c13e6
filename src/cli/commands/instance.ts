import { IdentityError } from '../../errors/identity-error.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { deleteServerRevocation, listServerRevocations, revokeOnServer, type ServerRevocation } from '../server-revocation-client.js'

export const usage = [
  '  instance list [--agent-id ID] [--entry-id ID] [--live]   per-instance identities (one per workload process)',
  '  instance show --id INSTANCE_ID',
  '  instance revoke --id INSTANCE_ID | --spiffe-id ID [--reason R]   no SVID is issued or served for it again',
  '  instance quarantine --prefix spiffe://TD/PATH [--until ISO] [--reason R]   no SVID under the prefix (until then)',
  '  instance revocations [--all] [--output json]   revocations in force (--all: also expired, not yet swept)',
  '  instance unquarantine --id N   deletes revocation N (a finished or mistaken quarantine)',
].join('\n')

const REVOCATION_CMDS = ['revoke', 'quarantine', 'revocations', 'unquarantine']

function printRevocation(r: ServerRevocation): void {
  const t = (ms: number | undefined, none: string) => (ms ? new Date(ms).toISOString() : none)
  process.stdout.write(
    [
      `Revocation       : ${r.id}`,
      `Kind             : ${r.kind}`,
      `Value            : ${r.value}`,
      `Reason           : ${r.reason || '-'}`,
      `Created          : ${t(r.createdAt, '-')}`,
      ...(r.kind === 'prefix' ? [`Until            : ${t(r.notAfter, 'revoked')}`] : []),
      `Expires          : ${t(r.expiresAt, 'never')}`,
    ].join('\n') + '\n\n',
  )
}

async function runRevocation(cmd: string, rest: string[]): Promise<number> {
  const { values } = parseFlags(rest, {
    id: { type: 'string' },
    'spiffe-id': { type: 'string' },
    prefix: { type: 'string' },
    until: { type: 'string' },
    reason: { type: 'string' },
    all: { type: 'boolean' },
    socket: { type: 'string' },
    output: { type: 'string' },
  })
  const fmt = outputFormat(values.output)
  const socket = values.socket ?? DEFAULT_ADMIN_SOCKET
  const show = (r: ServerRevocation) => (fmt === 'json' ? printJson(r) : printRevocation(r))
  const reason = values.reason !== undefined ? { reason: values.reason } : {}
  if (cmd === 'revoke') {
    if ((values.id === undefined) === (values['spiffe-id'] === undefined)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'give one of --id or --spiffe-id')
    show(await revokeOnServer(socket, { kind: 'instance', value: (values.id ?? values['spiffe-id'])!, ...reason }))
    return 0
  }
  if (cmd === 'quarantine') {
    if (!values.prefix) throw new IdentityError('ERR_INVALID_ARGUMENT', '--prefix is required')
    let notAfter: number | undefined
    if (values.until !== undefined) {
      notAfter = Date.parse(values.until)
      if (!Number.isFinite(notAfter)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--until must be an ISO 8601 time')
    }
    show(await revokeOnServer(socket, { kind: 'prefix', value: values.prefix, ...reason, ...(notAfter !== undefined ? { notAfter } : {}) }))
    return 0
  }
  if (cmd === 'unquarantine') {
    const id = Number(values.id)
    if (!values.id || !Number.isSafeInteger(id) || id < 1) throw new IdentityError('ERR_INVALID_ARGUMENT', '--id must be a revocation number')
    show(await deleteServerRevocation(socket, id))
    return 0
  }
  const list = await listServerRevocations(socket, { includeExpired: !!values.all })
  if (fmt === 'json') printJson({ revocations: list })
  else {
    process.stdout.write(`Found ${list.length} revocation${list.length === 1 ? '' : 's'}\n\n`)
    list.forEach(printRevocation)
  }
  return 0
}

type Instance = {
  instance_id: string
  spiffe_id: string
  entry_id: string
  agent_id: string
  pid: number
  start_time: string
  created_at: string
  ended_at: string
}

const when = (ms: string) => (Number(ms) ? new Date(Number(ms)).toISOString() : '-')

function print(i: Instance): void {
  process.stdout.write(
    [
      `Instance ID      : ${i.instance_id}`,
      `SPIFFE ID        : ${i.spiffe_id}`,
      `Entry ID         : ${i.entry_id}`,
      `Agent ID         : ${i.agent_id}`,
      `PID              : ${i.pid}`,
      `Started          : ${when(i.created_at)}`,
      `Ended            : ${Number(i.ended_at) ? when(i.ended_at) : 'live'}`,
    ].join('\n') + '\n\n',
  )
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd !== undefined && REVOCATION_CMDS.includes(cmd)) return runRevocation(cmd, rest)
  if (cmd !== 'list' && cmd !== 'show') {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, {
    id: { type: 'string' },
    'agent-id': { type: 'string' },
    'entry-id': { type: 'string' },
    live: { type: 'boolean' },
    socket: { type: 'string' },
    output: { type: 'string' },
  })
  const fmt = outputFormat(values.output)
  const c = adminClient('Instances', values.socket ?? DEFAULT_ADMIN_SOCKET)
  try {
    if (cmd === 'show') {
      if (!values.id) throw new IdentityError('ERR_INVALID_ARGUMENT', '--id is required')
      const i = await c.call<Instance>('Get', { instance_id: values.id })
      if (fmt === 'json') printJson(i)
      else print(i)
      return 0
    }
    const r = await c.call<{ instances: Instance[] }>('List', {
      agent_id: values['agent-id'] ?? '',
      entry_id: values['entry-id'] ?? '',
      live_only: !!values.live,
    })
    if (fmt === 'json') printJson(r)
    else {
      process.stdout.write(`Found ${r.instances.length} instance${r.instances.length === 1 ? '' : 's'}\n\n`)
      r.instances.forEach(print)
    }
    return 0
  } finally {
    c.close()
  }
}
