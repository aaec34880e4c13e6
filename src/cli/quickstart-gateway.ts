/**
 * The quickstart's gateway part: `warrant gateway run` (a workload with its
 * own SVID, listed in the broker's `txn_token_requesters`) in front of three
 * demo services (quickstart-demo-services.ts, each a process with its own
 * SVID): the MCP tool `search` (an MCP server built with the official SDK,
 * quickstart-demo-mcp.ts, which the gateway fronts as an OAuth resource
 * server), a payments service that takes only payments that passed the
 * fraud-check service, and that fraud-check service. The demo agent (this
 * process) then calls the MCP tool through the gateway with the SDK's client
 * (tools/list and tools/call; 401, RFC 9728 discovery and a broker token
 * bound to its SVID first, quickstart-mcp-agent.ts), calls payments through
 * the gateway directly (403: the Txn-Token's path lacks the fraud-check hop),
 * pays through fraud-check (201: fraud-check replaced the Txn-Token, so it is
 * on the path), and a second demo agent outside the tool's namespace calls
 * the MCP tool with a broker token of its own (403 at the gateway). The
 * gateway and the services keep running with the quickstart (restarted on
 * the same ports when they exit).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { connect } from 'node:tls'
import { fileURLToPath } from 'node:url'
import type { X509Svid } from '../spiffe/x509-svid/x509-svid.js'
import { X509Source } from '../workload-client/x509-source.js'
import type { OutsiderResult, ServiceArgs } from './quickstart-demo-services.js'
import { PAYMENTS_SCOPE, SEARCH_SCOPE, tlsOf } from './quickstart-demo-support.js'
import { mcpResource } from '../gateway/mcp.js'
import { freePort } from './quickstart-broker.js'
import type { DemoMcpAnswer } from './quickstart-demo-mcp.js'
import { callMcpTool, McpCallError } from './quickstart-mcp-agent.js'
import { httpsCall, oauthError, type HttpsReply } from './quickstart-oauth.js'

const SERVICES = join(dirname(fileURLToPath(import.meta.url)), 'quickstart-demo-services.ts')
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')

/** The MCP tool's resource URI (RFC 8707): its URL at the gateway. */
export const gatewayDemoMcpResource = (gatewayUrl: string): string => mcpResource(new URL(gatewayUrl).origin, { name: 'search' })

/** The tools' resource indicators (their audiences; the demo agents' ceiling must include them). */
export function gatewayDemoResources(gatewayUrl: string): string[] {
  return [gatewayDemoMcpResource(gatewayUrl), 'https://payments.example.org/', 'https://fraud-check.example.org/']
}
/** The scopes the demo agents' ceiling must include for the gateway demo. */
export const GATEWAY_DEMO_SCOPES = [SEARCH_SCOPE, PAYMENTS_SCOPE] as const

/** The gateway demo's workloads. */
export function gatewayDemoIds(trustDomain: string): { gateway: string; tool: string; payments: string; fraudCheck: string; outsider: string } {
  return {
    gateway: `spiffe://${trustDomain}/svc/gateway`,
    tool: `spiffe://${trustDomain}/svc/demo-tool`,
    payments: `spiffe://${trustDomain}/svc/payments`,
    fraudCheck: `spiffe://${trustDomain}/svc/fraud-check`,
    // another namespace than the demo agents' /agents/demo/, which is all the tools allow
    outsider: `spiffe://${trustDomain}/agents/sandbox/outsider`,
  }
}

/**
 * server.toml: the outsider's namespace bounds. Its ceiling allows the MCP
 * tool's resource and scope, so the broker gives it a token for the tool;
 * the tool's own `allowed_agents` (the demo agents' namespace only) is what
 * the gateway refuses it by.
 */
export function gatewayDemoServerToml(o: { trustDomain: string; gatewayUrl: string }): string {
  const outsider = gatewayDemoIds(o.trustDomain).outsider
  return [
    `[server.bounds."${outsider.slice(`spiffe://${o.trustDomain}`.length, outsider.lastIndexOf('/') + 1)}"]`,
    `scopes = ${JSON.stringify([SEARCH_SCOPE])}`,
    `resources = ${JSON.stringify([gatewayDemoMcpResource(o.gatewayUrl)])}`,
    'max_token_ttl = "5m"',
    '',
  ].join('\n')
}

export type GatewayDemoRole = 'gateway' | 'tool' | 'payments' | 'fraud-check' | 'outsider'

