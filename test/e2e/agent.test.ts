/**
 * The server and the agent as separate processes (`node bin/warrant.js ...`),
 * in numbered steps: join-token attestation, an SVID only for the entry that
 * selects `unix:uid:65534` (client spawned as uid 65534), PermissionDenied
 * where nothing matches, rotation seen on an open FetchX509SVID stream, the
 * server killed (cached SVIDs still served) and restarted (rotation resumes),
 * and an agent restart that needs no new join token.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { X509Certificate } from 'node:crypto'
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type * as grpc from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { securityHeader, splitDer, workloadClient, type X509SvidResponseMsg } from '../../src/cli/commands/api.js'
import { tempDir } from '../helpers/temp.js'
import { foreignUserKit } from '../helpers/foreign-user.js'

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const BIN = join(REPO, 'bin', 'warrant.js')
const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the agent e2e tests as root (workloads are spawned as uid 65534)')

interface Proc {
  child: ChildProcess
  output: () => string
}

function start(args: string[]): Proc {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr.on('data', (d: Buffer) => (out += d.toString()))
  return { child, output: () => out }
}

async function stop(p: Proc | undefined, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (!p || p.child.exitCode !== null || p.child.signalCode !== null) return
  const exited = new Promise((r) => p.child.once('exit', r))
  p.child.kill(signal)
  await exited
}

async function cli(args: string[], opts: { uid?: number; env?: NodeJS.ProcessEnv } = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  // Another user may not be able to read the repository (CI clones into a 0700 dir): run the bundled CLI then.
  const kit = opts.uid !== undefined ? await foreignUserKit() : undefined
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [kit ? kit.cli : BIN, ...args], {
      cwd: kit ? kit.dir : REPO,
      env: { ...process.env, ...opts.env, ...(kit ? { HOME: '/tmp', ...kit.env } : {}) },
      ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.uid } : {}),
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }))
  })
}

async function waitFor<T>(what: string, fn: () => T | undefined | Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const end = Date.now() + timeoutMs
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch {
      // not yet
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Follows one FetchX509SVID stream in this process (uid 0), recording every message. */
function follow(socket: string) {
  const client = workloadClient(`unix:${socket}`)
  const messages: { at: number; serial: string; notAfter: number }[] = []
  const call = client.FetchX509SVID!({}, securityHeader()) as grpc.ClientReadableStream<X509SvidResponseMsg>
  call.on('data', (m: X509SvidResponseMsg) => {
    const leaf = new X509Certificate(splitDer(m.svids[0]!.x509_svid)[0]!)
    messages.push({ at: Date.now(), serial: leaf.serialNumber, notAfter: Date.parse(leaf.validTo) })
  })
  call.on('error', () => {})
  return {
    messages,
    close: () => {
      call.cancel()
      client.close()
    },
  }
}

