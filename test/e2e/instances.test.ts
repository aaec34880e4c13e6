/**
 * Per-instance identities end to end: a server and an agent as processes
 * (`node bin/warrant.js`), workloads as real processes (a dependency-free
 * FetchX509SVID client, test/helpers/workload-probe.ts). Two processes of one
 * template get their own IDs and keys; an ended process's instance is ended
 * at the server and never served again, also after an agent restart;
 * `[server.bounds]` limits (max_instances, TTL narrowing) hold at issuance and
 * entry creation; 1,000 (WARRANT_E2E_CHURN) instances started and ended leave the agent's RSS and
 * open descriptors near where they were.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eServer, e2eServerToml, waitFor, warrant, WarrantProcess, joinTokenAgentToml } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { writeWorkloadProbe } from '../helpers/workload-probe.js'

const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the instance e2e tests as root (workloads are spawned as uid 65534)')

/**
 * Instances started and ended in step 6: 1,000 as the issue asks. Each is a
 * real node process (about 150 ms of CPU on a 2-core runner, 20 at a time),
 * so this step takes a few minutes; WARRANT_E2E_CHURN lowers it for local runs.
 */
const CHURN_COUNT = Number(process.env.WARRANT_E2E_CHURN ?? 1000)
const WARMUP_COUNT = CHURN_COUNT
const TD = 'example.org'
const PAY = `spiffe://${TD}/agents/payments/refund-bot/{instance}`
const CHURN = `spiffe://${TD}/agents/churn/{instance}`
const NOBODY = 65534
const BOUNDS = `[server.bounds."/agents"]
x509_svid_ttl = "2h"

[server.bounds."/agents/payments"]
x509_svid_ttl = "30m"
max_instances = 2
`

interface ProbeSvid {
  spiffe_id: string
  key_sha256: string
  not_before: string
  not_after: string
}
interface ProbeOut {
  pid: number
  ms?: number
  svids?: ProbeSvid[]
  error?: string
}
interface InstanceJson {
  instance_id: string
  spiffe_id: string
  entry_id: string
  agent_id: string
  pid: number
  start_time: string
  created_at: string
  ended_at: string
}

/** A workload process: its first FetchX509SVID message (or error) and, for `hold`, the open stream. */
class Workload {
  readonly child: ChildProcess
  readonly first: Promise<ProbeOut>
  readonly exited: Promise<void>
  constructor(probe: string, socket: string, mode: 'once' | 'hold', uid?: number) {
    this.child = spawn(process.execPath, [probe, socket, mode], {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(uid !== undefined ? { uid, gid: uid, cwd: '/' } : {}),
    })
    let out = ''
    let err = ''
    // 'close', not 'exit': a quick process can exit before its stdout has been read.
    this.exited = new Promise((r) => this.child.once('close', () => r()))
    this.first = new Promise((resolve, reject) => {
      this.child.stdout!.on('data', (d: Buffer) => {
        out += d.toString()
        const nl = out.indexOf('\n')
        if (nl >= 0) resolve(JSON.parse(out.slice(0, nl)) as ProbeOut)
      })
      this.child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
      void this.exited.then(() => reject(new Error(`workload exited without output: ${err.slice(-2000)}`)))
    })
  }
  get pid(): number {
    return this.child.pid!
  }
  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL')
    await this.exited
  }
}

/**
 * A `warrant agent run` process (as E2eAgent, with the unix attestor's binary
 * hashing off: hashing the 100 MB node binary for every one of hundreds of
 * concurrent workloads would measure the attestor, not the instances).
 */
