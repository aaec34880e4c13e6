/**
 * The broker embedded in a real `warrant server run` process (CA and broker
 * signing keys in a SoftHSM2 token), driven by oauth4webapi, an OAuth client
 * library nobody here wrote: discovery, client credentials with mutual TLS
 * (the agent's X.509-SVID from a real agent's Workload API) and DPoP
 * (including its use_dpop_nonce retry), introspection and revocation.
 */
import { spawn } from 'node:child_process'
import https from 'node:https'
import { createInterface } from 'node:readline'
import net from 'node:net'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { decodeJwt, decodeProtectedHeader, generateKeyPair } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { provisionSoftHsm, type ProvisionedSoftHsm } from '../../src/dev/softhsm.js'
import { E2eAgent, E2eServer, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'broker.test'
const AGENT_ID = `spiffe://${TD}/agents/a1`

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

/** oauth4webapi's customFetch over node:https with the agent's SVID as client certificate and the trust bundle as CA. */
function httpsFetch(tls: { ca: string; cert?: string; key?: string }) {
  return (url: string, init: oauth.CustomFetchOptions<string, unknown>): Promise<Response> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {}
      new Headers(init.headers).forEach((v, k) => (headers[k] = v))
      const body = init.body === undefined || init.body === null ? undefined : String(init.body)
      const req = https.request(
        url,
        { method: init.method, headers, ca: tls.ca, ...(tls.cert ? { cert: tls.cert, key: tls.key } : {}), agent: false },
        (res) => {
          const chunks: Buffer[] = []
          res.on('data', (c: Buffer) => chunks.push(c))
          res.on('end', () => {
            const h = new Headers()
            for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
            const status = res.statusCode ?? 0
            resolve(new Response(status === 204 || status === 304 ? null : Buffer.concat(chunks), { status, headers: h }))
          })
        },
      )
      req.on('error', reject)
      if (body !== undefined) req.write(body)
      req.end()
    })
}

