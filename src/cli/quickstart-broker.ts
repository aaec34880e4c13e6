/**
 * The quickstart's broker part: the `[broker]` and ceiling sections of the
 * quickstart's server.toml, waiting for the embedded broker, and the demo:
 * the demo workload (this process, identified by the Workload API like any
 * other) gets a task-scoped DPoP-bound token for the demo resource server,
 * calls it, shows that the token without its key is refused, renews it and
 * delegates a narrower token to a sub-agent. The resource server and the
 * sub-agent are processes of their own (src/cli/quickstart-demo-peer.ts).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { BrokerClient, DpopKey, oauthErrorOf, type AccessToken } from '../broker-client/index.js'
import { IdentityError } from '../errors/identity-error.js'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { X509Source } from '../workload-client/x509-source.js'
import { httpsCall, oauthError, type HttpsReply } from './quickstart-oauth.js'
import type { PeerArgs, SubAgentResult } from './quickstart-demo-peer.js'

const PEER = join(dirname(fileURLToPath(import.meta.url)), 'quickstart-demo-peer.ts')
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** The demo resource server's resource indicator (RFC 8707): the audience of its tokens, not its network address. */
export const DEMO_RESOURCE = 'https://demo-api.example.org/'
export const DEMO_SCOPES = ['demo:read', 'demo:write'] as const

/** A free TCP port on 127.0.0.1 (for the broker's issuer URL, which names its port). */
export async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

/**
 * server.toml tables: the demo agents' permission ceiling (namespace bounds
 * under `prefix`, signed into bounds.jws, which the broker and the gateway
 * read) and the embedded broker (with the gateway as a Txn-Token requester). Without `[broker.key_manager]` the broker's signing key
 * comes from the server's own key manager block (the SoftHSM token, or the
 * disk key manager), under its own key ids.
 */
export function brokerServerToml(o: {
  issuer: string
  port: number
  trustDomain: string
  prefix: string
  /** More scopes and resources for the ceiling (the gateway demo's tools). */
  scopes?: readonly string[]
  resources?: readonly string[]
  /** Workloads that may ask for a Txn-Token for a workload they authenticated (the gateway). */
  txnTokenRequesters?: readonly string[]
}): string {
  return [
    `[server.bounds."${o.prefix}"]`,
    `scopes = ${JSON.stringify([...DEMO_SCOPES, ...(o.scopes ?? [])])}`,
    `resources = ${JSON.stringify([DEMO_RESOURCE, ...(o.resources ?? [])])}`,
    'max_token_ttl = "5m"',
    'max_renewals = 3',
    'max_delegation_depth = 2',
    `may_delegate_to = ["spiffe://${o.trustDomain}${o.prefix}"]`,
    '',
    '[broker]',
    `issuer = "${o.issuer}"`,
    `bind_address = "127.0.0.1:${o.port}"`,
    'default_token_ttl = "5m"',
    `txn_token_requesters = ${JSON.stringify(o.txnTokenRequesters ?? [])}`,
    '',
  ].join('\n')
}

/** Polls the broker's RFC 8414 metadata over TLS verified with `ca` until it answers 200. */
export async function waitForBroker(issuer: string, ca: string, timeoutMs: number): Promise<{ issuer: string; token_endpoint: string }> {
  const end = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < end) {
    try {
      const r = await httpsCall(`${issuer}/.well-known/oauth-authorization-server`, { method: 'GET', ca, timeoutMs: 5000 })
      if (r.status === 200) return JSON.parse(r.body) as { issuer: string; token_endpoint: string }
      last = `HTTP ${r.status}`
    } catch (err) {
      last = (err as Error).message
    }
    await new Promise((r) => setTimeout(r, 250))
  }
  throw new Error(`the broker at ${issuer} did not answer its metadata (${last})`)
}

export interface BrokerDemoOptions {
  issuer: string
  /** PEM file that verifies the broker's and the demo resource server's certificates (the trust domain's bundle). */
  caFile: string
  brokerAdminSocket: string
  workloadSocket: string
  demoId: string
  apiId: string
  subAgentId: string
  /** Hard links to node the demo resource server and the sub-agent run as (their `unix:path` selector). */
  apiExe: string
  subAgentExe: string
  logDir: string
  /** Runs the warrant CLI (the quickstart's own helper); JSON output parsed. */
  cli: (args: string[]) => Promise<unknown>
  say: (line?: string) => void
}

/** The demo processes running now (stopped by the demo, or by the quickstart's shutdown). */
const running = new Set<Peer>()

