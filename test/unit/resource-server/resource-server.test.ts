/**
 * The middlewares over real sockets: a JWKS served over HTTPS by a test CA,
 * a Node `http` server, an `https` server with client certificates and a
 * Fastify server, called with real HTTP requests.
 */
import 'reflect-metadata'
import { X509Certificate } from 'node:crypto'
import { createServer as createHttp, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttps, request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import * as oauth from 'oauth4webapi'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureLogger } from '../../helpers/capture-logger.js'
import { httpsJwksFetcher, warrantFastify, warrantMiddleware, type ResourceServerOptions, type WarrantRequest } from '../../../src/resource-server/index.js'
import { createDpopProof, x5tS256 } from '../../../src/tokens/dpop.js'
import { makeRoot, pem, svidCredentials, webCredentials, type TestCa } from '../server/federation/pki.js'
import { actChain, AGENT, AUDIENCE, dpopKey, ISSUER, testIssuer, type CryptoKeyPair, type TestIssuer } from '../tokens/token-fixtures.js'

interface Reply {
  status: number
  headers: IncomingMessage['headers']
  body: string
}

function call(url: string, opts: { method?: string; headers?: Record<string, string>; cert?: string; key?: string; ca?: string } = {}): Promise<Reply> {
  const u = new URL(url)
  const req = (u.protocol === 'https:' ? httpsRequest : httpRequest)(u, {
    method: opts.method ?? 'GET',
    headers: opts.headers ?? {},
    ...(opts.cert ? { cert: opts.cert, key: opts.key, ca: opts.ca } : opts.ca ? { ca: opts.ca } : {}),
  })
  return new Promise((resolve, reject) => {
    req.on('response', (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

function listen(server: Server): Promise<string> {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(`127.0.0.1:${(server.address() as AddressInfo).port}`)))
}

/** The handler behind the middleware: echoes what it learned. */
function echo(req: IncomingMessage, res: ServerResponse): void {
  const w = (req as WarrantRequest).warrant
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ sub: w?.claims.sub, binding: w?.binding, actor: w?.actor ?? null, depth: w?.chain.length }))
}

let ca: TestCa
let caPem: string
let iss: TestIssuer
let holder: { keys: CryptoKeyPair; jkt: string }
let jwksUrl: string
let jwksHits = 0
const servers: Server[] = []
const apps: FastifyInstance[] = []

function nodeServer(opts: Partial<ResourceServerOptions> = {}, tls?: { cert: string; key: string }): Promise<string> {
  const mw = warrantMiddleware({
    issuer: ISSUER,
    audience: AUDIENCE,
    jwks: { url: jwksUrl, ca: caPem },
    requiredScopes: ['tools:read'],
    routeScopes: { 'POST /tools/admin': ['tools:admin'] },
    ...opts,
  })
  const handler = (req: IncomingMessage, res: ServerResponse) => mw(req, res, () => echo(req, res))
  const server = tls ? createHttps({ ...tls, requestCert: true, rejectUnauthorized: true, ca: caPem }, handler) : createHttp(handler)
  servers.push(server)
  return listen(server)
}

async function dpopCall(
  origin: string,
  path: string,
  token: string,
  opts: { method?: string; proof?: string; nonce?: string } = {},
): Promise<Reply & { proof: string }> {
  const method = opts.method ?? 'GET'
  const proof =
    opts.proof ?? (await createDpopProof(holder.keys, { method, url: `${origin}${path}`, accessToken: token, ...(opts.nonce ? { nonce: opts.nonce } : {}) }))
  return { ...(await call(`${origin}${path}`, { method, headers: { authorization: `DPoP ${token}`, dpop: proof } })), proof }
}

const now = () => Math.floor(Date.now() / 1000)
const mint = (claims: Record<string, unknown> = {}) => iss.mint({ claims: { iat: now(), nbf: now(), exp: now() + 300, cnf: { jkt: holder.jkt }, ...claims } })

beforeAll(async () => {
  ca = await makeRoot()
  caPem = pem(ca.certificate)
  iss = await testIssuer()
  holder = await dpopKey()
  const web = await webCredentials(ca)
  const jwksServer = createHttps({ cert: web.certChainPem, key: web.keyPem }, (_req, res) => {
    jwksHits++
    res.writeHead(200, { 'content-type': 'application/json' })
    res.end(JSON.stringify(iss.jwks))
  })
  servers.push(jwksServer)
  jwksUrl = `https://${await listen(jwksServer)}/jwks`
})

afterAll(async () => {
  for (const a of apps) await a.close()
  for (const s of servers) s.close()
})

describe('httpsJwksFetcher', () => {
  it('fetches over TLS verified against the CA, and refuses an untrusted server or plain http', async () => {
    await expect(httpsJwksFetcher({ url: jwksUrl, ca: caPem })()).resolves.toEqual(iss.jwks)
    await expect(httpsJwksFetcher({ url: jwksUrl })()).rejects.toThrow()
    expect(() => httpsJwksFetcher({ url: jwksUrl.replace('https:', 'http:') })).toThrow(TypeError)
  })
})

