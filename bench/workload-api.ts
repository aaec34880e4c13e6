/**
 * `npm run bench -- workload-api`: the agent's Workload API against a bare
 * grpc-js unary echo over a Unix socket, client and agent in separate
 * processes (the agent side is bench/_workload-api-agent.ts).
 */
import * as grpc from '@grpc/grpc-js'
import { fork, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { securityHeader, workloadClient } from '../src/cli/commands/api.js'
import { percentile, report } from './lib.js'
import { hostileConnectionsFdGrowth } from './_hostile-connections.js'

const here = dirname(fileURLToPath(import.meta.url))

async function startAgent(dir: string, entries: number, profileDir?: string): Promise<{ child: ChildProcess; info: { cached: number; heapGrowth: number } }> {
  const execArgv = ['--import', 'tsx', '--expose-gc', ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [])]
  const child = fork(join(here, '_workload-api-agent.ts'), [dir, String(entries)], { execArgv, stdio: 'inherit' })
  const info = await new Promise<{ cached: number; heapGrowth: number }>((resolve, reject) => {
    child.once('message', (m) => resolve(m as { cached: number; heapGrowth: number }))
    child.once('exit', (code) => reject(new Error(`agent exited with ${code}`)))
  })
  return { child, info }
}

async function stopAgent(child: ChildProcess): Promise<void> {
  const done = new Promise((r) => child.once('exit', r))
  child.kill('SIGTERM')
  await done
}

/**
 * p50 latencies of `fn` and of the baseline `base`: both warmed up alike
 * (WARMUP calls each), then sampled in alternating blocks of BLOCK calls
 * until each has `n` samples, so that a load that comes and goes falls on
 * both sides alike, while within a block every call follows a call of its own
 * kind (a call's teardown never lands in the other side's timing). `fn` may
 * time itself (`own`), for calls whose sample ends after the timed part.
 */
async function pairedP50(n: number, base: () => Promise<unknown>, fn: () => Promise<unknown>, own?: number[]): Promise<{ base: number; ours: number }> {
  const block = async (f: () => Promise<unknown>, count: number, into: number[]) => {
    for (let i = 0; i < count; i++) {
      const t = performance.now()
      await f()
      into.push(performance.now() - t)
    }
  }
  const warm: number[] = []
  await block(base, WARMUP, warm)
  await block(fn, WARMUP, warm)
  if (own) own.length = 0
  const b: number[] = []
  const o: number[] = []
  for (let done = 0; done < n; done += BLOCK) {
    await block(base, Math.min(BLOCK, n - done), b)
    await block(fn, Math.min(BLOCK, n - done), o)
  }
  return { base: percentile(b, 50), ours: percentile(own ?? o, 50) }
}

const WARMUP = 500
const BLOCK = 100

/**
 * Flags: `--cpu-prof-agent=<dir>` writes a CPU profile of the agent process;
 * `--latency-only` stops after the two latency figures.
 */
export async function run(args: string[]): Promise<void> {
  const profileDir = args.find((a) => a.startsWith('--cpu-prof-agent='))?.slice('--cpu-prof-agent='.length)
  const latencyOnly = args.includes('--latency-only')
  const dir = mkdtempSync(join(tmpdir(), 'wb-'))
  try {
    const { child } = await startAgent(dir, 10, profileDir)
    const echo = new grpc.Client(`unix:${dir}/echo.sock`, grpc.credentials.createInsecure())
    const id = (b: Buffer) => b
    const echoCall = () => new Promise<void>((res, rej) => echo.makeUnaryRequest('/bench.Echo/Echo', id, id, Buffer.from('ping'), (e) => (e ? rej(e) : res())))
    const wl = workloadClient(`unix:${dir}/api.sock`)
    const jwtCall = () =>
      new Promise<void>((res, rej) => wl.FetchJWTSVID!({ audience: ['bench'] }, securityHeader(), (e: Error | null) => (e ? rej(e) : res())))
    let streamErrors = 0
    const x509Times: number[] = []
    /**
     * Time to the first message; a stream that fails is counted, not timed.
     * The sample ends once the cancelled stream has closed on the client (its
     * CANCELLED status delivered), as a unary echo sample ends with its status:
     * otherwise one stream's teardown runs inside the next stream's timing.
     */
    const firstX509 = () =>
      new Promise<void>((res) => {
        const t = performance.now()
        const call = wl.FetchX509SVID!({}, securityHeader()) as grpc.ClientReadableStream<unknown>
        let got = false
        call.once('data', () => {
          got = true
          x509Times.push(performance.now() - t)
          call.cancel()
        })
        call.on('error', (e: grpc.ServiceError) => {
          if (!got && e.code !== grpc.status.CANCELLED) streamErrors++
          res()
        })
      })

    const jwt = await pairedP50(2000, echoCall, jwtCall)
    // Every call after the first is answered from the agent's JWT-SVID cache (same audience, token still fresh).
    report('fetch_jwt_svid_cached_p50_vs_grpc_echo', jwt.ours, jwt.base, 'ms', { target_ratio: 1.5, served_from: 'agent JWT-SVID cache' })
    const x509 = await pairedP50(1000, echoCall, firstX509, x509Times)
    report('x509_stream_first_p50_vs_grpc_echo', x509.ours, x509.base, 'ms', { target_ratio: 2, failed_streams: streamErrors })
    if (latencyOnly) {
      wl.close()
      echo.close()
      await stopAgent(child)
      return
    }

    // 1,000 open streams; time until every one has received the rotated SVID.
    const clients = Array.from({ length: 8 }, () => workloadClient(`unix:${dir}/api.sock`))
    const counts: number[] = []
    let onMessage: () => void = () => {}
    const calls = Array.from({ length: 1000 }, (_, i) => {
      counts.push(0)
      const call = clients[i % clients.length]!.FetchX509SVID!({}, securityHeader()) as grpc.ClientReadableStream<unknown>
      call.on('data', () => {
        counts[i]!++
        onMessage()
      })
      call.on('error', () => {})
      return call
    })
    const until = (pred: () => boolean) =>
      new Promise<void>((res) => {
        onMessage = () => pred() && res()
        if (pred()) res()
      })
    await until(() => counts.every((c) => c >= 1))
    const t0 = performance.now()
    child.send('rotate')
    await until(() => counts.every((c) => c >= 2))
    report('rotation_fanout_ms', performance.now() - t0, null, 'ms', { streams: 1000 })
    for (const c of calls) c.cancel()
    for (const c of clients) c.close()
    wl.close()
    echo.close()
    await hostileConnectionsFdGrowth(dir, child.pid!)
    await stopAgent(child)

    const bigDir = join(dir, 'big')
    mkdirSync(bigDir)
    const big = await startAgent(bigDir, 10_000)
    report('bytes_per_cached_x509_svid', big.info.heapGrowth / big.info.cached, null, 'bytes', { cached: big.info.cached, target: 3072 })
    await stopAgent(big.child)
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
