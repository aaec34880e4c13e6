import { decodeJwt } from 'jose'
import { describe, expect, it } from 'vitest'
import { AccessToken } from '../../../src/broker-client/access-token.js'
import { BrokerClient } from '../../../src/broker-client/broker-client.js'
import { codeForOAuthError } from '../../../src/broker-client/errors.js'
import type { HttpRequest, HttpResponse, X509SvidSource } from '../../../src/broker-client/transport.js'
import { accessTokenHash } from '../../../src/tokens/dpop.js'
import { FakeClock } from '../../helpers/fake-clock.js'

const ISSUER = 'https://broker.example/b'
const META = {
  issuer: ISSUER,
  token_endpoint: `${ISSUER}/token`,
  introspection_endpoint: `${ISSUER}/introspect`,
  revocation_endpoint: `${ISSUER}/revoke`,
  jwks_uri: `${ISSUER}/jwks`,
  dpop_signing_alg_values_supported: ['ES256'],
}
const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const SECRET = `eyJhbGciOiJFUzI1NiJ9.${Buffer.from(JSON.stringify({ jti: 'j-1', sub: 'spiffe://example.org/a' })).toString('base64url')}.c2lnbmF0dXJl`

interface Seen {
  url: string
  req: HttpRequest
  form: URLSearchParams
  proof: Record<string, unknown> | undefined
}

const reply = (status: number, body: unknown, headers: Record<string, string> = {}): HttpResponse => ({
  status,
  headers: { 'content-type': 'application/json', ...headers },
  body: Buffer.from(body === undefined ? '' : JSON.stringify(body)),
})

/** A scripted transport: metadata is answered, every other request pops the next answer. */
function transport(answers: HttpResponse[], meta: Record<string, unknown> = META) {
  const seen: Seen[] = []
  const request = async (url: string, req: HttpRequest): Promise<HttpResponse> => {
    if (url === 'https://broker.example/.well-known/oauth-authorization-server/b') return reply(200, meta)
    const body = typeof req.body === 'string' ? req.body : ''
    seen.push({ url, req, form: new URLSearchParams(body), proof: req.headers.dpop ? decodeJwt(req.headers.dpop) : undefined })
    const a = answers.shift()
    if (!a) throw new Error('unexpected request')
    return a
  }
  return { request, seen }
}

const okToken = (extra: Record<string, unknown> = {}) =>
  reply(
    200,
    {
      access_token: SECRET,
      token_type: 'DPoP',
      issued_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      expires_in: 300,
      scope: 'read write',
      ...extra,
    },
    { 'dpop-nonce': 'n-next' },
  )
const source = {} as X509SvidSource

async function client(
  answers: HttpResponse[],
  o: { meta?: Record<string, unknown>; binding?: 'dpop' | 'mtls'; jwtSvid?: (audience: string) => Promise<string> } = {},
) {
  const t = transport(answers, o.meta)
  const clock = new FakeClock(Date.UTC(2026, 11, 5, 8))
  const c = await BrokerClient.create({
    issuer: ISSUER,
    source,
    transport: t.request,
    clock,
    ...(o.binding ? { binding: o.binding } : {}),
    ...(o.jwtSvid ? { jwtSvid: o.jwtSvid } : {}),
  })
  return { c, seen: t.seen, clock }
}

describe('BrokerClient: discovery', () => {
  it('reads RFC 8414 metadata from the well-known path before the issuer path', async () => {
    const { c } = await client([])
    expect(c.metadata.token_endpoint).toBe(`${ISSUER}/token`)
    expect(c.dpopKey.extractable).toBe(false)
  })

  it.each([
    ['another issuer', { ...META, issuer: 'https://evil.example' }, 'ERR_CONFIG_INVALID'],
    ['a plain-http endpoint', { ...META, token_endpoint: 'http://broker.example/b/token' }, 'ERR_CONFIG_INVALID'],
    ['no token endpoint', { issuer: ISSUER }, 'ERR_CONFIG_INVALID'],
    ['no ES256 DPoP', { ...META, dpop_signing_alg_values_supported: ['EdDSA'] }, 'ERR_UNSUPPORTED'],
  ])('refuses metadata with %s', async (_t, meta, code) => {
    await expect(client([], { meta })).rejects.toMatchObject({ code })
  })

  it('refuses a non-https issuer and a client without credentials', async () => {
    await expect(BrokerClient.create({ issuer: 'http://broker.example', source })).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' })
    await expect(BrokerClient.create({ issuer: ISSUER })).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' })
  })
})

