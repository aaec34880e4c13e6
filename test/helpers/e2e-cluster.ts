/**
 * Servers and agents as real `node bin/warrant.js` processes for end-to-end
 * tests (federation, TPM attestation, HSM-held CA): config files written into
 * a directory the test owns, ports chosen by the OS (`127.0.0.1:0`) and read
 * back from `<data_dir>/server.addr` / `bundle-endpoint.addr`, a per-process
 * environment (e.g. SOFTHSM2_CONF), and the CLI run against their sockets.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

export const E2E_REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const E2E_BIN = join(E2E_REPO, 'bin', 'warrant.js')

export interface RunResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs `node bin/warrant.js ...args` to completion (never throws on a non-zero exit). */
export function warrant(args: string[], opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolveP, reject) => {
    const child = spawn(process.execPath, [E2E_BIN, ...args], { cwd: E2E_REPO, env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    const t = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(t)
      resolveP({ code: code ?? -1, stdout, stderr })
    })
  })
}

/** Runs a CLI command with `--output json` and parses stdout; throws (with stderr) unless it exits 0. */
export async function warrantJson<T = Record<string, unknown>>(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<T> {
  const r = await warrant([...args, '--output', 'json'], opts)
  if (r.code !== 0) throw new Error(`warrant ${args.slice(0, 3).join(' ')} exited ${r.code}: ${r.stderr.trim()}${r.stdout.trim()}`)
  return JSON.parse(r.stdout) as T
}

/**
 * Polls `fn` until it returns something other than undefined/false (errors
 * count as "not yet"); throws after `timeoutMs` with `what`, the last error
 * and `hint()` (e.g. a process log tail).
 */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false | Promise<T | undefined | false>,
  o: { timeoutMs?: number; intervalMs?: number; hint?: () => string } = {},
): Promise<T> {
  const end = Date.now() + (o.timeoutMs ?? 20_000)
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch (err) {
      last = err
    }
    if (Date.now() > end) {
      const hint = o.hint?.() ?? ''
      throw new Error(
        `timed out waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}${hint ? `\n--- log tail ---\n${hint.slice(-4000)}` : ''}`,
      )
    }
    await new Promise((r) => setTimeout(r, o.intervalMs ?? 200))
  }
}

/** One long-running warrant process (stdout and stderr kept in memory). */
/**
 * agent.toml for a join-token agent whose unix attestor does not hash binaries
 * (workload_size_limit = -1), as the instance tests and benchmark use it.
 */
export function joinTokenAgentToml(o: {
  trustDomain: string
  serverAddress: string
  socketPath: string
  dataDir: string
  bundlePemPath: string
  token: string
  logLevel: string
}): string {
  return [
    '[agent]',
    `trust_domain = "${o.trustDomain}"`,
    `server_address = "${o.serverAddress}"`,
    `socket_path = "${o.socketPath}"`,
    `data_dir = "${o.dataDir}"`,
    `log_level = "${o.logLevel}"`,
    `trust_bundle_path = "${o.bundlePemPath}"`,
    '[plugins.node_attestor.join_token]',
    `token = "${o.token}"`,
    '[plugins.workload_attestor.unix]',
    'workload_size_limit = -1',
    '',
  ].join('\n')
}

export class WarrantProcess {
  readonly child: ChildProcess
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
  #out = ''