describe.runIf(requireTools('softhsm2-util'))('broker embedded in warrant server run, driven by oauth4webapi', () => {
  const tmp = tempDir('wbk-')
  let hsm: ProvisionedSoftHsm
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  let issuer: string
  let tls: { ca: string; cert: string; key: string }

  beforeAll(async () => {
    hsm = await provisionSoftHsm(join(tmp.dir, 'h'))
    const port = await freePort()
    issuer = `https://localhost:${port}`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: [
        '[server.bounds."/agents/"]',
        'scopes = ["repo:read", "repo:write"]',
        'resources = ["https://git.broker.test/"]',
        'max_token_ttl = "10m"',
        'max_renewals = 3',
        '',
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${port}"`,
        `introspectors = ["spiffe://${TD}/agents/"]`,
        '[broker.dpop]',
        'nonce_required = true',
      ].join('\n'),
      plugins: [
        '[plugins.key_manager.pkcs11]',
        `module_path = "${hsm.modulePath}"`,
        `token_label = "${hsm.tokenLabel}"`,
        `pin_file = "${hsm.pinFile}"`,
        '[plugins.node_attestor.join_token]',
        '',
      ].join('\n'),
      env: { SOFTHSM2_CONF: hsm.confPath },
    })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    const created = await server.cli(['entry', 'create', '--spiffe-id', AGENT_ID, '--parent-id', agentId, '--selector', `unix:uid:${process.getuid!()}`])
    expect(created.code, created.stderr).toBe(0)
    const out = join(tmp.dir, 'svid')
    await waitFor(
      'the agent SVID on disk',
      async () => (await agent!.api(['fetch', 'x509', '--write', out])).code === 0 && readFileSync(join(out, 'svid.0.pem'), 'utf8').length > 0,
      { timeoutMs: 30_000, hint: () => agent!.output() },
    )
    tls = {
      ca: readFileSync(server.bundlePemPath, 'utf8'),
      cert: readFileSync(join(out, 'svid.0.pem'), 'utf8'),
      key: readFileSync(join(out, 'svid.0.key'), 'utf8'),
    }
    await waitFor(
      'the broker to serve its metadata',
      async () => {
        try {
          return (
            (await httpsFetch({ ca: tls.ca })(`${issuer}/.well-known/oauth-authorization-server`, { method: 'GET', headers: {}, redirect: 'manual' } as never))
              .status === 200
          )
        } catch {
          return false
        }
      },
      { timeoutMs: 30_000, hint: () => server!.output() },
    )
  }, 180_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGTERM')
    tmp.cleanup()
  })

  it('discovery, a DPoP-bound token over mutual TLS (with the nonce retry), introspection and revocation', async () => {
    const fetchFn = httpsFetch(tls)
    const opts = { [oauth.customFetch]: fetchFn }
    const as = await oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { ...opts, algorithm: 'oauth2' }))
    expect(as.token_endpoint).toBe(`${issuer}/token`)
    expect(as.tls_client_certificate_bound_access_tokens).toBe(true)
    expect(as.dpop_signing_alg_values_supported).toContain('ES256')

    // The task, created by the operator on the broker's admin socket.
    const socket = join(server!.dataDir, 'private', 'broker-admin.sock')
    const task = await warrant([
      'task',
      'create',
      '--socket',
      socket,
      '--agent',
      `spiffe://${TD}/agents/`,
      '--scope',
      'repo:read',
      '--resource',
      'https://git.broker.test/',
      '--ttl',
      '1h',
      '--max-renewals',
      '2',
      '--task-id',
      'e2e-task',
      '--output',
      'json',
    ])
    expect(task.code, task.stderr).toBe(0)

    const client: oauth.Client = { client_id: AGENT_ID }
    const keyPair = await generateKeyPair('ES256', { extractable: false })
    const DPoP = oauth.DPoP(client, keyPair)
    const grant = () =>
      oauth.clientCredentialsGrantRequest(
        as,
        client,
        oauth.TlsClientAuth(),
        { scope: 'repo:read', task_id: 'e2e-task', resource: 'https://git.broker.test/' },
        { ...opts, DPoP },
      )
    let result: oauth.TokenEndpointResponse
    let nonceRetries = 0
    try {
      result = await oauth.processClientCredentialsResponse(as, client, await grant())
    } catch (err) {
      expect(oauth.isDPoPNonceError(err)).toBe(true)
      nonceRetries++
      result = await oauth.processClientCredentialsResponse(as, client, await grant())
    }
    expect(nonceRetries).toBe(1)
    expect(result.token_type).toBe('dpop')
    const claims = decodeJwt(result.access_token)
    expect(decodeProtectedHeader(result.access_token)).toMatchObject({ typ: 'at+jwt', alg: 'ES256' })
    expect(claims).toMatchObject({ iss: issuer, sub: AGENT_ID, client_id: AGENT_ID, task_id: 'e2e-task', scope: 'repo:read' })
    expect((claims.cnf as { jkt?: string }).jkt).toBe(await DPoP.calculateThumbprint())

    const introspect = async () =>
      oauth.processIntrospectionResponse(as, client, await oauth.introspectionRequest(as, client, oauth.TlsClientAuth(), result.access_token, opts))
    const active = await introspect()
    expect(active).toMatchObject({ active: true, sub: AGENT_ID })

    await oauth.processRevocationResponse(await oauth.revocationRequest(as, client, oauth.TlsClientAuth(), result.access_token, opts))
    expect((await introspect()).active).toBe(false)

    // Without its client certificate the same library gets invalid_client.
    const bare = { [oauth.customFetch]: httpsFetch({ ca: tls.ca }) }
    const refused = await oauth.clientCredentialsGrantRequest(as, client, oauth.TlsClientAuth(), { scope: 'repo:read', task_id: 'e2e-task' }, bare)
    expect(refused.status).toBe(401)
    expect(((await refused.json()) as { error: string }).error).toBe('invalid_client')
    expect(server!.output()).not.toContain(result.access_token)
  }, 120_000)

  it('warrant revoke reaches a resource-server process over the feed, which then refuses the token; the revocation survives kill -9 and the feed resumes', async () => {
    const fetchFn = httpsFetch(tls)
    const opts = { [oauth.customFetch]: fetchFn }
    const as = await oauth.processDiscoveryResponse(new URL(issuer), await oauth.discoveryRequest(new URL(issuer), { ...opts, algorithm: 'oauth2' }))
    expect(as.warrant_revocation_feed_endpoint).toBe(`${issuer}/revocations/feed`)
    const socket = join(server!.dataDir, 'private', 'broker-admin.sock')
    const task = await warrant([
      'task',
      'create',
      '--socket',
      socket,
      '--agent',
      AGENT_ID,
      '--scope',
      'repo:read',
      '--resource',
      'https://git.broker.test/',
      '--task-id',
      'rev-task',
    ])
    expect(task.code, task.stderr).toBe(0)
    const client: oauth.Client = { client_id: AGENT_ID }
    const DPoP = oauth.DPoP(client, await generateKeyPair('ES256', { extractable: false }))
    const grant = () =>
      oauth.clientCredentialsGrantRequest(
        as,
        client,
        oauth.TlsClientAuth(),
        { scope: 'repo:read', task_id: 'rev-task', resource: 'https://git.broker.test/' },
        { ...opts, DPoP },
      )
    let token: string
    try {
      token = (await oauth.processClientCredentialsResponse(as, client, await grant())).access_token
    } catch (err) {
      if (!oauth.isDPoPNonceError(err)) throw err
      token = (await oauth.processClientCredentialsResponse(as, client, await grant())).access_token
    }

    // The resource server: another process, subscribed with the agent's SVID (any SVID of the trust domain may subscribe).
    const svid = join(tmp.dir, 'svid')
    const rs = spawn(
      process.execPath,
      [
        '--import',
        'tsx',
        join(process.cwd(), 'test', 'helpers', 'revocation-subscriber.ts'),
        issuer,
        server!.bundlePemPath,
        join(svid, 'svid.0.pem'),
        join(svid, 'svid.0.key'),
        'https://git.broker.test/',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    )
    let rsErr = ''
    rs.stderr.on('data', (d: Buffer) => (rsErr += d.toString()))
    const lines: Record<string, unknown>[] = []
    createInterface({ input: rs.stdout }).on('line', (l) => lines.push(JSON.parse(l) as Record<string, unknown>))
    const next = async (what: string, pred: (l: Record<string, unknown>) => boolean) => {
      let found: Record<string, unknown> | undefined
      await waitFor(what, async () => (found = lines.find(pred)) !== undefined, { timeoutMs: 30_000, hint: () => `${rsErr}\n${JSON.stringify(lines)}` })
      return found!
    }
    try {
      await next('the feed to sync', (l) => l.synced === true)
      rs.stdin.write(`${token}\n`)
      expect(await next('the first verdict', (l) => l.token === 1)).toEqual({ token: 1, ok: true })

      // One command for both sides: the broker's tokens and, with --server-socket, the server's SVIDs.
      const serverSocket = server!.socketPath
      const revoked = await warrant([
        'revoke',
        'instance',
        AGENT_ID,
        '--reason',
        'e2e',
        '--socket',
        socket,
        '--server-socket',
        serverSocket,
        '--output',
        'json',
      ])
      expect(revoked.code, revoked.stderr).toBe(0)
      const returned = Date.now()
      const entry = JSON.parse(revoked.stdout) as { seq: number; kind: string; created: boolean }
      expect(entry).toMatchObject({ kind: 'instance', value: AGENT_ID, created: true, reason: 'e2e' })
      expect(JSON.parse(revoked.stdout)).toMatchObject({ server_revocation: { kind: 'instance', value: AGENT_ID, reason: 'e2e' } })
      const pushed = await next('the pushed entry', (l) => (l.entry as { seq?: number } | undefined)?.seq === entry.seq)
      // pushed, not polled: the entry is there well inside the feed's reconnect backoff (informational; bench revocation measures it)
      expect(typeof pushed.at).toBe('number')
      process.stdout.write(`revocation reached the resource-server process ${(pushed.at as number) - returned} ms after warrant revoke returned\n`)
      rs.stdin.write(`${token}\n`)
      expect(await next('the second verdict', (l) => l.token === 2)).toMatchObject({ token: 2, ok: false, code: 'revoked', seq: entry.seq })
      // the broker refuses the instance a new token at once
      await expect(grant().then((r) => oauth.processClientCredentialsResponse(as, client, r))).rejects.toMatchObject({ error: 'invalid_grant' })

      // kill -9 the server (and its embedded broker): the acknowledged revocation is there after a restart
      await server!.stop('SIGKILL')
      await server!.restart()
      // the broker's admin socket comes up once the embedded broker has started (after the server's own socket)
      const listed = await waitFor(
        "the broker's admin socket after the restart",
        async () => {
          const r = await warrant(['revocation', 'list', '--socket', socket, '--output', 'json'])
          return r.code === 0 ? r : undefined
        },
        { timeoutMs: 30_000 },
      )
      expect((JSON.parse(listed.stdout) as { revocations: { seq: number }[] }).revocations.map((r) => r.seq)).toContain(entry.seq)
      const atServer = await warrant(['instance', 'revocations', '--socket', serverSocket, '--output', 'json'])
      expect(atServer.code, atServer.stderr).toBe(0)
      expect((JSON.parse(atServer.stdout) as { revocations: { value: string }[] }).revocations.map((r) => r.value)).toContain(AGENT_ID)
      // the subscriber reconnects by itself and resumes after the seq it holds: a new revocation reaches it
      const second = await warrant(['revoke', 'task', 'rev-task', '--socket', socket, '--output', 'json'], { timeoutMs: 30_000 })
      expect(second.code, second.stderr).toBe(0)
      const seq2 = (JSON.parse(second.stdout) as { seq: number }).seq
      await next('the entry made after the restart', (l) => (l.entry as { seq?: number } | undefined)?.seq === seq2)
      expect(lines.filter((l) => (l.entry as { seq?: number } | undefined)?.seq === entry.seq)).toHaveLength(1)
      expect(server!.output()).not.toContain(token)
    } finally {
      rs.kill('SIGKILL')
    }
  }, 180_000)
})