describe('BrokerClient: token requests as the broker parses them', () => {
  it('client_credentials: task_id, one space-joined scope, repeated resource and audience, authorization_details JSON, a DPoP proof for the token endpoint', async () => {
    const { c, seen, clock } = await client([okToken()])
    const t = await c.requestToken({
      taskId: 't1',
      scopes: ['read', 'write'],
      resources: ['https://a.example/', 'https://b.example/'],
      audiences: ['x'],
      authorizationDetails: [{ type: 'tool', name: 'search' }],
    })
    const s = seen[0]!
    expect(s.url).toBe(`${ISSUER}/token`)
    expect(s.req.headers['content-type']).toBe('application/x-www-form-urlencoded')
    expect([...s.form.entries()]).toEqual([
      ['grant_type', 'client_credentials'],
      ['task_id', 't1'],
      ['scope', 'read write'],
      ['resource', 'https://a.example/'],
      ['resource', 'https://b.example/'],
      ['audience', 'x'],
      ['authorization_details', '[{"type":"tool","name":"search"}]'],
    ])
    expect(s.proof).toMatchObject({ htm: 'POST', htu: `${ISSUER}/token` })
    expect(s.proof).not.toHaveProperty('ath')
    expect(t).toMatchObject({ tokenType: 'DPoP', scopes: ['read', 'write'], receivedAt: clock.now(), expiresAt: clock.now() + 300_000, jti: 'j-1' })
    expect(t.value).toBe(SECRET)
    // the token object never shows the token
    expect(JSON.stringify(t)).not.toContain(SECRET)
    expect(String(t)).not.toContain(SECRET)
  })

  it('renew, delegate and redeem are token exchanges with the subject token types the broker expects', async () => {
    const grant = reply(200, {
      access_token: SECRET,
      token_type: 'N_A',
      issued_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      expires_in: 60,
      scope: 'read',
    })
    const { c, seen } = await client([okToken(), okToken(), grant, okToken()])
    const t = await c.requestToken({ taskId: 't1' })
    await c.renew(t, { scopes: ['read'] })
    const g = await c.delegate(t, { to: 'spiffe://example.org/sub', scopes: ['read'], resources: ['https://a.example/'] })
    expect(g.isGrant).toBe(true)
    await c.redeemGrant(g)
    const forms = seen.map((s) => Object.fromEntries(s.form.entries()))
    expect(forms[1]).toEqual({
      grant_type: TOKEN_EXCHANGE,
      subject_token: SECRET,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      scope: 'read',
    })
    expect(forms[2]).toEqual({
      grant_type: TOKEN_EXCHANGE,
      subject_token: SECRET,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      requested_token_type: 'urn:ietf:params:oauth:token-type:jwt',
      may_act: 'spiffe://example.org/sub',
      scope: 'read',
      resource: 'https://a.example/',
    })
    expect(forms[3]).toEqual({ grant_type: TOKEN_EXCHANGE, subject_token: SECRET, subject_token_type: 'urn:ietf:params:oauth:token-type:jwt' })
    expect(() => c.delegate(t, { to: 'not-an-id' })).toThrow(TypeError)
  })

  it('txnToken and replaceTxnToken: requested_token_type txn_token, request_details/context as JSON, no DPoP proof, N_A accepted', async () => {
    const txn = reply(200, {
      access_token: SECRET,
      token_type: 'N_A',
      issued_token_type: 'urn:ietf:params:oauth:token-type:txn_token',
      expires_in: 60,
      scope: 'read',
    })
    const { c, seen } = await client([okToken(), txn, txn])
    const t = await c.requestToken({ taskId: 't1' })
    const x = await c.txnToken(t, { scopes: ['read'], details: { purpose: 'refund' }, context: { req_ip: '10.0.0.1' } })
    expect([x.tokenType, x.issuedTokenType]).toEqual(['N_A', 'urn:ietf:params:oauth:token-type:txn_token'])
    await c.replaceTxnToken('incoming.txn.token', { scopes: ['read'] })
    const forms = seen.map((s) => Object.fromEntries(s.form.entries()))
    expect(forms[1]).toEqual({
      grant_type: TOKEN_EXCHANGE,
      requested_token_type: 'urn:ietf:params:oauth:token-type:txn_token',
      subject_token: SECRET,
      subject_token_type: 'urn:ietf:params:oauth:token-type:access_token',
      scope: 'read',
      request_details: '{"purpose":"refund"}',
      request_context: '{"req_ip":"10.0.0.1"}',
    })
    expect(forms[2]).toMatchObject({ subject_token: 'incoming.txn.token', subject_token_type: 'urn:ietf:params:oauth:token-type:txn_token', scope: 'read' })
    expect([seen[1]!.proof, seen[2]!.proof]).toEqual([undefined, undefined])
  })

  it('JWT-SVID client authentication: a jwt-spiffe client assertion for the issuer on every request', async () => {
    const audiences: string[] = []
    let n = 0
    const { c, seen } = await client([okToken(), okToken()], { jwtSvid: async (aud) => (audiences.push(aud), `svid-${++n}`) })
    await c.exchangeJwtSvid('subject-svid', { taskId: 't1' })
    const f = Object.fromEntries(seen[0]!.form.entries())
    expect(f).toMatchObject({
      grant_type: TOKEN_EXCHANGE,
      subject_token: 'subject-svid',
      subject_token_type: 'urn:ietf:params:oauth:token-type:jwt-svid',
      task_id: 't1',
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
      client_assertion: 'svid-1',
    })
    expect(audiences).toEqual([ISSUER])
  })

  it('mTLS binding: no DPoP proof, and a Bearer (certificate-bound) token is accepted', async () => {
    const { c, seen } = await client([okToken({ token_type: 'Bearer' })], { binding: 'mtls' })
    const t = await c.requestToken()
    expect(seen[0]!.req.headers.dpop).toBeUndefined()
    expect(t.tokenType).toBe('Bearer')
  })

  it('refuses an unbound token answered to a DPoP request', async () => {
    const { c } = await client([okToken({ token_type: 'Bearer' })])
    await expect(c.requestToken()).rejects.toMatchObject({ code: 'ERR_TOKEN_REQUEST_INVALID' })
  })
})

