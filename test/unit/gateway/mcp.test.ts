/**
 * The gateway as the OAuth resource server of MCP tools: the RFC 9728
 * metadata document and its well-known path, the `WWW-Authenticate`
 * challenges (401 with `resource_metadata`, 403 `insufficient_scope` with
 * `scope`), and the RFC 8707 audience check. Pure functions first, then the
 * wire: a real gateway (test CA, SVIDs, a recording tool, a fake broker)
 * and access tokens of a test issuer, each refusal stopping before the tool.
 */
import https from 'node:https'
import type { IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { extractWWWAuthenticateParams } from '@modelcontextprotocol/sdk/client/auth.js'
import { OAuthProtectedResourceMetadataSchema } from '@modelcontextprotocol/sdk/shared/auth.js'
import { checkResourceAllowed } from '@modelcontextprotocol/sdk/shared/auth-utils.js'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { nullLogger } from '../../../src/common/log/logger.js'
import { startGatewayServer, type GatewayServer } from '../../../src/gateway/gateway-server.js'
import {
  isMetadataPath,
  mcpChallenge,
  mcpMetadataUrl,
  mcpResource,
  metadataAnswer,
  protectedResourceMetadata,
  schemeOf,
  type McpContext,
} from '../../../src/gateway/mcp.js'
import { parseToolDocument, ToolRegistry, type Tool } from '../../../src/gateway/registry.js'
import type { IssuedTxnToken } from '../../../src/gateway/txn-token-client.js'
import type { Ceiling } from '../../../src/spiffe/bounds/ceiling.js'
import { MemoryReplayCache, x5tS256 } from '../../../src/tokens/dpop.js'
import { bundlesOf, makeCa, makeSvid, pem, type Ca, type Svid } from '../../helpers/broker-http-fixtures.js'
import { ISSUER, testIssuer, type TestIssuer } from '../tokens/token-fixtures.js'

const TD = 'mcp.test'
const AGENT = `spiffe://${TD}/agents/a1`
const ORIGIN = 'https://localhost:1'

function toolDoc(name: string, extra: Record<string, unknown>, scopes = ['orders:read']): { source: string; text: string } {
  return {
    source: `${name}.json`,
    text: JSON.stringify({
      client_id: `https://tools/${name}`,
      client_name: `The ${name} tool`,
      warrant_tool: { name, endpoint: 'https://localhost:9/mcp', audience: 'https://orders/', scopes, allowed_agents: [`spiffe://${TD}/agents/`], ...extra },
    }),
  }
}

const ctx: McpContext = { origin: ORIGIN, issuer: ISSUER, dpopAlgorithms: ['ES256', 'EdDSA'] }

describe('MCP protected resource metadata and challenges (pure)', () => {
  const orders = parseToolDocument('orders.json', toolDoc('orders', { mcp: true }, ['orders:read', 'orders:write']).text)
  const plain = parseToolDocument('plain.json', toolDoc('plain', {}).text)
  const lookup = (n: string): Tool | undefined => ({ orders, plain })[n]

  it('the registry takes "mcp" as a boolean only', () => {
    expect(orders.mcp).toBe(true)
    expect(plain.mcp).toBeUndefined()
    expect(() => parseToolDocument('x.json', toolDoc('x', { mcp: 'yes' }).text)).toThrow(/warrant_tool\.mcp/)
  })

  it('the metadata document (RFC 9728 §2): the tool URL as resource, the broker as the one authorization server, its scopes, header only, bound tokens', () => {
    expect(protectedResourceMetadata(orders, ctx)).toEqual({
      resource: 'https://localhost:1/tools/orders',
      authorization_servers: [ISSUER],
      scopes_supported: ['orders:read', 'orders:write'],
      bearer_methods_supported: ['header'],
      resource_name: 'The orders tool',
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA'],
      dpop_bound_access_tokens_required: false,
      tls_client_certificate_bound_access_tokens: true,
    })
    // RFC 9728 §3.1: the well-known path inserted between the host and the resource's path
    expect(mcpResource(ORIGIN, orders)).toBe('https://localhost:1/tools/orders')
    expect(mcpMetadataUrl(ORIGIN, orders)).toBe('https://localhost:1/.well-known/oauth-protected-resource/tools/orders')
  })

  it('is served at exactly /.well-known/oauth-protected-resource/tools/<name> of an MCP tool; anything else is 404, other methods 405', () => {
    const ok = metadataAnswer('GET', '/.well-known/oauth-protected-resource/tools/orders', lookup, ctx)
    expect([ok.status, ok.headers['content-type'], JSON.parse(ok.body).resource]).toEqual([200, 'application/json', 'https://localhost:1/tools/orders'])
    for (const p of [
      '/.well-known/oauth-protected-resource',
      '/.well-known/oauth-protected-resource/tools/plain',
      '/.well-known/oauth-protected-resource/tools/nope',
      '/.well-known/oauth-protected-resource/tools/orders/mcp',
      '/.well-known/oauth-protected-resource/orders',
    ])
      expect([p, metadataAnswer('GET', p, lookup, ctx).status]).toEqual([p, 404])
    expect(metadataAnswer('POST', '/.well-known/oauth-protected-resource/tools/orders', lookup, ctx).status).toBe(405)
    expect(isMetadataPath('/.well-known/oauth-protected-resource')).toBe(true)
    expect(isMetadataPath('/.well-known/oauth-protected-resource/tools/orders')).toBe(true)
    expect(isMetadataPath('/.well-known/oauth-protected-resourcex')).toBe(false)
    expect(isMetadataPath('/tools/orders')).toBe(false)
  })

  it('the challenge: Bearer first with resource_metadata and scope, DPoP with algs; the error on the scheme the request used, none without credentials', () => {
    const md = 'resource_metadata="https://localhost:1/.well-known/oauth-protected-resource/tools/orders"'
    expect(mcpChallenge(orders, ctx)).toBe(`Bearer scope="orders:read orders:write", ${md}, DPoP scope="orders:read orders:write", ${md}, algs="ES256 EdDSA"`)
    expect(mcpChallenge(orders, ctx, { error: 'invalid_token', scheme: 'bearer' })).toBe(
      `Bearer error="invalid_token", scope="orders:read orders:write", ${md}, DPoP scope="orders:read orders:write", ${md}, algs="ES256 EdDSA"`,
    )
    expect(mcpChallenge(orders, ctx, { error: 'invalid_token', scheme: 'dpop' })).toBe(
      `Bearer scope="orders:read orders:write", ${md}, DPoP error="invalid_token", scope="orders:read orders:write", ${md}, algs="ES256 EdDSA"`,
    )
    expect([schemeOf('Bearer x'), schemeOf('dpop x'), schemeOf('Basic x'), schemeOf(undefined)]).toEqual(['bearer', 'dpop', undefined, undefined])
  })

  it('the official MCP SDK reads them: the metadata parses, the tool URL (and paths under it) is the resource, the challenge yields the metadata URL, scope and error', () => {
    const md = OAuthProtectedResourceMetadataSchema.parse(protectedResourceMetadata(orders, ctx))
    expect(md.authorization_servers).toEqual([ISSUER])
    for (const url of ['https://localhost:1/tools/orders', 'https://localhost:1/tools/orders/mcp'])
      expect(checkResourceAllowed({ requestedResource: url, configuredResource: md.resource })).toBe(true)
    expect(checkResourceAllowed({ requestedResource: 'https://localhost:1/tools/billing', configuredResource: md.resource })).toBe(false)
    const res = (www: string) => new Response(null, { status: 401, headers: { 'www-authenticate': www } })
    expect(extractWWWAuthenticateParams(res(mcpChallenge(orders, ctx)))).toEqual({
      resourceMetadataUrl: new URL(mcpMetadataUrl(ORIGIN, orders)),
      scope: 'orders:read orders:write',
      error: undefined,
    })
    expect(extractWWWAuthenticateParams(res(mcpChallenge(orders, ctx, { error: 'insufficient_scope' })))).toMatchObject({ error: 'insufficient_scope' })
  })
})

interface Seen {
  url: string
  headers: IncomingHttpHeaders
}

function call(
  port: number,
  path: string,
  o: { ca: string; svid?: Svid; method?: string; headers?: Record<string, string> },
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
    req.end()
  })
}

