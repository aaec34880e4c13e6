import { IdentityError } from '../../errors/identity-error.js'
import { adminClient, DEFAULT_ADMIN_SOCKET } from '../admin-client.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

export const usage = '  token generate [--ttl SECONDS] [--spiffe-id ID]   create a one-use join token'

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd !== 'generate') {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, { ttl: { type: 'string' }, 'spiffe-id': { type: 'string' }, socket: { type: 'string' }, output: { type: 'string' } })
  const fmt = outputFormat(values.output)
  if (values.ttl !== undefined && !/^\d+$/.test(values.ttl)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--ttl must be a whole number of seconds')
  const c = adminClient('Agents', values.socket ?? DEFAULT_ADMIN_SOCKET)
  try {
    const r = await c.call<{ token: string; expires_at: string }>('CreateJoinToken', { ttl: Number(values.ttl ?? 0), spiffe_id: values['spiffe-id'] ?? '' })
    if (fmt === 'json') printJson({ token: r.token, expires_at: Number(r.expires_at) })
    else process.stdout.write(`Token: ${r.token}\nExpires: ${new Date(Number(r.expires_at)).toISOString()}\n`)
    return 0
  } finally {
    c.close()
  }
}
