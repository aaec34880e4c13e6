import net from 'node:net'
import tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { generateKeyPair as joseKeyPair } from 'jose'
import { IdentityError } from '../../src/errors/identity-error.js'
import { startBrokerHttpServer, type BrokerHttpServer, type TlsIdentity } from '../../src/broker/http/broker-http-server.js'
import type { AuthenticatedClient, KeyBinding, TokenRequest } from '../../src/broker/contract.js'
import { createDpopProof, jwkThumbprint, x5tS256 } from '../../src/tokens/dpop.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import type { BundleSet } from '../../src/spiffe/bundle/bundle-set.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { bundlesOf, fakeService, form, httpConfig, jwtSvid, makeCa, makeSvid, pem, request, type Ca, type Svid } from '../helpers/broker-http-fixtures.js'

/**
 * The broker's wire over real HTTPS with mutual TLS, against a recording fake
 * BrokerService: client authentication (X.509-SVID, JWT-SVID assertions),
 * DPoP with server nonces, metadata, introspection, revocation, tasks, and
 * every refusal (which must leave the service untouched).
 */

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }

let local: Ca
let partner: Ca
let evil: Ca
let bundles: BundleSet
let agent: Svid
let rs: Svid
let orch: Svid
let orch2: Svid
let partnerAgent: Svid
let evilAgent: Svid
let caPem: string
let issuer: string
let port: number
let broker: BrokerHttpServer
let identity: TlsIdentity & { rotate(s: Svid): void }
const svc = fakeService()
const log = captureLogger()

beforeAll(async () => {
  local = await makeCa('example.org')
  partner = await makeCa('partner.org')
  evil = await makeCa('evil.org')
  // The bundle set holds partner.org and evil.org too: only config decides which trust domains are admitted.
  bundles = bundlesOf([local, partner, evil])
  agent = await makeSvid(local, 'spiffe://example.org/agent')
  rs = await makeSvid(local, 'spiffe://example.org/rs')
  orch = await makeSvid(local, 'spiffe://example.org/orch/one')
  orch2 = await makeSvid(local, 'spiffe://example.org/orch/two')
  partnerAgent = await makeSvid(partner, 'spiffe://partner.org/agent')
  evilAgent = await makeSvid(evil, 'spiffe://evil.org/agent')
  const serverSvid = await makeSvid(local, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
  caPem = pem(local.certificate)
  port = await freePort()
  issuer = `https://localhost:${port}`
  let current = serverSvid
  const listeners = new Set<() => void>()
  identity = {
    current: () => ({ certChainPem: current.certPem, keyPem: current.keyPem }),
    onChange: (fn) => {
      listeners.add(fn)
      return () => listeners.delete(fn)
    },
    rotate(s) {
      current = s
      for (const l of listeners) l()
    },
  }
  broker = await startBrokerHttpServer({
    service: svc,
    config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port }, federatedTrustDomains: [TrustDomain.fromString('partner.org')] }),
    trust: { localTrustDomain: () => TrustDomain.fromString('example.org'), bundles: () => bundles },
    identity,
    log,
  })
}, 30_000)

afterAll(async () => {
  await broker?.close()
})

const url = (p: string) => `https://localhost:${port}${p}`
const lastCall = () => svc.calls.at(-1)
const tokenCalls = () => svc.calls.filter((c) => c.method === 'token').length

function expectOAuthError(res: { status: number; headers: Record<string, unknown>; json(): Record<string, unknown> }, status: number, error: string) {
  expect({ status: res.status, error: res.json().error }).toEqual({ status, error })
  expect(res.headers['cache-control']).toBe('no-store')
}

describe('metadata and JWKS', () => {
  it('serves RFC 8414 metadata with endpoints under the issuer', async () => {
    const res = await request(url('/.well-known/oauth-authorization-server'), { ca: caPem })
    expect(res.status).toBe(200)
    const m = res.json()
    expect(m).toMatchObject({
      issuer,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      introspection_endpoint: `${issuer}/introspect`,
      revocation_endpoint: `${issuer}/revoke`,
      tls_client_certificate_bound_access_tokens: true,
      grant_types_supported: [TOKEN_EXCHANGE, 'client_credentials'],
      token_endpoint_auth_methods_supported: ['tls_client_auth', 'private_key_jwt'],
      client_assertion_types_supported: ['urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'],
      dpop_signing_alg_values_supported: ['ES256', 'EdDSA', 'Ed25519'],
    })
    expect(m.token_types_supported).toContain('urn:ietf:params:oauth:token-type:access_token')
    expect(m.authorization_details_types_supported).toEqual([])
  })

  it('serves the JWKS', async () => {
    const res = await request(url('/jwks'), { ca: caPem })
    expect(res.status).toBe(200)
    expect(res.json().keys).toHaveLength(1)
  })

  it('answers unknown paths 404 without detail', async () => {
    const res = await request(url('/admin'), { ca: caPem })
    expect(res.status).toBe(404)
    expect(res.json()).toEqual({ error: 'not_found' })
  })
})