class InstancesAgent {
  readonly proc: WarrantProcess
  readonly socketPath: string
  constructor(dir: string, server: E2eServer, token: string) {
    mkdirSync(dir, { recursive: true, mode: 0o755 })
    chmodSync(dir, 0o755)
    this.socketPath = join(dir, 'api.sock')
    const config = join(dir, 'agent.toml')
    writeFileSync(
      config,
      joinTokenAgentToml({
        trustDomain: server.trustDomain,
        serverAddress: server.address,
        socketPath: this.socketPath,
        dataDir: join(dir, 'data'),
        bundlePemPath: server.bundlePemPath,
        token,
        logLevel: 'debug',
      }),
      { mode: 0o600 },
    )
    this.proc = new WarrantProcess(['agent', 'run', '--config', config])
  }
  output(): string {
    return this.proc.output()
  }
  async attested(): Promise<string> {
    const id = await waitFor(
      'the agent to start',
      () => {
        if (!this.proc.running) throw new Error(`agent exited:\n${this.output().slice(-4000)}`)
        return /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*Agent started/.exec(this.output())?.[1]
      },
      { timeoutMs: 45_000, hint: () => this.output() },
    )
    await waitFor('the Workload API socket', async () => (await warrant(['agent', 'healthcheck', '--socket', this.socketPath])).code === 0, {
      hint: () => this.output(),
    })
    return id
  }
  stop() {
    return this.proc.stop()
  }
}

const instanceIdOf = (spiffeId: string) => spiffeId.split('/').at(-1)!

function agentUsage(pid: number): { rssKb: number; fds: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  return { rssKb: Number(/VmRSS:\s+(\d+)/.exec(status)![1]), fds: readdirSync(`/proc/${pid}/fd`).length }
}

