import https from 'node:https'
import net from 'node:net'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest'
import { startBrokerAdminServer, type BrokerAdminServer } from '../../src/broker/admin/admin-server.js'
import { startBrokerHttpServer, type BrokerHttpServer } from '../../src/broker/http/broker-http-server.js'
import { signJwt } from '../../src/broker/mint.js'
import { boundsCeilingSource } from '../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl } from '../../src/broker/service.js'
import { SsfClients } from '../../src/broker/ssf-clients.js'
import { SsfTransmitter } from '../../src/broker/ssf-transmitter.js'
import { SsfStore } from '../../src/broker/store/ssf-store.js'
import { brokerAdminCall } from '../../src/cli/broker-admin-client.js'
import { run as signalCli } from '../../src/cli/commands/signal.js'
import { MemoryKeyManager } from '../../src/keymanager/memory/index.js'
import { EVENT_TYPES } from '../../src/signals/event-types.js'
import { MemorySetReplayCache, verifySet } from '../../src/signals/set.js'
import { BoundsSet } from '../../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { bundlesOf, form, httpConfig, makeCa, makeSvid, pem, request, type Ca, type Svid } from '../helpers/broker-http-fixtures.js'
import { captureLogger } from '../helpers/capture-logger.js'
import type { AuditEventInput } from '../../src/audit/event.js'
import { tempDir } from '../helpers/temp.js'

/**
 * SSF receivers that are not SPIFFE workloads (issue 22: "an OAuth client
 * credential issued by the broker"), over real HTTPS: an operator registers a
 * client on the admin socket, the client gets a Bearer token with
 * oauth4webapi (client_credentials, client_secret_basic), creates a poll
 * stream and receives a revocation as a SET; the token is good at the SSF API
 * only, a deleted client's token stops working, and SVID receivers and OAuth
 * clients never see each other's streams.
 */

const TD = TrustDomain.fromString('example.org')
const RX = 'spiffe://example.org/secops/receiver'
const RS = 'spiffe://example.org/rs'
const AGENT = 'spiffe://example.org/agents/a'
const AT = 'urn:ietf:params:oauth:token-type:access_token'

let ca: Ca
let caPem: string
let issuer: string
let svc: BrokerServiceImpl
let broker: BrokerHttpServer
let admin: BrokerAdminServer
let ssf: SsfTransmitter
let store: SsfStore
let httpLog: ReturnType<typeof captureLogger>
let adminLog: ReturnType<typeof captureLogger>
let clientsLog: ReturnType<typeof captureLogger>
const audited: AuditEventInput[] = []
const svids: Record<string, Svid> = {}
const tmp = tempDir('wssfc-')
const socket = () => join(tmp.dir, 'admin', 'broker-admin.sock')

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

beforeAll(async () => {
  ca = await makeCa('example.org')
  caPem = pem(ca.certificate)
  const bundles = bundlesOf([ca])
  for (const id of [RX, RS, AGENT]) svids[id] = await makeSvid(ca, id)
  const serverSvid = await makeSvid(ca, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
  const port = await freePort()
  issuer = `https://localhost:${port}`
  svc = await createBrokerService(
    { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => BoundsSet.parse(TD, {})), jwtBundles: bundles, log: captureLogger() },
    { issuer, storePath: join(tmp.dir, 'broker.db') },
  )
  store = SsfStore.open(join(tmp.dir, 'ssf.db'))
  const clients = new SsfClients({
    issuer,
    store,
    signingKey: () => svc.keys.active(),
    publicKeyFor: (kid) => svc.keys.publicKeyFor(kid),
    log: (clientsLog = captureLogger()),
    audit: (e) => audited.push(e),
  })
  ssf = await SsfTransmitter.start({
    issuer,
    store,
    signingKey: () => svc.keys.active(),
    receivers: { ids: [RX], prefixes: [] },
    clients,
    revocations: svc,
    log: captureLogger(),
    pollWaitMs: 500,
    push: { push: async () => ({ status: 202, body: undefined }) },
  })
  httpLog = captureLogger()
  broker = await startBrokerHttpServer({
    service: svc,
    config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port } }),
    trust: { localTrustDomain: () => TD, bundles: () => bundles, version: () => bundles },
    identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
    log: httpLog,
    ssf,
    ssfClients: clients,
  })
  adminLog = captureLogger()
  admin = await startBrokerAdminServer({ service: svc, socketPath: socket(), log: adminLog, signals: ssf, ssfClients: clients })
}, 30_000)

