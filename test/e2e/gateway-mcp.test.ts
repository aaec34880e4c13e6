/**
 * MCP authorization through the gateway, with real processes (a server with
 * its embedded broker, an agent, the gateway and a demo MCP server built
 * with the official MCP TypeScript SDK) and an agent built on the same SDK
 * (`Client`, `StreamableHTTPClientTransport` and its OAuth flow):
 *
 * 1. the agent's first request to `https://<gateway>/tools/orders` is 401
 *    with `WWW-Authenticate: Bearer resource_metadata="..."`;
 * 2. the SDK reads the RFC 9728 metadata the gateway serves (the broker as
 *    authorization server, the tool URL as resource) and asks the broker for
 *    a token with client_credentials, `resource` = the tool URL (RFC 8707)
 *    and the agent's task, authenticated by the agent's X.509-SVID over
 *    mutual TLS (a custom `fetch`), so the token is bound to that
 *    certificate (`cnf.x5t#S256`);
 * 3. the SDK sends it as `Authorization: Bearer` over the same mutual TLS;
 *    the gateway checks audience, binding and scope, gets a Txn-Token and
 *    forwards; the MCP server sees only the Txn-Token (no Authorization, no
 *    DPoP) and answers `lookup_order`.
 *
 * The broker's metadata has no `authorization_endpoint` (it has no
 * authorization endpoint; RFC 8414 §2 makes it optional then), which the SDK's
 * metadata schema (1.32) requires, so the agent pins its authorization server:
 * its provider supplies the broker's metadata, fetched and checked (`issuer`
 * is the broker's, RFC 8414 §3.3), as the SDK's discovery state, and refuses
 * a resource whose metadata names another authorization server.
 */
import { createHash } from 'node:crypto'
import https from 'node:https'
import { Readable } from 'node:stream'
import { mkdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { FetchLike } from '@modelcontextprotocol/sdk/shared/transport.js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2E_BIN, E2E_REPO, E2eAgent, E2eServer, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { freePort, nodeLink, Proc } from '../helpers/e2e-procs.js'
import { tempDir } from '../helpers/temp.js'
import { SvidClientCredentialsProvider } from '../../src/cli/quickstart-mcp-agent.js'
import { toPemBlock } from '../../src/common/crypto/pem.js'
import { WorkloadApiClient } from '../../src/workload-client/workload-api-client.js'
import { X509Source } from '../../src/workload-client/x509-source.js'

const TD = 'mcp.gateway.test'
const AGENT_ID = `spiffe://${TD}/agents/a1`
const GATEWAY_ID = `spiffe://${TD}/services/gateway`
const MCP_ID = `spiffe://${TD}/services/orders-mcp`
const JWT_RE = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/

interface Sent {
  method: string
  url: string
  status: number
  authorization: string | null
  body: string | undefined
  wwwAuthenticate: string | null
}

/**
 * A `fetch` over node:https with the agent's current X.509-SVID as client
 * certificate (mutual TLS to the gateway and the broker), the trust bundle as
 * CA; bodies stream back (SSE works). Every exchange is recorded.
 */
function mtlsFetch(creds: () => { cert: string; key: string }, ca: string, sent: Sent[]): FetchLike {
  return (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input.href)
    const headers = new Headers(init?.headers)
    const b = init?.body
    const body = b === undefined || b === null ? undefined : typeof b === 'string' ? b : b instanceof URLSearchParams ? b.toString() : undefined
    if (b !== undefined && b !== null && body === undefined) return Promise.reject(new TypeError('unsupported body'))
    if (b instanceof URLSearchParams && !headers.has('content-type')) headers.set('content-type', 'application/x-www-form-urlencoded')
    const method = init?.method ?? 'GET'
    const { cert, key } = creds()
    return new Promise<Response>((resolve, reject) => {
      const req = https.request(
        url,
        { method, headers: Object.fromEntries(headers), ca, cert, key, agent: false, ...(init?.signal ? { signal: init.signal } : {}) },
        (res) => {
          const h = new Headers()
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) for (const x of Array.isArray(v) ? v : [v]) h.append(k, x)
          const status = res.statusCode ?? 502
          sent.push({ method, url: url.href, status, authorization: headers.get('authorization'), body, wwwAuthenticate: h.get('www-authenticate') })
          const empty = status === 204 || status === 304 || method === 'HEAD'
          if (empty) res.resume()
          resolve(new Response(empty ? null : Readable.toWeb(res), { status, headers: h }))
        },
      )
      req.on('error', reject)
      req.end(body)
    })
  }
}

