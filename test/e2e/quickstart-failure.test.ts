/**
 * A quickstart that fails after it started swtpm (here: its server cannot
 * start, because `server/private` in the data dir is a file) says why at
 * once, with the log to read, exits 1, and leaves no process behind: not
 * the server, and not swtpm (which is not one of its supervised children).
 */
import { spawn } from 'node:child_process'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { E2E_REPO } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

/** The pids whose command line mentions `needle` (other than this process). */
function processesMentioning(needle: string): { pid: number; cmd: string }[] {
  const out: { pid: number; cmd: string }[] = []
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d) || Number(d) === process.pid) continue
    try {
      const cmd = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0').join(' ')
      if (cmd.includes(needle)) out.push({ pid: Number(d), cmd })
    } catch {
      // it ended
    }
  }
  return out
}

describe.runIf(requireTools('swtpm', 'swtpm_setup'))('quickstart failing after swtpm started', () => {
  const tmp = tempDir('wqf-')
  afterAll(() => {
    for (const p of processesMentioning(tmp.dir)) process.kill(p.pid, 'SIGKILL')
    tmp.cleanup()
  })

  it('exits 1 at once naming the server log, and leaves neither the server nor swtpm running', async () => {
    const dataDir = join(tmp.dir, 'qs')
    mkdirSync(join(dataDir, 'server'), { recursive: true, mode: 0o700 })
    writeFileSync(join(dataDir, 'server', 'private'), 'not a directory')
    const qs = spawn(process.execPath, ['--import', 'tsx', join(E2E_REPO, 'src', 'cli', 'quickstart.ts'), '--data-dir', dataDir], {
      cwd: E2E_REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    qs.stdout.on('data', (d: Buffer) => (out += d.toString()))
    qs.stderr.on('data', (d: Buffer) => (out += d.toString()))
    let sawSwtpm = false
    const watch = setInterval(() => {
      if (processesMentioning(join(dataDir, 'tpm')).some((p) => p.cmd.startsWith('swtpm'))) sawSwtpm = true
    }, 50)
    const code = await new Promise<number | null>((r) => qs.once('exit', (c) => r(c)))
    clearInterval(watch)
    expect(code, out).toBe(1)
    expect(out).toContain('node attestation  : tpm')
    expect(sawSwtpm, out).toBe(true)
    expect(out).toMatch(/quickstart: the server exited during start-up \(code \d+\); see .*server\.log/)
    // the exit handler's SIGTERM reaches swtpm and the server before this process is gone; give them a moment to end
    const deadline = Date.now() + 5000
    while (processesMentioning(dataDir).length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100))
    expect(processesMentioning(dataDir)).toEqual([])
  }, 120_000)
})
