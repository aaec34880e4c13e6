import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { createServer, Socket } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'

const execFileP = promisify(execFile)

export interface SwtpmInstance {
  /** Data (command) port on 127.0.0.1. */
  port: number
  /** swtpm control port on 127.0.0.1 (always port + 1, as the tpm2-tss swtpm TCTI expects). */
  ctrlPort: number
  stateDir: string
  /** The local CA: swtpm-localca-rootca-cert.pem (root) and issuercert.pem (intermediate). */
  caDir: string
  /** Where swtpm_setup wrote ek-rsa2048.crt / ek-secp384r1.crt (withEkCert only). */
  ekCertDir: string
  /** For openTransport(): `swtpm:127.0.0.1:<port>`. */
  transportUri: string
  /** TCTI string for tpm2-tools: `swtpm:host=127.0.0.1,port=<port>`. */
  tcti: string
  stop(): Promise<void>
  /** SIGTERM now, without waiting (for a process `exit` handler, where nothing asynchronous runs). */
  kill(): void
}

function tryListen(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const srv = createServer()
    srv.once('error', () => resolve(undefined))
    srv.listen(port, '127.0.0.1', () => {
      const addr = srv.address()
      const got = typeof addr === 'object' && addr !== null ? addr.port : undefined
      srv.close(() => resolve(got))
    })
  })
}

/** A free port p whose neighbour p+1 is free too (the swtpm TCTI expects the control port at data port + 1). */
async function freePortPair(): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const p = await tryListen(0)
    if (p !== undefined && p < 65535 && (await tryListen(p + 1)) !== undefined) return p
  }
  throw new Error('no free port pair')
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new Socket()
    s.once('error', () => resolve(false))
    s.connect(port, '127.0.0.1', () => {
      s.destroy()
      resolve(true)
    })
  })
}

/** Waits until the swtpm control port accepts connections or the process exits. */
async function waitForPort(port: number, child: ChildProcess, stderr: () => string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    if (child.exitCode !== null) throw new Error(`swtpm exited with ${child.exitCode}: ${stderr()}`)
    if (await canConnect(port)) return
    await new Promise((r) => setTimeout(r, 20))
  }
  throw new Error(`swtpm did not listen on port ${port}: ${stderr()}`)
}

/**
 * Provisions a software TPM (swtpm, TPM 2.0) in `dir` with swtpm_setup —
 * RSA-2048 + ECC EKs, EK certificates issued by a local CA whose root and
 * intermediate live in `caDir` — and starts `swtpm socket` on free loopback
 * ports. With `reuse`, an already provisioned `dir` is started as it is (the
 * quickstart keeps its TPM across runs). Nothing is written under /etc or /var.
 * `stop()` ends the process and, with `removeOnStop`, deletes `dir`.
 */
export async function startSwtpm(opts: { dir: string; withEkCert?: boolean; reuse?: boolean; removeOnStop?: boolean }): Promise<SwtpmInstance> {
  const withEkCert = opts.withEkCert ?? true
  const tmp = { dir: opts.dir, cleanup: () => (opts.removeOnStop ? rmSync(opts.dir, { recursive: true, force: true }) : undefined) }
  const stateDir = join(tmp.dir, 'state')
  const caDir = join(tmp.dir, 'ca')
  const ekCertDir = join(tmp.dir, 'ekcerts')
  const provisioned = opts.reuse === true && existsSync(stateDir) && readdirSync(stateDir).some((f) => f.startsWith('tpm2-'))
  for (const d of [stateDir, caDir, ekCertDir]) mkdirSync(d, { recursive: true, mode: 0o700 })
  const localcaConf = join(tmp.dir, 'swtpm-localca.conf')
  const localcaOptions = join(tmp.dir, 'swtpm-localca.options')
  const setupConf = join(tmp.dir, 'swtpm_setup.conf')
  writeFileSync(
    localcaConf,
    [
      `statedir = ${caDir}`,
      `signingkey = ${join(caDir, 'signkey.pem')}`,
      `issuercert = ${join(caDir, 'issuercert.pem')}`,
      `certserial = ${join(caDir, 'certserial')}`,
      '',
    ].join('\n'),
  )
  writeFileSync(localcaOptions, ['--platform-manufacturer Warrant', '--platform-version 2.1', '--platform-model TestModel', ''].join('\n'))
  writeFileSync(
    setupConf,
    [
      'create_certs_tool = /usr/bin/swtpm_localca',
      `create_certs_tool_config = ${localcaConf}`,
      `create_certs_tool_options = ${localcaOptions}`,
      'active_pcr_banks = sha1,sha256',
      '',
    ].join('\n'),
  )
  const setupArgs = ['--tpm2', '--tpmstate', stateDir, '--config', setupConf, '--pcr-banks', 'sha1,sha256', '--overwrite']
  if (withEkCert) setupArgs.push('--createek', '--create-ek-cert', '--write-ek-cert-files', ekCertDir)
  else setupArgs.push('--createek')
  const env = { ...process.env, XDG_CONFIG_HOME: tmp.dir, HOME: tmp.dir }
  if (!provisioned) {
    try {
      await execFileP('swtpm_setup', setupArgs, { env })
    } catch (err) {
      tmp.cleanup()
      throw new Error(`swtpm_setup failed: ${(err as { stderr?: string }).stderr ?? String(err)}`)
    }
  }

  const port = await freePortPair()
  const ctrlPort = port + 1
  const child = spawn(
    'swtpm',
    [
      'socket',
      '--tpm2',
      '--tpmstate',
      `dir=${stateDir}`,
      '--server',
      `type=tcp,port=${port},bindaddr=127.0.0.1`,
      '--ctrl',
      `type=tcp,port=${ctrlPort},bindaddr=127.0.0.1`,
      '--flags',
      'not-need-init,startup-clear',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env },
  )
  let stderr = ''
  child.stderr?.on('data', (c: Buffer) => {
    stderr += c.toString()
  })
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM')
      await exited
    }
    tmp.cleanup()
  }
  try {
    await waitForPort(ctrlPort, child, () => stderr)
  } catch (err) {
    await stop()
    throw err
  }
  return {
    port,
    ctrlPort,
    stateDir,
    caDir,
    ekCertDir,
    transportUri: `swtpm:127.0.0.1:${port}`,
    tcti: `swtpm:host=127.0.0.1,port=${port}`,
    stop,
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
    },
  }
}
