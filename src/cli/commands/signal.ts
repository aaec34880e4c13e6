/**
 * `warrant signal list`: the Shared Signals the broker received as a receiver, and what it did with each.
 * `warrant signal send`: a signal sent by hand through the broker's transmitter (its admin socket).
 */
import { existsSync } from 'node:fs'
import { SsfStore, type ReceivedSignal } from '../../broker/store/ssf-store.js'
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'
import { brokerAdminCall, DEFAULT_BROKER_ADMIN_SOCKET } from '../broker-admin-client.js'

/** Default SSF store of a broker embedded in a server with the default data_dir. */
export const DEFAULT_SSF_STORE = './.warrant/server/broker-ssf.sqlite3'

export const usage = [
  '  signal list [--since ID] [--limit N]   signals received from SSF transmitters and what was done (--store PATH, --output json)',
  '  signal send --event credential-change|session-revoked|credential-compromise --subject SPIFFE_ID [--instance ID] [--reason TEXT] [--confidence N]',
  '    the broker transmits it on every enabled stream that asked for that event type (--socket PATH, --output json)',
].join('\n')

async function send(rest: string[]): Promise<number> {
  const { values } = parseFlags(rest, {
    event: { type: 'string' },
    subject: { type: 'string' },
    instance: { type: 'string' },
    reason: { type: 'string' },
    confidence: { type: 'string' },
    socket: { type: 'string' },
    output: { type: 'string' },
  })
  const fmt = outputFormat(values.output)
  if (values.event === undefined || values.subject === undefined) throw new IdentityError('ERR_INVALID_ARGUMENT', '--event and --subject are required')
  if (values.confidence !== undefined && !/^(0(\.[0-9]+)?|1(\.0+)?)$/.test(values.confidence))
    throw new IdentityError('ERR_INVALID_ARGUMENT', '--confidence must be a number from 0 to 1')
  const r = await brokerAdminCall<{ event_type: string; streams: string[] }>(values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET, 'POST', '/v1/signals', {
    event: values.event,
    subject: values.subject,
    ...(values.instance !== undefined ? { instance: values.instance } : {}),
    ...(values.reason !== undefined ? { reason: values.reason } : {}),
    ...(values.confidence !== undefined ? { confidence: Number(values.confidence) } : {}),
  })
  if (fmt === 'json') printJson(r)
  else process.stdout.write(`Sent ${r.event_type} on ${r.streams.length} stream${r.streams.length === 1 ? '' : 's'}\n`)
  return 0
}

function printSignal(s: ReceivedSignal): void {
  const decision = s.decision as { action?: string; level?: string; value?: string; prefix?: string; rule?: number } | null
  const what =
    decision === null
      ? '-'
      : decision.action === 'revoke'
        ? `revoke ${decision.level ?? ''} ${decision.value ?? ''}`
        : decision.action === 'quarantine'
          ? `quarantine ${decision.prefix ?? ''}`
          : (decision.action ?? '-')
  process.stdout.write(
    `#${s.id} ${new Date(s.receivedAt * 1000).toISOString()} ${s.issuer}\n  jti: ${s.jti}\n  event: ${s.eventType}\n  action: ${what}${decision?.rule !== undefined ? ` (rule ${decision.rule})` : ''}\n  outcome: ${s.outcome}\n\n`,
  )
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd === 'send') return send(rest)
  if (cmd !== 'list') {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  const { values } = parseFlags(rest, { since: { type: 'string' }, limit: { type: 'string' }, store: { type: 'string' }, output: { type: 'string' } })
  const fmt = outputFormat(values.output)
  if (values.since !== undefined && !/^[0-9]{1,15}$/.test(values.since)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--since must be a signal number')
  if (values.limit !== undefined && !/^[1-9][0-9]{0,5}$/.test(values.limit))
    throw new IdentityError('ERR_INVALID_ARGUMENT', '--limit must be a positive number')
  const path = values.store ?? DEFAULT_SSF_STORE
  if (!existsSync(path)) throw new IdentityError('ERR_NOT_FOUND', `no SSF store at ${path} (is [broker.signals] configured? see --store)`)
  const store = SsfStore.open(path)
  try {
    const signals = await Promise.resolve(store.listReceived(Number(values.since ?? 0), Number(values.limit ?? 1000)))
    if (fmt === 'json') printJson({ signals })
    else {
      process.stdout.write(`Found ${signals.length} signal${signals.length === 1 ? '' : 's'}\n\n`)
      signals.forEach(printSignal)
    }
  } finally {
    store.close()
  }
  return 0
}
