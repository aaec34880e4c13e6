/**
 * `warrant signal list`: the Shared Signals the broker received as a receiver, and what it did with each.
 * `warrant signal send`: a signal sent by hand through the broker's transmitter (its admin socket).
 * `warrant signal step-ups` and `warrant signal clear-step-up`: the step-ups a signal put on agents, and
 * an operator clearing one (its admin socket), as `warrant instance unquarantine` lifts a quarantine.
 * `warrant signal client create|list|delete`: SSF receiver clients that are not SPIFFE workloads (OAuth
 * client credentials; the secret is printed once, at creation).
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
  '  signal step-ups [--all]   step-ups a signal put on agents (their next intent goes to a human); --all: cleared and ended too (--socket PATH, --output json)',
  '  signal clear-step-up --id N [--reason TEXT]   clears step-up N for every agent it covers (--socket PATH, --output json)',
  '  signal client create NAME   registers SSF receiver client ssf:NAME; prints client_id and client_secret once, as JSON (--socket PATH)',
  '  signal client list | signal client delete NAME   SSF receiver clients (--socket PATH, --output json)',
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

interface StepUpWire {
  id: number
  target: string
  value: string
  clear_on_approval: boolean
  not_after?: number
  created_at: number
  reason: string
  signal: { issuer: string; jti: string; event_type: string }
  cleared?: { at: number; by: string; reason?: string }
  satisfied: { agent: string; intent_id: string; approver: string; at: number }[]
}

const iso = (s: number) => new Date(s * 1000).toISOString()

function printStepUp(s: StepUpWire): void {
  process.stdout.write(
    [
      `Step-up          : ${s.id}`,
      `Target           : ${s.target} ${s.value}`,
      `Signal           : ${s.signal.event_type} ${s.signal.jti} from ${s.signal.issuer}`,
      `Created          : ${iso(s.created_at)}`,
      `Until            : ${s.not_after !== undefined ? iso(s.not_after) : s.clear_on_approval ? 'a human approves an intent' : '-'}`,
      `Clears on approval: ${s.clear_on_approval ? 'yes' : 'no'}`,
      ...(s.cleared ? [`Cleared          : ${iso(s.cleared.at)} by ${s.cleared.by}${s.cleared.reason ? ` (${s.cleared.reason})` : ''}`] : []),
      ...s.satisfied.map((x) => `Satisfied        : ${x.agent} by intent ${x.intent_id} (${x.approver}, ${iso(x.at)})`),
    ].join('\n') + '\n\n',
  )
}

async function stepUps(cmd: 'step-ups' | 'clear-step-up', rest: string[]): Promise<number> {
  const { values } = parseFlags(rest, {
    all: { type: 'boolean' },
    id: { type: 'string' },
    reason: { type: 'string' },
    socket: { type: 'string' },
    output: { type: 'string' },
  })
  const fmt = outputFormat(values.output)
  const socket = values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET
  if (cmd === 'clear-step-up') {
    if (values.id === undefined || !/^[1-9][0-9]{0,14}$/.test(values.id)) throw new IdentityError('ERR_INVALID_ARGUMENT', '--id must be a step-up number')
    const r = await brokerAdminCall<StepUpWire>(socket, 'POST', `/v1/step-ups/${values.id}/clear`, {
      uid: process.getuid?.() ?? 0,
      ...(values.reason !== undefined ? { reason: values.reason } : {}),
    })
    if (fmt === 'json') printJson(r)
    else {
      process.stdout.write(`Cleared step-up ${r.id}\n\n`)
      printStepUp(r)
    }
    return 0
  }
  const r = await brokerAdminCall<{ step_ups: StepUpWire[] }>(socket, 'GET', `/v1/step-ups${values.all ? '?all=true' : ''}`)
  if (fmt === 'json') printJson(r)
  else {
    process.stdout.write(`Found ${r.step_ups.length} step-up${r.step_ups.length === 1 ? '' : 's'}\n\n`)
    r.step_ups.forEach(printStepUp)
  }
  return 0
}

function printSignal(s: ReceivedSignal): void {
  const decision = s.decision as { action?: string; level?: string; target?: string; value?: string; prefix?: string; rule?: number } | null
  const what =
    decision === null
      ? '-'
      : decision.action === 'revoke'
        ? `revoke ${decision.level ?? ''} ${decision.value ?? ''}`
        : decision.action === 'quarantine'
          ? `quarantine ${decision.prefix ?? ''}`
          : decision.action === 'step_up'
            ? `step-up ${decision.target ?? ''} ${decision.value ?? ''}`
            : (decision.action ?? '-')
  process.stdout.write(
    `#${s.id} ${new Date(s.receivedAt * 1000).toISOString()} ${s.issuer}\n  jti: ${s.jti}\n  event: ${s.eventType}\n  action: ${what}${decision?.rule !== undefined ? ` (rule ${decision.rule})` : ''}\n  outcome: ${s.outcome}\n\n`,
  )
}

async function client(rest: string[]): Promise<number> {
  const [sub, ...more] = rest
  const { values, positionals } = parseFlags(more, { socket: { type: 'string' }, output: { type: 'string' } }, { positionals: true })
  const fmt = outputFormat(values.output)
  const socket = values.socket ?? DEFAULT_BROKER_ADMIN_SOCKET
  if (sub === 'list' && positionals.length === 0) {
    const r = await brokerAdminCall<{ clients: { client_id: string; created_at: number }[] }>(socket, 'GET', '/v1/signals/clients')
    if (fmt === 'json') printJson(r)
    else {
      process.stdout.write(`Found ${r.clients.length} SSF client${r.clients.length === 1 ? '' : 's'}\n`)
      for (const c of r.clients) process.stdout.write(`${c.client_id}  created ${iso(c.created_at)}\n`)
    }
    return 0
  }
  const name = positionals[0]
  if ((sub !== 'create' && sub !== 'delete') || positionals.length !== 1 || name === undefined || !/^[a-z0-9-]{1,64}$/.test(name)) {
    process.stderr.write(`usage:\n${usage}\n`)
    return 2
  }
  if (sub === 'create') {
    // JSON always: the secret is shown this once, for a machine to store
    printJson(await brokerAdminCall(socket, 'POST', '/v1/signals/clients', { name }))
    return 0
  }
  const r = await brokerAdminCall<{ deleted: boolean }>(socket, 'POST', `/v1/signals/clients/${name}/delete`, {})
  if (fmt === 'json') printJson(r)
  else process.stdout.write(`Deleted SSF client ssf:${name}\n`)
  return 0
}

export async function run(args: string[]): Promise<number> {
  const [cmd, ...rest] = args
  if (cmd === 'send') return send(rest)
  if (cmd === 'client') return client(rest)
  if (cmd === 'step-ups' || cmd === 'clear-step-up') return stepUps(cmd, rest)
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
