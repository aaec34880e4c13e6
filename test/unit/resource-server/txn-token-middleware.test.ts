/** The Txn-Token middlewares over real sockets: a Node `http` server and a Fastify server, called with real HTTP requests. */
import { createServer, request, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { txnTokenFastify, txnTokenMiddleware, type TxnRequest } from '../../../src/resource-server/index.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { ISSUER, NOW, testIssuer, type TestIssuer } from '../tokens/token-fixtures.js'

const TD = 'spiffe://example.org'
const AGENT = 'spiffe://example.org/agent/a1'
const GW = 'spiffe://example.org/gw/g1'
const FRAUD = 'spiffe://example.org/svc/fraud'
const PAY = 'spiffe://example.org/svc/payments'

function call(url: string, method: string, headers: Record<string, string | string[]> = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method, headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

let iss: TestIssuer
const mint = (path: string[], extra: Record<string, unknown> = {}) =>
  iss.mint({
    claims: {
      aud: TD,
      exp: NOW + 60,
      txn: 'txn-1',
      sub: AGENT,
      scope: 'pay:write',
      req_wl: path[path.length - 1],
      tctx: { purpose: 'refund', agentic: { agent_id: AGENT } },
      txn_path: path.map((wl) => ({ wl, iat: NOW, scope: 'pay:write' })),
      ...extra,
    },
    header: { typ: 'txntoken+jwt' },
    omit: ['nbf', 'client_id', 'task_id', 'orchestration_id'],
  })

const routes = {
  'POST /pay': { policy: { require: [FRAUD], callers: [PAY, FRAUD] }, scopes: ['pay:write'] },
  '/open': {},
}

describe('txnTokenMiddleware (node:http)', () => {
  let server: Server
  let base: string
  const log = captureLogger()
  beforeAll(async () => {
    iss = await testIssuer()
    const mw = txnTokenMiddleware({ issuer: ISSUER, trustDomain: TD, jwks: iss.cache(), routes, nowSec: () => NOW, log })
    server = createServer((req, res) =>
      mw(req, res, () => {
        const t = (req as TxnRequest).txn!
        res.end(JSON.stringify({ txn: t.txn, path: t.txn_path.map((h) => h.wl) }))
      }),
    )
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })
  afterAll(() => new Promise<void>((r) => server.close(() => r())))

  it('passes a call whose path has the fraud-check hop, with the verified claims', async () => {
    const r = await call(`${base}/pay`, 'POST', { 'txn-token': await mint([GW, FRAUD]) })
    expect(r.status).toBe(200)
    expect(JSON.parse(r.body)).toEqual({ txn: 'txn-1', path: [GW, FRAUD] })
  })

  it('refuses a missing hop with 403 access_denied and logs why', async () => {
    const r = await call(`${base}/pay`, 'POST', { 'txn-token': await mint([GW, PAY]) })
    expect([r.status, JSON.parse(r.body)]).toEqual([403, { error: 'access_denied' }])
    expect(log.lines.some((l) => l.fields['reason'] === 'missing_hop' && l.fields['required'] === FRAUD)).toBe(true)
  })

  it('refuses a caller the route does not name', async () => {
    const r = await call(`${base}/pay`, 'POST', { 'txn-token': await mint([FRAUD, GW]) })
    expect(r.status).toBe(403)
  })

  it('refuses a missing, doubled, or foreign-audience token with 401 invalid_token', async () => {
    expect((await call(`${base}/pay`, 'POST')).status).toBe(401)
    const t = await mint([GW, FRAUD])
    expect((await call(`${base}/pay`, 'POST', { 'txn-token': [t, t] })).status).toBe(401)
    const other = await mint([GW, FRAUD], { aud: 'spiffe://other.org' })
    const r = await call(`${base}/pay`, 'POST', { 'txn-token': other })
    expect([r.status, JSON.parse(r.body)]).toEqual([401, { error: 'invalid_token' }])
  })

  it('does not read a Txn-Token from Authorization', async () => {
    const r = await call(`${base}/open`, 'GET', { authorization: `Bearer ${await mint([GW])}` })
    expect(r.status).toBe(401)
  })

  it('a route without a policy only needs a valid token', async () => {
    expect((await call(`${base}/open`, 'GET', { 'txn-token': await mint([GW]) })).status).toBe(200)
  })

  it('refuses insufficient scope with 403 insufficient_scope', async () => {
    const r = await call(`${base}/pay`, 'POST', { 'txn-token': await mint([GW, FRAUD], { scope: 'pay:read' }) })
    expect([r.status, JSON.parse(r.body)]).toEqual([403, { error: 'insufficient_scope' }])
  })
})

describe('txnTokenFastify', () => {
  let app: FastifyInstance
  let base: string
  beforeAll(async () => {
    iss ??= await testIssuer()
    app = Fastify()
    await app.register(txnTokenFastify, { issuer: ISSUER, trustDomain: TD, jwks: iss.cache(), nowSec: () => NOW })
    app.post('/pay', { config: { txnPolicy: { require: [FRAUD] } } }, async (req) => ({ sub: req.txn?.sub }))
    app.get('/health', { config: { txn: false } }, async () => ({ ok: true }))
    base = await app.listen({ port: 0, host: '127.0.0.1' })
  })
  afterAll(() => app.close())

  it('enforces the route’s policy from its config', async () => {
    const ok = await call(`${base}/pay`, 'POST', { 'txn-token': await mint([GW, FRAUD]) })
    expect([ok.status, JSON.parse(ok.body)]).toEqual([200, { sub: AGENT }])
    expect((await call(`${base}/pay`, 'POST', { 'txn-token': await mint([GW]) })).status).toBe(403)
  })

  it('exempts a route with txn: false', async () => {
    expect((await call(`${base}/health`, 'GET')).status).toBe(200)
  })
})
