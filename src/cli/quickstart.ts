/**
 * `npm run quickstart [-- --data-dir DIR] [--once]`: a server and an agent on
 * embedded defaults, a demo entry for the current user, and a demo workload
 * that fetches its X.509-SVID and a JWT-SVID and validates the JWT through the
 * Workload API. With swtpm installed the agent attests with a (software) TPM;
 * with softhsm2 installed the CA and JWT keys live in an HSM token. The server
 * also runs the token broker (`[broker]`, its signing key in the same key
 * manager), and the broker demo (quickstart-broker.ts) shows a task-scoped,
 * DPoP-bound token, its renewal and a delegation to a sub-agent. The gateway
 * demo (quickstart-gateway.ts) runs `warrant gateway run` in front of a demo
 * tool, a payments service and a fraud-check service, and shows a tool call,
 * a payment refused for a missing fraud-check hop, a caller outside the
 * tool's namespace refused, and a payment through the fraud check. The
 * intents demo (quickstart-intents.ts) declares a low-risk intent (approved
 * by rule) and a high-risk one that waits for a human in the operator
 * console (its URL and one-time login printed; `--once` approves it through
 * `warrant approval approve`).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, closeSync, copyFileSync, existsSync, linkSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../common/grpc/proto.js'
import { provisionSoftHsm, findSoftHsmModule } from '../dev/softhsm.js'
import { adminClient } from './admin-client.js'
import { startSwtpm, type SwtpmInstance } from '../dev/swtpm.js'
import { brokerServerToml, freePort, runBrokerDemo, stopDemoProcesses, waitForBroker } from './quickstart-broker.js'
import { consoleLogin, intentsServerToml, runIntentsDemo } from './quickstart-intents.js'
import {
  gatewayDemoResources,
  gatewayDemoServerToml,
  GATEWAY_DEMO_SCOPES,
  gatewayDemoEntries,
  gatewayDemoIds,
  runGatewayDemo,
  startGatewayDemo,
  stopGatewayDemoProcesses,
  type GatewayDemoRole,
} from './quickstart-gateway.js'

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
const CLI = join(ROOT, 'bin', 'warrant.js')
const TRUST_DOMAIN = 'example.org'
const DEMO_ID = `spiffe://${TRUST_DOMAIN}/agents/demo/quickstart`
const DEMO_AUDIENCE = `spiffe://${TRUST_DOMAIN}/svc/demo-api`
/** The broker demo's resource server and sub-agent (each its own process, told apart by executable path). */
const DEMO_API_ID = `spiffe://${TRUST_DOMAIN}/svc/demo-resource-server`
const DEMO_SUB_AGENT_ID = `spiffe://${TRUST_DOMAIN}/agents/demo/sub-agent`

const onPath = (cmd: string) => (process.env.PATH ?? '').split(':').some((d) => d && existsSync(join(d, cmd)))

function say(line = ''): void {
  process.stdout.write(`${line}\n`)
}

function fail(msg: string): never {
  // After Ctrl-C, steps cut short by the shutdown fail quietly: the shutdown exits once everything is stopped.
  if (stopping) throw new Error('the quickstart is stopping')
  process.stderr.write(`quickstart: ${msg}\n`)
  process.exit(1)
}

/** Runs the warrant CLI and returns stdout (parsed as JSON when asked). */
function cli(
  args: string[],
  opts: { json?: boolean; env?: NodeJS.ProcessEnv; allowFail?: boolean } = {},
): Promise<{ code: number; out: string; err: string; json: unknown }> {
  return new Promise((resolveP) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr.on('data', (c: Buffer) => (err += c.toString()))
    child.on('close', (code) => {
      let json: unknown
      if (opts.json && code === 0) {
        try {
          json = JSON.parse(out)
        } catch {
          json = undefined
        }
      }
      if (code !== 0 && !opts.allowFail) fail(`warrant ${args.slice(0, 2).join(' ')} failed: ${err.trim() || out.trim()}`)
      resolveP({ code: code ?? 1, out, err, json })
    })
  })
}

/** How long a process may take to exit after SIGTERM. */
const STOP_GRACE_MS = 15_000
/** Restarts of one process allowed within RESTART_WINDOW_MS; the delay before each doubles from 1 s up to 30 s. */
const MAX_RESTARTS = 5
const RESTART_WINDOW_MS = 5 * 60_000
const RESTART_DELAY_MS = [1000, 2000, 4000, 8000, 16_000, 30_000]