describe('agent e2e: server and agent processes', () => {
  const tmp = tempDir('wa-')
  const dir = tmp.dir
  const adminSock = join(dir, 'admin', 'admin.sock') // the server makes its socket directory 0700
  const apiSock = join(dir, 'api.sock')
  let server: Proc | undefined
  let agent: Proc | undefined
  let serverToml = ''
  let agentId = ''

  const serverConfig = (bind: string) => `
[server]
trust_domain = "example.org"
bind_address = "${bind}"
socket_path = "${adminSock}"
data_dir = "${join(dir, 'server')}"
log_level = "debug"
agent_ttl = "1h"
default_x509_svid_ttl = "1h"
default_jwt_svid_ttl = "5m"
[plugins.key_manager.disk]
keys_path = "keys"
[plugins.datastore.sqlite]
path = "${join(dir, 'server', 'datastore.sqlite')}"
[plugins.node_attestor.join_token]
`

  beforeAll(() => {
    chmodSync(dir, 0o755) // uid 65534 must traverse to the socket
  })

  afterAll(async () => {
    await stop(agent, 'SIGKILL')
    await stop(server, 'SIGKILL')
    tmp.cleanup()
  })

  it('1. the server starts and publishes its address and bundle', async () => {
    serverToml = join(dir, 'server.toml')
    writeFileSync(serverToml, serverConfig('127.0.0.1:0'))
    server = start(['server', 'run', '--config', serverToml])
    await waitFor('server.addr', () => existsSync(join(dir, 'server', 'server.addr')) && existsSync(join(dir, 'server', 'bundle.pem')))
    // restarts reuse the same port, so the agent can come back to it
    writeFileSync(serverToml, serverConfig(readFileSync(join(dir, 'server', 'server.addr'), 'utf8').trim()))
  })

  it('2. the agent attests with a join token and serves the Workload API', async () => {
    const tok = await cli(['token', 'generate', '--socket', adminSock, '--output', 'json'])
    expect(tok.code).toBe(0)
    const token = (JSON.parse(tok.stdout) as { token: string }).token
    writeFileSync(
      join(dir, 'agent.toml'),
      `
[agent]
trust_domain = "example.org"
server_address = "${readFileSync(join(dir, 'server', 'server.addr'), 'utf8').trim()}"
socket_path = "${apiSock}"
data_dir = "${join(dir, 'agent')}"
log_level = "debug"
trust_bundle_path = "${join(dir, 'server', 'bundle.pem')}"
[plugins.node_attestor.join_token]
token = "${token}"
[plugins.workload_attestor.unix]
[plugins.key_manager.disk]
keys_path = "keys"
`,
    )
    agent = start(['agent', 'run', '--config', join(dir, 'agent.toml')])
    agentId = await waitFor('agent ID in the log', () => /"agent_id":"(spiffe:\/\/example\.org\/[^"]+)".*Agent started/.exec(agent!.output())?.[1])
    const health = await waitFor('healthcheck', async () => {
      const r = await cli(['agent', 'healthcheck', '--socket', apiSock])
      return r.code === 0 ? r : undefined
    })
    expect(health.stdout).toContain('healthy')
  })

  it('3. entries are created for uid 65534 and uid 0 (short X.509 TTL)', async () => {
    const mk = async (id: string, uid: number, ttl: number) => {
      const r = await cli([
        'entry',
        'create',
        '--socket',
        adminSock,
        '--spiffe-id',
        `spiffe://example.org/${id}`,
        '--parent-id',
        agentId,
        '--selector',
        `unix:uid:${uid}`,
        '--x509-svid-ttl',
        String(ttl),
      ])
      expect(r.code, r.stderr).toBe(0)
    }
    await mk('nobody', 65534, 3600)
    await mk('root', 0, 6)
  })

  it.runIf(isRoot)('4. a workload running as uid 65534 gets only its SVID; another uid gets PermissionDenied', async () => {
    let last = ''
    const r = await waitFor('SVID for uid 65534', async () => {
      const x = await cli(['api', 'fetch', 'x509', '--socket', apiSock, '--output', 'json'], { uid: 65534 })
      last = x.stderr
      return x.code === 0 ? x : undefined
    }).catch((err: Error) => {
      const st = (p: string) => (statSync(p).mode & 0o7777).toString(8)
      throw new Error(`${err.message}: ${last} (dir ${st(dir)}, socket ${st(apiSock)})`)
    })
    const got = JSON.parse(r.stdout) as { svids: { spiffe_id: string }[] }
    expect(got.svids.map((s) => s.spiffe_id)).toEqual(['spiffe://example.org/nobody'])

    const denied = await cli(['api', 'fetch', 'x509', '--socket', apiSock], { uid: 65533 })
    expect(denied.code).toBe(1)
    expect(denied.stderr).toContain('no identity issued')
  })

  it('5. JWT-SVIDs are fetched and validated through the CLI; SPIFFE_ENDPOINT_SOCKET is honored', async () => {
    const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${apiSock}` }
    const f = await waitFor('JWT-SVID', async () => {
      const x = await cli(['api', 'fetch', 'jwt', '--audience', 'svc,other', '--output', 'json'], { env })
      return x.code === 0 ? x : undefined
    })
    const token = (JSON.parse(f.stdout) as { svids: { spiffe_id: string; token: string }[] }).svids[0]!
    expect(token.spiffe_id).toBe('spiffe://example.org/root')
    const v = await cli(['api', 'validate', 'jwt', '--audience', 'svc', '--svid', token.token, '--output', 'json'], { env })
    expect(v.code, v.stderr).toBe(0)
    expect(JSON.parse(v.stdout)).toMatchObject({ valid: true, spiffe_id: 'spiffe://example.org/root' })
    const bad = await cli(['api', 'validate', 'jwt', '--audience', 'nope', '--svid', token.token], { env })
    expect(bad.code).toBe(1)
  })

  it('6. rotation is seen on an open stream; with the server killed the cached SVID is still served; after restart rotation resumes', async () => {
    const s = follow(apiSock)
    try {
      await waitFor('a rotated SVID on the open stream', () => s.messages.length >= 2 && new Set(s.messages.map((m) => m.serial)).size >= 2)
      const [a, b] = s.messages.slice(-2)
      expect(b!.notAfter).toBeGreaterThan(a!.notAfter)

      await stop(server, 'SIGKILL')
      const killedAt = Date.now()
      const cached = await cli(['api', 'fetch', 'x509', '--socket', apiSock, '--output', 'json'])
      expect(cached.code, cached.stderr).toBe(0)
      const svid = (JSON.parse(cached.stdout) as { svids: { spiffe_id: string; not_after: string }[] }).svids[0]!
      expect(svid.spiffe_id).toBe('spiffe://example.org/root')
      expect(Date.parse(svid.not_after)).toBeGreaterThan(killedAt)

      server = start(['server', 'run', '--config', serverToml])
      const before = s.messages.length
      const lastSerial = s.messages.at(-1)!.serial
      // The agent retries with capped exponential backoff (up to 30 s between
      // attempts), and the server's own start takes seconds on a loaded machine.
      await waitFor('rotation after the server returned', () => s.messages.length > before && s.messages.at(-1)!.serial !== lastSerial, 75_000)
    } finally {
      s.close()
    }
  }, 120_000)

  it('7. a restarted agent reuses its persisted SVID (no new join token) and serves again', async () => {
    await stop(agent)
    const firstLog = agent!.output()
    agent = start(['agent', 'run', '--config', join(dir, 'agent.toml')])
    await waitFor('agent restarted', () => agent!.output().includes('Agent started'))
    expect(agent.output()).toContain('Reusing persisted agent SVID')
    expect(agent.output()).not.toContain('Attesting node')
    expect(firstLog).toContain('Attesting node')
    const r = await waitFor('SVID after the agent restart', async () => {
      const x = await cli(['api', 'fetch', 'x509', '--socket', apiSock, '--output', 'json'])
      return x.code === 0 ? x : undefined
    })
    expect((JSON.parse(r.stdout) as { svids: { spiffe_id: string }[] }).svids[0]!.spiffe_id).toBe('spiffe://example.org/root')
  })
})
