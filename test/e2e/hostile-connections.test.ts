/**
 * Hostile HTTP/2 connections against a real `warrant agent run` process (its
 * server a real `warrant server run`), in numbered steps: every hostile
 * sequence on the Workload API socket (oversized frame header, garbage HPACK,
 * bad preface, half-open, slow preface) and a flood from uid 65534 leave the
 * agent's descriptors and memory at their baseline, and a workload process
 * gets its X.509-SVID during and after each.
 */
import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eServer, joinTokenAgentToml, waitFor, warrant, WarrantProcess } from '../helpers/e2e-cluster.js'
import { runHostile, startFlood, writeHostileClient, type HostileKind } from '../helpers/hostile-h2.js'
import { tempDir } from '../helpers/temp.js'
import { writeWorkloadProbe } from '../helpers/workload-probe.js'

const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the e2e tests as root (the flood runs as uid 65534)')

const MAX_PER_UID = 40
const FD_TOLERANCE = 2

function usage(pid: number): { rssKb: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return { rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)![1]), fds: readdirSync(`/proc/${pid}/fd`).length }
}

describe.runIf(isRoot || process.env.CI === 'true')('hostile connections e2e: server and agent processes', () => {
  const tmp = tempDir('wh-')
  let server: E2eServer
  let agent: WarrantProcess
  let socketPath: string
  let probe: string
  let script: string
  let spiffeId: string

  /** A workload process: the SPIFFE ID of its first FetchX509SVID message. */
  const workload = () =>
    new Promise<string>((resolve, reject) => {
      const child = spawn(process.execPath, [probe, socketPath, 'once'], { stdio: ['ignore', 'pipe', 'pipe'] })
      let out = ''
      child.stdout.on('data', (d: Buffer) => (out += d.toString()))
      child.once('close', () => {
        try {
          const r = JSON.parse(out.trim().split('\n')[0]!) as { svids?: { spiffe_id: string }[]; error?: string }
          if (r.svids?.[0]) resolve(r.svids[0].spiffe_id)
          else reject(new Error(`workload: ${r.error ?? out}`))
        } catch (err) {
          reject(new Error(`workload output: ${out}`, { cause: err }))
        }
      })
    })

  beforeAll(async () => {
    chmodSync(tmp.dir, 0o755)
    server = await E2eServer.start({ dir: join(tmp.dir, 's'), trustDomain: 'example.org' })
    const agentDir = join(tmp.dir, 'a')
    mkdirSync(agentDir, { recursive: true, mode: 0o755 })
    chmodSync(agentDir, 0o755)
    socketPath = join(agentDir, 'api.sock')
    const toml = joinTokenAgentToml({
      trustDomain: 'example.org',
      serverAddress: server.address,
      socketPath,
      dataDir: join(agentDir, 'data'),
      bundlePemPath: server.bundlePemPath,
      token: await server.joinToken(),
      logLevel: 'info',
    }).replace(
      '[plugins.node_attestor.join_token]',
      `[agent.connection_limits]\nmax_per_peer = ${MAX_PER_UID}\nhandshake_timeout = "2s"\ngrace = "500ms"\n[plugins.node_attestor.join_token]`,
    )
    writeFileSync(join(agentDir, 'agent.toml'), toml, { mode: 0o600 })
    agent = new WarrantProcess(['agent', 'run', '--config', join(agentDir, 'agent.toml')])
    const agentId = await waitFor(
      'the agent to start',
      () => {
        if (!agent.running) throw new Error(`agent exited:\n${agent.output().slice(-4000)}`)
        return /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*Agent started/.exec(agent.output())?.[1]
      },
      { timeoutMs: 45_000, hint: () => agent.output() },
    )
    await waitFor('the Workload API socket', async () => (await warrant(['agent', 'healthcheck', '--socket', socketPath])).code === 0, {
      hint: () => agent.output(),
    })
    spiffeId = 'spiffe://example.org/hostile/root'
    const r = await server.cli(['entry', 'create', '--spiffe-id', spiffeId, '--parent-id', agentId, '--selector', 'unix:uid:0', '--output', 'json'])
    expect(r.code, r.stderr).toBe(0)
    probe = writeWorkloadProbe(tmp.dir)
    script = writeHostileClient(tmp.dir)
    expect(await waitFor('the first SVID', () => workload().catch(() => undefined), { timeoutMs: 30_000, hint: () => agent.output() })).toBe(spiffeId)
  }, 120_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  const cases: [string, HostileKind, number, { interval?: number; waitMs?: number }][] = [
    ['1. oversized frame header', 'oversized', 300, {}],
    ['2. garbage HPACK', 'hpack', 300, {}],
    ['3. bad preface', 'badpreface', 200, {}],
    ['4. half-open (connects, sends nothing)', 'halfopen', 30, { waitMs: 20_000 }],
    ['5. slow preface (a byte a second)', 'slowpreface', 30, { interval: 1000, waitMs: 20_000 }],
  ]
  for (const [title, kind, count, extra] of cases) {
    it(`${title}: the agent's descriptors and memory return to baseline; a workload gets its SVID during and after`, async () => {
      const before = usage(agent.child.pid!)
      const hostile = runHostile(script, { kind, count, path: socketPath, concurrency: 30, ...extra })
      expect(await workload()).toBe(spiffeId)
      const stats = await hostile
      expect(stats.opened).toBe(count)
      if (extra.waitMs) expect(stats.serverClosed).toBe(count) // the agent, not the client's give-up, ended them
      await waitFor('descriptors back to baseline', () => usage(agent.child.pid!).fds <= before.fds + FD_TOLERANCE, {
        timeoutMs: 15_000,
        hint: () => `fds ${usage(agent.child.pid!).fds}, before ${before.fds}`,
      })
      expect(await workload()).toBe(spiffeId)
      expect(usage(agent.child.pid!).rssKb - before.rssKb).toBeLessThan(64 * 1024)
    }, 90_000)
  }

  it('6. a flood from uid 65534 is capped per uid (logged); root workloads keep getting their SVID; all released after', async () => {
    const before = usage(agent.child.pid!)
    const flood = await startFlood(script, { count: MAX_PER_UID + 30, path: socketPath, waitMs: 60_000 }, { uid: 65534, gid: 65534 })
    await waitFor('the per-uid limit to be logged', () => /"uid":65534[^\n]*Connection limit per peer reached/.test(agent.output()), { timeoutMs: 15_000 })
    expect(await workload()).toBe(spiffeId)
    const stats = await flood.stop()
    expect(stats.serverClosed).toBeGreaterThanOrEqual(30)
    await waitFor('descriptors back to baseline', () => usage(agent.child.pid!).fds <= before.fds + FD_TOLERANCE, { timeoutMs: 15_000 })
    expect(await workload()).toBe(spiffeId)
  }, 90_000)
})