describe('BrokerClient: DPoP nonces', () => {
  it('use_dpop_nonce is retried once with the DPoP-Nonce, the same client assertion and a fresh proof; later requests carry the last nonce', async () => {
    const nonceErr = reply(400, { error: 'use_dpop_nonce' }, { 'dpop-nonce': 'n-1' })
    let n = 0
    const { c, seen } = await client([nonceErr, okToken(), okToken()], { jwtSvid: async () => `svid-${++n}` })
    await c.requestToken()
    expect(seen).toHaveLength(2)
    expect(seen[0]!.proof).not.toHaveProperty('nonce')
    expect(seen[1]!.proof).toMatchObject({ nonce: 'n-1' })
    expect(seen[1]!.proof!.jti).not.toBe(seen[0]!.proof!.jti)
    expect(seen[1]!.form.get('client_assertion')).toBe('svid-1')
    await c.requestToken()
    expect(seen[2]!.proof).toMatchObject({ nonce: 'n-next' })
  })

  it('retries only once: a second use_dpop_nonce is the error', async () => {
    const nonceErr = (v: string) => reply(400, { error: 'use_dpop_nonce' }, { 'dpop-nonce': v })
    const { c, seen } = await client([nonceErr('n-1'), nonceErr('n-2')])
    await expect(c.requestToken()).rejects.toMatchObject({ code: 'ERR_DPOP_NONCE_REQUIRED', details: { oauth_error: 'use_dpop_nonce', status: 400 } })
    expect(seen).toHaveLength(2)
  })

  it('fetchWithToken: Authorization DPoP, a proof with ath/htm/htu, and one retry on a 401 use_dpop_nonce', async () => {
    const { c, seen } = await client([
      okToken(),
      reply(401, { error: 'use_dpop_nonce' }, { 'www-authenticate': 'DPoP error="use_dpop_nonce"', 'dpop-nonce': 'rs-1' }),
      reply(200, { ok: true }),
    ])
    const t = await c.requestToken()
    const res = await c.fetchWithToken('https://rs.example/tools/x?q=1', { method: 'post', body: '{}', headers: { 'Content-Type': 'application/json' } }, t)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ ok: true })
    const [first, second] = [seen[1]!, seen[2]!]
    expect(first.req.headers.authorization).toBe(`DPoP ${SECRET}`)
    expect(first.req.headers['content-type']).toBe('application/json')
    expect(first.proof).toMatchObject({ htm: 'POST', htu: 'https://rs.example/tools/x', ath: accessTokenHash(SECRET) })
    expect(first.proof).not.toHaveProperty('nonce')
    expect(second.proof).toMatchObject({ nonce: 'rs-1', ath: accessTokenHash(SECRET) })
    expect(second.req.body).toBe('{}')
  })

  it('fetchWithToken: a Bearer token goes without a proof; a grant is refused', async () => {
    const { c, seen } = await client([reply(200, {})], { binding: 'mtls' })
    const t = new AccessToken(SECRET, { tokenType: 'Bearer', issuedTokenType: '', scopes: [], receivedAt: 0, expiresAt: 1 })
    await c.fetchWithToken('https://rs.example/', {}, t)
    expect(seen[0]!.req.headers).toEqual({ authorization: `Bearer ${SECRET}` })
    const g = new AccessToken(SECRET, { tokenType: 'N_A', issuedTokenType: '', scopes: [], receivedAt: 0, expiresAt: 1 })
    await expect(c.fetchWithToken('https://rs.example/', {}, g)).rejects.toThrow(TypeError)
  })
})

