/**
 * The demo MCP server (the quickstart's tool, the MCP e2e's server): the
 * official SDK answers only requests whose Txn-Token passed
 * `txnTokenMiddleware`; without one, or with a token the broker's keys do not
 * verify, the request is refused (401) before the SDK sees it. `/healthz`
 * answers without a token. (A request with a valid Txn-Token is answered in
 * test/e2e/gateway-mcp.test.ts and the quickstart e2e.)
 */
import https from 'node:https'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startDemoMcpServer, type DemoMcpRequest, type DemoMcpServer } from '../../../src/cli/quickstart-demo-mcp.js'
import { makeCa, makeSvid, pem } from '../../helpers/broker-http-fixtures.js'

const TD = 'mcp.demo.test'

function post(port: number, ca: string, headers: Record<string, string>, body: unknown): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        servername: 'localhost',
        path: '/mcp',
        method: 'POST',
        ca,
        agent: false,
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
      },
      (res) => {
        let text = ''
        res.on('data', (c: Buffer) => (text += c.toString()))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }))
      },
    )
    req.on('error', reject)
    req.end(JSON.stringify(body))
  })
}

describe('demo MCP server', () => {
  let srv: DemoMcpServer
  let ca: string
  const seen: DemoMcpRequest[] = []
  const initialize = {
    jsonrpc: '2.0',
    id: 1,
    method: 'initialize',
    params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } },
  }

  beforeAll(async () => {
    const c = await makeCa(TD)
    ca = pem(c.certificate)
    const svid = await makeSvid(c, `spiffe://${TD}/svc/mcp`, { dnsNames: ['localhost'] })
    srv = await startDemoMcpServer({
      // nothing listens there: a token that needs the broker's keys cannot verify
      issuer: 'https://localhost:1',
      trustDomain: `spiffe://${TD}`,
      ca,
      route: { scopes: ['tools:search'] },
      cert: svid.certPem,
      key: svid.keyPem,
      onRequest: (r) => seen.push(r),
    })
  })

  afterAll(async () => {
    await srv.close()
  })

  it('refuses an MCP request without a Txn-Token (401) before the SDK answers it', async () => {
    const r = await post(srv.port, ca, {}, initialize)
    expect(r.status).toBe(401)
    expect(r.body).not.toContain('jsonrpc')
    expect(seen.at(-1)).toMatchObject({ method: 'POST', path: '/mcp', status: 401 })
    expect(seen.at(-1)!.sub).toBeUndefined()
  })

  it("refuses an agent's bearer token and a Txn-Token the broker's keys do not verify", async () => {
    const forged = ['eyJhbGciOiJFUzI1NiIsInR5cCI6InR4bnRva2VuK2p3dCJ9', Buffer.from('{"sub":"x"}').toString('base64url'), 'c2ln'].join('.')
    const bearer = await post(srv.port, ca, { authorization: `Bearer ${forged}` }, initialize)
    expect(bearer.status).toBe(401)
    const txn = await post(srv.port, ca, { 'txn-token': forged }, initialize)
    expect(txn.status).toBe(401)
    expect(txn.body).not.toContain('jsonrpc')
    expect(seen.every((r) => r.sub === undefined)).toBe(true)
  })

  it('answers /healthz without a token', async () => {
    const r = await new Promise<number>((resolve, reject) => {
      https
        .get({ host: '127.0.0.1', port: srv.port, servername: 'localhost', path: '/healthz', ca, agent: false }, (res) => {
          res.resume()
          resolve(res.statusCode ?? 0)
        })
        .on('error', reject)
    })
    expect(r).toBe(200)
  })
})