describe('token endpoint: client authentication', () => {
  it('tls_client_auth: the X.509-SVID names the client and the token is bound to its certificate', async () => {
    const res = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials', scope: 'read write', task_id: 't1' }),
      client: agent,
      ca: caPem,
    })
    expect(res.status).toBe(200)
    expect(res.headers['cache-control']).toBe('no-store')
    expect(res.json()).toMatchObject({ access_token: expect.stringMatching(/^at-/), token_type: 'Bearer' })
    const [req, client, binding] = lastCall()!.args as [TokenRequest, AuthenticatedClient, KeyBinding]
    expect(req).toMatchObject({ grantType: 'client_credentials', scopes: ['read', 'write'], taskId: 't1', resources: [], audiences: [] })
    expect(client).toMatchObject({ spiffeId: 'spiffe://example.org/agent', method: 'tls_client_auth' })
    expect(binding).toEqual({ kind: 'mtls', x5tS256: x5tS256(agent.certDer) })
  })

  it('refuses a request without credentials: 401 invalid_client with a challenge, service untouched', async () => {
    const before = tokenCalls()
    const res = await request(url('/token'), { method: 'POST', headers: FORM, body: form({ grant_type: 'client_credentials' }), ca: caPem })
    expectOAuthError(res, 401, 'invalid_client')
    expect(res.headers['www-authenticate']).toMatch(/^Bearer realm=".*", error="invalid_client"$/)
    expect(res.json().error_description).toBeUndefined()
    expect(tokenCalls()).toBe(before)
  })

  it('refuses a certificate from a trust domain that is not admitted (bundle held, config does not name it)', async () => {
    const before = tokenCalls()
    const res = await request(url('/token'), { method: 'POST', headers: FORM, body: form({ grant_type: 'client_credentials' }), client: evilAgent, ca: caPem })
    expectOAuthError(res, 401, 'invalid_client')
    expect(tokenCalls()).toBe(before)
    const line = log.lines.filter((l) => l.msg === 'Broker request refused').at(-1)!
    expect(JSON.stringify(line.fields)).toContain('not admitted')
  })

  it('admits a federated trust domain named in config', async () => {
    const res = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials' }),
      client: partnerAgent,
      ca: caPem,
    })
    expect(res.status).toBe(200)
    expect((lastCall()!.args[1] as AuthenticatedClient).spiffeId).toBe('spiffe://partner.org/agent')
  })

  it('refuses a certificate that claims a trusted trust domain but chains to another CA', async () => {
    const forged = await makeSvid(evil, 'spiffe://example.org/agent')
    const before = tokenCalls()
    const res = await request(url('/token'), { method: 'POST', headers: FORM, body: form({ grant_type: 'client_credentials' }), client: forged, ca: caPem })
    expectOAuthError(res, 401, 'invalid_client')
    expect(tokenCalls()).toBe(before)
  })

  it('refuses an expired client certificate', async () => {
    const expired = await makeSvid(local, 'spiffe://example.org/agent', { notAfter: new Date(Date.now() - 1000) })
    const res = await request(url('/token'), { method: 'POST', headers: FORM, body: form({ grant_type: 'client_credentials' }), client: expired, ca: caPem })
    expectOAuthError(res, 401, 'invalid_client')
  })

  it('refuses a client_id that is not the authenticated SPIFFE ID', async () => {
    const res = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials', client_id: 'spiffe://example.org/other' }),
      client: agent,
      ca: caPem,
    })
    expectOAuthError(res, 401, 'invalid_client')
    const ok = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials', client_id: 'spiffe://example.org/agent' }),
      client: agent,
      ca: caPem,
    })
    expect(ok.status).toBe(200)
  })

  it('refuses client secrets and Authorization-header authentication', async () => {
    const r1 = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials', client_secret: 's' }),
      client: agent,
      ca: caPem,
    })
    expectOAuthError(r1, 401, 'invalid_client')
    const r2 = await request(url('/token'), {
      method: 'POST',
      headers: { ...FORM, authorization: 'Basic YTpi' },
      body: form({ grant_type: 'client_credentials' }),
      client: agent,
      ca: caPem,
    })
    expectOAuthError(r2, 401, 'invalid_client')
  })

  for (const [type, method] of [
    ['urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', 'jwt-spiffe'],
    ['urn:ietf:params:oauth:client-assertion-type:jwt-bearer', 'jwt-bearer'],
  ] as const) {
    it(`a JWT-SVID as ${method} client assertion authenticates once; the token is bearer without DPoP`, async () => {
      const a = await jwtSvid(local, 'spiffe://example.org/agent', [issuer])
      const body = form({ grant_type: 'client_credentials', client_assertion_type: type, client_assertion: a })
      const res = await request(url('/token'), { method: 'POST', headers: FORM, body, ca: caPem })
      expect(res.status).toBe(200)
      expect(lastCall()!.args[1]).toEqual({ spiffeId: 'spiffe://example.org/agent', method })
      expect(lastCall()!.args[2]).toEqual({ kind: 'bearer' })
      const before = tokenCalls()
      const replayed = await request(url('/token'), { method: 'POST', headers: FORM, body, ca: caPem })
      expectOAuthError(replayed, 401, 'invalid_client')
      expect(tokenCalls()).toBe(before)
    })
  }

  it('an assertion wins over a presented certificate (one method per request)', async () => {
    const a = await jwtSvid(local, 'spiffe://example.org/other', [issuer])
    const res = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials', client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: a }),
      client: agent,
      ca: caPem,
    })
    expect(res.status).toBe(200)
    expect(lastCall()!.args[1]).toEqual({ spiffeId: 'spiffe://example.org/other', method: 'jwt-spiffe' })
    expect(lastCall()!.args[2]).toEqual({ kind: 'bearer' })
  })

  const badAssertions: [string, () => Promise<Record<string, string>>][] = [
    [
      'audience is not the issuer',
      async () => ({
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
        client_assertion: await jwtSvid(local, 'spiffe://example.org/agent', ['https://elsewhere']),
      }),
    ],
    [
      'lives longer than allowed',
      async () => ({
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
        client_assertion: await jwtSvid(local, 'spiffe://example.org/agent', [issuer], { ttlSec: 3600 }),
      }),
    ],
    [
      'expired',
      async () => ({
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
        client_assertion: await jwtSvid(local, 'spiffe://example.org/agent', [issuer], { ttlSec: 60, iatOffsetSec: -300 }),
      }),
    ],
    [
      'signed by a key not in the bundle',
      async () => ({
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
        client_assertion: await jwtSvid(local, 'spiffe://example.org/agent', [issuer], { signer: evil.jwt.signer }),
      }),
    ],
    [
      'from a trust domain not admitted',
      async () => ({
        client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
        client_assertion: await jwtSvid(evil, 'spiffe://evil.org/agent', [issuer]),
      }),
    ],
    [
      'of an unknown assertion type',
      async () => ({ client_assertion_type: 'urn:example:saml', client_assertion: await jwtSvid(local, 'spiffe://example.org/agent', [issuer]) }),
    ],
    ['without its type', async () => ({ client_assertion: await jwtSvid(local, 'spiffe://example.org/agent', [issuer]) })],
    ['not a JWT', async () => ({ client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe', client_assertion: 'garbage' })],
  ]
  for (const [name, make] of badAssertions) {
    it(`refuses a client assertion ${name}`, async () => {
      const before = tokenCalls()
      const res = await request(url('/token'), {
        method: 'POST',
        headers: FORM,
        body: form({ grant_type: 'client_credentials', ...(await make()) }),
        ca: caPem,
      })
      expectOAuthError(res, 401, 'invalid_client')
      expect(res.headers['www-authenticate']).toContain('invalid_client')
      expect(tokenCalls()).toBe(before)
    })
  }
})

describe('token endpoint: request shape', () => {
  const cases: [string, Record<string, string> | string, number, string][] = [
    ['a repeated single-valued parameter', 'grant_type=client_credentials&scope=a&scope=b', 400, 'invalid_request'],
    ['a repeated grant_type', 'grant_type=client_credentials&grant_type=client_credentials', 400, 'invalid_request'],
    ['no grant_type', { scope: 'a' }, 400, 'invalid_request'],
    [
      'token exchange without subject_token',
      { grant_type: TOKEN_EXCHANGE, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' },
      400,
      'invalid_request',
    ],
    ['token exchange without subject_token_type', { grant_type: TOKEN_EXCHANGE, subject_token: 'x' }, 400, 'invalid_request'],
    [
      'actor_token without its type',
      { grant_type: TOKEN_EXCHANGE, subject_token: 'x', subject_token_type: 'urn:ietf:params:oauth:token-type:jwt', actor_token: 'y' },
      400,
      'invalid_request',
    ],
    ['a relative resource', { grant_type: 'client_credentials', resource: '/api' }, 400, 'invalid_target'],
    ['authorization_details that are not an array', { grant_type: 'client_credentials', authorization_details: '{"type":"x"}' }, 400, 'invalid_request'],
  ]
  for (const [name, body, status, error] of cases) {
    it(`refuses ${name}: ${error}, service untouched`, async () => {
      const before = tokenCalls()
      const res = await request(url('/token'), { method: 'POST', headers: FORM, body: typeof body === 'string' ? body : form(body), client: agent, ca: caPem })
      expectOAuthError(res, status, error)
      expect(tokenCalls()).toBe(before)
    })
  }

  it('accepts repeated resource and audience, in order, and authorization details', async () => {
    const res = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({
        grant_type: TOKEN_EXCHANGE,
        subject_token: 'st',
        subject_token_type: 'urn:ietf:params:oauth:token-type:jwt',
        resource: ['https://a.example/x', 'https://b.example/'],
        audience: ['a', 'b'],
        authorization_details: '[{"type":"tool_call","actions":["run"]}]',
      }),
      client: agent,
      ca: caPem,
    })
    expect(res.status).toBe(200)
    expect(lastCall()!.args[0]).toMatchObject({
      grantType: TOKEN_EXCHANGE,
      subjectToken: 'st',
      resources: ['https://a.example/x', 'https://b.example/'],
      audiences: ['a', 'b'],
      authorizationDetails: [{ type: 'tool_call', actions: ['run'] }],
    })
  })

  it('refuses a body that is not a form (JSON): invalid_request', async () => {
    const before = tokenCalls()
    const res = await request(url('/token'), {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: '{"grant_type":"client_credentials"}',
      client: agent,
      ca: caPem,
    })
    expectOAuthError(res, 400, 'invalid_request')
    const res2 = await request(url('/token'), {
      method: 'POST',
      headers: { 'content-type': 'text/plain' },
      body: 'grant_type=client_credentials',
      client: agent,
      ca: caPem,
    })
    expectOAuthError(res2, 400, 'invalid_request')
    expect(tokenCalls()).toBe(before)
  })

  it('refuses a body over the limit and headers over the limit', async () => {
    const big = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: `grant_type=client_credentials&scope=${'a'.repeat(20_000)}`,
      client: agent,
      ca: caPem,
    })
    expect(big.status).toBe(413)
    expect(big.json()).toEqual({ error: 'invalid_request' })
    const hdr = await request(url('/token'), {
      method: 'POST',
      headers: { ...FORM, 'x-big': 'a'.repeat(10_000) },
      body: 'grant_type=client_credentials',
      client: agent,
      ca: caPem,
    })
    expect(hdr.status).toBe(431)
  })

  it('maps domain errors to their OAuth form and hides unexpected ones', async () => {
    svc.fail = new IdentityError('ERR_SCOPE_INVALID', 'scope admin is outside the ceiling of /agents/ (internal detail)')
    const r1 = await request(url('/token'), {
      method: 'POST',
      headers: FORM,
      body: form({ grant_type: 'client_credentials', scope: 'admin' }),
      client: agent,
      ca: caPem,
    })
    expectOAuthError(r1, 400, 'invalid_scope')
    expect(r1.body).not.toContain('ceiling')
    svc.fail = new Error('database is on fire at /var/lib/x')
    const r2 = await request(url('/token'), { method: 'POST', headers: FORM, body: form({ grant_type: 'client_credentials' }), client: agent, ca: caPem })
    expectOAuthError(r2, 500, 'server_error')
    expect(r2.body).toBe('{"error":"server_error"}')
    expect(log.lines.some((l) => l.level === 'error' && JSON.stringify(l.fields).includes('database is on fire'))).toBe(true)
  })
})