describe('BrokerClient: refusals are typed and say nothing secret', () => {
  it.each([
    ['invalid_grant', 400, 'ERR_GRANT_INVALID'],
    ['invalid_client', 401, 'ERR_CLIENT_AUTH_FAILED'],
    ['invalid_scope', 400, 'ERR_SCOPE_INVALID'],
    ['invalid_target', 400, 'ERR_TARGET_INVALID'],
    ['unauthorized_client', 400, 'ERR_CLIENT_UNAUTHORIZED'],
    ['invalid_request', 400, 'ERR_TOKEN_REQUEST_INVALID'],
    ['invalid_dpop_proof', 400, 'ERR_DPOP_PROOF_INVALID'],
    ['unsupported_grant_type', 400, 'ERR_GRANT_TYPE_UNSUPPORTED'],
    ['server_error', 500, 'ERR_INTERNAL'],
    ['something_new', 400, 'ERR_INTERNAL'],
  ])('%s → %s', async (error, status, code) => {
    const { c } = await client([okToken(), reply(status, { error, error_description: 'the reason' })])
    const t = await c.requestToken()
    const err = await c.renew(t).catch((e: unknown) => e)
    expect(err).toMatchObject({ code, details: { oauth_error: error, status, description: 'the reason' } })
    expect(String((err as Error).message)).toContain(error)
    expect(JSON.stringify(err) + String((err as Error).message) + String((err as Error).stack)).not.toContain(SECRET)
    expect(codeForOAuthError(error)).toBe(code)
  })

  it('introspect and revoke post the token with client authentication only (no proof)', async () => {
    const { c, seen } = await client([
      okToken(),
      reply(200, { active: true, sub: 'spiffe://example.org/a', scope: 'read' }),
      reply(200, undefined),
      reply(200, { active: false, extra: 'x' }),
    ])
    const t = await c.requestToken()
    expect(await c.introspect(t)).toMatchObject({ active: true, sub: 'spiffe://example.org/a' })
    await c.revoke(t)
    expect(await c.introspect(t)).toEqual({ active: false })
    expect(seen[1]!.url).toBe(`${ISSUER}/introspect`)
    expect(seen[2]!.url).toBe(`${ISSUER}/revoke`)
    expect(Object.fromEntries(seen[2]!.form.entries())).toEqual({ token: SECRET, token_type_hint: 'access_token' })
    expect(seen[1]!.req.headers.dpop).toBeUndefined()
  })

  it('an introspection refused by the allow-list is ERR_CLIENT_UNAUTHORIZED', async () => {
    const { c } = await client([reply(400, { error: 'unauthorized_client' })])
    await expect(c.introspect('x')).rejects.toMatchObject({ code: 'ERR_CLIENT_UNAUTHORIZED' })
  })
})
