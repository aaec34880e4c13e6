/**
 * server_batch_sign_vs_node_crypto: X.509-SVIDs signed per second through the
 * real agent-facing gRPC API — a `warrant server run` process, and a separate
 * client process (bench/_sign-client.ts) attested with a join token that sends
 * BatchNewX509SVID calls of 100 pre-generated CSRs for entries parented to it
 * (two calls in flight) — against a raw `crypto.sign` P-256 loop over a
 * TBS-sized buffer in this process. Rounds are interleaved and the median of
 * each side is reported. Target ratio >= 0.3. The figure also carries the CPU
 * time spent per SVID by the server's main thread, by the whole server (main
 * thread, CSR workers, GC and pool threads) and by the client, from /proc.
 *
 * entry_creations_per_s: entries created per second through the admin API
 * (Unix socket), in BatchCreate calls of 100 (no baseline).
 *
 * WARRANT_SERVER_NODE_ARGS adds node flags to the server process, e.g.
 * "--cpu-prof --cpu-prof-dir=/tmp/prof" to profile it;
 * WARRANT_CLIENT_NODE_ARGS does the same for the client process.
 */
import { spawn } from 'node:child_process'
import { generateKeyPairSync, sign } from 'node:crypto'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { adminClient } from '../src/cli/admin-client.js'
import { REPO_ROOT, ServerProcess } from '../test/helpers/server-process.js'
import { opsPerSecondSync, report } from './lib.js'

const TD = 'example.org'
const BATCH = 100
const ROUNDS = 5
const ROUND_MS = 1500
const CONCURRENCY = 2

interface EntryResults {
  results: { status: { code: number; message: string }; entry: { id: string } | null }[]
}