describe('token endpoint: DPoP', () => {
  let keys: Parameters<typeof createDpopProof>[0]
  beforeAll(async () => {
    keys = await joseKeyPair('ES256', { extractable: false })
  })
  const post = (headers: Record<string, string | string[]>) =>
    request(url('/token'), { method: 'POST', headers: { ...FORM, ...headers }, body: form({ grant_type: 'client_credentials' }), client: agent, ca: caPem })

  it('answers use_dpop_nonce with a DPoP-Nonce header, then binds the token to the key (cnf.jkt)', async () => {
    const before = tokenCalls()
    const first = await post({ dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token` }) })
    expectOAuthError(first, 400, 'use_dpop_nonce')
    const nonce = first.headers['dpop-nonce'] as string
    expect(nonce).toMatch(/^[A-Za-z0-9_-]+$/)
    expect(tokenCalls()).toBe(before)
    const second = await post({ dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce }) })
    expect(second.status).toBe(200)
    expect(second.json().token_type).toBe('DPoP')
    expect(second.headers['dpop-nonce']).toBeDefined()
    expect(lastCall()!.args[2]).toEqual({
      kind: 'dpop',
      jkt: await jwkThumbprint((await crypto.subtle.exportKey('jwk', keys.publicKey)) as Parameters<typeof jwkThumbprint>[0]),
    })
  })

  it('refuses a replayed proof, a proof for another URL or method, a forged nonce and two DPoP headers', async () => {
    const nonce = (await post({ dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token` }) })).headers['dpop-nonce'] as string
    const good = await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce })
    expect((await post({ dpop: good })).status).toBe(200)
    const before = tokenCalls()
    expectOAuthError(await post({ dpop: good }), 400, 'invalid_dpop_proof')
    expectOAuthError(await post({ dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/introspect`, nonce }) }), 400, 'invalid_dpop_proof')
    expectOAuthError(await post({ dpop: await createDpopProof(keys, { method: 'GET', url: `${issuer}/token`, nonce }) }), 400, 'invalid_dpop_proof')
    expectOAuthError(
      await post({ dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce: 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA' }) }),
      400,
      'use_dpop_nonce',
    )
    const p1 = await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce })
    const p2 = await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce })
    expectOAuthError(await post({ dpop: [p1, p2] }), 400, 'invalid_dpop_proof')
    expectOAuthError(await post({ dpop: 'not.a.proof' }), 400, 'use_dpop_nonce')
    expect(tokenCalls()).toBe(before)
  })

  it('a nonce challenge does not consume the client assertion: the retry with the same assertion succeeds', async () => {
    const assertion = await jwtSvid(local, 'spiffe://example.org/agent', [issuer])
    const body = form({
      grant_type: 'client_credentials',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
      client_assertion: assertion,
    })
    const first = await request(url('/token'), {
      method: 'POST',
      headers: { ...FORM, dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token` }) },
      body,
      ca: caPem,
    })
    expectOAuthError(first, 400, 'use_dpop_nonce')
    const nonce = first.headers['dpop-nonce'] as string
    const second = await request(url('/token'), {
      method: 'POST',
      headers: { ...FORM, dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce }) },
      body,
      ca: caPem,
    })
    expect(second.status).toBe(200)
    expect(lastCall()!.args[2]).toMatchObject({ kind: 'dpop' })
  })

  it('a proof with a bad signature is refused after client authentication', async () => {
    const nonce = (await post({ dpop: await createDpopProof(keys, { method: 'POST', url: `${issuer}/token` }) })).headers['dpop-nonce'] as string
    const proof = await createDpopProof(keys, { method: 'POST', url: `${issuer}/token`, nonce })
    const [h, p, s] = proof.split('.')
    const tampered = `${h}.${p}.${s!.slice(0, -4)}AAAA`
    expectOAuthError(await post({ dpop: tampered }), 400, 'invalid_dpop_proof')
  })
})

