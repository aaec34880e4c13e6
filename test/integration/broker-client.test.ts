/**
 * The agent-side broker client against the real broker (createBrokerService
 * behind startBrokerHttpServer, SQLite store, memory key manager) over real
 * HTTPS with mutual TLS, and a resource server built with the
 * resource-server middleware: a DPoP-bound token and a call with it (the
 * same token without its key refused), renewal (never wider), a
 * TokenSource, delegation to a second client with narrower scope (wider
 * refused), a certificate-bound token, JWT-SVID client authentication,
 * introspection, and revocation that ends the delegated token too.
 */
import https from 'node:https'
import net from 'node:net'
import { randomUUID } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BrokerClient } from '../../src/broker-client/broker-client.js'
import type { AccessToken } from '../../src/broker-client/access-token.js'
import type { X509SvidSource } from '../../src/broker-client/transport.js'
import { startBrokerHttpServer, type BrokerHttpServer } from '../../src/broker/http/broker-http-server.js'
import { boundsCeilingSource } from '../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl } from '../../src/broker/service.js'
import { MemoryKeyManager } from '../../src/keymanager/memory/index.js'
import { warrantMiddleware, type WarrantRequest } from '../../src/resource-server/index.js'
import { BoundsSet } from '../../src/spiffe/bounds/bounds-set.js'
import { X509Svid } from '../../src/spiffe/x509-svid/x509-svid.js'
import { x5tS256 } from '../../src/tokens/dpop.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { bundlesOf, httpConfig, jwtBundle, jwtSvid, makeCa, makeSvid, pem, type Ca, type Svid } from '../helpers/broker-http-fixtures.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'example.org'
const A = `spiffe://${TD}/agents/a`
const B = `spiffe://${TD}/agents/b`
const C = `spiffe://${TD}/agents/c`
const RS = `spiffe://${TD}/rs/api`
const API = 'https://api.example.org/'
const TASK = 'task-1'

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

const sourceOf = (s: Svid): X509SvidSource => {
  const svid = X509Svid.parse(s.certPem, s.keyPem)
  return { getX509Svid: () => svid }
}

let ca: Ca
let caPem: string
let issuer: string
let svc: BrokerServiceImpl
let broker: BrokerHttpServer
let rsServer: https.Server
let rsUrl: string
let svids: Record<string, Svid>
const clients: BrokerClient[] = []
const log = captureLogger()
const tmp = tempDir('wbc-')

const newClient = async (id: string, o: Partial<Parameters<typeof BrokerClient.create>[0]> = {}) => {
  const c = await BrokerClient.create({ issuer, source: sourceOf(svids[id]!), ca: caPem, ...o })
  clients.push(c)
  return c
}

beforeAll(async () => {
  ca = await makeCa(TD)
  caPem = pem(ca.certificate)
  svids = {}
  for (const id of [A, B, C, RS]) svids[id] = await makeSvid(ca, id)
  const port = await freePort()
  issuer = `https://localhost:${port}`
  const bounds = BoundsSet.parse(ca.td, {
    '/agents': {
      scopes: ['read', 'write'],
      resources: [API],
      max_token_ttl: 600,
      max_renewals: 3,
      max_delegation_depth: 2,
      may_delegate_to: [`spiffe://${TD}/agents/`],
    },
  })
  svc = await createBrokerService(
    { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => bounds), jwtBundles: { getJwtBundleForTrustDomain: () => jwtBundle(ca) }, log },
    { issuer, storePath: join(tmp.dir, 'broker.db'), introspectors: [`spiffe://${TD}/rs/`] },
  )
  await svc.createTask(
    { taskId: TASK, agent: `spiffe://${TD}/agents/`, scopes: ['read', 'write'], resources: [API], ttlSeconds: 3600, maxRenewals: 3 },
    'admin',
  )
  const brokerSvid = await makeSvid(ca, `spiffe://${TD}/warrant/broker`, { dnsNames: ['localhost'] })
  broker = await startBrokerHttpServer({
    service: svc,
    config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port }, introspectors: { ids: [], prefixes: [`spiffe://${TD}/rs/`] } }),
    trust: { localTrustDomain: () => ca.td, bundles: () => bundlesOf([ca]) },
    identity: { current: () => ({ certChainPem: brokerSvid.certPem, keyPem: brokerSvid.keyPem }), onChange: () => () => {} },
    log,
  })

  // The resource server: the middleware, its own DPoP nonces, client certificates requested (for certificate-bound tokens).
  const rsSvid = await makeSvid(ca, RS, { dnsNames: ['localhost'] })
  const mw = warrantMiddleware({
    issuer,
    audience: API,
    jwks: { url: `${issuer}/jwks`, ca: caPem },
    routeScopes: { 'GET /read': ['read'], 'POST /write': ['write'] },
    dpopNonces: true,
  })
  rsServer = https.createServer({ cert: rsSvid.certPem, key: rsSvid.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: false }, (req, res) =>
    mw(req, res, () => {
      const w = (req as WarrantRequest).warrant!
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ sub: w.claims.sub, scope: w.claims.scope, binding: w.binding, act: w.claims.act ?? null }))
    }),
  )
  await new Promise<void>((r) => rsServer.listen(0, '127.0.0.1', () => r()))
  rsUrl = `https://localhost:${(rsServer.address() as net.AddressInfo).port}`
}, 30_000)

