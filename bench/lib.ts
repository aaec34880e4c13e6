/** Shared benchmark helpers: every figure is printed as one JSON line. */
import { readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import { findSoftHsmModule, provisionSoftHsm } from '../src/dev/softhsm.js'

export interface Figure {
  metric: string
  value: number
  baseline: number | null
  ratio: number | null
  unit: string
}

export function report(metric: string, value: number, baseline: number | null, unit: string, extra: Record<string, unknown> = {}): Figure {
  const fig: Figure = {
    metric,
    value: round(value),
    baseline: baseline === null ? null : round(baseline),
    ratio: baseline === null || baseline === 0 ? null : round(value / baseline, 4),
    unit,
  }
  process.stdout.write(`${JSON.stringify({ ...fig, ...extra })}\n`)
  return fig
}

function round(n: number, digits = 3): number {
  const f = 10 ** digits
  return Math.round(n * f) / f
}

/**
 * Runs `fn` repeatedly for about `ms` milliseconds (after a warm-up) and
 * returns operations per second. `fn` may do `batch` operations per call.
 */
export async function opsPerSecond(fn: () => unknown, opts: { ms?: number; warmupMs?: number; batch?: number } = {}): Promise<number> {
  const ms = opts.ms ?? 2000
  const warm = opts.warmupMs ?? 300
  const batch = opts.batch ?? 1
  let end = performance.now() + warm
  while (performance.now() < end) await fn()
  let n = 0
  const start = performance.now()
  end = start + ms
  while (performance.now() < end) {
    await fn()
    n += batch
  }
  return (n * 1000) / (performance.now() - start)
}

/** Synchronous variant, for baselines that must not pay for a Promise per call. */
export function opsPerSecondSync(fn: () => unknown, opts: { ms?: number; warmupMs?: number; batch?: number } = {}): number {
  const ms = opts.ms ?? 2000
  const warm = opts.warmupMs ?? 300
  const batch = opts.batch ?? 1
  let end = performance.now() + warm
  while (performance.now() < end) fn()
  let n = 0
  const start = performance.now()
  end = start + ms
  while (performance.now() < end) {
    fn()
    n += batch
  }
  return (n * 1000) / (performance.now() - start)
}

export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN
  const s = [...samples].sort((a, b) => a - b)
  const idx = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))
  return s[idx]!
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
export async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

/** Whether `cmd` is a file in a PATH directory. */
export function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => {
    try {
      readFileSync(join(d, cmd))
      return true
    } catch {
      return false
    }
  })
}

/**
 * The broker signing key as the quickstart configures it: the pkcs11 KeyManager on a SoftHSM2 token provisioned in
 * `dir` (SOFTHSM2_CONF set for this process) when softhsm2-util is installed, else the memory KeyManager;
 * WARRANT_BENCH_KEY_MANAGER=memory forces the latter. The config block and a name to print with the figures.
 */
export async function benchKeyManager(dir: string): Promise<{ keyManager: Record<string, unknown>; keyManagerName: string }> {
  if (process.env.WARRANT_BENCH_KEY_MANAGER !== 'memory' && onPath('softhsm2-util') && findSoftHsmModule()) {
    const hsm = await provisionSoftHsm(dir)
    process.env.SOFTHSM2_CONF = hsm.confPath
    return { keyManager: { pkcs11: { module_path: hsm.modulePath, token_label: hsm.tokenLabel, pin_file: hsm.pinFile } }, keyManagerName: 'pkcs11 (SoftHSM2)' }
  }
  const why = process.env.WARRANT_BENCH_KEY_MANAGER === 'memory' ? 'WARRANT_BENCH_KEY_MANAGER=memory' : 'softhsm2 not installed'
  return { keyManager: { memory: {} }, keyManagerName: `memory (${why})` }
}