/** Registration entries: each workload by `unix:path` of its own link to node (`exe` names the link), servers with `localhost`. */
export function gatewayDemoEntries(trustDomain: string): { spiffeId: string; role: GatewayDemoRole; exe: string; dnsNames: string[] }[] {
  const ids = gatewayDemoIds(trustDomain)
  return [
    { spiffeId: ids.gateway, role: 'gateway', exe: 'warrant-demo-gateway', dnsNames: ['localhost'] },
    { spiffeId: ids.tool, role: 'tool', exe: 'warrant-demo-tool', dnsNames: ['localhost'] },
    { spiffeId: ids.payments, role: 'payments', exe: 'warrant-demo-payments', dnsNames: ['localhost'] },
    { spiffeId: ids.fraudCheck, role: 'fraud-check', exe: 'warrant-demo-fraud-check', dnsNames: ['localhost'] },
    { spiffeId: ids.outsider, role: 'outsider', exe: 'warrant-demo-outsider', dnsNames: [] },
  ]
}

/** What the quickstart lends: a process it keeps running (restarted when it exits). */
export type Supervise = (name: string, exe: string, argv: string[], logFile: string) => { readonly running: boolean }

export interface GatewayDemoOptions {
  trustDomain: string
  issuer: string
  /** The gateway's port on 127.0.0.1 (chosen before the server's bounds, which name the MCP tool's URL). */
  gatewayPort: number
  /** PEM file verifying the broker's, the gateway's and the services' certificates (the trust bundle). */
  caFile: string
  workloadSocket: string
  /** The server's signed bounds document (the callers' ceilings). */
  boundsDocumentPath: string
  /** The warrant CLI (bin/warrant.js). */
  cli: string
  /** The links to node each workload runs as. */
  exes: Record<GatewayDemoRole, string>
  /** The gateway's config, tools and audit log go to `<dir>/gateway`, the logs to `<dir>/demo`. */
  dataDir: string
  supervise: Supervise
}

export interface StartedGatewayDemo {
  readonly gatewayUrl: string
  readonly gatewayConfig: string
  /** Resolves once the gateway and the services answer (each has its SVID). */
  ready(timeoutMs: number): Promise<void>
}

/** A TLS handshake with `url`'s host and port, its certificate verified against `ca` (no HTTP request, so no gateway call to audit). */
function tlsHandshake(url: string, ca: string): Promise<boolean> {
  const u = new URL(url)
  return new Promise((resolveP, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(u.port), servername: u.hostname, ca, timeout: 5000 }, () => {
      s.end()
      resolveP(true)
    })
    s.on('timeout', () => s.destroy(new Error('TLS handshake timed out')))
    s.on('error', reject)
  })
}

/** Polls `probe` until it returns true; throws after `timeoutMs` with `what` and the last error. */
async function until(what: string, probe: () => Promise<boolean>, timeoutMs: number, running: () => boolean, logFile: string): Promise<void> {
  const end = Date.now() + timeoutMs
  let last = ''
  while (Date.now() < end) {
    try {
      if (await probe()) return
    } catch (err) {
      last = (err as Error).message
    }
    if (!running()) last = 'not running'
    await new Promise((r) => setTimeout(r, 300))
  }
  throw new Error(`${what} did not answer within ${timeoutMs / 1000} s (${last}); see ${logFile}`)
}

/**
 * Writes the tool registry and gateway.toml, and starts the services and the
 * gateway (they boot while the quickstart does other things; `ready` waits).
 */
