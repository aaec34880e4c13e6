/**
 * `warrant gateway run` with real processes: a server with its embedded
 * broker (the gateway listed in `txn_token_requesters`), an agent, the
 * gateway and a demo tool server, each identified by the agent's unix
 * attestor by its executable (hard links to node). An agent calls the tool
 * through the gateway with its X.509-SVID: the tool sees a Txn-Token that
 * verifies against the broker's JWKS, whose `sub` is the agent and whose
 * path holds the gateway, and none of the agent's credentials; the agent
 * never sees the Txn-Token. A caller outside the tool's `allowed_agents` is
 * refused (403) without the tool being reached; an unknown tool is 404.
 */
import { createHash, X509Certificate } from 'node:crypto'
import https from 'node:https'
import { mkdirSync, readdirSync, readFileSync, realpathSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2E_BIN, E2E_REPO, E2eAgent, E2eServer, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { freePort, nodeLink, Proc } from '../helpers/e2e-procs.js'
import { BrokerClient } from '../../src/broker-client/broker-client.js'
import { WorkloadApiClient } from '../../src/workload-client/workload-api-client.js'
import { X509Source } from '../../src/workload-client/x509-source.js'

const TD = 'gateway.test'
const AGENT_ID = `spiffe://${TD}/agents/a1`
const ROGUE_ID = `spiffe://${TD}/rogue/r1`
const GATEWAY_ID = `spiffe://${TD}/services/gateway`
const TOOL_ID = `spiffe://${TD}/services/echo`
const API_KEY = 'sk_live_e2e_9f8e7d6c5b4a3928'
const JWT_RE = /eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+/

function call(
  url: string,
  o: { ca: string; cert?: string; key?: string; method?: string; body?: string; headers?: Record<string, string> },
): Promise<{ status: number; headers: import('node:http').IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: o.method ?? 'GET',
        headers: { ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}), ...o.headers },
        ca: o.ca,
        ...(o.cert ? { cert: o.cert, key: o.key } : {}),
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      },
    )
    req.on('error', reject)
    req.end(o.body)
  })
}

