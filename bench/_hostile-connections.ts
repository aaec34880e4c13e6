/**
 * `hostile_connections_fd_growth` (part of `npm run bench -- workload-api`):
 * descriptors held by the agent process 5 s after 1,000 hostile connections
 * of each kind have closed, against the count before. Target 0. Kinds: an
 * oversized frame header, garbage HPACK, a bad preface, a half-open
 * connection (connects, sends nothing), a slow preface (a byte a second), and
 * a flood of held connections from one uid (over the per-uid cap).
 */
import { readdirSync } from 'node:fs'
import { runHostile, startFlood, writeHostileClient, type HostileKind } from '../test/helpers/hostile-h2.js'
import { report } from './lib.js'

const PER_KIND = 1000
const SETTLE_MS = 5000

export async function hostileConnectionsFdGrowth(dir: string, pid: number): Promise<void> {
  const script = writeHostileClient(dir)
  const path = `${dir}/api.sock`
  const fds = () => readdirSync(`/proc/${pid}/fd`).length
  await new Promise((r) => setTimeout(r, SETTLE_MS)) // connections of the figures before have closed
  const before = fds()
  const t0 = performance.now()
  const kinds: HostileKind[] = ['oversized', 'hpack', 'badpreface', 'halfopen', 'slowpreface']
  const opened: Record<string, number> = {}
  const seconds: Record<string, number> = {}
  for (const kind of kinds) {
    // The waiting kinds are ended by the agent's handshake timeout (5 s): more of them at a time, under the per-uid cap.
    const waits = kind === 'halfopen' || kind === 'slowpreface'
    const k0 = performance.now()
    const s = await runHostile(script, { kind, count: PER_KIND, path, concurrency: waits ? 400 : 50, interval: 1000, waitMs: 30_000 })
    opened[kind] = s.opened
    seconds[kind] = Math.round((performance.now() - k0) / 100) / 10
  }
  const f0 = performance.now()
  const flood = await startFlood(script, { count: PER_KIND, path, waitMs: 120_000 })
  const held = (await flood.stop()).opened
  opened.flood = held
  seconds.flood = Math.round((performance.now() - f0) / 100) / 10
  await new Promise((r) => setTimeout(r, SETTLE_MS))
  const after = fds()
  report('hostile_connections_fd_growth', after - before, before, 'fds', {
    target: 0,
    connections_per_kind: PER_KIND,
    opened,
    seconds,
    settle_ms: SETTLE_MS,
    run_s: Math.round((performance.now() - t0) / 1000),
  })
}