describe('introspection and revocation', () => {
  const introspect = (client: Svid | undefined, body: Record<string, string>) =>
    request(url('/introspect'), { method: 'POST', headers: FORM, body: form(body), ...(client ? { client } : {}), ca: caPem })

  it('answers a resource server on the allow-list', async () => {
    const res = await introspect(rs, { token: 'at-1' })
    expect(res.status).toBe(200)
    expect(res.headers['cache-control']).toBe('no-store')
    expect(res.json()).toMatchObject({ active: true })
    expect(lastCall()).toMatchObject({ method: 'introspect', args: ['at-1', { spiffeId: 'spiffe://example.org/rs' }] })
    expect((await introspect(rs, { token: 'unknown' })).json()).toEqual({ active: false })
  })

  it('refuses callers off the allow-list and unauthenticated ones, and a request without token', async () => {
    const n = svc.calls.filter((c) => c.method === 'introspect').length
    expectOAuthError(await introspect(agent, { token: 'at-1' }), 400, 'unauthorized_client')
    expectOAuthError(await introspect(undefined, { token: 'at-1' }), 401, 'invalid_client')
    expectOAuthError(await introspect(rs, {}), 400, 'invalid_request')
    expect(svc.calls.filter((c) => c.method === 'introspect').length).toBe(n)
  })

  it('revokes for an authenticated client (200, empty) and refuses unauthenticated ones', async () => {
    const ok = await request(url('/revoke'), {
      method: 'POST',
      headers: FORM,
      body: form({ token: 'at-1', token_type_hint: 'access_token' }),
      client: agent,
      ca: caPem,
    })
    expect(ok.status).toBe(200)
    expect(ok.body).toBe('')
    expect(lastCall()).toMatchObject({ method: 'revoke', args: ['at-1', { spiffeId: 'spiffe://example.org/agent' }] })
    const n = svc.calls.length
    expectOAuthError(await request(url('/revoke'), { method: 'POST', headers: FORM, body: form({ token: 'at-1' }), ca: caPem }), 401, 'invalid_client')
    expectOAuthError(await request(url('/revoke'), { method: 'POST', headers: FORM, body: form({}), client: agent, ca: caPem }), 400, 'invalid_request')
    expect(svc.calls.length).toBe(n)
  })
})

