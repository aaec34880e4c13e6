/**
 * The gateway's wire in process: real TLS (a test CA, SVIDs for the gateway,
 * agents and the tool), a recording tool server, a fake broker and audit
 * sink. Each refusal is checked to stop the call before the tool.
 */
import https from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { AuditEventInput } from '../../../src/audit/event.js'
import { nullLogger, type Logger } from '../../../src/common/log/logger.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { startGatewayServer, type GatewayServer } from '../../../src/gateway/gateway-server.js'
import { ToolRegistry } from '../../../src/gateway/registry.js'
import type { IssuedTxnToken } from '../../../src/gateway/txn-token-client.js'
import type { Ceiling } from '../../../src/spiffe/bounds/ceiling.js'
import { MemoryReplayCache } from '../../../src/tokens/dpop.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'
import { bundlesOf, makeCa, makeSvid, pem, type Ca, type Svid } from '../../helpers/broker-http-fixtures.js'
import { makeRoot, webCredentials } from '../server/federation/pki.js'

const TD = 'gw.test'
/** What the gateway logged (every level, with its fields). */
const logged: { level: string; msg: string; fields: Record<string, unknown> }[] = []
const capturingAt = (bound: Record<string, unknown>): Logger => {
  const at = (level: string) => (fields: Record<string, unknown>, msg: string) => void logged.push({ level, msg, fields: { ...bound, ...fields } })
  return { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), child: (f) => capturingAt({ ...bound, ...f }) }
}
const capturing = capturingAt({})
const AGENT = `spiffe://${TD}/agents/a1`

interface Seen {
  method: string
  url: string
  headers: IncomingHttpHeaders
  body: string
}

function call(
  port: number,
  path: string,
  o: { ca: string; svid?: Svid; method?: string; body?: string; headers?: Record<string, string> },
): Promise<{ status: number; headers: IncomingHttpHeaders; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        servername: 'localhost',
        port,
        path,
        method: o.method ?? 'GET',
        headers: o.headers,
        ca: o.ca,
        agent: false,
        ...(o.svid ? { cert: o.svid.certPem, key: o.svid.keyPem } : {}),
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(o.body)
  })
}

