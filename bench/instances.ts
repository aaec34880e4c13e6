/**
 * Per-instance identities, server and agent as processes:
 *
 *  - `new_instance_first_svid_p50_vs_cached`: a brand-new workload process's
 *    first FetchX509SVID message (instance registration, key generation and
 *    the server's signature included) vs the first message of a process whose
 *    (non-template) entry's SVID the agent has cached; both measured inside a
 *    fresh client process from request to first message, p50, same run,
 *    alternating. Target: ratio <= 5.
 *  - `instances_started_per_s`: workload processes served their own instance
 *    per second, 20 started at a time (process start-up included).
 *
 * The client is test/helpers/workload-probe.ts (node builtins only). The unix
 * attestor's binary hashing is off (`workload_size_limit = -1`) so that both
 * figures measure the identities, not the hashing of the node binary.
 */
import { spawn } from 'node:child_process'
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { E2eServer, joinTokenAgentToml, waitFor, warrant, WarrantProcess } from '../test/helpers/e2e-cluster.js'
import { writeWorkloadProbe } from '../test/helpers/workload-probe.js'
import { percentile, report } from './lib.js'

const TD = 'example.org'
const NOBODY = 65534

interface ProbeOut {
  ms?: number
  svids?: { spiffe_id: string }[]
  error?: string
}

function probeOnce(probe: string, socket: string, uid?: number): Promise<ProbeOut> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [probe, socket, 'once'], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(uid !== undefined ? { uid, gid: uid, cwd: '/' } : {}),
    })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.on('error', reject)
    child.on('exit', () => {
      try {
        resolve(JSON.parse(out.split('\n')[0]!) as ProbeOut)
      } catch {
        reject(new Error(`probe printed nothing (${out})`))
      }
    })
  })
}

export async function run(args: string[]): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench instances must run as root (the cached-entry client runs as uid 65534)')
  const samples = Number(args.find((a) => /^\d+$/.test(a)) ?? 40)
  const dir = mkdtempSync(join(tmpdir(), 'wbi-'))
  chmodSync(dir, 0o755)
  let server: E2eServer | undefined
  let agent: WarrantProcess | undefined
  try {
    const probe = writeWorkloadProbe(dir)
    server = await E2eServer.start({ dir: join(dir, 'srv'), trustDomain: TD })
    const token = await server.joinToken()
    const adir = join(dir, 'agent')
    mkdirSync(adir, { mode: 0o755 })
    chmodSync(adir, 0o755)
    const socket = join(adir, 'api.sock')
    const config = join(adir, 'agent.toml')
    writeFileSync(
      config,
      joinTokenAgentToml({
        trustDomain: TD,
        serverAddress: server.address,
        socketPath: socket,
        dataDir: join(adir, 'data'),
        bundlePemPath: server.bundlePemPath,
        token,
        logLevel: 'warn',
      }),
    )
    const a = new WarrantProcess(['agent', 'run', '--config', config])
    agent = a
    await waitFor('the agent socket', async () => (await warrant(['agent', 'healthcheck', '--socket', socket])).code === 0, {
      timeoutMs: 45_000,
      hint: () => a.output(),
    })
    const agentId = (await server.cliJson<{ agents: { agent_id: string }[] }>(['agent', 'list'])).agents[0]!.agent_id
    for (const [id, uid] of [
      [`spiffe://${TD}/bench/tpl/{instance}`, 0],
      [`spiffe://${TD}/bench/cached`, NOBODY],
    ] as const) {
      const r = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', agentId, '--selector', `unix:uid:${uid}`])
      if (r.code !== 0) throw new Error(`entry create: ${r.stderr}`)
    }
    const served = async (uid?: number) => {
      const o = await probeOnce(probe, socket, uid)
      if (!o.svids?.length || o.ms === undefined) throw new Error(`not served: ${o.error ?? 'no SVID'}`)
      return o.ms
    }
    await waitFor('both entries to be served', async () => (await served(0)) >= 0 && (await served(NOBODY)) >= 0, { timeoutMs: 30_000, hint: () => a.output() })
    for (let i = 0; i < 5; i++) {
      await served(0)
      await served(NOBODY)
    }
    const fresh: number[] = []
    const cached: number[] = []
    for (let i = 0; i < samples; i++) {
      fresh.push(await served(0))
      cached.push(await served(NOBODY))
    }
    const pNew = percentile(fresh, 50)
    const pCached = percentile(cached, 50)
    report('new_instance_first_svid_p50_vs_cached', pNew, pCached, 'ms', { samples, target_ratio_max: 5 })

    const total = 200
    const t0 = performance.now()
    for (let k = 0; k < total; k += 20) await Promise.all(Array.from({ length: 20 }, () => served(0)))
    report('instances_started_per_s', (total * 1000) / (performance.now() - t0), null, 'instances/s', { processes: total, concurrency: 20 })
  } finally {
    await agent?.stop()
    await server?.stop()
    rmSync(dir, { recursive: true, force: true })
  }
}
