/** `warrant revocation list`: the broker's revocations, in feed order. */
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { brokerAdminCall, DEFAULT_BROKER_ADMIN_SOCKET } from '../broker-admin-client.js'
import { printRevocation, type RevocationWire } from './revoke.js'

export const usage = '  revocation list [--since SEQ] [--all]   revocations in feed order; --all includes expired ones (--socket PATH, --output json)'

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd !== 'list') {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, { since: { type: 'string' }, all: { type: 'boolean' }, socket: { type: 'string' }, output: { type: 'string' } })
  const fmt = outputFormat(values.output)
  if (values.since !== undefined && !/^[0-9]{1,15}$/.test(values.since)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--since must be a sequence number')
  const qs = new URLSearchParams({ ...(values.since !== undefined ? { since: values.since } : {}), ...(values.all ? { include_expired: 'true' } : {}) })
  const r = await brokerAdminCall<{ revocations: RevocationWire[] }>(
    values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET,
    'GET',
    `/v1/revocations${qs.size > 0 ? `?${qs.toString()}` : ''}`,
  )
  if (fmt === 'json') printJson(r)
  else {
    process.stdout.write(`Found ${r.revocations.length} revocation${r.revocations.length === 1 ? '' : 's'}\n\n`)
    r.revocations.forEach(printRevocation)
  }
  return 0
}