describe('tasks for orchestrators', () => {
  const json = { 'content-type': 'application/json' }
  const spec = {
    task_id: 'build-42',
    orchestration_id: 'orch-1',
    agent: 'spiffe://example.org/agent',
    scopes: ['repo:read'],
    resources: ['https://git.example/'],
    ttl_seconds: 600,
    max_renewals: 3,
  }

  it('an orchestrator creates, reads, lists and ends its task', async () => {
    const c = await request(url('/tasks'), { method: 'POST', headers: json, body: JSON.stringify(spec), client: orch, ca: caPem })
    expect(c.status).toBe(201)
    expect(c.json()).toMatchObject({ task_id: 'build-42', created_by: 'spiffe://example.org/orch/one', state: 'active', max_renewals: 3 })
    expect((await request(url('/tasks/build-42'), { client: orch, ca: caPem })).json()).toMatchObject({ task_id: 'build-42' })
    expect((await request(url('/tasks'), { client: orch, ca: caPem })).json().tasks).toHaveLength(1)
    const e = await request(url('/tasks/build-42/end'), { method: 'POST', client: orch, ca: caPem })
    expect(e.status).toBe(200)
    expect(e.json().state).toBe('ended')
  })

  it('another orchestrator sees neither the task nor its existence', async () => {
    await request(url('/tasks'), { method: 'POST', headers: json, body: JSON.stringify({ ...spec, task_id: 'mine' }), client: orch, ca: caPem })
    const g = await request(url('/tasks/mine'), { client: orch2, ca: caPem })
    expect(g.status).toBe(404)
    expect((await request(url('/tasks/mine/end'), { method: 'POST', client: orch2, ca: caPem })).status).toBe(404)
    expect(svc.tasks.get('mine')!.endedAt).toBeUndefined()
    expect((await request(url('/tasks'), { client: orch2, ca: caPem })).json().tasks).toEqual([])
  })

  it('refuses non-orchestrators, unauthenticated callers and invalid specs without touching the service', async () => {
    const n = svc.calls.filter((c) => c.method === 'createTask').length
    const a = await request(url('/tasks'), { method: 'POST', headers: json, body: JSON.stringify({ ...spec, task_id: 'x1' }), client: agent, ca: caPem })
    expect(a.status).toBe(403)
    expect(a.json()).toEqual({ error: 'unauthorized_client' })
    const u = await request(url('/tasks'), { method: 'POST', headers: json, body: JSON.stringify({ ...spec, task_id: 'x2' }), ca: caPem })
    expect(u.status).toBe(401)
    const bad = await request(url('/tasks'), {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ ...spec, task_id: 'x3', ttl_seconds: -1, extra: 1 }),
      client: orch,
      ca: caPem,
    })
    expect(bad.status).toBe(400)
    expect(bad.json().error_description).toContain('ttl_seconds')
    const notJson = await request(url('/tasks'), { method: 'POST', headers: json, body: '{', client: orch, ca: caPem })
    expect(notJson.status).toBe(400)
    expect(svc.calls.filter((c) => c.method === 'createTask').length).toBe(n)
  })
})

