import { describe, expect, it } from 'vitest'
import type { HttpRequest, HttpResponse } from '../../../src/broker-client/transport.js'
import { TxnTokenClient } from '../../../src/gateway/txn-token-client.js'

const ISSUER = 'https://broker.td:8443'

function jwt(payload: Record<string, unknown>): string {
  const b = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
  return `${b({ alg: 'ES256', typ: 'txntoken+jwt' })}.${b(payload)}.c2ln`
}

function fakeBroker(o: { metadata?: number | Record<string, unknown>; answer?: (form: URLSearchParams) => HttpResponse } = {}) {
  const calls: { url: string; req: HttpRequest; form?: URLSearchParams }[] = []
  let n = 0
  const json = (status: number, body: unknown): HttpResponse => ({ status, headers: {}, body: Buffer.from(JSON.stringify(body)) })
  const transport = async (url: string, req: HttpRequest): Promise<HttpResponse> => {
    const form = req.body !== undefined ? new URLSearchParams(String(req.body)) : undefined
    calls.push({ url, req, ...(form ? { form } : {}) })
    if (url.includes('/.well-known/')) {
      const m = o.metadata ?? { issuer: ISSUER, token_endpoint: `${ISSUER}/oauth/token`, jwks_uri: `${ISSUER}/keys` }
      return typeof m === 'number' ? json(m, {}) : json(200, m)
    }
    if (o.answer) return o.answer(form!)
    n++
    return json(200, {
      access_token: jwt({ jti: `j${n}`, txn: `t${n}`, exp: 2_000_000_000 }),
      issued_token_type: 'urn:ietf:params:oauth:token-type:txn_token',
      token_type: 'N_A',
      expires_in: 60,
    })
  }
  return { calls, transport }
}

describe('TxnTokenClient', () => {
  it('sends the RFC 8693 Txn-Token request for an mTLS caller (unsigned_json subject, tool and purpose, req_ip) to the discovered endpoint', async () => {
    const b = fakeBroker()
    const c = new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: b.transport })
    const t = await c.issue({ agentId: 'spiffe://td/agents/a1', tool: 'echo', scopes: ['a', 'b'], purpose: 'p', reqIp: '10.0.0.1' })
    expect(t).toMatchObject({ jti: 'j1', txn: 't1', exp: 2_000_000_000, cached: false })
    const post = b.calls.at(-1)!
    expect(post.url).toBe(`${ISSUER}/oauth/token`)
    expect(Object.fromEntries(post.form!)).toEqual({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      requested_token_type: 'urn:ietf:params:oauth:token-type:txn_token',
      audience: 'spiffe://td',
      scope: 'a b',
      subject_token: '{"sub":"spiffe://td/agents/a1"}',
      subject_token_type: 'urn:ietf:params:oauth:token-type:unsigned_json',
      request_details: '{"tool":"echo","purpose":"p"}',
      request_context: '{"req_ip":"10.0.0.1"}',
    })
    expect(await c.endpoints()).toEqual({ tokenEndpoint: `${ISSUER}/oauth/token`, jwksUri: `${ISSUER}/keys` })
  })

  it("uses the agent's access token as subject when it came with one", async () => {
    const b = fakeBroker()
    const c = new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: b.transport })
    await c.issue({ agentId: 'spiffe://td/agents/a1', accessToken: 'AT', tool: 'echo', scopes: ['a'] })
    const f = b.calls.at(-1)!.form!
    expect(f.get('subject_token')).toBe('AT')
    expect(f.get('subject_token_type')).toBe('urn:ietf:params:oauth:token-type:access_token')
    expect(f.get('request_details')).toBe('{"tool":"echo"}')
    expect(f.has('request_context')).toBe(false)
  })

  it('falls back to <issuer>/token without metadata, and refuses metadata naming another issuer', async () => {
    const none = fakeBroker({ metadata: 404 })
    await new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: none.transport }).issue({
      agentId: 'spiffe://td/a',
      tool: 't',
      scopes: ['a'],
    })
    expect(none.calls.at(-1)!.url).toBe(`${ISSUER}/token`)
    const other = fakeBroker({ metadata: { issuer: 'https://evil', token_endpoint: 'https://evil/token' } })
    await expect(
      new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: other.transport }).issue({
        agentId: 'spiffe://td/a',
        tool: 't',
        scopes: ['a'],
      }),
    ).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' })
  })

  it("maps the broker's refusal to its OAuth error, and refuses an answer that is not a Txn-Token", async () => {
    const refused = fakeBroker({ answer: () => ({ status: 400, headers: {}, body: Buffer.from('{"error":"invalid_grant"}') }) })
    await expect(
      new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: refused.transport }).issue({
        agentId: 'spiffe://td/a',
        tool: 't',
        scopes: ['a'],
      }),
    ).rejects.toMatchObject({ code: 'ERR_GRANT_INVALID', details: { oauth_error: 'invalid_grant' } })
    const wrong = fakeBroker({
      answer: () => ({
        status: 200,
        headers: {},
        body: Buffer.from(JSON.stringify({ access_token: 'x', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token', token_type: 'DPoP' })),
      }),
    })
    await expect(
      new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: wrong.transport }).issue({
        agentId: 'spiffe://td/a',
        tool: 't',
        scopes: ['a'],
      }),
    ).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })

  it('one token per call by default; with the cache, one per (agent, tool, scope) until shortly before expiry', async () => {
    let now = 1_999_999_000
    const b = fakeBroker()
    const plain = new TxnTokenClient({ issuer: ISSUER, trustDomain: () => 'spiffe://td', transport: b.transport })
    const r = { agentId: 'spiffe://td/a', tool: 't', scopes: ['a'] }
    expect((await plain.issue(r)).jti).not.toBe((await plain.issue(r)).jti)
    const cached = new TxnTokenClient({
      issuer: ISSUER,
      trustDomain: () => 'spiffe://td',
      transport: b.transport,
      cache: true,
      cacheMarginSec: 10,
      nowSec: () => now,
    })
    const first = await cached.issue(r)
    expect(await cached.issue(r)).toMatchObject({ jti: first.jti, cached: true })
    expect((await cached.issue({ ...r, agentId: 'spiffe://td/b' })).jti).not.toBe(first.jti)
    expect((await cached.issue({ ...r, scopes: ['a', 'b'] })).jti).not.toBe(first.jti)
    now = 2_000_000_000 - 10
    expect((await cached.issue(r)).jti).not.toBe(first.jti)
  })
})
