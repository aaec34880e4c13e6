/**
 * Runs `warrant server run` as a real child process in a temporary directory
 * (bind port 0; the bound address is read from `<data_dir>/server.addr`), and
 * runs admin CLI commands against its Unix socket.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { tempDir } from './temp.js'

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const WARRANT_BIN = join(REPO_ROOT, 'bin', 'warrant.js')

export interface CliResult {
  code: number
  stdout: string
  stderr: string
}

/** Runs `node bin/warrant.js ...args` and collects its output (never throws on a non-zero exit). */
export function runCli(args: string[], opts: { timeoutMs?: number; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolvePromise) => {
    execFile(
      process.execPath,
      [WARRANT_BIN, ...args],
      { cwd: opts.cwd ?? REPO_ROOT, timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0
        resolvePromise({ code, stdout: String(stdout), stderr: String(stderr) })
      },
    )
  })
}

/** The server.toml the helper writes: `extra` is appended verbatim (more plugin blocks, settings under [server] are not possible there). */
export function serverToml(o: { dataDir: string; socketPath: string; trustDomain?: string; logLevel?: string; serverExtra?: string; extra?: string }): string {
  return [
    '[server]',
    `trust_domain = "${o.trustDomain ?? 'example.org'}"`,
    'bind_address = "127.0.0.1:0"',
    `data_dir = "${o.dataDir}"`,
    `socket_path = "${o.socketPath}"`,
    `log_level = "${o.logLevel ?? 'debug'}"`,
    ...(o.serverExtra ? [o.serverExtra] : []),
    '[plugins.key_manager.disk]',
    'keys_path = "keys"',
    '[plugins.node_attestor.join_token]',
    ...(o.extra ? [o.extra] : []),
    '',
  ].join('\n')
}

export interface ServerProcessOptions {
  /** Reuse this directory (restart on the same data dir); default a fresh temp dir. */
  dir?: string
  trustDomain?: string
  /** Default "debug". */
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
  /** Lines added to [server]. */
  serverExtra?: string
  /** TOML appended after the plugin blocks (e.g. `[plugins.node_attestor.x509pop]`). */
  extra?: string
  startTimeoutMs?: number
  /** Extra node flags for the server process (e.g. `--cpu-prof`). */
  nodeArgs?: string[]
}

export class ServerProcess {
  readonly dir: string
  readonly dataDir: string
  readonly socketPath: string
  readonly configPath: string
  readonly trustDomain: string
  #child: ChildProcess | undefined
  #exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | undefined
  #output: string[] = []
  #ownsDir: boolean
  #cleanup: (() => void) | undefined
  readonly #nodeArgs: string[]
  address = ''

  private constructor(dir: string, ownsDir: boolean, cleanup: (() => void) | undefined, o: ServerProcessOptions) {
    this.dir = dir
    this.#ownsDir = ownsDir
    this.#cleanup = cleanup
    this.dataDir = join(dir, 'data')
    this.socketPath = join(this.dataDir, 'private', 'admin.sock')
    this.configPath = join(dir, 'server.toml')
    this.trustDomain = o.trustDomain ?? 'example.org'
    this.#nodeArgs = o.nodeArgs ?? []
    const cfg = serverToml({
      dataDir: this.dataDir,
      socketPath: this.socketPath,
      trustDomain: this.trustDomain,
      ...(o.logLevel ? { logLevel: o.logLevel } : {}),
      ...(o.serverExtra ? { serverExtra: o.serverExtra } : {}),
      ...(o.extra ? { extra: o.extra } : {}),
    })
    if (!existsSync(this.configPath) || ownsDir) writeFileSync(this.configPath, cfg)
  }

  /** Writes the config (into a fresh temp dir unless `dir` is given), spawns the server and waits for `server.addr`. */
  static async start(o: ServerProcessOptions = {}): Promise<ServerProcess> {
    let dir = o.dir
    let cleanup: (() => void) | undefined
    if (!dir) {
      const t = tempDir('wsrv-')
      dir = t.dir
      cleanup = t.cleanup
    }
    mkdirSync(dir, { recursive: true })
    const sp = new ServerProcess(dir, !o.dir, cleanup, o)
    await sp.spawn(o.startTimeoutMs ?? 30_000)
    return sp
  }

  get pid(): number | undefined {
    return this.#child?.pid
  }

  get running(): boolean {
    return this.#child !== undefined && this.#child.exitCode === null && this.#child.signalCode === null
  }

  /** The server's stdout/stderr so far (for failure messages). */
  output(): string {
    return this.#output.join('')
  }

  /** (Re)starts the process on the same directory and waits until it serves. */
  async spawn(timeoutMs = 30_000): Promise<void> {
    if (this.running) throw new Error('server already running')
    const addrFile = join(this.dataDir, 'server.addr')
    rmSync(addrFile, { force: true })
    this.#output = []
    const child = spawn(process.execPath, [...this.#nodeArgs, WARRANT_BIN, 'server', 'run', '--config', this.configPath], {
      cwd: this.dir,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    this.#child = child
    const keep = (b: Buffer) => {
      this.#output.push(b.toString())
      if (this.#output.length > 2000) this.#output.splice(0, 1000)
    }
    child.stdout.on('data', keep)
    child.stderr.on('data', keep)
    this.#exit = new Promise((res) => child.once('exit', (code, signal) => res({ code, signal })))
    const deadline = Date.now() + timeoutMs
    while (!existsSync(addrFile)) {
      if (!this.running) throw new Error(`server exited before serving:\n${this.output()}`)
      if (Date.now() > deadline) {
        void this.kill()
        throw new Error(`server did not write server.addr within ${timeoutMs} ms:\n${this.output()}`)
      }
      await new Promise((r) => setTimeout(r, 50))
    }
    this.address = readFileSync(addrFile, 'utf8').trim()
  }

  bundlePem(): string {
    return readFileSync(join(this.dataDir, 'bundle.pem'), 'utf8')
  }

  /** Runs an admin CLI command with `--socket` added. */
  cli(args: string[]): Promise<CliResult> {
    return runCli([...args, '--socket', this.socketPath])
  }

  /** Runs an admin CLI command with `--output json`; throws (with stderr) unless it exits 0. */
  async cliJson<T = Record<string, unknown>>(args: string[]): Promise<T> {
    const r = await this.cli([...args, '--output', 'json'])
    if (r.code !== 0) throw new Error(`warrant ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`)
    return JSON.parse(r.stdout) as T
  }

  /** SIGTERM by pid; resolves with the exit status (SIGKILL after `timeoutMs`). */
  async stop(timeoutMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const child = this.#child
    if (!child || !this.#exit) return { code: null, signal: null }
    if (this.running) child.kill('SIGTERM')
    const t = setTimeout(() => void this.kill(), timeoutMs)
    try {
      return await this.#exit
    } finally {
      clearTimeout(t)
    }
  }

  /** SIGKILL by pid (no cleanup by the server). */
  kill(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.running) this.#child!.kill('SIGKILL')
    return this.#exit ?? Promise.resolve({ code: null, signal: null })
  }

  /** Stops the process (SIGKILL) and removes the temp dir it created. */
  async dispose(): Promise<void> {
    await this.kill()
    if (this.#ownsDir) this.#cleanup?.()
  }
}

/** Parses `host:port` from server.addr. */
export function parseAddr(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(':')
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) }
}