export async function startGatewayDemo(o: GatewayDemoOptions): Promise<StartedGatewayDemo> {
  const ids = gatewayDemoIds(o.trustDomain)
  const dir = join(o.dataDir, 'gateway')
  const logDir = join(o.dataDir, 'demo')
  const toolsDir = join(dir, 'tools')
  mkdirSync(toolsDir, { recursive: true, mode: 0o700 })
  mkdirSync(logDir, { recursive: true, mode: 0o700 })
  const [toolPort, paymentsPort, fraudPort] = [await freePort(), await freePort(), await freePort()]
  const origin = (port: number) => `https://localhost:${port}`
  const gatewayUrl = origin(o.gatewayPort)
  const resources = gatewayDemoResources(gatewayUrl)
  const agents = [`spiffe://${o.trustDomain}/agents/demo/`]
  const tools = [
    // an MCP server: the gateway is its OAuth resource server, its audience the tool's URL at the gateway
    { name: 'search', endpoint: `${origin(toolPort)}/mcp`, audience: resources[0], scopes: [SEARCH_SCOPE], allowed_agents: agents, mcp: true },
    // `chain` is recorded by the gateway; payments itself enforces it on the Txn-Token
    {
      name: 'payments',
      endpoint: origin(paymentsPort),
      audience: resources[1],
      scopes: [PAYMENTS_SCOPE],
      allowed_agents: agents,
      chain: { require: [ids.fraudCheck] },
    },
    { name: 'fraud-check', endpoint: origin(fraudPort), audience: resources[2], scopes: [PAYMENTS_SCOPE], allowed_agents: agents },
  ]
  for (const t of tools)
    writeFileSync(
      join(toolsDir, `${t.name}.json`),
      `${JSON.stringify({ client_id: `https://tools.${o.trustDomain}/${t.name}`, client_name: `Demo ${t.name}`, warrant_tool: t }, null, 2)}\n`,
    )
  const gatewayConfig = join(dir, 'gateway.toml')
  writeFileSync(
    gatewayConfig,
    [
      '[gateway]',
      `bind_address = "127.0.0.1:${o.gatewayPort}"`,
      `url = "${gatewayUrl}"`,
      `spiffe_id = "${ids.gateway}"`,
      `bounds_document_path = "${o.boundsDocumentPath}"`,
      `tools_dir = "${toolsDir}"`,
      '[gateway.broker]',
      `issuer = "${o.issuer}"`,
      `ca_file = "${o.caFile}"`,
      '[gateway.audit]',
      `path = "${join(dir, 'audit.sqlite3')}"`,
      '[workload_api]',
      `socket_path = "${o.workloadSocket}"`,
      '',
    ].join('\n'),
  )

  const common = { socketPath: o.workloadSocket, issuer: o.issuer, trustDomain: `spiffe://${o.trustDomain}`, caFile: o.caFile }
  const services: { role: GatewayDemoRole; port: number; args: ServiceArgs }[] = [
    { role: 'tool', port: toolPort, args: { ...common, spiffeId: ids.tool, port: toolPort, gatewayId: ids.gateway } },
    { role: 'payments', port: paymentsPort, args: { ...common, spiffeId: ids.payments, port: paymentsPort, fraudCheckId: ids.fraudCheck } },
    {
      role: 'fraud-check',
      port: fraudPort,
      args: { ...common, spiffeId: ids.fraudCheck, port: fraudPort, gatewayId: ids.gateway, paymentsUrl: origin(paymentsPort) },
    },
  ]
  const started = services.map((s) => {
    const logFile = join(logDir, `demo-${s.role}.log`)
    const p = o.supervise(`demo ${s.role}`, o.exes[s.role], [...process.execArgv, SERVICES, s.role, JSON.stringify(s.args)], logFile)
    return { ...s, logFile, p }
  })
  const gatewayLog = join(dir, 'gateway.log')
  const gateway = o.supervise('gateway', o.exes.gateway, [o.cli, 'gateway', 'run', '--config', gatewayConfig], gatewayLog)

  const ca = readFileSync(o.caFile, 'utf8')
  return {
    gatewayUrl,
    gatewayConfig,
    async ready(timeoutMs) {
      await Promise.all([
        ...started.map((s) =>
          until(
            `the demo ${s.role} service`,
            async () => (await httpsCall(`${origin(s.port)}/healthz`, { method: 'GET', ca, timeoutMs: 5000 })).status === 200,
            timeoutMs,
            () => s.p.running,
            s.logFile,
          ),
        ),
        // a handshake verified with the bundle: the gateway listens with its SVID
        until(
          'the gateway',
          () => tlsHandshake(gatewayUrl, ca),
          timeoutMs,
          () => gateway.running,
          gatewayLog,
        ),
      ])
    },
  }
}

/** Short-lived demo processes running now (the outsider). */
const running = new Set<ChildProcess>()

/** Stops any short-lived demo process still running (Ctrl-C during the demo). */
export function stopGatewayDemoProcesses(): void {
  for (const c of running) c.kill('SIGTERM')
}