describe('agentic gateway (warrant gateway run) in front of a tool', () => {
  const tmp = tempDir('wgw-')
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  let gateway: Proc | undefined
  let tool: Proc | undefined
  let gatewayUrl: string
  let issuer: string
  let ca: string
  const ids: Record<string, { cert: string; key: string }> = {}

  const toolRequests = () =>
    tool!.out
      .split('\n')
      .filter((l) => l.startsWith('{"kind":"request"'))
      .map((l) => JSON.parse(l) as { path: string; status: number; sub?: string; reason?: string })

  beforeAll(async () => {
    const brokerPort = await freePort()
    const gatewayPort = await freePort()
    issuer = `https://localhost:${brokerPort}`
    gatewayUrl = `https://localhost:${gatewayPort}`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: [
        '[server.bounds."/agents/"]',
        'scopes = ["tools:echo"]',
        'resources = ["https://echo.gateway.test/"]',
        '[server.bounds."/rogue/"]',
        'scopes = ["tools:echo"]',
        'resources = ["https://echo.gateway.test/"]',
        '',
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${brokerPort}"`,
        `txn_token_requesters = ["${GATEWAY_ID}"]`,
        `credential_readers = ["${GATEWAY_ID}"]`,
      ].join('\n'),
    })
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    const agentId = await agent.attested()
    ca = readFileSync(server.bundlePemPath, 'utf8')

    // identities: the test's own callers by this node's path, the gateway and the tool by their own links
    const bin = join(tmp.dir, 'bin')
    mkdirSync(bin, { recursive: true })
    const gatewayExe = nodeLink(join(bin, 'gw-node'))
    const toolExe = nodeLink(join(bin, 'tool-node'))
    const self = realpathSync(process.execPath)
    for (const [id, exe, dns] of [
      [AGENT_ID, self, []],
      [ROGUE_ID, self, []],
      [GATEWAY_ID, gatewayExe, ['--dns', 'localhost']],
      [TOOL_ID, toolExe, ['--dns', 'localhost']],
    ] as const) {
      const r = await server.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', agentId, '--selector', `unix:path:${exe}`, ...dns])
      expect(r.code, r.stderr).toBe(0)
    }

    // the callers' SVIDs (both served to this node), by their URI SAN
    const out = join(tmp.dir, 'svid')
    await waitFor(
      'both caller SVIDs',
      async () => {
        if ((await agent!.api(['fetch', 'x509', '--write', out])).code !== 0) return false
        for (const f of readdirSync(out).filter((n) => /^svid\.\d+\.pem$/.test(n))) {
          const pem = readFileSync(join(out, f), 'utf8')
          const id = /URI:(spiffe:\/\/\S+?)(,|$)/.exec(new X509Certificate(pem).subjectAltName ?? '')?.[1]
          if (id) ids[id] = { cert: pem, key: readFileSync(join(out, f.replace('.pem', '.key')), 'utf8') }
        }
        return ids[AGENT_ID] !== undefined && ids[ROGUE_ID] !== undefined
      },
      { timeoutMs: 30_000, hint: () => agent!.output() },
    )

    // the tool server, as its own process
    tool = new Proc(toolExe, [
      '--import',
      'tsx',
      join(E2E_REPO, 'test/helpers/demo-tool-server.ts'),
      JSON.stringify({ issuer, trustDomain: `spiffe://${TD}`, ca, socketPath: agent.socketPath }),
    ])
    const toolPort = await waitFor(
      'the tool server',
      () => {
        if (!tool!.running) throw new Error(`tool exited:\n${tool!.out}`)
        const m = /\{"kind":"ready","port":(\d+),"spiffe_id":"([^"]+)"/.exec(tool!.out)
        if (m) expect(m[2]).toBe(TOOL_ID)
        return m ? Number(m[1]) : undefined
      },
      { timeoutMs: 60_000, hint: () => tool!.out },
    )

    // the tool registry and the gateway
    const tools = join(tmp.dir, 'tools')
    mkdirSync(tools)
    writeFileSync(
      join(tools, 'echo.json'),
      JSON.stringify({
        client_id: 'https://tools.gateway.test/echo',
        client_name: 'Echo',
        warrant_tool: {
          name: 'echo',
          endpoint: `https://localhost:${toolPort}/v1`,
          audience: 'https://echo.gateway.test/',
          scopes: ['tools:echo'],
          allowed_agents: ['spiffe://gateway.test/agents/'],
        },
      }),
    )
    // credential shielding: a tool that takes only a static API key, held sealed by the broker
    writeFileSync(
      join(tools, 'vault.json'),
      JSON.stringify({
        client_id: 'https://tools.gateway.test/vault',
        client_name: 'Vault-keyed echo',
        warrant_tool: {
          name: 'vault',
          endpoint: `https://localhost:${toolPort}/v1`,
          audience: 'https://echo.gateway.test/',
          scopes: ['tools:echo'],
          allowed_agents: ['spiffe://gateway.test/agents/'],
          credential: true,
        },
      }),
    )
    writeFileSync(join(tmp.dir, 'api-key'), `${API_KEY}\n`, { mode: 0o600 })
    const put = await warrant([
      'credential',
      'put',
      '--tool',
      'vault',
      '--header',
      'X-Api-Key',
      '--value-file',
      join(tmp.dir, 'api-key'),
      '--socket',
      join(server.dataDir, 'private', 'broker-admin.sock'),
      '--output',
      'json',
    ])
    expect(put.code, put.stderr).toBe(0)
    expect(JSON.parse(put.stdout)).toMatchObject({ tool: 'vault', header: 'x-api-key', version: 1 })
    expect(put.stdout + put.stderr).not.toContain(API_KEY)
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
    const valid = await warrant(['gateway', 'validate', '--config', cfg])
    expect(valid.code, valid.stderr).toBe(0)
    gateway = new Proc(gatewayExe, [E2E_BIN, 'gateway', 'run', '--config', cfg])
    await waitFor(
      'the gateway to listen',
      () => {
        if (!gateway!.running) throw new Error(`gateway exited:\n${gateway!.out.slice(-4000)}`)
        return gateway!.out.includes('Gateway started')
      },
      { timeoutMs: 60_000, hint: () => gateway!.out },
    )
    expect(gateway.out).toContain(GATEWAY_ID)
  }, 240_000)

  afterAll(async () => {
    await gateway?.stop()
    await tool?.stop()
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('an allowed agent over mTLS reaches the tool with a valid Txn-Token (sub = the agent, the gateway on its path) and never sees it', async () => {
    const r = await call(`${gatewayUrl}/tools/echo/hello?x=1`, {
      ca,
      ...ids[AGENT_ID]!,
      method: 'POST',
      body: '{"q":"hi"}',
      headers: { 'txn-purpose': 'e2e', 'txn-token': 'forged-by-the-agent' },
    })
    expect(r.status, `${r.body}\n${gateway!.out.slice(-3000)}`).toBe(200)
    const b = JSON.parse(r.body) as {
      sub: string
      scope: string
      path: string
      body: string
      req_wl: string
      txn_path: { wl: string }[]
      tctx: Record<string, unknown>
      saw: { authorization: boolean; dpop: boolean }
    }
    expect(b.sub).toBe(AGENT_ID)
    expect(b.scope).toBe('tools:echo')
    expect(b.txn_path.map((h) => h.wl)).toContain(GATEWAY_ID)
    expect(b.req_wl).toBe(GATEWAY_ID)
    expect(b.tctx).toMatchObject({ tool: 'echo', purpose: 'e2e' })
    expect(b.path).toBe('/v1/hello?x=1')
    expect(b.body).toBe('{"q":"hi"}')
    expect(b.saw).toEqual({ authorization: false, dpop: false })
    // the agent's response carries no Txn-Token: neither the header the tool set nor a JWT anywhere
    expect(r.headers['txn-token']).toBeUndefined()
    expect(JSON.stringify(r.headers)).not.toMatch(JWT_RE)
    expect(r.body).not.toMatch(JWT_RE)
    expect(toolRequests().at(-1)).toMatchObject({ status: 200, sub: AGENT_ID })
    // and the gateway logged no token
    expect(gateway!.out).not.toMatch(JWT_RE)
  }, 60_000)

  it("a caller outside the tool's allowed_agents is refused (403) and the tool is never reached", async () => {
    const before = toolRequests().length
    const r = await call(`${gatewayUrl}/tools/echo/hello`, { ca, ...ids[ROGUE_ID]! })
    expect(r.status).toBe(403)
    expect(JSON.parse(r.body)).toEqual({ error: 'access_denied' })
    await new Promise((res) => setTimeout(res, 300))
    expect(toolRequests().length).toBe(before)
    expect(gateway!.out).toContain('agent_not_allowed')
  }, 30_000)

  it('an unknown tool is 404, and a caller without credentials is 401', async () => {
    const r = await call(`${gatewayUrl}/tools/nope/x`, { ca, ...ids[AGENT_ID]! })
    expect(r.status).toBe(404)
    expect(JSON.parse(r.body)).toEqual({ error: 'not_found' })
    const anon = await call(`${gatewayUrl}/tools/echo/x`, { ca })
    expect(anon.status).toBe(401)
  }, 30_000)

  it('an agent with a DPoP-bound broker token (its task) reaches the tool; the Txn-Token carries the task; without the proof: 401', async () => {
    const task = await warrant([
      'task',
      'create',
      '--socket',
      join(server!.dataDir, 'private', 'broker-admin.sock'),
      '--agent',
      `spiffe://${TD}/agents/`,
      '--scope',
      'tools:echo',
      '--resource',
      'https://echo.gateway.test/',
      '--ttl',
      '1h',
      '--task-id',
      'gw-task',
      '--output',
      'json',
    ])
    expect(task.code, task.stderr).toBe(0)
    const source = await X509Source.create({
      client: new WorkloadApiClient({ socketPath: agent!.socketPath }),
      picker: (svids) => svids.find((s) => s.id.toString() === AGENT_ID)!,
    })
    const broker = await BrokerClient.create({ issuer, source, ca })
    try {
      const t = await broker.requestToken({ taskId: 'gw-task', scopes: ['tools:echo'], resources: ['https://echo.gateway.test/'] })
      expect(t.tokenType).toBe('DPoP')
      const res = await broker.fetchWithToken(`${gatewayUrl}/tools/echo/with-token`, { method: 'GET' }, t)
      const text = await res.text()
      expect(res.status, `${text}\n${gateway!.out.slice(-3000)}`).toBe(200)
      const b = JSON.parse(text) as { sub: string; path: string; tctx: Record<string, unknown>; rctx: Record<string, unknown>; saw: unknown }
      expect(b).toMatchObject({ sub: AGENT_ID, path: '/v1/with-token', tctx: { tool: 'echo', task_id: 'gw-task' }, rctx: { authn: 'access_token' } })
      expect(b.saw).toEqual({ authorization: false, dpop: false })
      expect(res.headers.get('txn-token')).toBeNull()
      // the token without its DPoP proof (and no client certificate): refused before the tool
      const before = toolRequests().length
      const bare = await call(`${gatewayUrl}/tools/echo/with-token`, { ca, headers: { authorization: `DPoP ${t.value}` } })
      expect(bare.status).toBe(401)
      expect(bare.headers['www-authenticate']).toContain('DPoP')
      expect(toolRequests().length).toBe(before)
    } finally {
      await broker.close()
      await source.close()
    }
  }, 60_000)

  it('every call, allowed or refused, is one gateway.call event in the gateway audit log (actor, tool, txn, decision, reason)', async () => {
    const r = await warrant(['audit', 'search', '--log', join(tmp.dir, 'g', 'audit.sqlite3'), '--type', 'gateway.call', '--output', 'json'])
    expect(r.code, r.stderr + r.stdout).toBe(0)
    expect(r.stdout).not.toMatch(JWT_RE)
    type Ev = { outcome: string; reason?: string; actor?: { spiffe_id: string }; token_id?: string; attributes?: Record<string, unknown> }
    const events = (JSON.parse(r.stdout) as { event: Ev }[]).map((e) => e.event)
    const allowed = events.filter((e) => e.outcome === 'success')
    expect(allowed).toHaveLength(2)
    expect(allowed[0]).toMatchObject({ actor: { spiffe_id: AGENT_ID }, attributes: { tool: 'echo', authn: 'x509-svid' } })
    expect(allowed[1]).toMatchObject({ actor: { spiffe_id: AGENT_ID }, attributes: { tool: 'echo', authn: 'access-token' } })
    expect(allowed[0]!.token_id).toMatch(/^[0-9a-f-]{36}$/)
    expect(allowed[0]!.attributes!['txn']).toMatch(/^[0-9a-f-]{36}$/)
    expect(events.filter((e) => e.outcome === 'refused').map((e) => [e.actor?.spiffe_id ?? null, e.reason])).toEqual([
      [ROGUE_ID, 'agent_not_allowed'],
      [AGENT_ID, 'tool_unknown'],
      [null, 'authn.no_credentials'],
      [null, expect.stringMatching(/^authn\./)],
    ])
  }, 30_000)

  it('credential shielding: the tool gets its static key from the gateway, the agent never sees it and cannot supply its own', async () => {
    const r = await call(`${gatewayUrl}/tools/vault/hello`, { ca, ...ids[AGENT_ID]!, headers: { 'x-api-key': 'chosen-by-the-agent' } })
    expect(r.status, `${r.body}\n${gateway!.out.slice(-3000)}`).toBe(200)
    const b = JSON.parse(r.body) as { api_key_sha256?: string; sub: string }
    expect(b.sub).toBe(AGENT_ID)
    expect(b.api_key_sha256).toBe(createHash('sha256').update(API_KEY).digest('hex'))
    expect(JSON.stringify(r.headers) + r.body).not.toContain(API_KEY)
    expect(gateway!.out).not.toContain(API_KEY)
    expect(server!.output()).not.toContain(API_KEY)
    // the release endpoint is the gateway's only: the agent itself is refused, and learns nothing
    const direct = await call(`${issuer}/credentials/release`, {
      ca,
      ...ids[AGENT_ID]!,
      method: 'POST',
      body: 'tool=vault',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
    })
    expect(direct.status).toBe(400)
    expect(JSON.parse(direct.body)).toMatchObject({ error: 'unauthorized_client' })
    expect(direct.body).not.toContain(API_KEY)
    // a tool without credential: true gets no key (the agent's header passes as any other)
    const plain = await call(`${gatewayUrl}/tools/echo/hello`, { ca, ...ids[AGENT_ID]! })
    expect((JSON.parse(plain.body) as { api_key_sha256?: string }).api_key_sha256).toBeUndefined()
  }, 60_000)
})
