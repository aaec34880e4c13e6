/** `warrant signal list`: the Shared Signals the broker received as a receiver, and what it did with each. */
import { existsSync } from 'node:fs'
import { SsfStore, type ReceivedSignal } from '../../broker/store/ssf-store.js'
import { IdentityError } from '../../errors/identity-error.js'
import { outputFormat, parseFlags, printJson } from '../args.js'

/** Default SSF store of a broker embedded in a server with the default data_dir. */
export const DEFAULT_SSF_STORE = './.warrant/server/broker-ssf.sqlite3'

export const usage = '  signal list [--since ID] [--limit N]   signals received from SSF transmitters and what was done (--store PATH, --output json)'

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