afterAll(async () => {
  for (const c of clients) await c.close()
  rsServer?.closeAllConnections()
  await new Promise<void>((r) => (rsServer ? rsServer.close(() => r()) : r()))
  await broker?.close()
  await svc?.close()
  tmp.cleanup()
})

const claimsOf = (t: AccessToken) => t.claims as Record<string, unknown> & { cnf?: Record<string, string>; act?: unknown }

describe('broker client against the real broker', () => {
  let a: BrokerClient
  let token: AccessToken

  it('discovers the broker and gets a DPoP-bound token over mutual TLS (the broker demands a nonce first)', async () => {
    a = await newClient(A)
    expect(a.metadata.token_endpoint).toBe(`${issuer}/token`)
    const before = log.lines.filter((l) => l.fields['error_code'] === 'ERR_DPOP_NONCE_REQUIRED').length
    token = await a.requestToken({ taskId: TASK, scopes: ['read', 'write'], resources: [API] })
    expect(log.lines.filter((l) => l.fields['error_code'] === 'ERR_DPOP_NONCE_REQUIRED').length).toBe(before + 1)
    expect(token.tokenType).toBe('DPoP')
    expect(token.scopes).toEqual(['read', 'write'])
    expect(claimsOf(token)).toMatchObject({ iss: issuer, sub: A, client_id: A, task_id: TASK, aud: API, cnf: { jkt: a.dpopKey.thumbprint } })
    expect(token.ttlMs).toBe(300_000)
  })

  it('calls the resource server with the token and a proof (answering its nonce challenge); the token without the key is refused', async () => {
    const res = await a.fetchWithToken(`${rsUrl}/read`, {}, token)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ sub: A, scope: 'read write', binding: 'dpop', act: null })
    const w = await a.fetchWithToken(`${rsUrl}/write`, { method: 'POST', body: 'x' }, token)
    expect(w.status).toBe(200)
    // The same token as a bearer token, or with another client's key: 401.
    const stolen = await new Promise<number>((resolve, reject) => {
      https
        .get(`${rsUrl}/read`, { ca: caPem, headers: { authorization: `Bearer ${token.value}` } }, (r) => (r.resume(), resolve(r.statusCode ?? 0)))
        .on('error', reject)
    })
    expect(stolen).toBe(401)
    const thief = await newClient(C)
    expect((await thief.fetchWithToken(`${rsUrl}/read`, {}, token)).status).toBe(401)
  })

  it('renews with the same key, narrower when asked, never wider', async () => {
    const renewed = await a.renew(token, { scopes: ['read'] })
    expect(renewed.scopes).toEqual(['read'])
    expect(claimsOf(renewed)).toMatchObject({ sub: A, cnf: { jkt: a.dpopKey.thumbprint } })
    expect(renewed.jti).not.toBe(token.jti)
    await expect(a.renew(renewed, { scopes: ['read', 'write'] })).rejects.toMatchObject({
      code: 'ERR_SCOPE_INVALID',
      details: { oauth_error: 'invalid_scope' },
    })
    // the refusal changed nothing: the same token still renews
    const again = await a.renew(renewed)
    expect(again.scopes).toEqual(['read'])
    // a token is renewed once; its successor carries on
    await expect(a.renew(renewed)).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID' })
    // another client (another key) cannot renew A's token
    const c = await newClient(C)
    await expect(c.renew(again)).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID' })
    expect((await a.fetchWithToken(`${rsUrl}/write`, { method: 'POST' }, again)).status).toBe(403)
  })

  it('a TokenSource holds a token and renews it through the broker, scheduled at 75% of the TTL', async () => {
    const src = await a.tokenSource({ taskId: TASK, scopes: ['read'] })
    const first = await src.getToken()
    expect(src.nextRenewalAt).toBe(first.receivedAt + 225_000)
    const next = await src.renewNow()
    expect(await src.getToken()).toBe(next)
    expect(next.jti).not.toBe(first.jti)
    expect(next.scopes).toEqual(['read'])
    expect(src.nextRenewalAt).toBe(next.receivedAt + 225_000)
    expect((await a.fetchWithToken(`${rsUrl}/read`, {}, src)).status).toBe(200)
    src.close()
  })

  let b: BrokerClient
  let delegated: AccessToken

  it('delegates to a second client with narrower scope: a one-time grant for it, redeemed for a token bound to its own key', async () => {
    b = await newClient(B)
    const grant = await a.delegate(token, { to: B, scopes: ['read'] })
    expect(grant.isGrant).toBe(true)
    expect(grant.issuedTokenType).toBe('urn:ietf:params:oauth:token-type:jwt')
    // only the named sub-agent can redeem it
    const c = await newClient(C)
    await expect(c.redeemGrant(grant.value)).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID' })
    delegated = await b.redeemGrant(grant.value)
    expect(delegated.scopes).toEqual(['read'])
    expect(claimsOf(delegated)).toMatchObject({ sub: A, client_id: B, act: { sub: B }, cnf: { jkt: b.dpopKey.thumbprint } })
    expect(delegated.expiresAt).toBeLessThanOrEqual(token.expiresAt + 1000)
    await expect(b.redeemGrant(grant.value)).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID' })
    const res = await b.fetchWithToken(`${rsUrl}/read`, {}, delegated)
    expect(await res.json()).toEqual({ sub: A, scope: 'read', binding: 'dpop', act: { sub: B } })
    expect((await b.fetchWithToken(`${rsUrl}/write`, { method: 'POST' }, delegated)).status).toBe(403)
  })

  it('refuses a wider delegation: a grant above the token, a redemption above the grant, a sub-agent outside may_delegate_to', async () => {
    const readOnly = await a.requestToken({ taskId: TASK, scopes: ['read'] })
    await expect(a.delegate(readOnly, { to: B, scopes: ['read', 'write'] })).rejects.toMatchObject({ code: 'ERR_SCOPE_INVALID' })
    const grant = await a.delegate(readOnly, { to: B })
    await expect(b.redeemGrant(grant, { scopes: ['write'] })).rejects.toMatchObject({ code: 'ERR_SCOPE_INVALID' })
    await expect(a.delegate(readOnly, { to: RS })).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID', details: { oauth_error: 'invalid_request' } })
  })

  it('introspection (by an allowed resource server) and revocation, which ends the delegated token too', async () => {
    const rs = await newClient(RS)
    expect(await rs.introspect(token)).toMatchObject({ active: true, sub: A, scope: 'read write', token_type: 'DPoP' })
    expect(await rs.introspect(delegated)).toMatchObject({ active: true, act: { sub: B } })
    await expect(a.introspect(token)).rejects.toMatchObject({ code: 'ERR_CLIENT_UNAUTHORIZED' })
    await a.revoke(token)
    expect(await rs.introspect(token)).toEqual({ active: false })
    expect(await rs.introspect(delegated)).toEqual({ active: false })
    await expect(a.renew(token)).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID' })
    // RFC 7009: revoking an unknown token succeeds
    await a.revoke('not-a-token')
  })

  it('a certificate-bound token (binding mtls): cnf x5t#S256 of the SVID, proved at the resource server by the client certificate', async () => {
    const m = await newClient(A, { binding: 'mtls' })
    const t = await m.requestToken({ taskId: TASK, scopes: ['read'] })
    expect(t.tokenType).toBe('Bearer')
    expect(claimsOf(t).cnf).toEqual({ 'x5t#S256': x5tS256(svids[A]!.certDer) })
    const res = await m.fetchWithToken(`${rsUrl}/read`, {}, t)
    expect(await res.json()).toMatchObject({ sub: A, binding: 'mtls' })
    const renewed = await m.renew(t)
    expect(claimsOf(renewed).cnf).toEqual({ 'x5t#S256': x5tS256(svids[A]!.certDer) })
  })

  it('JWT-SVID client authentication (jwt-spiffe assertion, no certificate) and a JWT-SVID subject token', async () => {
    const j = await BrokerClient.create({ issuer, ca: caPem, jwtSvid: (aud) => jwtSvid(ca, A, [aud], { jti: randomUUID() }) })
    clients.push(j)
    const t = await j.exchangeJwtSvid(await jwtSvid(ca, A, [issuer], { jti: randomUUID() }), { taskId: TASK, scopes: ['read'] })
    expect(claimsOf(t)).toMatchObject({ sub: A, client_id: A, cnf: { jkt: j.dpopKey.thumbprint } })
    expect((await j.fetchWithToken(`${rsUrl}/read`, {}, t)).status).toBe(200)
    const renewed = await j.renew(t)
    expect(renewed.scopes).toEqual(['read'])
  })

  it('no log line of broker or client carries a token', () => {
    const all = JSON.stringify(log.lines)
    for (const t of [token, delegated]) expect(all).not.toContain(t.value)
  })
})