describe('MCP authorization through the gateway (official MCP SDK on both ends)', () => {
  const tmp = tempDir('wgwmcp-')
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  let gateway: Proc | undefined
  let mcp: Proc | undefined
  let source: X509Source | undefined
  let gatewayUrl: string
  let ordersUrl: string
  let issuer: string
  let ca: string

  const mcpRequests = () =>
    mcp!.out
      .split('\n')
      .filter((l) => l.startsWith('{"kind":"request"'))
      .map((l) => JSON.parse(l) as { method: string; path: string; status: number; sub?: string; authorization: boolean; dpop: boolean })

  beforeAll(async () => {
    const brokerPort = await freePort()
    const gatewayPort = await freePort()
    issuer = `https://localhost:${brokerPort}`
    gatewayUrl = `https://localhost:${gatewayPort}`
    ordersUrl = `${gatewayUrl}/tools/orders`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: [
        '[server.bounds."/agents/"]',
        'scopes = ["orders:read"]',
        `resources = ["${ordersUrl}"]`,
        '',
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${brokerPort}"`,
        `txn_token_requesters = ["${GATEWAY_ID}"]`,
      ].join('\n'),
    })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentNode = await agent.attested()
    ca = readFileSync(server.bundlePemPath, 'utf8')

    const bin = join(tmp.dir, 'bin')
    mkdirSync(bin, { recursive: true })
    const gatewayExe = nodeLink(join(bin, 'gw-node'))
    const mcpExe = nodeLink(join(bin, 'mcp-node'))
    for (const [id, exe, dns] of [
      [AGENT_ID, realpathSync(process.execPath), []],
      [GATEWAY_ID, gatewayExe, ['--dns', 'localhost']],
      [MCP_ID, mcpExe, ['--dns', 'localhost']],
    ] as const) {
      const r = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', agentNode, '--selector', `unix:path:${exe}`, ...dns])
      expect(r.code, r.stderr).toBe(0)
    }

    // the agent's SVID, from the Workload API (this process is the agent)
    source = await waitFor(
      'the agent SVID',
      async () => {
        try {
          return await X509Source.create({
            client: new WorkloadApiClient({ socketPath: agent!.socketPath }),
            picker: (svids) => svids.find((s) => s.id.toString() === AGENT_ID)!,
          })
        } catch {
          return undefined
        }
      },
      { timeoutMs: 60_000, hint: () => agent!.output() },
    )

    mcp = new Proc(mcpExe, [
      '--import',
      'tsx',
      join(E2E_REPO, 'test/helpers/demo-mcp-server.ts'),
      JSON.stringify({ issuer, trustDomain: `spiffe://${TD}`, ca, gateway: GATEWAY_ID, socketPath: agent.socketPath }),
    ])
    const mcpPort = await waitFor(
      'the MCP server',
      () => {
        if (!mcp!.running) throw new Error(`MCP server exited:\n${mcp!.out}`)
        const m = /\{"kind":"ready","port":(\d+),"spiffe_id":"([^"]+)"/.exec(mcp!.out)
        if (m) expect(m[2]).toBe(MCP_ID)
        return m ? Number(m[1]) : undefined
      },
      { timeoutMs: 90_000, hint: () => mcp!.out },
    )

    const tools = join(tmp.dir, 'tools')
    mkdirSync(tools)
    writeFileSync(
      join(tools, 'orders.json'),
      JSON.stringify({
        client_id: 'https://tools.mcp.gateway.test/orders',
        client_name: 'Orders (MCP)',
        warrant_tool: {
          name: 'orders',
          endpoint: `https://localhost:${mcpPort}/mcp`,
          audience: ordersUrl,
          scopes: ['orders:read'],
          allowed_agents: [`spiffe://${TD}/agents/`],
          mcp: true,
        },
      }),
    )
    const cfg = join(tmp.dir, 'gateway.toml')
    writeFileSync(
      cfg,
      [
        '[gateway]',
        `bind_address = "127.0.0.1:${gatewayPort}"`,
        `url = "${gatewayUrl}"`,
        `bounds_document_path = "${join(server.dataDir, 'bounds.jws')}"`,
        'tools_dir = "tools"',
        'log_level = "debug"',
        '[gateway.broker]',
        `issuer = "${issuer}"`,
        '[gateway.audit]',
        'path = "g/audit.sqlite3"',
        '[workload_api]',
        `socket_path = "${agent.socketPath}"`,
        '',
      ].join('\n'),
    )
    gateway = new Proc(gatewayExe, [E2E_BIN, 'gateway', 'run', '--config', cfg])
    await waitFor(
      'the gateway to listen',
      () => {
        if (!gateway!.running) throw new Error(`gateway exited:\n${gateway!.out.slice(-4000)}`)
        return gateway!.out.includes('Gateway started')
      },
      { timeoutMs: 90_000, hint: () => gateway!.out },
    )

    // the orchestrator's task for the agent (client_credentials needs one)
    const task = await warrant([
      'task',
      'create',
      '--socket',
      join(server.dataDir, 'private', 'broker-admin.sock'),
      '--agent',
      `spiffe://${TD}/agents/`,
      '--scope',
      'orders:read',
      '--resource',
      ordersUrl,
      '--ttl',
      '1h',
      '--task-id',
      'mcp-task',
    ])
    expect(task.code, task.stderr).toBe(0)
  }, 300_000)

  afterAll(async () => {
    await source?.close()
    await gateway?.stop()
    await mcp?.stop()
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  const creds = () => {
    const svid = source!.getX509Svid()
    return {
      cert: svid.certificates.map((c) => toPemBlock('CERTIFICATE', c)).join(''),
      key: svid.privateKey!.export({ type: 'pkcs8', format: 'pem' }) as string,
    }
  }

  it('an SDK agent calls lookup_order through the gateway: 401 with resource_metadata, RFC 9728 discovery, a certificate-bound token for the tool URL, the MCP server sees only the Txn-Token', async () => {
    const sent: Sent[] = []
    const fetchFn = mtlsFetch(creds, ca, sent)
    const provider = new SvidClientCredentialsProvider({ spiffeId: AGENT_ID, issuer, scope: 'orders:read', taskId: 'mcp-task' })
    await provider.pin(fetchFn)
    const client = new Client({ name: 'warrant-e2e-agent', version: '1.0.0' })
    const transport = new StreamableHTTPClientTransport(new URL(ordersUrl), { authProvider: provider, fetch: fetchFn })
    try {
      await client.connect(transport)
      const result = await client.callTool({ name: 'lookup_order', arguments: { order_id: 'A-1001' } })
      const content = result.content as { type: string; text: string }[]
      const answer = JSON.parse(content[0]!.text) as {
        order_id: string
        status: string
        sub: string
        req_wl: string
        tctx: Record<string, unknown>
        saw: { authorization: boolean; dpop: boolean }
      }
      expect(answer).toMatchObject({ order_id: 'A-1001', status: 'shipped', sub: AGENT_ID, req_wl: GATEWAY_ID, tctx: { tool: 'orders', task_id: 'mcp-task' } })
      expect(answer.saw).toEqual({ authorization: false, dpop: false })
    } catch (err) {
      throw new Error(`${String(err)}\n${JSON.stringify(sent, null, 1).replace(JWT_RE, '<jwt>')}\n${gateway!.out.slice(-3000)}\n${mcp!.out.slice(-2000)}`)
    } finally {
      await client.close()
    }

    // 1. the first call: 401 with the RFC 9728 challenge
    expect(sent[0]!.url).toBe(`${issuer}/.well-known/oauth-authorization-server`) // the agent's pin
    const first = sent.find((s) => s.url === ordersUrl)!
    expect([first.method, first.url, first.status, first.authorization]).toEqual(['POST', ordersUrl, 401, null])
    expect(first.wwwAuthenticate).toMatch(
      new RegExp(`^Bearer scope="orders:read", resource_metadata="${gatewayUrl}/\\.well-known/oauth-protected-resource/tools/orders"`),
    )
    // 2. the metadata, then the token request: client_credentials, the task, resource = the tool URL, no secret
    const prm = sent.find((s) => s.url === `${gatewayUrl}/.well-known/oauth-protected-resource/tools/orders`)
    expect(prm?.status).toBe(200)
    const tokenReq = sent.find((s) => s.url === `${issuer}/token`)!
    expect(tokenReq.status).toBe(200)
    const form = new URLSearchParams(tokenReq.body)
    expect(Object.fromEntries(form)).toEqual({
      grant_type: 'client_credentials',
      task_id: 'mcp-task',
      scope: 'orders:read',
      resource: ordersUrl,
      client_id: AGENT_ID,
    })
    // the token: for the tool URL only, bound to the agent's certificate
    const token = provider.tokens()!.access_token
    const claims = JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString('utf8')) as { aud: string | string[]; cnf: Record<string, string> }
    expect([claims.aud].flat()).toEqual([ordersUrl])
    const leaf = source!.getX509Svid().certificates[0]!
    expect(claims.cnf['x5t#S256']).toBe(createHash('sha256').update(leaf).digest('base64url'))
    // 3. every MCP request after the token carried it (Bearer, over mutual TLS) and passed
    const after = sent.filter((s) => s.url === ordersUrl && s.authorization !== null)
    expect(after.length).toBeGreaterThanOrEqual(2)
    expect(after.every((s) => s.authorization === `Bearer ${token}`)).toBe(true)
    // the MCP server: every request it answered carried a Txn-Token for the agent, never the agent's credentials
    const seen = mcpRequests()
    expect(seen.length).toBeGreaterThanOrEqual(2)
    expect(seen.every((r) => !r.authorization && !r.dpop)).toBe(true)
    expect(seen.filter((r) => r.status < 300).every((r) => r.sub === AGENT_ID)).toBe(true)
    // nothing logged a token
    expect(gateway!.out).not.toMatch(JWT_RE)
    expect(mcp!.out).not.toMatch(JWT_RE)
  }, 120_000)

  it('the same token without the certificate it is bound to is refused (401 with the challenge) before the MCP server', async () => {
    const sent: Sent[] = []
    const fetchFn = mtlsFetch(creds, ca, sent)
    const provider = new SvidClientCredentialsProvider({ spiffeId: AGENT_ID, issuer, scope: 'orders:read', taskId: 'mcp-task' })
    await provider.pin(fetchFn)
    const client = new Client({ name: 'warrant-e2e-agent', version: '1.0.0' })
    await client.connect(new StreamableHTTPClientTransport(new URL(ordersUrl), { authProvider: provider, fetch: fetchFn }))
    await client.close()
    const token = provider.tokens()!.access_token
    // no client certificate on this connection
    const r = await new Promise<{ status: number; www: string | undefined }>((resolve, reject) => {
      const req = https.request(
        `${ordersUrl}/stolen-token-probe`,
        {
          method: 'POST',
          ca,
          agent: false,
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        },
        (res) => {
          res.resume()
          res.on('end', () => resolve({ status: res.statusCode ?? 0, www: res.headers['www-authenticate'] }))
        },
      )
      req.on('error', reject)
      req.end('{"jsonrpc":"2.0","id":1,"method":"tools/list"}')
    })
    expect(r.status).toBe(401)
    expect(r.www).toMatch(/^Bearer error="invalid_token", scope="orders:read", resource_metadata="/)
    // the gateway decided before forwarding: the MCP server never had that request
    await waitFor('the refusal in the gateway log', () => gateway!.out.includes('authn.mtls_certificate_missing'), {
      timeoutMs: 10_000,
      hint: () => gateway!.out.slice(-2000),
    })
    expect(mcpRequests().some((q) => q.path.includes('stolen-token-probe'))).toBe(false)
  }, 120_000)
})