afterAll(async () => {
  ssf?.close()
  await admin?.close()
  await broker?.close()
  await svc?.close()
  store?.close()
  tmp.cleanup()
})

/** oauth4webapi's customFetch over node:https, trusting the test CA. */
const httpsFetch = (url: string, init: { method?: string; headers?: ConstructorParameters<typeof Headers>[0]; body?: unknown }): Promise<Response> =>
  new Promise((resolve, reject) => {
    const headers: Record<string, string> = {}
    new Headers(init.headers).forEach((v, k) => (headers[k] = v))
    const req = https.request(url, { method: init.method ?? 'GET', headers, ca: caPem, agent: false }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        const h = new Headers()
        for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
        resolve(new Response(Buffer.concat(chunks), { status: res.statusCode ?? 0, headers: h }))
      })
    })
    req.on('error', reject)
    if (init.body !== undefined && init.body !== null) req.write(String(init.body))
    req.end()
  })

const as = (): oauth.AuthorizationServer => ({ issuer, token_endpoint: `${issuer}/token` })

async function tokenRequest(clientId: string, secret: string, params: Record<string, string> = {}): Promise<Response> {
  return oauth.clientCredentialsGrantRequest(as(), { client_id: clientId }, oauth.ClientSecretBasic(secret), params, {
    [oauth.customFetch]: httpsFetch,
  })
}

async function getToken(clientId: string, secret: string): Promise<string> {
  const r = await oauth.processClientCredentialsResponse(as(), { client_id: clientId }, await tokenRequest(clientId, secret, { scope: 'ssf' }))
  return r.access_token
}

async function createClient(name: string): Promise<{ client_id: string; client_secret: string }> {
  return brokerAdminCall(socket(), 'POST', '/v1/signals/clients', { name })
}