describe('Node http middleware', () => {
  it('accepts a DPoP-bound token with its proof and sets req.warrant; refuses the same proof again', async () => {
    const origin = `http://${await nodeServer()}`
    const token = await mint({ act: actChain(2) })
    const ok = await dpopCall(origin, '/tools/search?q=1', token)
    expect(ok.status).toBe(200)
    expect(JSON.parse(ok.body)).toEqual({ sub: AGENT, binding: 'dpop', actor: 'spiffe://example.org/agent/sub-1', depth: 2 })
    const again = await dpopCall(origin, '/tools/search?q=1', token, { proof: ok.proof })
    expect(again.status).toBe(401)
    expect(again.headers['www-authenticate']).toBe(`DPoP error="invalid_dpop_proof", algs="ES256 ES384 ES512 PS256 PS384 PS512 RS256 EdDSA Ed25519"`)
    expect(JSON.parse(again.body)).toEqual({ error: 'invalid_dpop_proof' })
    expect(again.headers['cache-control']).toBe('no-store')
  })

  it('answers no credentials, a token without its proof, a proof for another path, and a missing route scope', async () => {
    const log = captureLogger()
    const origin = `http://${await nodeServer({ log, dpopAlgorithms: ['ES256'] })}`
    const token = await mint()
    const none = await call(`${origin}/tools/search`)
    expect([none.status, none.headers['www-authenticate']]).toEqual([401, 'DPoP algs="ES256"'])
    const noProof = await call(`${origin}/tools/search`, { headers: { authorization: `DPoP ${token}` } })
    expect([noProof.status, noProof.headers['www-authenticate']]).toEqual([401, 'DPoP error="invalid_dpop_proof", algs="ES256"'])
    const proof = await createDpopProof(holder.keys, { method: 'GET', url: `${origin}/tools/other`, accessToken: token })
    const wrongPath = await dpopCall(origin, '/tools/search', token, { proof })
    expect(wrongPath.status).toBe(401)
    const admin = await dpopCall(origin, '/tools/admin', token, { method: 'POST' })
    expect([admin.status, admin.headers['www-authenticate']]).toEqual([403, 'DPoP error="insufficient_scope", scope="tools:admin", algs="ES256"'])
    // the log says why; the token never appears in it
    const reasons = log.lines.map((e) => e.fields['reason'])
    expect(reasons).toEqual(expect.arrayContaining(['no_credentials', 'missing', 'htu', 'scope']))
    expect(JSON.stringify(log.lines)).not.toContain(token)
  })

  it('with nonces on: use_dpop_nonce with a DPoP-Nonce, then the retry with that nonce passes', async () => {
    const origin = `http://${await nodeServer({ dpopNonces: true })}`
    const token = await mint()
    const first = await dpopCall(origin, '/tools/search', token)
    expect(first.status).toBe(401)
    expect(first.headers['www-authenticate']).toContain('error="use_dpop_nonce"')
    const nonce = first.headers['dpop-nonce']
    expect(typeof nonce).toBe('string')
    const retry = await dpopCall(origin, '/tools/search', token, { nonce: nonce as string })
    expect(retry.status).toBe(200)
    expect(typeof retry.headers['dpop-nonce']).toBe('string')
  })

  it('htu is checked against the configured origin, not the Host header, and two DPoP header lines are refused', async () => {
    const log = captureLogger()
    const origin = `http://${await nodeServer({ origin: 'https://rs.example.com', log })}`
    const token = await mint()
    const forOrigin = await createDpopProof(holder.keys, { method: 'GET', url: 'https://rs.example.com/tools/search', accessToken: token })
    expect((await dpopCall(origin, '/tools/search', token, { proof: forOrigin })).status).toBe(200)
    expect((await dpopCall(origin, '/tools/search', token)).status).toBe(401)
    const p1 = await createDpopProof(holder.keys, { method: 'GET', url: 'https://rs.example.com/tools/search', accessToken: token })
    const p2 = await createDpopProof(holder.keys, { method: 'GET', url: 'https://rs.example.com/tools/search', accessToken: token })
    const two = await call(`${origin}/tools/search`, { headers: { authorization: `DPoP ${token}`, dpop: [p1, p2] as unknown as string } })
    expect(two.status).toBe(401)
    expect(log.lines.map((l) => l.fields['reason'])).toEqual(['htu', 'multiple'])
  })

  it('a handler that throws inside next() gets a logged 500, not a crash', async () => {
    const log = captureLogger()
    const mw = warrantMiddleware({ issuer: ISSUER, audience: AUDIENCE, jwks: { url: jwksUrl, ca: caPem }, log })
    const server = createHttp((req, res) =>
      mw(req, res, () => {
        throw new Error('handler bug')
      }),
    )
    servers.push(server)
    const origin = `http://${await listen(server)}`
    const r = await dpopCall(origin, '/x', await mint())
    expect([r.status, JSON.parse(r.body)]).toEqual([500, { error: 'server_error' }])
    expect(log.lines.map((l) => [l.level, l.msg])).toEqual([['error', 'Resource request failed']])
  })

  it('an unreachable JWKS is 503 without a challenge', async () => {
    const origin = `http://${await nodeServer({ jwks: { url: jwksUrl } })}`
    const r = await dpopCall(origin, '/tools/search', await mint())
    expect([r.status, r.headers['www-authenticate'], JSON.parse(r.body)]).toEqual([503, undefined, { error: 'temporarily_unavailable' }])
  })

  it('an mTLS-bound token over https passes with the bound client certificate only', async () => {
    const web = await webCredentials(ca)
    const origin = `https://${await nodeServer({}, { cert: web.certChainPem, key: web.keyPem })}`
    const agent = await svidCredentials(ca, 'spiffe://example.org/agent/a')
    const other = await svidCredentials(ca, 'spiffe://example.org/agent/b')
    const der = new Uint8Array(new X509Certificate(agent.certChainPem).raw)
    const token = await mint({ cnf: { 'x5t#S256': x5tS256(der) } })
    const headers = { authorization: `Bearer ${token}` }
    const ok = await call(`${origin}/tools/search`, { headers, cert: agent.certChainPem, key: agent.keyPem, ca: caPem })
    expect([ok.status, JSON.parse(ok.body).binding]).toEqual([200, 'mtls'])
    const stolen = await call(`${origin}/tools/search`, { headers, cert: other.certChainPem, key: other.keyPem, ca: caPem })
    expect([stolen.status, stolen.headers['www-authenticate']]).toEqual([401, expect.stringContaining('Bearer error="invalid_token"')])
  })
})