/**
 * A process the quickstart keeps running (the warrant CLI, or a demo
 * service, through `exe`): when it exits on its own
 * (killed, crashed), it is started again with the same arguments after a
 * backoff, at most MAX_RESTARTS times per RESTART_WINDOW_MS; past that it is
 * left stopped and the quickstart says so. `onRestart` runs once a restarted
 * process is up again (e.g. waits for its health check).
 */
class Supervised {
  readonly name: string
  readonly logFile: string
  child: ChildProcess
  readonly #exe: string
  readonly #argv: string[]
  readonly #env: NodeJS.ProcessEnv
  readonly #restarts: number[] = []
  #timer: NodeJS.Timeout | undefined
  onRestart: (() => Promise<void>) | undefined

  /** `argv` as node takes it after `exe` (a link to node): the CLI path or a script first. */
  constructor(name: string, exe: string, argv: string[], logFile: string, env: NodeJS.ProcessEnv = {}) {
    this.name = name
    this.logFile = logFile
    this.#exe = exe
    this.#argv = argv
    this.#env = env
    this.child = this.#spawn()
  }

  #spawn(): ChildProcess {
    const fd = openSync(this.logFile, 'a', 0o600)
    const child = spawn(this.#exe, this.#argv, { cwd: ROOT, env: { ...process.env, ...this.#env }, stdio: ['ignore', fd, fd] })
    closeSync(fd)
    child.on('exit', (code, sig) => {
      if (stopping) return
      process.stderr.write(`quickstart: ${this.name} exited (${sig ?? code}); see ${this.logFile}\n`)
      this.#scheduleRestart()
    })
    return child
  }

