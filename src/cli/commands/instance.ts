import { IdentityError } from '../../errors/identity-error.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = [
  '  instance list [--agent-id ID] [--entry-id ID] [--live]   per-instance identities (one per workload process)',
  '  instance show --id INSTANCE_ID',
].join('\n')

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