describe('Fastify plugin', () => {
  it('verifies routes, with route-configured scopes and exempt routes', async () => {
    const app = Fastify()
    apps.push(app)
    await app.register(warrantFastify, { issuer: ISSUER, audience: AUDIENCE, jwks: { url: jwksUrl, ca: caPem }, requiredScopes: ['tools:read'] })
    app.get('/tools/search', async (req) => ({ sub: req.warrant?.claims.sub, binding: req.warrant?.binding }))
    app.post('/tools/admin', { config: { warrantScopes: ['tools:admin'] } }, async () => ({ ok: true }))
    app.get('/health', { config: { warrant: false } }, async () => ({ ok: true }))
    await app.listen({ port: 0, host: '127.0.0.1' })
    const origin = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`
    const token = await mint()
    const ok = await dpopCall(origin, '/tools/search', token)
    expect([ok.status, JSON.parse(ok.body).binding]).toEqual([200, 'dpop'])
    const admin = await dpopCall(origin, '/tools/admin', token, { method: 'POST' })
    expect([admin.status, JSON.parse(admin.body)]).toEqual([403, { error: 'insufficient_scope' }])
    const adminToken = await mint({ scope: 'tools:admin' })
    expect((await dpopCall(origin, '/tools/admin', adminToken, { method: 'POST' })).status).toBe(200)
    expect((await call(`${origin}/health`)).status).toBe(200)
    const none = await call(`${origin}/tools/search`)
    expect([none.status, none.headers['www-authenticate']]).toEqual([401, expect.stringMatching(/^DPoP algs="/)])
    expect(jwksHits).toBeGreaterThan(0)
  })
})

describe('interop with oauth4webapi, an OAuth client nobody here wrote', () => {
  it('its DPoP proofs pass, it understands use_dpop_nonce and retries with our nonce, and it parses our insufficient_scope challenge', async () => {
    const origin = `http://${await nodeServer({ dpopNonces: true })}`
    const token = await mint()
    const dpop = oauth.DPoP({}, holder.keys)
    const opts = { DPoP: dpop, [oauth.allowInsecureRequests]: true }
    const url = new URL(`${origin}/tools/search?q=x`)
    let first: unknown
    try {
      await oauth.protectedResourceRequest(token, 'GET', url, new Headers(), null, opts)
    } catch (err) {
      first = err
    }
    expect(oauth.isDPoPNonceError(first)).toBe(true)
    const ok = await oauth.protectedResourceRequest(token, 'GET', url, new Headers(), null, opts)
    expect(ok.status).toBe(200)
    expect(((await ok.json()) as { binding: string }).binding).toBe('dpop')
    let refused: unknown
    try {
      await oauth.protectedResourceRequest(token, 'POST', new URL(`${origin}/tools/admin`), new Headers(), null, opts)
    } catch (err) {
      refused = err
    }
    expect(refused).toBeInstanceOf(oauth.WWWAuthenticateChallengeError)
    const challenges = (refused as oauth.WWWAuthenticateChallengeError).cause
    expect(challenges[0]?.scheme).toBe('dpop')
    expect(challenges[0]?.parameters).toMatchObject({ error: 'insufficient_scope', scope: 'tools:admin' })
  })
})