  #scheduleRestart(): void {
    const now = Date.now()
    while (this.#restarts.length > 0 && now - this.#restarts[0]! > RESTART_WINDOW_MS) this.#restarts.shift()
    if (this.#restarts.length >= MAX_RESTARTS) {
      process.stderr.write(
        `quickstart: ${this.name} exited ${MAX_RESTARTS + 1} times within ${RESTART_WINDOW_MS / 60_000} min; not restarting it again (see ${this.logFile}; Ctrl-C and run the quickstart again)\n`,
      )
      return
    }
    const delay = RESTART_DELAY_MS[Math.min(this.#restarts.length, RESTART_DELAY_MS.length - 1)]!
    this.#restarts.push(now)
    process.stderr.write(
      `quickstart: restarting ${this.name} in ${delay / 1000} s (restart ${this.#restarts.length} of at most ${MAX_RESTARTS} per ${RESTART_WINDOW_MS / 60_000} min)\n`,
    )
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      if (stopping) return
      this.child = this.#spawn()
      const pid = this.child.pid
      void (this.onRestart?.() ?? Promise.resolve()).then(
        () => {
          if (!stopping && this.child.pid === pid && this.running) process.stderr.write(`quickstart: ${this.name} restarted (pid ${pid})\n`)
        },
        (err: unknown) => process.stderr.write(`quickstart: ${this.name} did not come back: ${(err as Error).message}\n`),
      )
    }, delay)
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** How the current process ended (`code 1`, `SIGKILL`), for messages. */
  get exitStatus(): string {
    return this.child.signalCode ?? `code ${this.child.exitCode}`
  }

  /** Stops the process (SIGTERM; SIGKILL after STOP_GRACE_MS) and any pending restart. */
  async stop(): Promise<void> {
    clearTimeout(this.#timer)
    if (this.running) {
      const exited = new Promise((r) => this.child.once('exit', r))
      this.child.kill('SIGTERM')
      const kill = setTimeout(() => this.child.kill('SIGKILL'), STOP_GRACE_MS)
      await exited
      clearTimeout(kill)
    }
  }
}

/** grpc.health.v1 Check on a Unix socket, in-process. */
async function healthy(socket: string): Promise<boolean> {
  const proto = loadProto('grpc/health/v1/health.proto') as unknown as { grpc: { health: { v1: { Health: grpc.ServiceClientConstructor } } } }
  const client = new proto.grpc.health.v1.Health(`unix:${socket}`, grpc.credentials.createInsecure())
  try {
    return await new Promise<boolean>((resolveP) =>
      (client as unknown as { Check: (r: unknown, o: grpc.CallOptions, cb: (e: Error | null, r?: { status: string }) => void) => void }).Check(
        { service: '' },
        { deadline: Date.now() + 2000 },
        (e, r) => resolveP(!e && r?.status === 'SERVING'),
      ),
    )
  } finally {
    client.close()
  }
}

/** Polls `fn` until it returns a value; after `timeoutMs`, `onTimeout` (default: exit with a message). */
async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  logHint = '',
  onTimeout: (msg: string) => never = fail,
): Promise<T> {
  const end = Date.now() + timeoutMs
  while (Date.now() < end) {
    const v = await fn()
    if (v !== undefined) return v
    await new Promise((r) => setTimeout(r, 250))
  }
  return onTimeout(`timed out waiting for ${what}${logHint ? `; see ${logHint}` : ''}`)
}

let stopping = false

/**
 * `path` as a hard link to this node binary (a copy where a link is not
 * allowed, e.g. across file systems), so that a demo process run through it
 * has an executable path of its own for the unix workload attestor.
 */
function nodeLink(path: string): string {
  rmSync(path, { force: true })
  try {
    linkSync(process.execPath, path)
  } catch {
    copyFileSync(process.execPath, path)
    chmodSync(path, 0o755)
  }
  return path
}

/** `[plugins.datastore.postgres]` for `--datastore postgres://...` (password from $PGPASSWORD); nothing for the SQLite default. */
function datastoreToml(url: string | undefined): string {
  if (url === undefined) return ''
  let u: URL
  try {
    u = new URL(url)
  } catch {
    fail('--datastore must be a postgres:// URL')
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') fail('--datastore must be a postgres:// URL')
  if (u.password !== '') fail('--datastore must not carry a password: put it in $PGPASSWORD')
  return [
    '[plugins.datastore.postgres]',
    `connection_string = ${JSON.stringify(url)}`,
    ...(process.env.PGPASSWORD !== undefined ? ['password_env = "PGPASSWORD"'] : []),
    '',
  ].join('\n')
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    args: process.argv.slice(2),
    options: {
      'data-dir': { type: 'string', default: './.warrant' },
      once: { type: 'boolean', default: false },
      datastore: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  })
  if (values.help) {
    say('usage: npm run quickstart -- [--data-dir DIR] [--once] [--datastore postgres://USER@HOST:PORT/DB]')
    say('  --datastore: the server on PostgreSQL instead of its SQLite file (the password, if any, from $PGPASSWORD, never in the URL)')
    return
  }
  const datastoreBlock = datastoreToml(values.datastore) // checked before anything starts
  const dataDir = resolve(values['data-dir'])
  const serverDir = join(dataDir, 'server')
  const agentDir = join(dataDir, 'agent')
  for (const d of [dataDir, serverDir, agentDir]) mkdirSync(d, { recursive: true, mode: 0o700 })
  const adminSocket = join(serverDir, 'private', 'admin.sock')
  const workloadSocket = join(agentDir, 'public', 'api.sock')
  if (Buffer.byteLength(workloadSocket) > 100) fail(`--data-dir ${dataDir} is too long for a Unix socket path; choose a shorter one`)

  const children: Supervised[] = []
  let swtpm: SwtpmInstance | undefined
  let intentsDemo: { close(): Promise<void> } | undefined
  const shutdown = async () => {
    stopping = true
    await intentsDemo?.close().catch(() => undefined)
    // What the shutdown interrupts (a demo step, a CLI call) may throw now; the shutdown decides how the process ends.
    process.on('uncaughtException', () => undefined)
    process.on('unhandledRejection', () => undefined)
    stopGatewayDemoProcesses()
    await stopDemoProcesses()
    for (const c of children.reverse()) await c.stop()
    await swtpm?.stop()
  }
  // A quickstart that fails (or is ended otherwise) leaves no process behind to hold its ports and sockets (swtpm included).
  process.on('exit', () => {
    stopping = true
    for (const c of children) if (c.running) c.child.kill('SIGTERM')
    swtpm?.kill()
  })
  process.once('SIGINT', () => void shutdown().then(() => process.exit(0)))
  process.once('SIGTERM', () => void shutdown().then(() => process.exit(0)))

  say('warrant quickstart')
  say(`  data dir          : ${dataDir}`)
  say(`  trust domain      : ${TRUST_DOMAIN}`)

  // Key manager: an HSM token (SoftHSM2) when available, else key files.
  const serverEnv: NodeJS.ProcessEnv = {}
  let keyManagerToml: string
  let brokerKey: string
  if (onPath('softhsm2-util') && findSoftHsmModule()) {
    const hsm = await provisionSoftHsm(dataDir)
    serverEnv.SOFTHSM2_CONF = hsm.confPath
    keyManagerToml = `[plugins.key_manager.pkcs11]\nmodule_path = "${hsm.modulePath}"\ntoken_label = "${hsm.tokenLabel}"\npin_file = "${hsm.pinFile}"\n`
    say(`  key manager       : pkcs11 — CA and JWT keys generated inside SoftHSM token "${hsm.tokenLabel}" (sensitive, not extractable)`)
    brokerKey = `signing key in SoftHSM token "${hsm.tokenLabel}"`
  } else {
    keyManagerToml = '[plugins.key_manager.disk]\nkeys_path = "keys"\n'
    say('  key manager       : disk (softhsm2 is not installed: `sudo apt-get install softhsm2` puts the CA keys in an HSM token)')
    brokerKey = `signing key on disk in ${join(serverDir, 'keys')}`
  }

  // Node attestation: a TPM (swtpm) when available, else a join token.
  let serverAttestorToml = '[plugins.node_attestor.join_token]\n'
  let agentAttestorToml: string
  let attestor: 'tpm' | 'join_token' = 'join_token'
  if (onPath('swtpm') && onPath('swtpm_setup')) {
    swtpm = await startSwtpm({ dir: join(dataDir, 'tpm'), reuse: true })
    attestor = 'tpm'
    const cas = [join(swtpm.caDir, 'swtpm-localca-rootca-cert.pem'), join(swtpm.caDir, 'issuercert.pem')]
    serverAttestorToml += `\n[plugins.node_attestor.tpm]\nek_ca_paths = ${JSON.stringify(cas)}\npcrs = [0, 1, 2, 3, 4, 5, 6, 7]\n`
    agentAttestorToml = `[plugins.node_attestor.tpm]\nswtpm = "127.0.0.1:${swtpm.port}"\n`
    say(`  node attestation  : tpm — swtpm on 127.0.0.1:${swtpm.port}, EK certificate chained to its local CA`)
  } else {
    agentAttestorToml = ''
    say('  node attestation  : join_token (swtpm is not installed: `sudo apt-get install swtpm swtpm-tools` enables TPM attestation)')
  }

  // The broker, embedded in the server: its issuer names its port, so the port is chosen now.
  const brokerPort = await freePort()
  const brokerIssuer = `https://localhost:${brokerPort}`
  const brokerCa = join(serverDir, 'bundle.pem')
  const brokerAdminSocket = join(serverDir, 'private', 'broker-admin.sock')
  // The operator console (its own HTTPS listener) for the intents demo's approvals.
  const consolePort = await freePort()
  const consoleUrl = `https://localhost:${consolePort}`
  // The gateway: its MCP tool's resource URI (in the demo agents' ceiling) names its port.
  const gatewayPort = await freePort()
  const gatewayUrl = `https://localhost:${gatewayPort}`
  writeFileSync(
    join(serverDir, 'server.toml'),
    [
      '[server]',
      `trust_domain = "${TRUST_DOMAIN}"`,
      'bind_address = "127.0.0.1:0"',
      `data_dir = "${serverDir}"`,
      `socket_path = "${adminSocket}"`,
      '',
      brokerServerToml({
        issuer: brokerIssuer,
        port: brokerPort,
        trustDomain: TRUST_DOMAIN,
        prefix: '/agents/demo/',
        scopes: GATEWAY_DEMO_SCOPES,
        resources: gatewayDemoResources(gatewayUrl),
        txnTokenRequesters: [gatewayDemoIds(TRUST_DOMAIN).gateway],
      }),
      gatewayDemoServerToml({ trustDomain: TRUST_DOMAIN, gatewayUrl }),
      intentsServerToml({ consolePort, prefix: '/agents/demo/', trustDomain: TRUST_DOMAIN }),
      keyManagerToml,
      datastoreBlock,
      serverAttestorToml,
    ].join('\n'),
  )
  const serverToml = join(serverDir, 'server.toml')
  const server = new Supervised('server', process.execPath, [CLI, 'server', 'run', '--config', serverToml], join(serverDir, 'server.log'), serverEnv)
  children.push(server)
  const addrFile = join(serverDir, 'server.addr')
  const startedAt = Date.now()
  const serverUp = (onTimeout?: (msg: string) => never) =>
    waitFor(
      'the server',
      async () => {
        // at the first start, a server that exits is misconfigured: say so now, not after the restarts and the timeout
        if (onTimeout === undefined && !server.running) fail(`the server exited during start-up (${server.exitStatus}); see ${server.logFile}`)
        if (!server.running || !existsSync(addrFile) || !existsSync(adminSocket)) return undefined
        return (await healthy(adminSocket)) ? readFileSync(addrFile, 'utf8').trim() : undefined
      },
      60_000,
      server.logFile,
      onTimeout,
    )
  const serverAddr = await serverUp()
  // A restarted server must come back on the same port: the agent's config names it.
  writeFileSync(serverToml, readFileSync(serverToml, 'utf8').replace('bind_address = "127.0.0.1:0"', `bind_address = "${serverAddr}"`))
  server.onRestart = () =>
    serverUp((msg) => {
      throw new Error(msg)
    }).then(() => undefined)
  say(`  server            : ${serverAddr} (admin socket ${adminSocket})`)
  say(
    `  datastore         : ${values.datastore !== undefined ? `postgres ${new URL(values.datastore).host}${new URL(values.datastore).pathname}` : `sqlite ${join(serverDir, 'datastore.sqlite3')} (--datastore postgres://... for PostgreSQL)`}`,
  )
  await waitForBroker(brokerIssuer, readFileSync(brokerCa, 'utf8'), 60_000).catch((err: unknown) => fail(`${(err as Error).message}; see ${server.logFile}`))
  say(`  broker            : ${brokerIssuer} (embedded in the server, ${brokerKey}; admin socket ${brokerAdminSocket})`)

  const entries = adminClient('Entries', adminSocket)
  const agents = adminClient('Agents', adminSocket)
  if (attestor === 'join_token') {
    const t = await agents.call<{ token: string }>('CreateJoinToken', { ttl: 600 })
    agentAttestorToml = `[plugins.node_attestor.join_token]\ntoken = "${t.token}"\n`
  }
  writeFileSync(
    join(agentDir, 'agent.toml'),
    [
      '[agent]',
      `trust_domain = "${TRUST_DOMAIN}"`,
      `server_address = "${serverAddr}"`,
      `socket_path = "${workloadSocket}"`,
      `data_dir = "${agentDir}"`,
      `trust_bundle_path = "${join(serverDir, 'bundle.pem')}"`,
      '',
      agentAttestorToml,
      '[plugins.workload_attestor.unix]',
      '',
    ].join('\n'),
    { mode: 0o600 },
  )
  const agent = new Supervised('agent', process.execPath, [CLI, 'agent', 'run', '--config', join(agentDir, 'agent.toml')], join(agentDir, 'agent.log'))
  children.push(agent)
  await waitFor(
    'the agent',
    async () => {
      if (!agent.running) fail(`the agent exited during start-up (${agent.exitStatus}); see ${agent.logFile}`)
      if (!existsSync(workloadSocket)) return undefined
      return (await healthy(workloadSocket)) ? true : undefined
    },
    90_000,
    join(agentDir, 'agent.log'),
  )
  const agentId = await waitFor(
    'the agent to attest',
    async () => {
      const r = await agents.call<{ agents: { agent_id: string; updated_at: string }[] }>('List', { attestor })
      const list = r.agents.sort((a, b) => Number(b.updated_at) - Number(a.updated_at))
      return list[0]?.agent_id
    },
    90_000,
    join(agentDir, 'agent.log'),
  )
  say(`  agent             : ${agentId}`)

  // The demo entry: this user's processes on this agent get the demo identity.
  const uid = process.getuid?.() ?? 0
  const existing = await entries.call<{ entries: unknown[] }>('List', { spiffe_id: DEMO_ID, parent_id: agentId })
  if (existing.entries.length === 0) {
    const r = await entries.call<{ results: { status: { code: number; message: string } }[] }>('BatchCreate', {
      entries: [{ spiffe_id: DEMO_ID, parent_id: agentId, selectors: [{ type: 'unix', value: `uid:${uid}` }], x509_svid_ttl: 3600, jwt_svid_ttl: 300 }],
    })
    if (r.results[0]?.status.code !== 0) fail(`cannot create the demo entry: ${r.results[0]?.status.message}`)
  }
  // The broker demo's resource server and sub-agent: the same user, told apart by the executable they run as.
  const demoBin = join(dataDir, 'demo', 'bin')
  mkdirSync(demoBin, { recursive: true, mode: 0o700 })
  const apiExe = nodeLink(join(demoBin, 'warrant-demo-api'))
  const subAgentExe = nodeLink(join(demoBin, 'warrant-demo-sub-agent'))
  // The gateway demo's workloads: the gateway, its tool, payments, fraud-check and an agent outside the tools' namespace.
  const gatewayEntries = gatewayDemoEntries(TRUST_DOMAIN).map((e) => ({ ...e, path: nodeLink(join(demoBin, e.exe)) }))
  const gatewayExes = Object.fromEntries(gatewayEntries.map((e) => [e.role, e.path])) as Record<GatewayDemoRole, string>
  for (const e of [
    { spiffe_id: DEMO_API_ID, exe: apiExe, dns_names: ['localhost'] },
    { spiffe_id: DEMO_SUB_AGENT_ID, exe: subAgentExe, dns_names: [] },
    ...gatewayEntries.map((g) => ({ spiffe_id: g.spiffeId, exe: g.path, dns_names: g.dnsNames })),
  ]) {
    const have = await entries.call<{ entries: unknown[] }>('List', { spiffe_id: e.spiffe_id, parent_id: agentId })
    if (have.entries.length > 0) continue
    const r = await entries.call<{ results: { status: { code: number; message: string } }[] }>('BatchCreate', {
      entries: [
        {
          spiffe_id: e.spiffe_id,
          parent_id: agentId,
          selectors: [
            { type: 'unix', value: `uid:${uid}` },
            { type: 'unix', value: `path:${e.exe}` },
          ],
          dns_names: e.dns_names,
          x509_svid_ttl: 3600,
          jwt_svid_ttl: 300,
        },
      ],
    })
    if (r.results[0]?.status.code !== 0) fail(`cannot create the demo entry ${e.spiffe_id}: ${r.results[0]?.status.message}`)
  }
  entries.close()
  agents.close()
  say(`  demo entry        : ${DEMO_ID} for unix:uid:${uid}`)
  say(`  broker demo       : ${DEMO_API_ID} (resource server) and ${DEMO_SUB_AGENT_ID}, each also by unix:path under ${demoBin}`)
  say(`  gateway demo      : ${gatewayEntries.map((g) => g.spiffeId).join(', ')}, each also by unix:path under ${demoBin}`)

  // The gateway and its demo services start now and get their SVIDs while the other demos run.
  const gatewayDemo = {
    trustDomain: TRUST_DOMAIN,
    issuer: brokerIssuer,
    gatewayPort,
    caFile: brokerCa,
    workloadSocket,
    boundsDocumentPath: join(serverDir, 'bounds.jws'),
    cli: CLI,
    exes: gatewayExes,
    dataDir,
    supervise: (name: string, exe: string, argv: string[], logFile: string) => {
      const p = new Supervised(name, exe, argv, logFile)
      children.push(p)
      return p
    },
  }
  const gateway = await startGatewayDemo(gatewayDemo)

  // The demo workload: separate processes talking to the Workload API only.
  const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${workloadSocket}` }
  const x509 = await waitFor(
    'the demo X.509-SVID',
    async () => {
      const r = await cli(['api', 'fetch', 'x509', '--output', 'json'], { json: true, env, allowFail: true })
      const svids = (r.json as { svids?: { spiffe_id: string; not_after: string }[] } | undefined)?.svids
      return svids?.find((s) => s.spiffe_id === DEMO_ID)
    },
    60_000,
    join(agentDir, 'agent.log'),
  )
  const jwt = await cli(['api', 'fetch', 'jwt', '--audience', DEMO_AUDIENCE, '--spiffe-id', DEMO_ID, '--output', 'json'], { json: true, env })
  const token = (jwt.json as { svids: { token: string }[] }).svids[0]?.token
  if (!token) fail('the agent returned no JWT-SVID')
  const valid = await cli(['api', 'validate', 'jwt', '--audience', DEMO_AUDIENCE, '--svid', token, '--output', 'json'], { json: true, env })
  const claims = (valid.json as { spiffe_id: string; claims: { exp?: number } }).claims
  say('')
  say(`Demo workload (uid ${uid}), through the Workload API only (${((Date.now() - startedAt) / 1000).toFixed(1)} s after start):`)
  say(`  X.509-SVID        : ${x509.spiffe_id}, valid until ${x509.not_after}`)
  say(`  JWT-SVID          : ${DEMO_ID}, audience ${DEMO_AUDIENCE}, expires ${claims.exp ? new Date(claims.exp * 1000).toISOString() : '?'}`)
  say(`  JWT validation    : valid (ValidateJWTSVID returned ${(valid.json as { spiffe_id: string }).spiffe_id})`)
  await runBrokerDemo({
    issuer: brokerIssuer,
    caFile: brokerCa,
    brokerAdminSocket,
    workloadSocket,
    demoId: DEMO_ID,
    apiId: DEMO_API_ID,
    subAgentId: DEMO_SUB_AGENT_ID,
    apiExe,
    subAgentExe,
    logDir: join(dataDir, 'demo'),
    cli: async (args) => (await cli(args, { json: true })).json,
    say,
  }).catch((err: unknown) => fail(`broker demo: ${(err as Error).message}`))
  await runGatewayDemo(
    { ...gatewayDemo, demoId: DEMO_ID, brokerAdminSocket, runCli: async (args) => (await cli(args, { json: true })).json, say },
    gateway,
  ).catch((err: unknown) => fail(`gateway demo: ${(err as Error).message}`))
  const intents = await runIntentsDemo({
    issuer: brokerIssuer,
    caFile: brokerCa,
    brokerAdminSocket,
    workloadSocket,
    demoId: DEMO_ID,
    consoleUrl,
    once: values.once === true,
    cli: async (args) => (await cli(args, { json: true })).json,
    say,
  }).catch((err: unknown) => fail(`intents demo: ${(err as Error).message}`))
  intentsDemo = intents
  const login = await waitFor('the console', async () => consoleLogin(server.logFile), 30_000, server.logFile)
  say(
    `  console           : ${consoleUrl} (certificate: ${brokerCa}); sign in as "${login.operator}" with the one-time login below, then add a passkey or TOTP`,
  )
  say('')
  say('Try it yourself:')
  say(`  export SPIFFE_ENDPOINT_SOCKET=unix://${workloadSocket}`)
  say('  npx warrant api fetch x509 --write /tmp/svid')
  say(`  npx warrant entry show --socket ${adminSocket}`)
  say(`  npx warrant task list --socket ${brokerAdminSocket}`)
  say(`  curl --cacert ${brokerCa} ${brokerIssuer}/.well-known/oauth-authorization-server`)
  say(`  curl --cacert ${brokerCa} ${gateway.gatewayUrl}/.well-known/oauth-protected-resource/tools/search`)
  say(
    `  curl --cacert ${brokerCa} --cert /tmp/svid/svid.0.pem --key /tmp/svid/svid.0.key -H 'content-type: application/json' -d '{"amount":7,"to":"me"}' ${gateway.gatewayUrl}/tools/fraud-check/check`,
  )
  say('')
  say(`SPIFFE_ENDPOINT_SOCKET=unix://${workloadSocket}`)
  say(`WARRANT_BROKER_URL=${brokerIssuer}`)
  say(`WARRANT_BROKER_CA=${brokerCa}`)
  say(`WARRANT_GATEWAY_URL=${gateway.gatewayUrl}`)
  say(`WARRANT_GATEWAY_CA=${brokerCa}`)
  say(`WARRANT_CONSOLE_URL=${consoleUrl}`)
  say(`WARRANT_CONSOLE_CA=${brokerCa}`)
  say(`WARRANT_CONSOLE_LOGIN=${login.token}`)

  if (values.once) {
    await shutdown()
    return
  }
  say('Server, agent, gateway and demo services keep running (restarted if they exit); press Ctrl-C to stop them.')
  await new Promise<void>(() => undefined)
}

main().catch((err: unknown) => fail((err as Error).message))