  constructor(args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(process.execPath, [E2E_BIN, ...args], { cwd: E2E_REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (d: Buffer) => {
      this.#out += d.toString()
      if (this.#out.length > 4_000_000) this.#out = this.#out.slice(-2_000_000)
    }
    this.child.stdout!.on('data', keep)
    this.child.stderr!.on('data', keep)
    this.exited = new Promise((res) => this.child.once('exit', (code, signal) => res({ code, signal })))
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  output(): string {
    return this.#out
  }

  /** Sends `signal` to this process (by pid) and waits for it to exit; SIGKILL after `timeoutMs`. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.child.kill(signal)
    const t = setTimeout(() => {
      if (this.running) this.child.kill('SIGKILL')
    }, timeoutMs)
    try {
      return await this.exited
    } finally {
      clearTimeout(t)
    }
  }
}

export type BundleEndpointConfig =
  { profile: 'https_spiffe'; refreshHint?: string } | { profile: 'https_web'; certFile: string; keyFile: string; refreshHint?: string }

export interface E2eServerOptions {
  /** Directory the test owns (config, data dir and admin socket go under it; keep it short). */
  dir: string
  trustDomain: string
  /** Lines added to [server] (e.g. `ca_ttl = "1m"`). */
  serverExtra?: string[]
  bundleEndpoint?: BundleEndpointConfig
  /** Raw sub-tables of [server] written after the bundle endpoint (e.g. `[server.federation.federates_with."b.example"]`). */
  serverTables?: string
  /** Plugin tables; default disk key manager + join_token attestor. */
  plugins?: string
  /** Extra environment of the server process (e.g. SOFTHSM2_CONF). */
  env?: NodeJS.ProcessEnv
  startTimeoutMs?: number
}

const DEFAULT_PLUGINS = '[plugins.key_manager.disk]\nkeys_path = "keys"\n[plugins.node_attestor.join_token]\n'

/** Writes the server.toml for `o` (ports pinned when given). */
export function e2eServerToml(o: E2eServerOptions, ports: { bind?: string; bundleEndpoint?: string } = {}): string {
  const dataDir = join(o.dir, 'data')
  const lines = [
    '[server]',
    `trust_domain = "${o.trustDomain}"`,
    `bind_address = "${ports.bind ?? '127.0.0.1:0'}"`,
    `data_dir = "${dataDir}"`,
    `socket_path = "${join(o.dir, 'admin', 'api.sock')}"`,
    'log_level = "debug"',
    ...(o.serverExtra ?? []),
  ]
  const be = o.bundleEndpoint
  if (be) {
    lines.push('', '[server.federation.bundle_endpoint]', `address = "${ports.bundleEndpoint ?? '127.0.0.1:0'}"`, `profile = "${be.profile}"`)
    if (be.refreshHint) lines.push(`refresh_hint = "${be.refreshHint}"`)
    if (be.profile === 'https_web') lines.push(`cert_file = "${be.certFile}"`, `key_file = "${be.keyFile}"`)
  }
  if (o.serverTables) lines.push('', o.serverTables)
  lines.push('', o.plugins ?? DEFAULT_PLUGINS, '')
  return lines.join('\n')
}

/** A `warrant server run` process on its own directory. */
export class E2eServer {
  readonly o: E2eServerOptions
  readonly dataDir: string
  readonly socketPath: string
  readonly configPath: string
  proc: WarrantProcess | undefined
  /** `host:port` of the agent API. */
  address = ''
  /** `host:port` of the bundle endpoint, when configured. */
  bundleEndpointAddress = ''

  private constructor(o: E2eServerOptions) {
    this.o = o
    this.dataDir = join(o.dir, 'data')
    this.socketPath = join(o.dir, 'admin', 'api.sock')
    this.configPath = join(o.dir, 'server.toml')
    if (Buffer.byteLength(this.socketPath) > 100) throw new RangeError(`socket path too long: ${this.socketPath}`)
  }

  static async start(o: E2eServerOptions): Promise<E2eServer> {
    mkdirSync(o.dir, { recursive: true })
    const s = new E2eServer(o)
    writeFileSync(s.configPath, e2eServerToml(o))
    await s.spawn()
    return s
  }

  get trustDomain(): string {
    return this.o.trustDomain
  }

  get bundlePemPath(): string {
    return join(this.dataDir, 'bundle.pem')
  }

  get bundleSpiffePath(): string {
    return join(this.dataDir, 'bundle.spiffe')
  }

  output(): string {
    return this.proc?.output() ?? ''
  }

  /** Starts the process on the current config and waits for server.addr (and bundle-endpoint.addr). */
  async spawn(): Promise<void> {
    if (this.proc?.running) throw new Error('server already running')
    const addrFile = join(this.dataDir, 'server.addr')
    const beFile = join(this.dataDir, 'bundle-endpoint.addr')
    rmSync(addrFile, { force: true })
    rmSync(beFile, { force: true })
    const proc = new WarrantProcess(['server', 'run', '--config', this.configPath], this.o.env)
    this.proc = proc
    const end = Date.now() + (this.o.startTimeoutMs ?? 30_000)
    while (!existsSync(addrFile)) {
      if (!proc.running) throw new Error(`server (${this.o.trustDomain}) exited before serving:\n${proc.output().slice(-4000)}`)
      if (Date.now() > end) {
        await proc.stop('SIGKILL')
        throw new Error(`server (${this.o.trustDomain}) did not write server.addr in time:\n${proc.output().slice(-4000)}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    this.address = readFileSync(addrFile, 'utf8').trim()
    this.bundleEndpointAddress = this.o.bundleEndpoint && existsSync(beFile) ? readFileSync(beFile, 'utf8').trim() : ''
  }

  /** SIGTERM, then starts again on the same data dir and the same ports (rewrites server.toml with them and `over`). */
  async restart(over: Partial<Omit<E2eServerOptions, 'dir' | 'trustDomain'>> = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const st = await this.stop()
    Object.assign(this.o, over)
    writeFileSync(
      this.configPath,
      e2eServerToml(this.o, { bind: this.address, ...(this.bundleEndpointAddress ? { bundleEndpoint: this.bundleEndpointAddress } : {}) }),
    )
    await this.spawn()
    return st
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    return this.proc ? this.proc.stop(signal) : { code: null, signal: null }
  }

  /** An admin CLI command with `--socket`. */
  cli(args: string[]): Promise<RunResult> {
    return warrant([...args, '--socket', this.socketPath])
  }

  cliJson<T = Record<string, unknown>>(args: string[]): Promise<T> {
    return warrantJson<T>([...args, '--socket', this.socketPath])
  }

  /** A join token from `warrant token generate`. */
  async joinToken(): Promise<string> {
    return (await this.cliJson<{ token: string }>(['token', 'generate'])).token
  }
}

export interface E2eAgentOptions {
  dir: string
  server: E2eServer
  /** The `[plugins.node_attestor.<name>]` table(s). */
  nodeAttestor: string
  env?: NodeJS.ProcessEnv
}

/** A `warrant agent run` process; `socketPath` serves the Workload API. */
export class E2eAgent {
  readonly proc: WarrantProcess
  readonly socketPath: string
  readonly configPath: string

  private constructor(o: E2eAgentOptions) {
    mkdirSync(o.dir, { recursive: true })
    this.socketPath = join(o.dir, 'api.sock')
    this.configPath = join(o.dir, 'agent.toml')
    if (Buffer.byteLength(this.socketPath) > 100) throw new RangeError(`socket path too long: ${this.socketPath}`)
    writeFileSync(
      this.configPath,
      [
        '[agent]',
        `trust_domain = "${o.server.trustDomain}"`,
        `server_address = "${o.server.address}"`,
        `socket_path = "${this.socketPath}"`,
        `data_dir = "${join(o.dir, 'data')}"`,
        'log_level = "debug"',
        `trust_bundle_path = "${o.server.bundlePemPath}"`,
        '',
        o.nodeAttestor,
        '[plugins.workload_attestor.unix]',
        '',
      ].join('\n'),
      { mode: 0o600 },
    )
    this.proc = new WarrantProcess(['agent', 'run', '--config', this.configPath], o.env)
  }

  /** Starts the agent process (does not wait: see `attested()`). */
  static start(o: E2eAgentOptions): E2eAgent {
    return new E2eAgent(o)
  }

  output(): string {
    return this.proc.output()
  }

  /** Waits for the agent to log "Agent started" and returns its SPIFFE ID; fails fast if the process exits. */
  async attested(timeoutMs = 45_000): Promise<string> {
    return waitFor(
      'the agent to attest and start',
      () => {
        if (!this.proc.running) throw new Error(`agent exited:\n${this.output().slice(-4000)}`)
        return /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*Agent started/.exec(this.output())?.[1]
      },
      { timeoutMs, hint: () => this.output() },
    ).then(async (id) => {
      await waitFor('the Workload API socket', async () => (await warrant(['agent', 'healthcheck', '--socket', this.socketPath])).code === 0, {
        timeoutMs: 15_000,
        hint: () => this.output(),
      })
      return id
    })
  }

  /** A Workload API CLI command (`api ...`) with `--socket`. */
  api(args: string[]): Promise<RunResult> {
    return warrant(['api', ...args, '--socket', this.socketPath])
  }

  stop(signal: NodeJS.Signals = 'SIGTERM') {
    return this.proc.stop(signal)
  }
}

/** Polls `api fetch x509 --output json` until an SVID with `spiffeId` is served; returns the parsed response. */
export async function fetchX509Until(
  agent: E2eAgent,
  spiffeId: string,
  o: { timeoutMs?: number; extraArgs?: string[]; accept?: (r: X509Json) => boolean } = {},
): Promise<X509Json> {
  return waitFor(
    `an X.509-SVID for ${spiffeId}`,
    async () => {
      const r = await agent.api(['fetch', 'x509', '--output', 'json', ...(o.extraArgs ?? [])])
      if (r.code !== 0) return undefined
      const j = JSON.parse(r.stdout) as X509Json
      return j.svids.some((s) => s.spiffe_id === spiffeId) && (o.accept?.(j) ?? true) ? j : undefined
    },
    { timeoutMs: o.timeoutMs ?? 30_000, hint: () => agent.output() },
  )
}

export interface X509Json {
  svids: { spiffe_id: string; not_before: string; not_after: string }[]
  federated_bundles: { trust_domain: string; authorities: unknown[] }[]
}
