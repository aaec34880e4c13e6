/**
 * The quickstart's intents part (issue 23): the `[broker.intents]` and
 * `[broker.console]` sections of its server.toml, and the demo. The demo
 * workload (this process, identified by the Workload API) declares two
 * intents to the broker: reading a report (low risk: approved by rule, its
 * action-bound token at once) and resetting a breaker (a resource class that
 * always needs a human: an OpenID CIBA request that waits in the operator
 * console). With `--once` the quickstart approves it itself through the
 * broker's admin socket (`warrant approval approve`); otherwise it waits for
 * an operator in the console (signed in with the one-time login printed) and
 * prints the outcome when it comes.
 */
import { createHash } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { BrokerClient, oauthErrorOf, type AccessToken, type BackchannelRequest } from '../broker-client/index.js'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { X509Source } from '../workload-client/x509-source.js'
import type { ApprovalWire } from './broker-admin-client.js'
import { DEMO_RESOURCE } from './quickstart-broker.js'

/** What the demo intents touch (under the demo resource server's resource indicator). */
export const INTENT_REPORT = `${DEMO_RESOURCE}reports/q3`
export const INTENT_BREAKER = `${DEMO_RESOURCE}control/breaker-reset`

/** server.toml tables: intents with their risk rules, and the operator console on its own port. */
export function intentsServerToml(o: { consolePort: number; prefix: string; trustDomain: string }): string {
  const consoleUrl = `https://localhost:${o.consolePort}`
  return [
    '[broker.intents]',
    'poll_interval = "1s"',
    'max_autonomous_risk = 0.5',
    `console_url = "${consoleUrl}/approvals/{id}"`,
    '[[broker.intents.actions]]',
    'match = "demo:read"',
    '[[broker.intents.actions]]',
    'match = "demo:write"',
    'weight = 0.2',
    '[[broker.intents.resources]]',
    `match = "${DEMO_RESOURCE}control/*"`,
    'weight = 0.3',
    'human = true',
    '[[broker.intents.namespaces]]',
    `prefix = "spiffe://${o.trustDomain}${o.prefix}"`,
    'approver_group = "operators"',
    '',
    '[broker.console]',
    'enabled = true',
    `bind_address = "127.0.0.1:${o.consolePort}"`,
    `public_url = "${consoleUrl}"`,
    'bootstrap_operator = "admin"',
    '',
  ].join('\n')
}

/** The console's one-time login, as the server printed it to its log (the newest one: a restarted server prints another). */
export function consoleLogin(serverLog: string): { url: string; operator: string; token: string } | undefined {
  if (!existsSync(serverLog)) return undefined
  const re = /warrant console: sign in at (\S+) with the one-time bootstrap token for operator "([^"]+)": (\S+)/g
  let last: RegExpExecArray | undefined
  for (let m = re.exec(readFileSync(serverLog, 'utf8')); m !== null; m = re.exec(readFileSync(serverLog, 'utf8'))) last = m
  return last ? { url: last[1]!, operator: last[2]!, token: last[3]! } : undefined
}

export interface IntentsDemoOptions {
  issuer: string
  caFile: string
  brokerAdminSocket: string
  workloadSocket: string
  demoId: string
  consoleUrl: string
  /** Approve the high-risk intent through the admin socket instead of waiting for an operator. */
  once: boolean
  cli: (args: string[]) => Promise<unknown>
  say: (line?: string) => void
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest('base64url')

function intent(action: string, location: string, task: string, declaredRisk?: number) {
  return {
    type: 'warrant_intent',
    actions: [action],
    locations: [location],
    params_digest: digest(`${action} ${location}`),
    task,
    ...(declaredRisk !== undefined ? { declared_risk: declaredRisk } : {}),
  }
}

const detailsOf = (t: AccessToken) => (t.claims.authorization_details as { actions?: string[]; locations?: string[] }[] | undefined) ?? []

const describe = (t: AccessToken) => {
  const d = detailsOf(t)[0]
  return `${t.tokenType}-bound, authorization_details ${d?.actions?.join(',') ?? '?'} on ${d?.locations?.join(',') ?? '?'}, expires in ${Math.round(t.ttlMs / 1000)} s`
}

/**
 * Runs the demo. Returns, in the waiting case, a promise that settles when an
 * operator decides in the console (printing the outcome); `--once` settles
 * before it returns.
 */
export async function runIntentsDemo(o: IntentsDemoOptions): Promise<{ waiting?: Promise<void>; close(): Promise<void> }> {
  const say = o.say
  const ca = readFileSync(o.caFile, 'utf8')
  const taskId = `quickstart-intents-${Date.now().toString(36)}`
  await o.cli([
    'task',
    'create',
    '--socket',
    o.brokerAdminSocket,
    '--agent',
    o.demoId,
    '--scope',
    'demo:read',
    '--scope',
    'demo:write',
    '--resource',
    DEMO_RESOURCE,
    '--ttl',
    '1h',
    '--task-id',
    taskId,
    '--output',
    'json',
  ])
  const pick = (svids: readonly X509Svid[]) => {
    const s = svids.find((x) => x.id.toString() === o.demoId)
    if (!s) throw new Error(`no SVID for ${o.demoId}`)
    return s
  }
  const source = await X509Source.create({ socketPath: o.workloadSocket, picker: pick, signal: AbortSignal.timeout(60_000) })
  const client = await BrokerClient.create({ issuer: o.issuer, source, ca })
  const close = async () => {
    await client.close()
    await source.close()
  }
  try {
    say('')
    say(`Intents demo (task ${taskId} for ${o.demoId}; console ${o.consoleUrl}):`)
    const low = await client.requestToken({ taskId, authorizationDetails: [intent('demo:read', INTENT_REPORT, taskId, 0.1)] })
    say(`  low risk          : demo:read ${INTENT_REPORT} → approved by rule; token ${describe(low)}`)

    const req: BackchannelRequest = await client.backchannelAuthorize({
      authorizationDetails: [intent('demo:write', INTENT_BREAKER, taskId, 0.3)],
      bindingMessage: 'reset breaker 7',
    })
    const pending = (await o.cli(['approval', 'list', '--socket', o.brokerAdminSocket, '--status', 'pending', '--output', 'json'])) as {
      approvals: ApprovalWire[]
    }
    const mine = pending.approvals.find((a) => a.task_id === taskId && a.resource === INTENT_BREAKER)
    if (!mine) throw new Error('the high-risk intent is not in the approval queue')
    say(
      `  high risk         : demo:write ${INTENT_BREAKER} → waits for a human (risk ${mine.risk.toFixed(2)}, ${mine.decided_by ?? 'rule'}); intent ${mine.id}, CIBA request expires in ${req.expiresIn} s`,
    )
    const outcome = client.waitForApproval(req).then(
      (t) => say(`  approved          : intent ${mine.id} → token ${describe(t)}`),
      (err: unknown) => say(`  not approved      : intent ${mine.id} → ${oauthErrorOf(err) ?? (err as Error).message}`),
    )
    if (o.once) {
      await o.cli(['approval', 'approve', mine.id, '--reason', 'quickstart --once', '--socket', o.brokerAdminSocket, '--output', 'json'])
      await outcome
      return { close }
    }
    say(`  approve or deny it: ${o.consoleUrl}/approvals/${mine.id} (or: npx warrant approval approve ${mine.id} --socket ${o.brokerAdminSocket})`)
    return { waiting: outcome, close }
  } catch (err) {
    await close()
    throw err
  }
}