/** Runs the outsider demo agent as its own process and returns what it reports. */
function runOutsider(exe: string, args: ServiceArgs, logFile: string, timeoutMs: number): Promise<OutsiderResult> {
  return new Promise((resolveP, reject) => {
    const fd = openSync(logFile, 'a', 0o600)
    const child = spawn(exe, [...process.execArgv, SERVICES, 'outsider', JSON.stringify(args)], { cwd: ROOT, stdio: ['ignore', 'pipe', fd] })
    closeSync(fd)
    running.add(child)
    let out = ''
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('exit', (code, sig) => {
      clearTimeout(timer)
      running.delete(child)
      for (const line of out.split('\n')) {
        if (!line.startsWith('{')) continue
        const m = JSON.parse(line) as { result?: OutsiderResult; error?: string }
        if (m.result) return resolveP(m.result)
        if (m.error) return reject(new Error(`the outsider agent failed: ${m.error} (see ${logFile})`))
      }
      reject(new Error(`the outsider agent exited (${sig ?? code}) without an answer; see ${logFile}`))
    })
  })
}

function expectStatus(what: string, r: { status: number; body?: string }, want: number): void {
  if (r.status !== want) throw new Error(`${what}: expected HTTP ${want}, got ${r.status}${r.body ? ` ${r.body.slice(0, 200)}` : ''}`)
}

const json = (r: HttpsReply): Record<string, unknown> => {
  try {
    return JSON.parse(r.body) as Record<string, unknown>
  } catch {
    return {}
  }
}

export interface GatewayDemoRunOptions extends GatewayDemoOptions {
  /** The demo agent (this process's SVID). */
  demoId: string
  /** The broker's admin socket (the MCP tool's tasks are created there) and the warrant CLI (JSON output). */
  brokerAdminSocket: string
  runCli: (args: string[]) => Promise<unknown>
  say: (line?: string) => void
}

/** An orchestrator's task for `agent`: the MCP tool's scope and resource (client_credentials needs a task). */
async function mcpTask(o: GatewayDemoRunOptions, agent: string, resource: string, name: string): Promise<string> {
  const taskId = `quickstart-mcp-${name}-${Date.now().toString(36)}`
  await o.runCli([
    'task',
    'create',
    '--socket',
    o.brokerAdminSocket,
    '--agent',
    agent,
    '--scope',
    SEARCH_SCOPE,
    '--resource',
    resource,
    '--ttl',
    '1h',
    '--task-id',
    taskId,
    '--output',
    'json',
  ])
  return taskId
}

/**
 * The gateway demo's calls; prints one line per outcome. Throws when any
 * comes out otherwise (the quickstart then fails, as for its other demos).
 */