describe.runIf(isRoot || process.env.CI === 'true')('per-instance identities e2e: server, agent and workload processes', () => {
  const tmp = tempDir('wi-')
  let server: E2eServer
  let agent: InstancesAgent
  let agentId = ''
  let probe = ''
  const payIds: Record<string, string> = {}
  const live: Workload[] = []

  const list = async (o: { entryId?: string; live?: boolean } = {}) => {
    const args = ['instance', 'list', ...(o.entryId ? ['--entry-id', o.entryId] : []), ...(o.live ? ['--live'] : [])]
    return (await server.cliJson<{ instances: InstanceJson[] }>(args)).instances
  }
  const show = (id: string) => server.cliJson<InstanceJson>(['instance', 'show', '--id', id])
  const createEntry = async (spiffeId: string, uid: number, extra: string[] = []) =>
    server.cli(['entry', 'create', '--spiffe-id', spiffeId, '--parent-id', agentId, '--selector', `unix:uid:${uid}`, ...extra, '--output', 'json'])
  const workload = (mode: 'once' | 'hold', uid?: number) => {
    const w = new Workload(probe, agent.socketPath, mode, uid)
    if (mode === 'hold') live.push(w)
    return w
  }
  const startAgent = async () => {
    agent = new InstancesAgent(join(tmp.dir, 'agent'), server, await server.joinToken())
    return agent.attested()
  }

  beforeAll(async () => {
    chmodSync(tmp.dir, 0o755) // uid 65534 must reach the probe and the socket
    probe = writeWorkloadProbe(tmp.dir)
    server = await E2eServer.start({ dir: join(tmp.dir, 'srv'), trustDomain: TD, serverExtra: ['default_x509_svid_ttl = "1h"'], serverTables: BOUNDS })
    agentId = await startAgent()
    for (const [name, id, uid] of [
      ['pay', PAY, process.getuid!()],
      ['churn', CHURN, NOBODY],
    ] as const) {
      const r = await createEntry(id, uid)
      expect(r.code, r.stderr).toBe(0)
      payIds[name] = (JSON.parse(r.stdout) as { results: { entry: { id: string } }[] }).results[0]!.entry.id
    }
  }, 120_000)

  afterAll(async () => {
    for (const w of live) await w.kill()
    await agent?.stop()
    await server?.stop()
    tmp.cleanup()
  })

  const svidOf = async (w: Workload, template = PAY): Promise<ProbeSvid> => {
    const out = await w.first
    const prefix = template.slice(0, -'{instance}'.length)
    const s = out.svids?.find((x) => x.spiffe_id.startsWith(prefix))
    if (!s) throw new Error(`no instance SVID for pid ${w.pid}: ${JSON.stringify(out)}\n${agent.output().slice(-3000)}`)
    return s
  }

  it('1. two processes matching one template get different instance IDs and keys, within the narrowed TTL', async () => {
    // The agent may still be syncing the new entries: retry with fresh processes until served.
    await waitFor('the template entry to reach the agent', async () => ((await workload('once').first).svids?.length ? true : undefined), {
      hint: () => agent.output(),
    })
    // That probe's instance counts under max_instances until the agent reports its end.
    await waitFor('the probe instance to end', async () => ((await list({ entryId: payIds.pay!, live: true })).length === 0 ? true : undefined))
    const [a, b] = [workload('hold'), workload('hold')]
    const [sa, sb] = await Promise.all([svidOf(a), svidOf(b)])
    expect(sa.spiffe_id).toMatch(/^spiffe:\/\/example\.org\/agents\/payments\/refund-bot\/i[0-9a-z]{25}$/)
    expect(sb.spiffe_id).not.toBe(sa.spiffe_id)
    expect(sb.key_sha256).not.toBe(sa.key_sha256)
    // [server.bounds."/agents/payments"] x509_svid_ttl = 30m narrows the 1h default.
    expect(Date.parse(sa.not_after) - Date.parse(sa.not_before)).toBeLessThanOrEqual(31 * 60_000)
    const shown = await show(instanceIdOf(sa.spiffe_id))
    expect(shown).toMatchObject({ pid: a.pid, agent_id: agentId, entry_id: payIds.pay, spiffe_id: sa.spiffe_id, ended_at: '0' })
    expect(shown.start_time).toBe(readFileSync(`/proc/${a.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19])
    expect((await show(instanceIdOf(sb.spiffe_id))).pid).toBe(b.pid)
  })

  it('2. a process that exits has its instance ended at the server', async () => {
    const [a] = live
    const id = instanceIdOf((await svidOf(a!)).spiffe_id)
    await a!.kill()
    const ended = await waitFor(
      'the instance to be ended',
      async () => {
        const r = await show(id)
        return Number(r.ended_at) > 0 ? r : undefined
      },
      { hint: () => agent.output() },
    )
    expect(Number(ended.ended_at)).toBeGreaterThanOrEqual(Number(ended.created_at))
    expect((await list({ entryId: payIds.pay!, live: true })).map((i) => i.instance_id)).not.toContain(id)
    live.shift()
  })

  it('3. max_instances = 2 under /agents/payments: the third live instance is refused until one ends', async () => {
    const c = workload('hold')
    await svidOf(c) // with the surviving process of step 1, two are live
    const third = await workload('once').first
    expect(third.error).toMatch(/^grpc-status 7: no identity issued/)
    expect(server.output()).toMatch(/max_instances/)
    await c.kill()
    live.pop()
    await waitFor('the ended instance to free its place', async () => ((await workload('once').first).svids?.length ? true : undefined), {
      hint: () => agent.output() + server.output(),
    })
  })

  it('4. an entry exceeding the bounds is refused at creation; a bound wider than its parent is refused at startup', async () => {
    const before = (await server.cliJson<{ count: string }>(['entry', 'count'])).count
    const r = await createEntry(`spiffe://${TD}/agents/payments/slow/{instance}`, 0, ['--x509-svid-ttl', '7200'])
    expect(r.code).not.toBe(0)
    expect(r.stdout + r.stderr).toMatch(/ERR_ENTRY_INVALID|x509_svid_ttl/)
    expect((await server.cliJson<{ count: string }>(['entry', 'count'])).count).toBe(before)
    const dir = join(tmp.dir, 'bad')
    const cfg = join(tmp.dir, 'bad.toml')
    writeFileSync(
      cfg,
      e2eServerToml({
        dir,
        trustDomain: TD,
        serverTables: `[server.bounds."/agents"]\nx509_svid_ttl = "1h"\n\n[server.bounds."/agents/payments"]\nx509_svid_ttl = "2h"\n`,
      }),
    )
    const bad = await warrant(['server', 'run', '--config', cfg], { timeoutMs: 30_000 })
    expect(bad.code).not.toBe(0)
    expect(bad.stdout + bad.stderr).toMatch(/x509_svid_ttl/)
  })

  it('5. after an agent restart the previous instances are ended and new processes get new IDs', async () => {
    const [b] = live
    const oldId = instanceIdOf((await svidOf(b!)).spiffe_id)
    await agent.stop()
    agent = new InstancesAgent(join(tmp.dir, 'agent'), server, 'used')
    await agent.attested()
    await waitFor('EndAllInstances of the restarted agent', async () => (Number((await show(oldId)).ended_at) > 0 ? true : undefined), {
      hint: () => agent.output(),
    })
    expect(agent.output()).toMatch(/Reusing persisted agent SVID/)
    // The same process, asking again, gets a new instance; the old ID is never served again.
    const again = workload('hold')
    const s = await svidOf(again)
    expect(instanceIdOf(s.spiffe_id)).not.toBe(oldId)
    const all = await list({ entryId: payIds.pay! })
    expect(new Set(all.map((i) => i.instance_id)).size).toBe(all.length)
    expect(all.filter((i) => i.ended_at === '0').map((i) => i.instance_id)).toEqual([instanceIdOf(s.spiffe_id)])
    await b!.kill()
    await again.kill()
    live.length = 0
  })

  it(`6. ${CHURN_COUNT} instances started and ended on one agent leave its RSS and descriptors near the start`, async () => {
    const pid = agent.proc.child.pid!
    const churn = async (n: number, batch = 20) => {
      const ids = new Set<string>()
      for (let k = 0; k < n; k += batch) {
        const outs = await Promise.all(Array.from({ length: Math.min(batch, n - k) }, () => workload('once', NOBODY).first))
        for (const o of outs) {
          const s = o.svids?.find((x) => x.spiffe_id.startsWith(CHURN.slice(0, -'{instance}'.length)))
          if (!s) throw new Error(`churn workload not served: ${JSON.stringify(o)}\n${agent.output().slice(-3000)}`)
          ids.add(s.spiffe_id)
        }
      }
      return ids
    }
    const allEnded = () =>
      waitFor('every churn instance to be ended', async () => ((await list({ entryId: payIds.churn!, live: true })).length === 0 ? true : undefined), {
        timeoutMs: 60_000,
        hint: () => agent.output(),
      })
    // Warm-up with as many instances as the measured run: code paths, pools, caches, the V8 heap and the
    // allocator's arenas reach their working size, which they keep. A leak grows with every instance and
    // shows in the second run; working-size growth does not. (After 50- and 200-instance warm-ups, full-suite
    // runs under load sometimes ended 48-65 MB above the start, while standalone runs stayed within 1 MB.)
    await churn(WARMUP_COUNT)
    await allEnded()
    const before = agentUsage(pid)
    const ids = await churn(CHURN_COUNT)
    expect(ids.size).toBe(CHURN_COUNT)
    await allEnded()
    expect((await list({ entryId: payIds.churn! })).length).toBe(CHURN_COUNT + WARMUP_COUNT)
    const after = await waitFor(
      'agent usage back near the start',
      () => {
        const u = agentUsage(pid)
        return u.fds <= before.fds + 10 && u.rssKb <= before.rssKb + 30 * 1024 ? u : undefined
      },
      { timeoutMs: 20_000, hint: () => JSON.stringify({ before, now: agentUsage(pid) }) },
    )
    expect(after.fds - before.fds).toBeLessThanOrEqual(10)
    expect(after.rssKb - before.rssKb).toBeLessThanOrEqual(30 * 1024)
  }, 900_000)
  it('7. a quarantine pushed over Sync stops the agent serving a cached SVID at once; lifting it serves it again', async () => {
    const plain = `spiffe://${TD}/quarantined/svc`
    const r = await createEntry(plain, NOBODY)
    expect(r.code, r.stderr).toBe(0)
    const served = async () => ((await workload('once', NOBODY).first).svids ?? []).some((x) => x.spiffe_id === plain)
    await waitFor('the plain entry to be served', async () => ((await served()) ? true : undefined), { hint: () => agent.output() })
    // The agent holds this SVID already: only the pushed revocation can stop it being served.
    const q = await server.cliJson<{ id: string | number }>([
      'instance',
      'quarantine',
      '--prefix',
      `spiffe://${TD}/quarantined`,
      '--reason',
      'e2e',
      '--output',
      'json',
    ])
    await waitFor('the quarantine to reach the agent', async () => ((await served()) ? undefined : true), { hint: () => agent.output() })
    expect(agent.output()).toMatch(/Revocations applied/)
    await server.cliJson(['instance', 'unquarantine', '--id', String(q.id), '--output', 'json'])
    await waitFor('the lifted quarantine to reach the agent', async () => ((await served()) ? true : undefined), { hint: () => agent.output() })
  }, 120_000)
})
