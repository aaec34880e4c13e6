/**
 * `warrant revoke token|instance|task|chain|prefix VALUE` and
 * `warrant revocation list`: the broker's revocations through its admin
 * socket. The broker records the entry durably before it answers, refuses
 * what it covers at once, and pushes it to every feed subscriber. With
 * `--server-socket`, an instance or prefix revocation is also recorded at the
 * server (its admin socket), which stops issuing the SVIDs it covers and pushes
 * it to every agent on Sync: one command for both sides.
 */
import { IdentityError } from '../../errors/identity-error.js'
import { REVOCATION_KINDS } from '../../tokens/revocation.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { brokerAdminCall, DEFAULT_BROKER_ADMIN_SOCKET } from '../broker-admin-client.js'
import { revokeOnServer } from '../server-revocation-client.js'

export const usage = [
  '  revoke token JTI | instance SPIFFE_ID | task TASK_ID | chain JTI|SPIFFE_ID | prefix SPIFFE_ID [--until TIME] [--reason TEXT]   (--socket PATH, --output json)',
  '    instance and prefix: --server-socket PATH also revokes at the server (no SVID issued or served for it)',
].join('\n')

export interface RevocationWire {
  seq: number
  kind: string
  value: string
  jtis?: string[]
  created_at: number
  not_after?: number
  expires_at: number
  created_by: string
  reason?: string
  created?: boolean
  tokens_revoked?: number
}

const iso = (s: number | undefined) => (s === undefined ? '-' : s >= 253_402_300_799 ? 'never' : new Date(s * 1000).toISOString())

export function printRevocation(r: RevocationWire): void {
  process.stdout.write(
    [
      `Seq              : ${r.seq}`,
      `Kind             : ${r.kind}`,
      `Value            : ${r.value}`,
      ...(r.jtis ? [`Tokens covered   : ${r.jtis.length}`] : []),
      ...(r.reason !== undefined ? [`Reason           : ${r.reason}`] : []),
      `Created          : ${iso(r.created_at)} by ${r.created_by}`,
      ...(r.not_after !== undefined ? [`Until            : ${iso(r.not_after)}`] : []),
      `Expires          : ${iso(r.expires_at)}`,
    ].join('\n') + '\n\n',
  )
}

export async function run(args: string[]): Promise<number> {
  const { values, positionals } = parseFlags(
    args,
    { until: { type: 'string' }, reason: { type: 'string' }, socket: { type: 'string' }, 'server-socket': { type: 'string' }, output: { type: 'string' } },
    { positionals: true },
  )
  const [kind, value, ...extra] = positionals
  if (kind === undefined || !(REVOCATION_KINDS as readonly string[]).includes(kind) || value === undefined || extra.length > 0) {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const fmt = outputFormat(values.output)
  if (values.until !== undefined && kind !== 'prefix') throw new IdentityError('ERR_INVALID_ARGUMENT', '--until applies only to a prefix quarantine')
  const serverSocket = values['server-socket']
  if (serverSocket !== undefined && kind !== 'instance' && kind !== 'prefix')
    throw new IdentityError('ERR_INVALID_ARGUMENT', '--server-socket applies only to an instance or prefix revocation')
  let notAfterMs: number | undefined
  if (values.until !== undefined && serverSocket !== undefined) {
    notAfterMs = Date.parse(values.until)
    if (!Number.isFinite(notAfterMs)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--until must be an ISO 8601 time')
  }
  const body = {
    kind,
    value,
    ...(values.reason !== undefined ? { reason: values.reason } : {}),
    ...(values.until !== undefined ? { not_after: values.until } : {}),
  }
  // The broker first: it holds the tokens, the faster-moving credentials.
  const r = await brokerAdminCall<RevocationWire>(values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET, 'POST', '/v1/revocations', body)
  const server =
    serverSocket === undefined
      ? undefined
      : await revokeOnServer(serverSocket, {
          kind: kind as 'instance' | 'prefix',
          value,
          ...(values.reason !== undefined ? { reason: values.reason } : {}),
          ...(notAfterMs !== undefined ? { notAfter: notAfterMs } : {}),
        })
  if (fmt === 'json') printJson(server === undefined ? r : { ...r, server_revocation: server })
  else {
    process.stdout.write(r.created === false ? 'Already revoked\n\n' : `Revoked${r.tokens_revoked ? ` (${r.tokens_revoked} tokens)` : ''}\n\n`)
    printRevocation(r)
    if (server !== undefined) process.stdout.write(`Server revocation ${server.id}: no SVID is issued or served for ${server.value}\n`)
  }
  return 0
}
