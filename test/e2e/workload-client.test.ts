/**
 * The workload client library end to end: a real `warrant server run` and
 * `warrant agent run` (processes), and two workloads as separate processes
 * told apart by the kernel (gid 2001 and 2002, so `unix:gid:` selectors),
 * each getting its SVID through X509Source (test/e2e/workload-client-peer.ts).
 * They authenticate each other over real mutual TLS by SPIFFE ID; the
 * server workload's 6-second SVID rotates under it and new connections see
 * the new certificate; a third workload with another ID, and a caller with a
 * chain from a CA outside the trust domain claiming the client's ID, are
 * refused.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { connect } from 'node:tls'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { KeyObjectSigner, generateKeyPair } from '../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../../src/spiffe/x509-svid/index.js'
import { toPem } from '../../src/spiffe/x509-svid/pem.js'
import { E2eAgent, E2eServer, E2E_REPO, waitFor } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the workload-client e2e test as root (workloads run with their own gids)')

const TD = 'wc.example'
const SERVER_ID = `spiffe://${TD}/agents/tool-server`
const CLIENT_ID = `spiffe://${TD}/agents/planner`
const INTRUDER_ID = `spiffe://${TD}/agents/intruder`
const PEER = join(E2E_REPO, 'test', 'e2e', 'workload-client-peer.ts')

/** A workload process running the peer script with its own gid; lines of JSON output collected. */
class Workload {
  readonly child: ChildProcess
  readonly lines: Record<string, unknown>[] = []
  #err = ''
  readonly exited: Promise<void>
  constructor(gid: number, args: string[]) {
    this.child = spawn(process.execPath, ['--import', 'tsx', PEER, ...args], { cwd: E2E_REPO, uid: 0, gid, stdio: ['ignore', 'pipe', 'pipe'] })
    let buf = ''
    this.child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString()
      let nl: number
      while ((nl = buf.indexOf('\n')) >= 0) {
        this.lines.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>)
        buf = buf.slice(nl + 1)
      }
    })
    this.child.stderr!.on('data', (d: Buffer) => (this.#err += d.toString()))
    this.exited = new Promise((r) => this.child.once('close', () => r()))
  }
  get stderr(): string {
    return this.#err
  }
  line(pred: (l: Record<string, unknown>) => boolean, what: string, timeoutMs = 60_000): Promise<Record<string, unknown>> {
    return waitFor(what, () => this.lines.find(pred), { timeoutMs, hint: () => this.#err })
  }
  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGTERM')
    const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000)
    await this.exited
    clearTimeout(t)
  }
}

/** Runs one `call` workload to completion and returns its result line. */
async function call(gid: number, socket: string, port: number, expectServer: string): Promise<Record<string, unknown>> {
  const w = new Workload(gid, ['call', socket, String(port), expectServer])
  await w.exited
  const r = w.lines.at(-1)
  if (!r) throw new Error(`call workload printed nothing: ${w.stderr.slice(-2000)}`)
  return r
}

