/**
 * What the gateway e2e tests share: a free port, a hard link to node (so a
 * process run through it has its own `unix:path` selector), and a child
 * process with its output kept.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { chmodSync, copyFileSync, linkSync } from 'node:fs'
import net from 'node:net'
import { E2E_REPO } from './e2e-cluster.js'

export async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

/** A hard link to node (a copy across file systems): a process run through it has its own `unix:path`. */
export function nodeLink(path: string): string {
  try {
    linkSync(process.execPath, path)
  } catch {
    copyFileSync(process.execPath, path)
    chmodSync(path, 0o755)
  }
  return path
}

/** A child process with its output kept. */
export class Proc {
  readonly child: ChildProcess
  out = ''
  constructor(exe: string, args: string[], env: NodeJS.ProcessEnv = {}) {
    this.child = spawn(exe, args, { cwd: E2E_REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    const keep = (d: Buffer) => (this.out += d.toString())
    this.child.stdout!.on('data', keep)
    this.child.stderr!.on('data', keep)
  }
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }
  async stop(): Promise<void> {
    if (!this.running) return
    const exited = new Promise((r) => this.child.once('exit', r))
    this.child.kill('SIGTERM')
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(t)
  }
}
