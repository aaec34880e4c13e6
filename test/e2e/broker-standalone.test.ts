/**
 * `warrant broker run` as a SPIFFE workload of a real agent: its TLS
 * certificate is its X.509-SVID from the Workload API (verified here against
 * the trust bundle, URI SAN and DNS name), clients authenticate against the
 * bundles it got from there, and its ceilings come from the server's signed
 * bounds document.
 */
import https from 'node:https'
import net from 'node:net'
import { X509Certificate } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, WarrantProcess, waitFor } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'standalone.test'
const BROKER_ID = `spiffe://${TD}/services/broker`

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

function post(
  url: string,
  body: string,
  tls: { ca: string; cert?: string; key?: string },
): Promise<{ status: number; body: string; peer: X509Certificate | undefined }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        ca: tls.ca,
        ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = []
        const raw = (res.socket as import('node:tls').TLSSocket).getPeerCertificate().raw
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), peer: raw ? new X509Certificate(raw) : undefined }),
        )
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

describe('standalone broker (warrant broker run) on a warrant agent', () => {
  const tmp = tempDir('wbs-')
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  let broker: WarrantProcess | undefined
  let issuer: string

  beforeAll(async () => {
    const port = await freePort()
    issuer = `https://localhost:${port}`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: ['[server.bounds."/services/"]', 'scopes = ["ops:read"]'].join('\n'),
    })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    const created = await server.cli([
      'entry',
      'create',
      '--spiffe-id',
      BROKER_ID,
      '--parent-id',
      agentId,
      '--selector',
      `unix:uid:${process.getuid!()}`,
      '--dns',
      'localhost',
    ])
    expect(created.code, created.stderr).toBe(0)
    const cfg = join(tmp.dir, 'broker.toml')
    writeFileSync(
      cfg,
      [
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${port}"`,
        `bounds_document_path = "${join(server.dataDir, 'bounds.jws')}"`,
        'store_path = "b/broker.sqlite3"',
        'admin_socket_path = "b/admin.sock"',
        '[broker.key_manager.memory]',
        '[workload_api]',
        `socket_path = "${agent.socketPath}"`,
        '',
      ].join('\n'),
    )
    broker = new WarrantProcess(['broker', 'run', '--config', cfg])
    await waitFor(
      'the standalone broker to listen',
      () => {
        if (!broker!.running) throw new Error(`broker exited:\n${broker!.output().slice(-4000)}`)
        return broker!.output().includes('Broker started')
      },
      { timeoutMs: 60_000, hint: () => broker!.output() },
    )
  }, 180_000)

  afterAll(async () => {
    await broker?.stop('SIGTERM')
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('serves TLS with its SVID, authenticates clients against the Workload API bundles and hands them to the domain', async () => {
    const ca = readFileSync(server!.bundlePemPath, 'utf8')
    const out = join(tmp.dir, 'svid')
    await waitFor('the SVID on disk', async () => (await agent!.api(['fetch', 'x509', '--write', out])).code === 0, { timeoutMs: 30_000 })
    const tls = { ca, cert: readFileSync(join(out, 'svid.0.pem'), 'utf8'), key: readFileSync(join(out, 'svid.0.key'), 'utf8') }

    // Unauthenticated: invalid_client; the certificate the broker served is its X.509-SVID.
    const anon = await post(`${issuer}/token`, 'grant_type=client_credentials', { ca })
    expect(anon.status).toBe(401)
    expect(JSON.parse(anon.body).error).toBe('invalid_client')
    expect(anon.peer?.subjectAltName).toContain(`URI:${BROKER_ID}`)
    expect(anon.peer?.subjectAltName).toContain('DNS:localhost')

    // Authenticated by its X.509-SVID: past client authentication, the domain refuses the unknown task.
    const authed = await post(`${issuer}/token`, 'grant_type=client_credentials&scope=ops%3Aread&task_id=nope', tls)
    expect(authed.status).toBe(400)
    expect(JSON.parse(authed.body).error).toBe('invalid_grant')
    expect(broker!.output()).toContain('Broker ceilings loaded from the bounds document')
  }, 60_000)
})