describe('TLS', () => {
  it('refuses TLS 1.1', async () => {
    await expect(request(url('/jwks'), { ca: caPem, minVersion: 'TLSv1', maxVersion: 'TLSv1.1' })).rejects.toThrow()
  })

  it('serves a rotated certificate to new connections', async () => {
    const next = await makeSvid(local, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
    identity.rotate(next)
    const serial = await new Promise<string>((resolve, reject) => {
      const s = tls.connect({ host: '127.0.0.1', port, servername: 'localhost', ca: caPem }, () => {
        resolve(s.getPeerCertificate().serialNumber)
        s.end()
      })
      s.on('error', reject)
    })
    const { X509Certificate } = await import('node:crypto')
    expect(serial.toUpperCase()).toBe(new X509Certificate(next.certDer).serialNumber.toUpperCase())
  })
})

describe('connection guard', () => {
  it('caps concurrent connections per source address', async () => {
    const p = await freePort()
    const small = await startBrokerHttpServer({
      service: fakeService(),
      config: httpConfig({
        issuer: `https://localhost:${p}`,
        bindAddress: { host: '127.0.0.1', port: p },
        limits: { bodyBytes: 16 * 1024, headerBytes: 8 * 1024, maxConnectionsPerAddress: 2, requestTimeoutMs: 10_000 },
      }),
      trust: { localTrustDomain: () => TrustDomain.fromString('example.org'), bundles: () => bundles },
      identity,
      log: captureLogger(),
    })
    const open = () =>
      new Promise<tls.TLSSocket>((resolve, reject) => {
        const s = tls.connect({ host: '127.0.0.1', port: p, servername: 'localhost', ca: caPem }, () => resolve(s))
        s.on('error', reject)
      })
    try {
      const a = await open()
      const b = await open()
      await expect(open()).rejects.toThrow()
      a.destroy()
      // Once the server has seen the first connection close, a third is admitted again.
      let c: tls.TLSSocket | undefined
      for (let i = 0; i < 50 && !c; i++) c = await open().catch(() => undefined)
      expect(c).toBeDefined()
      b.destroy()
      c!.destroy()
    } finally {
      await small.close()
    }
  })
})

describe('client certificate verified once per connection', () => {
  it('is reused on a keep-alive connection until the bundles change, then verified again (and refused when its CA is gone)', async () => {
    const p = await freePort()
    let trusted = bundlesOf([local])
    let version = {}
    const svc2 = fakeService()
    const s = await startBrokerHttpServer({
      service: svc2,
      config: httpConfig({ issuer: `https://localhost:${p}`, bindAddress: { host: '127.0.0.1', port: p } }),
      trust: { localTrustDomain: () => TrustDomain.fromString('example.org'), bundles: () => trusted, version: () => version },
      identity,
      log: captureLogger(),
    })
    const { default: https } = await import('node:https')
    const agentHttp = new https.Agent({ keepAlive: true, maxSockets: 1, ca: caPem, cert: agent.certPem, key: agent.keyPem })
    const post = () =>
      new Promise<number>((resolve, reject) => {
        const r = https.request(`https://localhost:${p}/token`, { method: 'POST', agent: agentHttp, headers: FORM }, (res) => {
          res.resume()
          res.on('end', () => resolve(res.statusCode ?? 0))
        })
        r.on('error', reject)
        r.end('grant_type=client_credentials')
      })
    try {
      expect(await post()).toBe(200)
      // Same bundles object replaced without the CA but the version unchanged: the connection's result is reused.
      trusted = bundlesOf([partner])
      expect(await post()).toBe(200)
      // The version moves: verified again on the same connection, and refused.
      version = {}
      expect(await post()).toBe(401)
      expect(svc2.calls.filter((c) => c.method === 'token')).toHaveLength(2)
    } finally {
      agentHttp.destroy()
      await s.close()
    }
  })
})