describe.runIf(isRoot)('workload-client e2e: agent-to-agent mutual TLS with SVIDs from the Workload API', () => {
  const tmp = tempDir('wce-')
  let server: E2eServer
  let agent: E2eAgent
  let toolServer: Workload
  let port = 0

  beforeAll(async () => {
    server = await E2eServer.start({ dir: join(tmp.dir, 's'), trustDomain: TD })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    for (const [id, gid, ttl] of [
      [SERVER_ID, 2001, '6'],
      [CLIENT_ID, 2002, '3600'],
      [INTRUDER_ID, 2003, '3600'],
    ] as const) {
      const r = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', agentId, '--selector', `unix:gid:${gid}`, '--x509-svid-ttl', ttl])
      expect(r.code, r.stderr).toBe(0)
    }
  }, 120_000)

  afterAll(async () => {
    await toolServer?.stop()
    await agent?.stop()
    await server?.stop()
    tmp.cleanup()
  })

  it('1. the tool server workload gets its SVID through X509Source and serves mutual TLS', async () => {
    toolServer = new Workload(2001, ['serve', agent.socketPath, CLIENT_ID])
    const ready = await toolServer.line((l) => typeof l.port === 'number', 'the tool server to listen', 90_000)
    expect(ready.id).toBe(SERVER_ID)
    port = ready.port as number
  }, 120_000)

  it('2. the planner workload and the tool server authenticate each other by SPIFFE ID', async () => {
    const r = await call(2002, agent.socketPath, port, SERVER_ID)
    expect(r).toMatchObject({ status: 200, client_id: CLIENT_ID, body: { server: SERVER_ID, client: CLIENT_ID } })
  }, 120_000)

  it('3. the tool server follows rotation: a later connection sees its new SVID, and is still mutually authenticated', async () => {
    const first = await call(2002, agent.socketPath, port, SERVER_ID)
    expect(first.status).toBe(200)
    await toolServer.line((l) => l.rotated === true && l.serial !== first.server_serial, 'a rotation of the tool server SVID', 60_000)
    const second = await waitFor(
      'a connection on the rotated SVID',
      async () => {
        const r = await call(2002, agent.socketPath, port, SERVER_ID)
        return r.status === 200 && r.server_serial !== first.server_serial ? r : undefined
      },
      { timeoutMs: 60_000 },
    )
    expect(second.body).toEqual({ server: SERVER_ID, client: CLIENT_ID })
    const rotations = toolServer.lines.filter((l) => l.rotated === true).map((l) => l.serial)
    expect(rotations).toContain(second.server_serial)
  }, 150_000)

  it('4. a workload with another SPIFFE ID is refused by the server, and the client refuses a server with an unexpected ID', async () => {
    const before = toolServer.lines.filter((l) => l.refused).length
    const intruder = await call(2003, agent.socketPath, port, SERVER_ID)
    expect(intruder.status).toBeUndefined()
    expect(intruder.error).toBeTruthy()
    await toolServer.line(
      (l) => l.refused === 'ERR_ID_NOT_AUTHORIZED' && toolServer.lines.filter((x) => x.refused).length > before,
      'the server to log the refusal',
    )

    const wrongServer = await call(2002, agent.socketPath, port, `spiffe://${TD}/agents/other-tool`)
    expect(wrongServer).toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
  }, 120_000)

  it("5. a caller whose chain comes from a CA outside the trust domain, claiming the planner's ID, is refused", async () => {
    const td = TrustDomain.fromString(TD)
    const ca = generateKeyPair('ec-p256')
    const caSigner = new KeyObjectSigner(ca.privateKey)
    const now = Date.now()
    const caCert = await createCaCertificate({
      trustDomain: td,
      publicKey: ca.publicKey,
      signer: caSigner,
      notBefore: new Date(now - 60_000),
      notAfter: new Date(now + 3_600_000),
    })
    const leafKey = generateKeyPair('ec-p256')
    const leaf = await createX509Svid({
      spiffeId: SpiffeId.fromString(CLIENT_ID),
      publicKey: leafKey.publicKey,
      signer: caSigner,
      issuer: { certificate: caCert },
      notAfter: new Date(now + 3_600_000),
    })
    const outcome = await new Promise<string>((resolve) => {
      const s = connect({
        host: '127.0.0.1',
        port,
        cert: toPem('CERTIFICATE', leaf) + toPem('CERTIFICATE', caCert),
        key: leafKey.privateKey.export({ type: 'pkcs8', format: 'pem' }),
        rejectUnauthorized: false,
      })
      s.on('secureConnect', () => s.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n'))
      s.on('data', (d: Buffer) => resolve(`data: ${d.toString().slice(0, 40)}`))
      s.on('error', (e: Error & { code?: string }) => resolve(`error: ${e.code ?? e.message}`))
      s.on('close', () => resolve('closed'))
    })
    expect(outcome).not.toMatch(/^data/)
  }, 60_000)
})