describe('MCP tools at the gateway (wire)', () => {
  let ca: Ca
  let caPem: string
  let agent: Svid
  let other: Svid
  let tool: https.Server
  let gw: GatewayServer
  let issuer: TestIssuer
  let origin: string
  const seen: Seen[] = []
  const broker = { calls: 0 }

  beforeAll(async () => {
    ca = await makeCa(TD)
    caPem = pem(ca.certificate)
    agent = await makeSvid(ca, AGENT)
    other = await makeSvid(ca, `spiffe://${TD}/agents/a2`)
    const gwSvid = await makeSvid(ca, `spiffe://${TD}/services/gateway`, { dnsNames: ['localhost'] })
    const toolSvid = await makeSvid(ca, `spiffe://${TD}/services/orders`, { dnsNames: ['localhost'] })
    issuer = await testIssuer()
    tool = https.createServer({ cert: toolSvid.certPem, key: toolSvid.keyPem }, (req, res) => {
      req.resume()
      req.on('end', () => {
        seen.push({ url: req.url!, headers: req.headers })
        res.writeHead(200, { 'content-type': 'application/json', connection: 'close' })
        res.end('{"jsonrpc":"2.0","id":1,"result":{}}')
      })
    })
    await new Promise<void>((r) => tool.listen(0, '127.0.0.1', () => r()))
    const toolPort = (tool.address() as AddressInfo).port
    const doc = (name: string, mcp: boolean) => ({
      source: `${name}.json`,
      text: JSON.stringify({
        client_id: `https://tools/${name}`,
        client_name: name,
        warrant_tool: {
          name,
          endpoint: `https://localhost:${toolPort}/mcp`,
          audience: 'https://orders/',
          scopes: ['orders:read'],
          allowed_agents: [`spiffe://${TD}/agents/`],
          ...(mcp ? { mcp: true } : {}),
        },
      }),
    })
    const registry = ToolRegistry.fromDocuments([doc('orders', true), doc('billing', true), doc('plain', false)])
    const ceiling: Ceiling = {
      scopes: ['orders:read'],
      resources: ['https://orders/'],
      maxDelegationDepth: 5,
      mayDelegateTo: [],
      allowBearer: false,
      prefixes: [],
    }
    // the gateway's url must be known before it listens: take a port, then start on it
    const probe = https.createServer()
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()))
    const port = (probe.address() as AddressInfo).port
    await new Promise<void>((r) => probe.close(() => r()))
    origin = `https://localhost:${port}`
    let n = 0
    gw = await startGatewayServer({
      host: '127.0.0.1',
      port,
      url: origin,
      identity: { current: () => ({ certChainPem: gwSvid.certPem, keyPem: gwSvid.keyPem }), onChange: () => () => {} },
      trust: { localTrustDomain: () => ca.td, bundles: () => bundlesOf([ca]), authoritiesPem: () => caPem },
      federatedTrustDomains: [],
      registry: () => registry,
      ceilingFor: () => ceiling,
      broker: {
        issuer: ISSUER,
        keys: issuer.cache({ nowSec: () => Math.floor(Date.now() / 1000) }),
        replay: new MemoryReplayCache(),
        allowBearer: false,
        txnToken: (): Promise<IssuedTxnToken> => {
          broker.calls++
          n++
          return Promise.resolve({ token: `txn.token.${n}`, exp: Math.floor(Date.now() / 1000) + 60, jti: `j${n}`, txn: `t${n}`, cached: false })
        },
      },
      audit: { append: () => Promise.resolve({ seq: 1, leafIndex: 0, chainHash: '00', time: new Date().toISOString() }) },
      limits: { headerBytes: 16384, bodyBytes: 4096, requestTimeoutMs: 10_000, upstreamTimeoutMs: 5_000, maxConnectionsPerAddress: 100 },
      log: nullLogger,
    })
  })

  afterAll(async () => {
    await gw.close()
    await new Promise<void>((r) => tool.close(() => r()))
  })

  beforeEach(() => {
    seen.length = 0
    broker.calls = 0
  })

  /** An access token bound to `svid`'s certificate, for `aud`, with `scope`. */
  const token = (aud: string | string[], o: { scope?: string; svid?: Svid } = {}) => {
    const now = Math.floor(Date.now() / 1000)
    return issuer.mint({
      claims: {
        aud,
        sub: AGENT,
        client_id: AGENT,
        scope: o.scope ?? 'orders:read',
        iat: now,
        nbf: now,
        exp: now + 300,
        cnf: { 'x5t#S256': x5tS256((o.svid ?? agent).certDer) },
      },
    })
  }

  it('serves the metadata of an MCP tool without authentication (404 for a tool that is not MCP)', async () => {
    const r = await call(gw.port, '/.well-known/oauth-protected-resource/tools/orders', { ca: caPem })
    expect(r.status).toBe(200)
    expect(JSON.parse(r.body)).toMatchObject({
      resource: `${origin}/tools/orders`,
      authorization_servers: [ISSUER],
      scopes_supported: ['orders:read'],
      bearer_methods_supported: ['header'],
    })
    expect((await call(gw.port, '/.well-known/oauth-protected-resource/tools/plain', { ca: caPem })).status).toBe(404)
    expect(broker.calls).toBe(0)
  })

  it('no credentials: 401 with the resource_metadata challenge, before the tool', async () => {
    const r = await call(gw.port, '/tools/orders', { ca: caPem, method: 'POST' })
    expect(r.status).toBe(401)
    expect(r.headers['www-authenticate']).toMatch(
      new RegExp(`^Bearer scope="orders:read", resource_metadata="${origin}/\\.well-known/oauth-protected-resource/tools/orders", DPoP .*algs="`),
    )
    expect(seen).toHaveLength(0)
  })

  it('an X.509-SVID alone does not reach an MCP tool (401 with the challenge), though it reaches a plain tool', async () => {
    const r = await call(gw.port, '/tools/orders', { ca: caPem, svid: agent, method: 'POST' })
    expect(r.status).toBe(401)
    expect(r.headers['www-authenticate']).toContain(`resource_metadata="${origin}/.well-known/oauth-protected-resource/tools/orders"`)
    expect(seen).toHaveLength(0)
    expect(broker.calls).toBe(0)
    expect((await call(gw.port, '/tools/plain', { ca: caPem, svid: agent, method: 'POST' })).status).toBe(200)
  })

  it('a token for the tool (aud = its gateway URL), bound to the connection certificate, reaches it with the Txn-Token only', async () => {
    const r = await call(gw.port, '/tools/orders', {
      ca: caPem,
      svid: agent,
      method: 'POST',
      headers: { authorization: `Bearer ${await token(`${origin}/tools/orders`)}` },
    })
    expect(r.status, r.body).toBe(200)
    expect(seen).toHaveLength(1)
    expect(seen[0]!.url).toBe('/mcp/')
    expect(seen[0]!.headers['txn-token']).toMatch(/^txn\.token\.\d+$/)
    expect(seen[0]!.headers.authorization).toBeUndefined()
    // aud may hold other resources too, as long as it holds this one
    const both = await token([`${origin}/tools/billing`, `${origin}/tools/orders`])
    expect((await call(gw.port, '/tools/orders/x', { ca: caPem, svid: agent, headers: { authorization: `Bearer ${both}` } })).status).toBe(200)
  })

  it('RFC 8707: a token for another resource is refused (another tool, the gateway origin, the registry audience), 401 invalid_token with the challenge', async () => {
    for (const aud of [`${origin}/tools/billing`, origin, `${origin}/`, 'https://orders/', `${origin}/tools/orders/`, `${origin}/tools`]) {
      const r = await call(gw.port, '/tools/orders', { ca: caPem, svid: agent, method: 'POST', headers: { authorization: `Bearer ${await token(aud)}` } })
      expect([aud, r.status]).toEqual([aud, 401])
      expect(r.headers['www-authenticate']).toMatch(/^Bearer error="invalid_token", scope="orders:read", resource_metadata="/)
    }
    expect(seen).toHaveLength(0)
    expect(broker.calls).toBe(0)
    // the same token the other tool takes
    const billing = await token(`${origin}/tools/billing`)
    expect((await call(gw.port, '/tools/billing', { ca: caPem, svid: agent, headers: { authorization: `Bearer ${billing}` } })).status).toBe(200)
  })

  it('a token bound to another certificate is refused (401) before the tool', async () => {
    const t = await token(`${origin}/tools/orders`, { svid: other })
    const r = await call(gw.port, '/tools/orders', { ca: caPem, svid: agent, headers: { authorization: `Bearer ${t}` } })
    expect(r.status).toBe(401)
    expect(seen).toHaveLength(0)
  })

  it('insufficient scope: 403 error="insufficient_scope" with the scope and the resource_metadata, before the broker and the tool', async () => {
    const t = await token(`${origin}/tools/orders`, { scope: 'orders:list' })
    const r = await call(gw.port, '/tools/orders', { ca: caPem, svid: agent, method: 'POST', headers: { authorization: `Bearer ${t}` } })
    expect(r.status).toBe(403)
    expect(JSON.parse(r.body)).toEqual({ error: 'insufficient_scope' })
    expect(r.headers['www-authenticate']).toMatch(
      new RegExp(`^Bearer error="insufficient_scope", scope="orders:read", resource_metadata="${origin}/\\.well-known/oauth-protected-resource/tools/orders"`),
    )
    expect(seen).toHaveLength(0)
    expect(broker.calls).toBe(0)
  })
})