/** Stops any demo process still running (Ctrl-C during the demo). */
export async function stopDemoProcesses(): Promise<void> {
  await Promise.all([...running].map((p) => p.stop()))
}

/** A demo process: its stdout JSON lines, stderr to a log file. */
class Peer {
  readonly child: ChildProcess
  readonly logFile: string
  #out = ''
  readonly #waiters: (() => void)[] = []

  constructor(exe: string, role: string, args: PeerArgs, logFile: string) {
    this.logFile = logFile
    const fd = openSync(logFile, 'a', 0o600)
    this.child = spawn(exe, [...process.execArgv, PEER, role, JSON.stringify(args)], {
      cwd: ROOT,
      stdio: ['pipe', 'pipe', fd],
      env: { ...process.env, SPIFFE_ENDPOINT_SOCKET: `unix://${args.socketPath}` },
    })
    closeSync(fd)
    this.child.stdout!.on('data', (c: Buffer) => {
      this.#out += c.toString()
      for (const w of this.#waiters.splice(0)) w()
    })
    running.add(this)
    this.child.on('exit', () => {
      running.delete(this)
      for (const w of this.#waiters.splice(0)) w()
    })
  }

  /** The first stdout line with `key` (or `error`), within `timeoutMs`. */
  async message<T>(key: string, timeoutMs: number): Promise<T> {
    const end = Date.now() + timeoutMs
    for (;;) {
      for (const line of this.#out.split('\n')) {
        if (!line.startsWith('{')) continue
        const m = JSON.parse(line) as Record<string, unknown>
        if (typeof m.error === 'string') throw new Error(`${m.error} (see ${this.logFile})`)
        if (m[key] !== undefined) return m[key] as T
      }
      if (this.child.exitCode !== null || this.child.signalCode !== null)
        throw new Error(`exited (${this.child.signalCode ?? this.child.exitCode}) without an answer; see ${this.logFile}`)
      const left = end - Date.now()
      if (left <= 0) throw new Error(`no answer within ${timeoutMs / 1000} s; see ${this.logFile}`)
      await new Promise<void>((r) => {
        const t = setTimeout(r, left)
        this.#waiters.push(() => {
          clearTimeout(t)
          r()
        })
      })
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = new Promise((r) => this.child.once('exit', r))
    this.child.kill('SIGTERM')
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))])
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
  }
}

function expectStatus(what: string, r: { status: number }, want: number): void {
  if (r.status !== want) throw new Error(`${what}: expected HTTP ${want}, got ${r.status}`)
}

/** The token presented as a thief would: without a proof (as a bearer token), or with a proof of the thief's own key. */
async function stolenCall(url: string, token: AccessToken, ca: string, thiefKey?: DpopKey): Promise<HttpsReply> {
  const headers: Record<string, string> = thiefKey
    ? { authorization: `DPoP ${token.value}`, dpop: await thiefKey.proof({ method: 'GET', url, accessToken: token.value }) }
    : { authorization: `Bearer ${token.value}` }
  return httpsCall(url, { method: 'GET', ca, headers })
}

const jktOf = (t: AccessToken) => (t.claims.cnf as { jkt?: string } | undefined)?.jkt

const inSeconds = (t: { ttlMs: number }) => `expires in ${Math.round(t.ttlMs / 1000)} s`

/**
 * The broker demo. Prints its outcome lines; throws when any step does not
 * come out as the demo expects (the quickstart then fails, like its SVID demo).
 */