export async function runGatewayDemo(o: GatewayDemoRunOptions, g: StartedGatewayDemo): Promise<void> {
  const say = o.say
  const ids = gatewayDemoIds(o.trustDomain)
  const ca = readFileSync(o.caFile, 'utf8')
  const logDir = join(o.dataDir, 'demo')
  const pick = (svids: readonly X509Svid[]) => {
    const s = svids.find((x) => x.id.toString() === o.demoId)
    if (!s) throw new Error(`no SVID for ${o.demoId}`)
    return s
  }
  const mcpUrl = gatewayDemoMcpResource(g.gatewayUrl)
  const [demoTask, outsiderTask] = [await mcpTask(o, o.demoId, mcpUrl, 'demo'), await mcpTask(o, ids.outsider, mcpUrl, 'outsider')]
  // the outsider boots (and waits for its SVID) while the services come up
  const outsider = runOutsider(
    o.exes.outsider,
    {
      spiffeId: ids.outsider,
      socketPath: o.workloadSocket,
      issuer: o.issuer,
      trustDomain: `spiffe://${o.trustDomain}`,
      caFile: o.caFile,
      toolUrl: mcpUrl,
      taskId: outsiderTask,
    },
    join(logDir, 'demo-outsider.log'),
    180_000,
  )
  outsider.catch(() => undefined)
  await g.ready(120_000)
  const source = await X509Source.create({ socketPath: o.workloadSocket, picker: pick, signal: AbortSignal.timeout(60_000) })
  try {
    const me = tlsOf(source.getX509Svid())
    const call = (method: string, path: string, body?: unknown) =>
      httpsCall(`${g.gatewayUrl}${path}`, {
        method,
        ca,
        ...me,
        headers: { 'txn-purpose': 'quickstart', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        timeoutMs: 30_000,
      })
    const short = (id: unknown) => (typeof id === 'string' ? id.replace(`spiffe://${o.trustDomain}`, '') : '?')
    const pathText = (b: Record<string, unknown>) => (Array.isArray(b.path) ? b.path.map(short).join(' → ') : '?')

    say('')
    say(`Gateway demo (gateway ${ids.gateway} at ${g.gatewayUrl}; tools search (MCP), payments, fraud-check; demo agent ${o.demoId}):`)
    // The MCP tool, with the official SDK's client and its OAuth flow, authenticated by the SVID.
    const m = await callMcpTool({
      url: mcpUrl,
      ca,
      creds: () => tlsOf(source.getX509Svid()),
      spiffeId: o.demoId,
      issuer: o.issuer,
      scope: SEARCH_SCOPE,
      taskId: demoTask,
      tool: 'search',
      arguments: { query: 'warrant' },
    }).catch((err: unknown) => {
      const sent = err instanceof McpCallError ? err.sent.map((e) => `${e.method} ${e.url} → ${e.status}${e.error ? ` ${e.error}` : ''}`).join('; ') : ''
      throw new Error(`the MCP tool through the gateway: ${(err as Error).message}${sent ? ` (${sent})` : ''}`)
    })
    const a = JSON.parse(m.text) as Partial<DemoMcpAnswer>
    if (a.sub !== o.demoId) throw new Error(`the MCP tool saw a Txn-Token for ${String(a.sub)}, expected ${o.demoId}`)
    if (a.saw?.authorization !== false || a.saw.dpop !== false) throw new Error("the MCP tool saw the agent's credentials")
    const first = m.sent.find((e) => e.url === mcpUrl)
    const token = m.sent.find((e) => e.url === `${o.issuer}/token`)
    const calls = m.sent.filter((e) => e.url === mcpUrl && e.authorized)
    if (first?.status !== 401 || first.authorized || !first.wwwAuthenticate?.includes('resource_metadata='))
      throw new Error(`the MCP tool's first request answered ${first?.status ?? 'nothing'}, expected 401 with resource_metadata`)
    if (token?.status !== 200 || calls.length < 3 || calls.some((e) => e.status >= 300))
      throw new Error(`the MCP calls with the token: ${calls.map((e) => e.status).join(', ')}`)
    say(
      `  MCP tool call     : tools/list → ${m.tools.join(', ')}; tools/call search → "${String((a.results as string[] | undefined)?.[0] ?? '')}" (the MCP server saw only a Txn-Token: sub the demo agent, path ${pathText(a)})`,
    )
    say(
      `  MCP authorization : first request → 401 with resource_metadata; broker token for ${mcpUrl} (client_credentials, SVID over mTLS, certificate-bound) → ${token.status}; ${calls.length} MCP requests with it → ${[...new Set(calls.map((e) => e.status))].join('/')}`,
    )

    const payment = { amount: 42, to: 'acme-supplies' }
    const direct = await call('POST', '/tools/payments/payments', payment)
    expectStatus('payments through the gateway without the fraud check', direct, 403)
    if (oauthError(direct) !== 'access_denied') throw new Error(`payments refused the direct call with ${oauthError(direct)}, expected access_denied`)
    say(
      `  payments direct   : POST /tools/payments/payments → ${direct.status} ${oauthError(direct)} (missing hop: the Txn-Token's path lacks ${short(ids.fraudCheck)})`,
    )

    const out = await outsider
    if (out.spiffeId !== ids.outsider) throw new Error(`the outsider agent has ${out.spiffeId}`)
    if (out.tokenStatus !== 200) throw new Error(`the outsider got no token for the MCP tool from the broker (${out.tokenStatus})`)
    expectStatus('the MCP tool called by an agent outside its namespace', out, 403)
    if (out.error !== 'access_denied') throw new Error(`the gateway refused the outsider with ${out.error}, expected access_denied`)
    say(
      `  outside namespace : ${out.spiffeId} → MCP initialize with its broker token → ${out.status} ${out.error} (not in the tool's allowed_agents ${short(`spiffe://${o.trustDomain}/agents/demo/`)})`,
    )

    const paid = await call('POST', '/tools/fraud-check/check', payment)
    expectStatus('payments through the fraud check', paid, 201)
    const p = json(paid)
    say(
      `  via fraud-check   : POST /tools/fraud-check/check → ${paid.status} payment ${String(p.payment_id)} (fraud-check replaced the Txn-Token; path ${pathText(p)})`,
    )
  } finally {
    await source.close()
  }
}
