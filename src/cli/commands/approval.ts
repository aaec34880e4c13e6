/**
 * `warrant approval list|show|approve|deny`: the broker's queue of intents that
 * wait for a human (OpenID CIBA), over its admin socket. A decision made here
 * is recorded (and signed into the broker's audit log) with approver
 * `cli:<uid>` and method `unix-socket`.
 */
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { decideApproval, DEFAULT_BROKER_ADMIN_SOCKET, getApproval, listApprovals, type ApprovalWire } from '../broker-admin-client.js'

export const usage = [
  '  approval list [--status pending|approved|denied|refused|expired|used|mismatch|all] [--limit N]   intents and their risk (default: pending)',
  '  approval show ID | approval approve ID [--reason TEXT] | approval deny ID [--reason TEXT]   (--socket PATH, --output json)',
].join('\n')

const when = (s: number) => new Date(s * 1000).toISOString()

function print(a: ApprovalWire, detail: boolean): void {
  const lines = [
    `${a.id}  ${a.status}  risk ${a.risk}${a.decided_by !== undefined ? ` (${a.decided_by})` : ''}`,
    `  agent:    ${a.agent}${a.task_id !== undefined ? `  task ${a.task_id}` : ''}`,
    `  intent:   ${a.action} on ${a.resource}`,
    ...(a.approver_group !== undefined ? [`  group:    ${a.approver_group}`] : []),
    ...(a.approver !== undefined ? [`  decided:  ${a.approver.id} (${a.approver.method})${a.reason !== undefined ? `: ${a.reason}` : ''}`] : []),
    ...(a.binding_message !== undefined ? [`  message:  ${a.binding_message}`] : []),
    `  created:  ${when(a.created_at)}  expires ${when(a.expires_at)}`,
  ]
  if (detail) {
    lines.push(`  params:   sha-256 ${a.params_digest}${a.declared_risk !== undefined ? `  declared risk ${a.declared_risk}` : ''}`)
    lines.push(`  node:     ${a.node_attestation ?? 'unknown'}`, `  chain:    ${a.delegation.join(' <- ')}`)
    if (a.token_id !== undefined) lines.push(`  token:    jti ${a.token_id}`)
    lines.push('  factors:')
    for (const f of a.factors) lines.push(`    ${f.weight >= 0 ? '+' : ''}${f.weight.toFixed(3)}  ${f.rule}  ${f.detail}`)
  }
  process.stdout.write(`${lines.join('\n')}\n\n`)
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  const { values, positionals } = parseFlags(
    rest,
    { socket: { type: 'string' }, output: { type: 'string' }, status: { type: 'string' }, limit: { type: 'string' }, reason: { type: 'string' } },
    { positionals: true },
  )
  const socket = values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET
  const json = outputFormat(values.output) === 'json'
  const id = () => {
    if (positionals.length !== 1) throw new IdentityError('ERR_INVALID_ARGUMENT', `usage: warrant approval ${cmd} ID`)
    return positionals[0]!
  }
  switch (cmd) {
    case 'list': {
      if (values.limit !== undefined && !/^[1-9][0-9]{0,2}$/.test(values.limit))
        throw new IdentityError('ERR_INVALID_ARGUMENT', '--limit must be from 1 to 500')
      const status = values.status ?? 'pending'
      const list = await listApprovals(socket, {
        ...(status !== 'all' ? { status } : {}),
        ...(values.limit !== undefined ? { limit: Number(values.limit) } : {}),
      })
      if (json) printJson({ approvals: list })
      else {
        process.stdout.write(`${list.length} intent${list.length === 1 ? '' : 's'}${status !== 'all' ? ` ${status}` : ''}\n\n`)
        for (const a of list) print(a, false)
      }
      return 0
    }
    case 'show': {
      const a = await getApproval(socket, id())
      if (json) printJson(a)
      else print(a, true)
      return 0
    }
    case 'approve':
    case 'deny': {
      const a = await decideApproval(socket, id(), cmd, values.reason)
      if (json) printJson(a)
      else
        process.stdout.write(`${cmd === 'approve' ? 'Approved' : 'Denied'} ${a.id}: ${a.action} on ${a.resource} by ${a.agent} (as ${a.approver?.id ?? '?'})\n`)
      return 0
    }
    default:
      process.stderr.write(`usage:\n${usage}\n`)
      return 2
  }
}
