import { IdentityError } from '../../errors/identity-error.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = [
  '  agent run --config agent.toml            start the agent (Workload API on a Unix socket)',
  '  agent validate --config agent.toml       check an agent configuration',
  '  agent healthcheck [--socket PATH]        ask a running agent whether it is serving',
  '  agent list [--attestor NAME] [--banned true|false]   attested agents (server admin)',
  '  agent show --id AGENT_ID',
  '  agent evict --id AGENT_ID                removes the agent; it must attest again',
  '  agent ban --id AGENT_ID                  blocks the agent until it is evicted',
].join('\n')

type Node = {
  agent_id: string
  attestor: string
  selectors: { type: string; value: string }[]
  serial: string
  expires_at: string
  banned: boolean
  can_reattest: boolean
}

function printNode(n: Node): void {
  process.stdout.write(
    [
      `Agent ID         : ${n.agent_id}`,
      `Attestation type : ${n.attestor}`,
      `Expiration time  : ${Number(n.expires_at) ? new Date(Number(n.expires_at)).toISOString() : '-'}`,
      `Serial number    : ${n.serial || '-'}`,
      `Can re-attest    : ${n.can_reattest}`,
      `Banned           : ${n.banned}`,
      ...n.selectors.map((s) => `Selector         : ${s.type}:${s.value}`),
    ].join('\n') + '\n\n',
  )
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd === 'run' || cmd === 'validate' || cmd === 'healthcheck') {
    const mod = await import('./agent-run.js')
    return mod.runAgentCommand(args)
  }
  const flags = {
    id: { type: 'string' },
    attestor: { type: 'string' },
    banned: { type: 'string' },
    socket: { type: 'string' },
    output: { type: 'string' },
  } as const
  if (!['list', 'show', 'evict', 'ban'].includes(cmd ?? '')) {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, flags)
  const fmt = outputFormat(values.output)
  const c = adminClient('Agents', values.socket ?? DEFAULT_ADMIN_SOCKET)
  try {
    if (cmd === 'list') {
      const all: Node[] = []
      let token = ''
      do {
        const r = await c.call<{ agents: Node[]; next_page_token: string }>('List', {
          attestor: values.attestor ?? '',
          banned: values.banned ?? '',
          page_size: 500,
          page_token: token,
        })
        all.push(...r.agents)
        token = r.next_page_token
      } while (token)
      if (fmt === 'json') printJson({ agents: all })
      else {
        process.stdout.write(`Found ${all.length} attested agent${all.length === 1 ? '' : 's'}:\n\n`)
        all.forEach(printNode)
      }
      return 0
    }
    if (!values.id) throw new IdentityError('ERR_INVALID_ARGUMENT', '--id is required')
    const method = cmd === 'show' ? 'Get' : cmd === 'evict' ? 'Evict' : 'Ban'
    const n = await c.call<Node>(method, { agent_id: values.id })
    if (fmt === 'json') printJson(n)
    else if (cmd === 'show') printNode(n)
    else process.stdout.write(`Agent ${cmd === 'evict' ? 'evicted' : 'banned'} successfully\n`)
    return 0
  } finally {
    c.close()
  }
}