const JSON_CT = { 'content-type': 'application/json' }
const bearer = (method: string, path: string, token: string, body?: unknown) =>
  request(`${issuer}${path}`, {
    method,
    ca: caPem,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : JSON_CT) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
const svid = (method: string, path: string, who: string, body?: unknown) =>
  request(`${issuer}${path}`, {
    method,
    ca: caPem,
    headers: body === undefined ? {} : JSON_CT,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    client: svids[who]!,
  })
const basic = (id: string, secret: string) => `Basic ${Buffer.from(`${encodeURIComponent(id)}:${encodeURIComponent(secret)}`).toString('base64')}`

describe('SSF receiver clients (OAuth client credentials)', () => {
  it('are registered on the admin socket: the secret once, never listed, never logged; duplicates and bad names refused', async () => {
    const c = await createClient('siem')
    expect(c.client_id).toBe('ssf:siem')
    expect(c.client_secret).toMatch(/^[A-Za-z0-9_-]{43}$/)
    const listed = await brokerAdminCall<{ clients: Record<string, unknown>[] }>(socket(), 'GET', '/v1/signals/clients')
    expect(listed.clients).toEqual([{ client_id: 'ssf:siem', created_at: expect.any(Number) }])
    await expect(createClient('siem')).rejects.toMatchObject({ code: 'ERR_ALREADY_EXISTS' })
    for (const bad of ['Siem', '', 'a'.repeat(65), 'x/y', 'ssf:x']) await expect(createClient(bad)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    expect((await brokerAdminCall<{ clients: unknown[] }>(socket(), 'GET', '/v1/signals/clients')).clients).toHaveLength(1)
    expect(JSON.stringify([adminLog.lines, clientsLog.lines])).not.toContain(c.client_secret)
    // audited, without the secret
    expect(audited).toContainEqual({ type: 'signal', outcome: 'success', attributes: { action: 'ssf_client.created', client_id: 'ssf:siem' } })
    expect(JSON.stringify(audited)).not.toContain(c.client_secret)
  })

  it('get a short-lived at+jwt at /token with oauth4webapi, create a poll stream with it, and receive a revocation as a SET', async () => {
    const c = await createClient('idp')
    const token = await getToken(c.client_id, c.client_secret)
    expect(decodeProtectedHeader(token).typ).toBe('at+jwt')
    const claims = decodeJwt(token)
    expect(claims).toMatchObject({ iss: issuer, aud: `${issuer}/ssf`, sub: 'ssf:idp', scope: 'ssf' })
    expect(claims.exp! - claims.iat!).toBe(300)
    expect(typeof claims.jti).toBe('string')

    const created = await bearer('POST', '/ssf/streams', token, { events_requested: [EVENT_TYPES.credentialChange] })
    expect(created.status).toBe(201)
    const stream = created.json() as { stream_id: string; aud: string; delivery: { endpoint_url: string } }
    expect(stream.aud).toBe('ssf:idp')
    await svc.revokeAt({ kind: 'instance', value: AGENT, reason: 'oauth receiver test' }, 'admin')
    const pollPath = new URL(stream.delivery.endpoint_url).pathname
    const polled = await bearer('POST', pollPath, token, { returnImmediately: true })
    expect(polled.status).toBe(200)
    const [jti, set] = Object.entries((polled.json() as { sets: Record<string, string> }).sets)[0]!
    const keys = new JwksCache({ fetchJwks: async () => (await request(`${issuer}/jwks`, { ca: caPem })).json() })
    const v = await verifySet(set, { issuer, audience: 'ssf:idp', keys, replay: new MemorySetReplayCache(), nowSec: Math.floor(Date.now() / 1000) })
    expect([v.eventType, v.agent, v.claims.jti]).toEqual([EVENT_TYPES.credentialChange, { spiffeId: AGENT }, jti])
    expect((await bearer('POST', pollPath, token, { ack: [jti], returnImmediately: true })).json()).toEqual({ sets: {}, moreAvailable: false })

    // an SVID receiver cannot see this client's stream, and the client cannot see the SVID receiver's
    expect((await svid('GET', `/ssf/streams?stream_id=${stream.stream_id}`, RX)).status).toBe(404)
    expect((await svid('POST', pollPath, RX, { returnImmediately: true })).status).toBe(404)
    const theirs = (await svid('POST', '/ssf/streams', RX, {})).json() as { stream_id: string; delivery: { endpoint_url: string } }
    expect((await bearer('GET', `/ssf/streams?stream_id=${theirs.stream_id}`, token)).status).toBe(404)
    expect((await bearer('POST', new URL(theirs.delivery.endpoint_url).pathname, token, { returnImmediately: true })).status).toBe(404)
    expect(((await bearer('GET', '/ssf/streams', token)).json() as unknown as { stream_id: string }[]).map((s) => s.stream_id)).toEqual([stream.stream_id])
  })

  it('a wrong or unknown secret is 401 invalid_client with a Basic challenge; nothing is issued and the secret is not logged', async () => {
    const c = await createClient('wrong')
    const before = svc.store.countTokens()
    for (const [id, secret] of [
      [c.client_id, `${c.client_secret.slice(0, -1)}${c.client_secret.endsWith('A') ? 'B' : 'A'}`],
      [c.client_id, 'x'],
      ['ssf:nobody', c.client_secret],
      [RX, c.client_secret],
    ] as const) {
      const r = await tokenRequest(id, secret)
      expect(r.status).toBe(401)
      expect(r.headers.get('www-authenticate')).toMatch(/^Basic realm=/)
      expect(((await r.json()) as { error: string }).error).toBe('invalid_client')
      expect(JSON.stringify(httpLog.lines)).not.toContain(secret === 'x' ? c.client_secret : secret)
    }
    expect(svc.store.countTokens()).toBe(before)
    expect(httpLog.lines.some((l) => l.msg === 'SSF client authentication failed' && JSON.stringify(l.fields).includes('wrong client secret'))).toBe(true)
    // the token request must be client_credentials for the ssf scope
    const scope = await tokenRequest(c.client_id, c.client_secret, { scope: 'openid' })
    expect([scope.status, ((await scope.json()) as { error: string }).error]).toEqual([400, 'invalid_scope'])
    const grant = await request(`${issuer}/token`, {
      method: 'POST',
      ca: caPem,
      headers: { authorization: basic(c.client_id, c.client_secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: form({ grant_type: 'password', username: 'x', password: 'y' }),
    })
    expect([grant.status, grant.json().error]).toEqual([400, 'unsupported_grant_type'])
    const twice = await request(`${issuer}/token`, {
      method: 'POST',
      ca: caPem,
      headers: { authorization: basic(c.client_id, c.client_secret), 'content-type': 'application/x-www-form-urlencoded' },
      body: form({ grant_type: 'client_credentials', client_secret: c.client_secret }),
    })
    expect([twice.status, twice.json().error]).toEqual([400, 'invalid_request'])
  })

  it('the token is good at the SSF API only: refused at /introspect, as a subject_token, and its credentials are not a client elsewhere', async () => {
    const c = await createClient('scoped')
    const token = await getToken(c.client_id, c.client_secret)
    const post = (path: string, body: Record<string, string>, headers: Record<string, string> = {}, client?: Svid) =>
      request(`${issuer}${path}`, {
        method: 'POST',
        ca: caPem,
        headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
        body: form(body),
        ...(client ? { client } : {}),
      })
    // as the caller's credential: neither the Bearer token nor the Basic secret authenticates anywhere else
    expect((await post('/introspect', { token }, { authorization: `Bearer ${token}` })).status).toBe(401)
    expect((await post('/introspect', { token }, { authorization: basic(c.client_id, c.client_secret) })).status).toBe(401)
    expect((await post('/revoke', { token }, { authorization: `Bearer ${token}` })).status).toBe(401)
    expect((await request(`${issuer}/tasks`, { ca: caPem, headers: { authorization: `Bearer ${token}` } })).status).toBe(401)
    expect((await request(`${issuer}/revocations/list`, { ca: caPem, headers: { authorization: `Bearer ${token}` } })).status).toBe(401)
    // as a token: inactive at introspection, refused as a subject_token (nothing minted)
    expect((await post('/introspect', { token }, {}, svids[RS])).json()).toEqual({ active: false })
    const before = svc.store.countTokens()
    const ex = await post(
      '/token',
      { grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange', subject_token: token, subject_token_type: AT, resource: 'https://api.example.org' },
      {},
      svids[AGENT],
    )
    expect([ex.status, ex.json().error]).toEqual([400, 'invalid_request'])
    expect(svc.store.countTokens()).toBe(before)
  })

  it('refuses push delivery for an OAuth client (its endpoint cannot be checked against an SVID)', async () => {
    const c = await createClient('pusher')
    const token = await getToken(c.client_id, c.client_secret)
    const r = await bearer('POST', '/ssf/streams', token, { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://siem.example.org/ssf' } })
    expect([r.status, r.json().error]).toEqual([400, 'invalid_request'])
    expect(r.json().error_description).toMatch(/push delivery needs an SVID receiver/)
    expect(((await bearer('GET', '/ssf/streams', token)).json() as unknown as unknown[]).length).toBe(0)
    // an SVID receiver may still ask for push
    const ok = await svid('POST', '/ssf/streams', RX, { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://rx.example.org/ssf' } })
    expect(ok.status).toBe(201)
    await svid('DELETE', `/ssf/streams?stream_id=${(ok.json() as { stream_id: string }).stream_id}`, RX)
  })

  it('refuses Bearer tokens that are not a live SSF token of a registered client', async () => {
    const c = await createClient('checks')
    const good = await getToken(c.client_id, c.client_secret)
    expect((await bearer('GET', '/ssf/streams', good)).status).toBe(200)
    const now = Math.floor(Date.now() / 1000)
    const base = { iss: issuer, aud: `${issuer}/ssf`, sub: c.client_id, scope: 'ssf', jti: 'j', iat: now, exp: now + 300 }
    const { key, kid, alg } = svc.keys.active()
    const sign = (claims: Record<string, unknown>) => signJwt(claims, { signer: key, kid, alg, typ: 'at+jwt' })
    const [h, p, s] = good.split('.')
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...decodeJwt(good), sub: 'ssf:siem' })).toString('base64url')}.${s}`
    expect(p).toBeDefined()
    for (const [what, token] of [
      ['signature', forged],
      ['iss', await sign({ ...base, iss: 'https://evil.example' })],
      ['aud', await sign({ ...base, aud: issuer })],
      ['exp', await sign({ ...base, exp: now - 1 })],
      ['scope', await sign({ ...base, scope: 'ssf admin' })],
      ['sub', await sign({ ...base, sub: RX })],
      ['unregistered', await sign({ ...base, sub: 'ssf:ghost' })],
    ] as const) {
      const r = await bearer('GET', '/ssf/streams', token)
      expect([what, r.status, r.json().error, r.headers['www-authenticate']]).toEqual([what, 401, 'invalid_token', 'Bearer error="invalid_token"'])
    }
    // and a transmitter asked directly for an unregistered client refuses it
    expect(() => ssf.listStreams('ssf:ghost')).toThrow(expect.objectContaining({ code: 'ERR_CLIENT_UNAUTHORIZED' }))
  })

  it('after `client delete`, its live token is refused at the SSF API and its streams are gone', async () => {
    const c = await createClient('leaving')
    const token = await getToken(c.client_id, c.client_secret)
    const id = ((await bearer('POST', '/ssf/streams', token, {})).json() as { stream_id: string }).stream_id
    expect(await brokerAdminCall(socket(), 'POST', '/v1/signals/clients/leaving/delete', {})).toEqual({ deleted: true })
    const r = await bearer('GET', `/ssf/streams?stream_id=${id}`, token)
    expect([r.status, r.json().error]).toEqual([401, 'invalid_token'])
    expect(store.getStream(id)).toBeUndefined()
    expect((await tokenRequest(c.client_id, c.client_secret)).status).toBe(401)
    await expect(brokerAdminCall(socket(), 'POST', '/v1/signals/clients/leaving/delete', {})).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
    expect(audited).toContainEqual({ type: 'signal', outcome: 'success', attributes: { action: 'ssf_client.deleted', client_id: 'ssf:leaving' } })
  })

  it('the configuration names the OAuth (RFC 6749) and mTLS (RFC 8705) authorization schemes', async () => {
    const cfg = (await request(`${issuer}/.well-known/ssf-configuration`, { ca: caPem })).json() as { authorization_schemes: { spec_urn: string }[] }
    expect(cfg.authorization_schemes.map((s) => s.spec_urn)).toEqual(expect.arrayContaining(['urn:ietf:rfc:6749', 'urn:ietf:rfc:8705']))
  })

  describe('warrant signal client', () => {
    afterEach(() => vi.restoreAllMocks())
    const cli = async (args: string[]): Promise<{ code: number; out: string; err: string }> => {
      let out = ''
      let err = ''
      vi.spyOn(process.stdout, 'write').mockImplementation((c: string | Uint8Array) => ((out += String(c)), true))
      vi.spyOn(process.stderr, 'write').mockImplementation((c: string | Uint8Array) => ((err += String(c)), true))
      try {
        return { code: await signalCli(args), out, err }
      } finally {
        vi.restoreAllMocks()
      }
    }

    it('creates (printing the id and secret once, as JSON), lists and deletes through the admin socket; refuses a bad name', async () => {
      const made = await cli(['client', 'create', 'cli-made', '--socket', socket()])
      expect(made.code).toBe(0)
      const c = JSON.parse(made.out) as { client_id: string; client_secret: string }
      expect(c.client_id).toBe('ssf:cli-made')
      // the secret works at /token
      expect(decodeJwt(await getToken(c.client_id, c.client_secret)).sub).toBe('ssf:cli-made')
      const listed = await cli(['client', 'list', '--socket', socket(), '--output', 'json'])
      expect((JSON.parse(listed.out) as { clients: { client_id: string }[] }).clients.map((x) => x.client_id)).toContain('ssf:cli-made')
      expect(listed.out).not.toContain(c.client_secret)
      expect((await cli(['client', 'delete', 'cli-made', '--socket', socket()])).out).toBe('Deleted SSF client ssf:cli-made\n')
      expect((await cli(['client', 'list', '--socket', socket()])).out).not.toContain('ssf:cli-made')
      const bad = await cli(['client', 'create', 'Bad/Name', '--socket', socket()])
      expect([bad.code, bad.out]).toEqual([2, ''])
      expect(bad.err).toContain('signal client create NAME')
    })
  })
})