export async function run(_args: string[]): Promise<void> {
  const srv = await ServerProcess.start({ logLevel: 'warn', nodeArgs: (process.env.WARRANT_SERVER_NODE_ARGS ?? '').split(' ').filter(Boolean) })
  const admin = adminClient('Entries', srv.socketPath)
  const agents = adminClient('Agents', srv.socketPath)
  try {
    // entry_creations_per_s: server-parented entries, batches of 100 over the admin socket.
    let k = 0
    const createBatch = async () => {
      const entries = Array.from({ length: BATCH }, () => {
        const i = k++
        return {
          spiffe_id: `spiffe://${TD}/bench/e${i}`,
          parent_id: `spiffe://${TD}/warrant/server`,
          selectors: [
            { type: 'unix', value: `uid:${i}` },
            { type: 'unix', value: `gid:${i % 13}` },
          ],
        }
      })
      const r = await admin.call<EntryResults>('BatchCreate', { entries })
      if (r.results.some((x) => x.status.code !== 0)) throw new Error(`entry creation failed: ${r.results.find((x) => x.status.code !== 0)!.status.message}`)
    }
    for (let i = 0; i < 3; i++) await createBatch()
    const t0 = performance.now()
    let made = 0
    while (performance.now() - t0 < 3000) {
      await createBatch()
      made += BATCH
    }
    const creationsPerS = (made * 1000) / (performance.now() - t0)

    // The client process: token → attest → entries parented to it → rounds.
    const tok = await agents.call<{ token: string }>('CreateJoinToken', { ttl: 600, spiffe_id: '' })
    const clientArgs = (process.env.WARRANT_CLIENT_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const c = spawn(
      process.execPath,
      [...clientArgs, '--import', 'tsx', join(REPO_ROOT, 'bench', '_sign-client.ts'), srv.address, join(srv.dataDir, 'bundle.pem'), tok.token, TD],
      {
        cwd: REPO_ROOT,
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    )
    try {
      const lines = createInterface({ input: c.stdout })[Symbol.asyncIterator]()
      const read = async <T>(): Promise<T> => {
        const n = await lines.next()
        if (n.done) throw new Error('sign client exited')
        return JSON.parse(n.value) as T
      }
      const send = (o: unknown) => c.stdin.write(`${JSON.stringify(o)}\n`)
      const { agentId } = await read<{ agentId: string }>()
      const entries = Array.from({ length: BATCH }, (_, i) => ({
        spiffe_id: `spiffe://${TD}/bench/signed/w${i}`,
        parent_id: agentId,
        selectors: [{ type: 'unix', value: `uid:${i}` }],
      }))
      const r = await admin.call<EntryResults>('BatchCreate', { entries })
      send({ entries: r.results.map((x) => x.entry!.id) })
      await read<{ ready: boolean }>()

      // Baseline: crypto.sign over a TBS the size of a leaf (~460 bytes).
      const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
      const tbs = Buffer.alloc(460, 0x5a)
      const base: number[] = []
      const ours: number[] = []
      send({ round: 500, concurrency: 2 }) // warm-up
      await read()
      const cpu = { server: 0, serverMain: 0, client: 0, signed: 0 }
      for (let i = 0; i < ROUNDS; i++) {
        base.push(opsPerSecondSync(() => sign('sha256', tbs, privateKey), { ms: ROUND_MS, warmupMs: 100 }))
        const st0 = process.env.WARRANT_BENCH_THREADS ? threadsOf(srv.pid) : undefined
        const m0 = cpuMicros(srv.pid, srv.pid)
        const s0 = cpuMicros(srv.pid)
        const c0 = cpuMicros(c.pid)
        send({ round: ROUND_MS, concurrency: CONCURRENCY })
        const res = await read<{ signed: number; ms: number; threads: Record<string, number> }>()
        if (st0) {
          const st1 = threadsOf(srv.pid)
          const server = Object.fromEntries(
            [...st1]
              .map(([t, v]) => [t === String(srv.pid) ? 'main' : t, Math.round((v - (st0.get(t) ?? 0)) / res.signed)])
              .filter(([, v]) => (v as number) > 0),
          )
          const client = Object.fromEntries(Object.entries(res.threads).map(([k, v]) => [k, Math.round(v / res.signed)]))
          console.error(JSON.stringify({ signed: res.signed, serverUsPerSvid: server, clientUsPerSvid: client }))
        }
        cpu.server += cpuMicros(srv.pid) - s0
        cpu.serverMain += cpuMicros(srv.pid, srv.pid) - m0
        cpu.client += cpuMicros(c.pid) - c0
        cpu.signed += res.signed
        ours.push((res.signed * 1000) / res.ms)
      }
      send({ exit: true })
      // Let it exit on its own (a profiler writes its profile at exit); killed in `finally` otherwise.
      await Promise.race([once(c, 'exit'), new Promise((r) => setTimeout(r, 5000).unref())])
      // CPU time per SVID (the server's main thread, the server's threads, the client), to show where the two cores go.
      report('server_batch_sign_vs_node_crypto', median(ours), median(base), 'ops/s', {
        batch: BATCH,
        rounds: ROUNDS,
        server_main_thread_cpu_us_per_svid: Math.round(cpu.serverMain / cpu.signed),
        server_cpu_us_per_svid: Math.round(cpu.server / cpu.signed),
        client_cpu_us_per_svid: Math.round(cpu.client / cpu.signed),
      })
      report('entry_creations_per_s', creationsPerS, null, 'ops/s', { batch: BATCH, entries: made })
    } finally {
      c.kill('SIGKILL')
    }
  } finally {
    admin.close()
    agents.close()
    await srv.stop()
    await srv.dispose()
  }
}

/** User + system CPU time of a process (all its threads), or of one of its threads, in microseconds; 0 when unknown. */
function cpuMicros(pid: number | undefined, tid?: number): number {
  if (pid === undefined) return 0
  try {
    const stat = readFileSync(tid === undefined ? `/proc/${pid}/stat` : `/proc/${pid}/task/${tid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1e6) / CLOCK_TICKS
  } catch {
    return 0
  }
}
const CLOCK_TICKS = 100 // USER_HZ on Linux

/** CPU time of each thread of a process, in microseconds, by thread id. */
function threadsOf(pid: number | undefined): Map<string, number> {
  const m = new Map<string, number>()
  if (pid === undefined) return m
  for (const tid of readdirSync(`/proc/${pid}/task`)) m.set(tid, cpuMicros(pid, Number(tid)))
  return m
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}