describe('gateway server', () => {
  let ca: Ca
  let foreign: Ca
  let caPem: string
  const svids: Record<string, Svid> = {}
  let tool: https.Server
  let gw: GatewayServer
  let gwWithCa: GatewayServer
  let webTool: https.Server
  let wrongName: https.Server
  let impostor: https.Server
  const seen: Seen[] = []
  const events: AuditEventInput[] = []
  const broker = { fail: undefined as IdentityError | undefined, calls: 0 }
  let auditDown = false

  beforeAll(async () => {
    ca = await makeCa(TD)
    foreign = await makeCa('other.test')
    caPem = pem(ca.certificate)
    for (const id of [AGENT, `spiffe://${TD}/rogue/r1`, `spiffe://${TD}/services/gateway`, `spiffe://${TD}/services/tool`])
      svids[id] = await makeSvid(ca, id, { dnsNames: ['localhost'] })
    svids['foreign'] = await makeSvid(foreign, 'spiffe://other.test/agents/a1')
    const toolSvid = svids[`spiffe://${TD}/services/tool`]!
    tool = https.createServer({ cert: toolSvid.certPem, key: toolSvid.keyPem }, (req, res) => {
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') })
        res.writeHead(201, { 'content-type': 'text/plain', 'txn-token': String(req.headers['txn-token']), connection: 'close' })
        res.end('tool says hi')
      })
    })
    await new Promise<void>((r) => tool.listen(0, '127.0.0.1', () => r()))
    const toolPort = (tool.address() as AddressInfo).port
    // a tool with an ordinary web certificate (no SVID), from its own CA
    const webCa = await makeRoot('web-ca.test')
    const web = await webCredentials(webCa)
    webTool = https.createServer({ cert: web.certChainPem, key: web.keyPem }, (req, res) => {
      req.resume()
      req.on('end', () => {
        seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: '' })
        res.writeHead(200, { 'content-type': 'text/plain' })
        res.end('web tool')
      })
    })
    await new Promise<void>((r) => webTool.listen(0, '127.0.0.1', () => r()))
    const webPort = (webTool.address() as AddressInfo).port
    // the same CA, a certificate for another name
    const other = await webCredentials(webCa, { dns: ['elsewhere.test'] })
    wrongName = https.createServer({ cert: other.certChainPem, key: other.keyPem }, (req, res) => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: '' })
      res.end()
    })
    await new Promise<void>((r) => wrongName.listen(0, '127.0.0.1', () => r()))
    const wrongPort = (wrongName.address() as AddressInfo).port
    // an SVID naming this trust domain, signed by another trust domain's CA (which OpenSSL trusts: it is in the bundles)
    const impostorSvid = await makeSvid(foreign, `spiffe://${TD}/services/tool`, { dnsNames: ['localhost'] })
    impostor = https.createServer({ cert: impostorSvid.certPem, key: impostorSvid.keyPem }, (req, res) => {
      seen.push({ method: req.method!, url: req.url!, headers: req.headers, body: '' })
      res.end()
    })
    await new Promise<void>((r) => impostor.listen(0, '127.0.0.1', () => r()))
    const impostorPort = (impostor.address() as AddressInfo).port
    const registry = ToolRegistry.fromDocuments([
      {
        source: 'echo.json',
        text: JSON.stringify({
          client_id: 'https://tools/echo',
          client_name: 'Echo',
          warrant_tool: {
            name: 'echo',
            endpoint: `https://localhost:${toolPort}/base`,
            audience: 'https://echo/',
            scopes: ['echo'],
            allowed_agents: [`spiffe://${TD}/agents/`, 'spiffe://other.test/agents/'],
          },
        }),
      },
      {
        source: 'web.json',
        text: JSON.stringify({
          client_id: 'https://tools/web',
          client_name: 'Web',
          warrant_tool: {
            name: 'web',
            endpoint: `https://localhost:${webPort}`,
            audience: 'https://echo/',
            scopes: ['echo'],
            allowed_agents: [`spiffe://${TD}/agents/`],
          },
        }),
      },
      {
        source: 'web-by-ip.json',
        text: JSON.stringify({
          client_id: 'https://tools/web-by-ip',
          client_name: 'Web by a name its certificate lacks',
          warrant_tool: {
            name: 'web-by-ip',
            endpoint: `https://localhost:${wrongPort}`,
            audience: 'https://echo/',
            scopes: ['echo'],
            allowed_agents: [`spiffe://${TD}/agents/`],
          },
        }),
      },
      {
        source: 'impostor.json',
        text: JSON.stringify({
          client_id: 'https://tools/impostor',
          client_name: 'Impostor',
          warrant_tool: {
            name: 'impostor',
            endpoint: `https://localhost:${impostorPort}`,
            audience: 'https://echo/',
            scopes: ['echo'],
            allowed_agents: [`spiffe://${TD}/agents/`],
          },
        }),
      },
      {
        source: 'down.json',
        text: JSON.stringify({
          client_id: 'https://tools/down',
          client_name: 'Down',
          warrant_tool: {
            name: 'down',
            endpoint: 'https://localhost:1',
            audience: 'https://echo/',
            scopes: ['echo'],
            allowed_agents: [`spiffe://${TD}/agents/`],
          },
        }),
      },
    ])
    const bundles = bundlesOf([ca, foreign])
    const gwSvid = svids[`spiffe://${TD}/services/gateway`]!
    const ceiling: Ceiling = { scopes: ['echo'], resources: ['https://echo/'], maxDelegationDepth: 5, mayDelegateTo: [], allowBearer: false, prefixes: [] }
    let n = 0
    const start = (toolCa?: string) =>
      startGatewayServer({
        host: '127.0.0.1',
        port: 0,
        url: 'https://localhost:1',
        identity: { current: () => ({ certChainPem: gwSvid.certPem, keyPem: gwSvid.keyPem }), onChange: () => () => {} },
        trust: { localTrustDomain: () => ca.td, bundles: () => bundles, authoritiesPem: () => caPem + pem(foreign.certificate) },
        federatedTrustDomains: [],
        registry: () => registry,
        ceilingFor: () => ceiling,
        broker: {
          issuer: 'https://broker',
          keys: new JwksCache({ fetchJwks: () => Promise.resolve({ keys: [] }) }),
          replay: new MemoryReplayCache(),
          allowBearer: false,
          txnToken: (): Promise<IssuedTxnToken> => {
            broker.calls++
            if (broker.fail) return Promise.reject(broker.fail)
            n++
            return Promise.resolve({ token: `txn.token.${n}`, exp: Math.floor(Date.now() / 1000) + 60, jti: `j${n}`, txn: `t${n}`, cached: false })
          },
        },
        audit: {
          append: (e) => {
            if (auditDown) return Promise.reject(new IdentityError('ERR_AUDIT_UNAVAILABLE', 'down'))
            events.push(e)
            return Promise.resolve({ seq: events.length, leafIndex: events.length - 1, chainHash: '00', time: new Date().toISOString() })
          },
        },
        limits: { headerBytes: 16384, bodyBytes: 1024, requestTimeoutMs: 10_000, upstreamTimeoutMs: 5_000, maxConnectionsPerAddress: 100 },
        log: toolCa === undefined ? capturing : nullLogger,
        ...(toolCa !== undefined ? { toolCa } : {}),
      })
    gw = await start()
    gwWithCa = await start(pem(webCa.certificate))
  })

  afterAll(async () => {
    await gw.close()
    await gwWithCa.close()
    await new Promise<void>((r) => tool.close(() => r()))
    await new Promise<void>((r) => webTool.close(() => r()))
    await new Promise<void>((r) => wrongName.close(() => r()))
    await new Promise<void>((r) => impostor.close(() => r()))
  })

  beforeEach(() => {
    seen.length = 0
    events.length = 0
    broker.fail = undefined
    broker.calls = 0
    auditDown = false
  })

  it("forwards an allowed agent's call with the gateway's Txn-Token only, streams the body, and returns no Txn-Token", async () => {
    const r = await call(gw.port, '/tools/echo/x/y?q=1', {
      ca: caPem,
      svid: svids[AGENT]!,
      method: 'POST',
      body: 'payload',
      headers: { 'txn-token': 'forged', authorization: 'Basic Zm9vOmJhcg==', 'x-keep': 'yes' },
    })
    // an Authorization header is taken as a token and verified: Basic is refused before the tool
    expect(r.status).toBe(401)
    expect(seen).toHaveLength(0)
    const ok = await call(gw.port, '/tools/echo/x/y?q=1', {
      ca: caPem,
      svid: svids[AGENT]!,
      method: 'POST',
      body: 'payload',
      headers: { 'txn-token': 'forged', 'x-keep': 'yes' },
    })
    expect(ok.status).toBe(201)
    expect(ok.body).toBe('tool says hi')
    expect(ok.headers['txn-token']).toBeUndefined()
    expect(seen).toHaveLength(1)
    expect(seen[0]).toMatchObject({ method: 'POST', url: '/base/x/y?q=1', body: 'payload' })
    expect(seen[0]!.headers['txn-token']).toBe('txn.token.1')
    expect(seen[0]!.headers['x-keep']).toBe('yes')
    expect(seen[0]!.headers.authorization).toBeUndefined()
    expect(events.at(-1)).toMatchObject({
      type: 'gateway.call',
      outcome: 'success',
      actor: { spiffe_id: AGENT },
      token_id: 'j1',
      attributes: { tool: 'echo', txn: 't1', authn: 'x509-svid' },
    })
  })

  it("logs where a forwarded call's time went (debug: each phase in order, in ms) and never the Txn-Token", async () => {
    logged.length = 0
    const ok = await call(gw.port, '/tools/echo/p', { ca: caPem, svid: svids[AGENT]!, method: 'POST', body: 'x' })
    expect(ok.status).toBe(201)
    // logged when the tool's answer ends, which may be just after the agent has it
    let line = logged.find((l) => l.msg === 'Gateway call forwarded')
    for (let i = 0; i < 200 && line === undefined; i++) {
      await new Promise((r) => setTimeout(r, 10))
      line = logged.find((l) => l.msg === 'Gateway call forwarded')
    }
    if (line === undefined) throw new Error('no forwarded line')
    const phases = line.fields['phases'] as Record<string, number>
    expect(Object.keys(phases)).toEqual(['authn_ms', 'policy_ms', 'txn_token_ms', 'audit_ms', 'tool_headers_ms', 'tool_body_ms'])
    expect(Object.values(phases).every((v) => typeof v === 'number' && v >= 0)).toBe(true)
    expect(JSON.stringify(logged)).not.toContain('txn.token.')
  })

  it('refuses a caller outside allowed_agents (403) without asking the broker or reaching the tool', async () => {
    const r = await call(gw.port, '/tools/echo/x', { ca: caPem, svid: svids[`spiffe://${TD}/rogue/r1`]! })
    expect(r.status).toBe(403)
    expect(JSON.parse(r.body)).toEqual({ error: 'access_denied' })
    expect(broker.calls).toBe(0)
    expect(seen).toHaveLength(0)
    expect(events.at(-1)).toMatchObject({ outcome: 'refused', reason: 'agent_not_allowed' })
  })

  it('refuses an SVID of a trust domain that is not admitted, even one whose bundle it holds (401)', async () => {
    const r = await call(gw.port, '/tools/echo/x', { ca: caPem, svid: svids['foreign']! })
    expect(r.status).toBe(401)
    expect(seen).toHaveLength(0)
    expect(events.at(-1)).toMatchObject({ outcome: 'refused' })
  })

  it('does not forward a call whose audit event is not durable (503)', async () => {
    auditDown = true
    const r = await call(gw.port, '/tools/echo/x', { ca: caPem, svid: svids[AGENT]! })
    expect(r.status).toBe(503)
    expect(seen).toHaveLength(0)
  })

  it('refuses (403) when the broker refuses the Txn-Token, and answers 503 when it is unreachable; the tool is not reached', async () => {
    broker.fail = new IdentityError('ERR_GRANT_INVALID', 'refused', { details: { oauth_error: 'invalid_grant', status: 400 } })
    const refused = await call(gw.port, '/tools/echo/x', { ca: caPem, svid: svids[AGENT]! })
    expect(refused.status).toBe(403)
    expect(events.at(-1)).toMatchObject({ outcome: 'refused', reason: 'txn_token.invalid_grant' })
    broker.fail = new IdentityError('ERR_UNAVAILABLE', 'down')
    const down = await call(gw.port, '/tools/echo/x', { ca: caPem, svid: svids[AGENT]! })
    expect(down.status).toBe(503)
    expect(seen).toHaveLength(0)
  })

  it('an unknown tool is 404, a body over the limit 413, an unreachable tool 502', async () => {
    expect((await call(gw.port, '/tools/nope/x', { ca: caPem, svid: svids[AGENT]! })).status).toBe(404)
    expect((await call(gw.port, '/elsewhere', { ca: caPem, svid: svids[AGENT]! })).status).toBe(404)
    const big = await call(gw.port, '/tools/echo/x', { ca: caPem, svid: svids[AGENT]!, method: 'POST', body: 'x'.repeat(4096) })
    expect(big.status).toBe(413)
    expect(broker.calls).toBe(0)
    expect(events.at(-1)).toMatchObject({ outcome: 'refused', reason: 'body_too_large' })
    // without a content-length, the body is cut while it streams
    const chunked = await call(gw.port, '/tools/echo/x', {
      ca: caPem,
      svid: svids[AGENT]!,
      method: 'POST',
      body: 'x'.repeat(4096),
      headers: { 'transfer-encoding': 'chunked' },
    })
    expect(chunked.status).toBe(413)
    expect((await call(gw.port, '/tools/down/x', { ca: caPem, svid: svids[AGENT]! })).status).toBe(502)
  })

  it('verifies a tool without an SVID only against the configured tool CA and its host name (502 otherwise); an SVID tool still by its bundle', async () => {
    expect((await call(gw.port, '/tools/web/x', { ca: caPem, svid: svids[AGENT]! })).status).toBe(502)
    expect(seen).toHaveLength(0)
    const ok = await call(gwWithCa.port, '/tools/web/x', { ca: caPem, svid: svids[AGENT]! })
    expect(ok.status).toBe(200)
    expect(ok.body).toBe('web tool')
    expect((await call(gwWithCa.port, '/tools/web-by-ip/x', { ca: caPem, svid: svids[AGENT]! })).status).toBe(502)
    expect((await call(gwWithCa.port, '/tools/echo/x', { ca: caPem, svid: svids[AGENT]! })).status).toBe(201)
    expect(seen).toHaveLength(2)
    // an SVID is checked against the bundle of its own trust domain, not any trusted CA
    expect((await call(gw.port, '/tools/impostor/x', { ca: caPem, svid: svids[AGENT]! })).status).toBe(502)
    expect(seen).toHaveLength(2)
  })
})