export async function runBrokerDemo(o: BrokerDemoOptions): Promise<void> {
  const say = o.say
  const ca = readFileSync(o.caFile, 'utf8')
  const taskId = `quickstart-${Date.now().toString(36)}`
  await o.cli([
    'task',
    'create',
    '--socket',
    o.brokerAdminSocket,
    '--agent',
    o.demoId,
    ...DEMO_SCOPES.flatMap((s) => ['--scope', s]),
    '--resource',
    DEMO_RESOURCE,
    '--ttl',
    '1h',
    '--max-renewals',
    '3',
    '--task-id',
    taskId,
    '--orchestration-id',
    'quickstart',
    '--output',
    'json',
  ])

  const peerArgs = { socketPath: o.workloadSocket, issuer: o.issuer, caFile: o.caFile, resource: DEMO_RESOURCE }
  const api = new Peer(o.apiExe, 'api', { ...peerArgs, spiffeId: o.apiId }, join(o.logDir, 'demo-api.log'))
  // Started now, so that it has its SVID when the delegation grant (valid for a minute) comes.
  const sub = new Peer(o.subAgentExe, 'sub-agent', { ...peerArgs, spiffeId: o.subAgentId }, join(o.logDir, 'demo-sub-agent.log'))
  const pick = (svids: readonly X509Svid[]) => {
    const s = svids.find((x) => x.id.toString() === o.demoId)
    if (!s) throw new Error(`no SVID for ${o.demoId}`)
    return s
  }
  let source: X509Source | undefined
  let client: BrokerClient | undefined
  try {
    source = await X509Source.create({ socketPath: o.workloadSocket, picker: pick, signal: AbortSignal.timeout(60_000) })
    client = await BrokerClient.create({ issuer: o.issuer, source, ca })
    const ready = await api.message<{ url: string; spiffeId: string }>('ready', 120_000).catch((err: unknown) => {
      throw new Error(`the demo resource server did not start: ${(err as Error).message}`)
    })
    const data = `${ready.url}/data`

    say('')
    say(`Broker demo (task ${taskId} for ${o.demoId}; resource server ${ready.spiffeId} at ${ready.url}):`)
    const t1 = await client.requestToken({ taskId, scopes: DEMO_SCOPES, resources: [DEMO_RESOURCE] })
    const jkt = jktOf(t1)
    if (t1.tokenType !== 'DPoP' || !jkt) throw new Error(`the broker issued a ${t1.tokenType} token, expected DPoP-bound`)
    say(`  token             : ${t1.tokenType}-bound (cnf.jkt ${jkt.slice(0, 12)}…), scope "${t1.scopes.join(' ')}", ${inSeconds(t1)}`)

    const r1 = await client.fetchWithToken(data, { method: 'GET' }, t1)
    expectStatus('GET /data with the token and its key', r1, 200)
    say(`  call with its key : GET /data → ${r1.status}`)

    const stolen = await stolenCall(data, t1, ca)
    expectStatus('GET /data with the token as a bearer token', stolen, 401)
    const other = await stolenCall(data, t1, ca, await DpopKey.generate())
    expectStatus('GET /data with a proof of another key', other, 401)
    say(
      `  without its key   : same token as a bearer → ${stolen.status} ${oauthError(stolen)}; with another key's proof → ${other.status} ${oauthError(other)}`,
    )

    const t2 = await client.renew(t1)
    const r2 = await client.fetchWithToken(data, { method: 'GET' }, t2)
    expectStatus('GET /data with the renewed token', r2, 200)
    if (jktOf(t2) !== jkt) throw new Error('the renewed token is bound to another key')
    say(`  renewed           : new token, same key, scope "${t2.scopes.join(' ')}", ${inSeconds(t2)}; GET /data → ${r2.status}`)

    const grant = await client.delegate(t2, { to: o.subAgentId, scopes: ['demo:read'] })
    sub.child.stdin!.end(`${JSON.stringify({ grant: grant.value, apiUrl: ready.url })}\n`)
    const res = await sub.message<SubAgentResult>('result', 120_000).catch((err: unknown) => {
      throw new Error(`the demo sub-agent failed: ${(err as Error).message}`)
    })
    const actor = (res.act as { sub?: string } | undefined)?.sub
    if (res.scope !== 'demo:read' || actor !== o.subAgentId) throw new Error(`the sub-agent's token has scope "${res.scope}" and actor ${actor ?? 'none'}`)
    expectStatus("the sub-agent's GET /data", res.call, 200)
    expectStatus("the sub-agent's POST /data", res.widerCall, 403)
    expectStatus("the sub-agent's renewal asking for demo:write", res.widerToken, 400)
    say(
      `  delegated         : scope "${res.scope}" to ${res.spiffeId} (its own key; sub stays the demo workload, act.sub is the sub-agent), expires in ${res.expiresIn} s`,
    )
    say(`  sub-agent call    : GET /data → ${res.call.status}`)
    say(
      `  sub-agent wider   : POST /data (needs demo:write) → ${res.widerCall.status} ${res.widerCall.error}; asking the broker for demo:write → ${res.widerToken.status} ${res.widerToken.error}`,
    )
  } catch (err) {
    const wire = oauthErrorOf(err)
    if (wire !== undefined)
      throw new Error(`the broker or resource server refused a request: ${wire} (${(err as IdentityError).message}; see the server log and ${o.logDir})`)
    throw err
  } finally {
    await sub.stop()
    await api.stop()
    await client?.close()
    await source?.close()
  }
}
