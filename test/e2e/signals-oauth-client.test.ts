/**
 * An SSF receiver that is not a SPIFFE workload, against a real `warrant
 * server run` process (issue 22: "an OAuth client credential issued by the
 * broker"): `warrant signal client create` on the broker's admin socket, a
 * token from oauth4webapi (client_credentials, client_secret_basic), a poll
 * stream, `warrant revoke instance`, and the SET polled and verified against
 * the broker's JWKS; the client's creation is in the broker's audit log without
 * its secret; after `warrant signal client delete` the live token is refused.
 */
import https from 'node:https'
import net from 'node:net'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import * as oauth from 'oauth4webapi'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EVENT_TYPES } from '../../src/signals/event-types.js'
import { MemorySetReplayCache, verifySet } from '../../src/signals/set.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { E2eServer, waitFor, warrant, warrantJson } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'a.example'
const X = `spiffe://${TD}/agents/compromised`

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

describe('Shared Signals e2e: an OAuth client receiver of a broker process', () => {
  const tmp = tempDir('wsigc-')
  let server: E2eServer
  let issuer = ''
  let ca = ''
  const sock = () => join(server.dataDir, 'private', 'broker-admin.sock')
  const hint = () => server?.output().slice(-3000) ?? ''

  beforeAll(async () => {
    const port = await freePort()
    issuer = `https://localhost:${port}`
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      serverTables: [
        '[broker]',
        `issuer = "${issuer}"`,
        `bind_address = "127.0.0.1:${port}"`,
        '[broker.signals]',
        `receivers = ["spiffe://${TD}/secops/"]`,
        'poll_wait = "2s"',
      ].join('\n'),
    })
    ca = readFileSync(server.bundlePemPath, 'utf8')
    await waitFor('the broker to start', () => /"msg":"Broker started"/.test(server.output()) || undefined, { timeoutMs: 60_000, hint })
  }, 120_000)

  afterAll(async () => {
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  const fetchTls = (url: string, init: { method?: string; headers?: ConstructorParameters<typeof Headers>[0]; body?: unknown } = {}): Promise<Response> =>
    new Promise((resolve, reject) => {
      const headers: Record<string, string> = {}
      new Headers(init.headers).forEach((v, k) => (headers[k] = v))
      const req = https.request(url, { method: init.method ?? 'GET', headers, ca, agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          const h = new Headers()
          for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) h.set(k, Array.isArray(v) ? v.join(', ') : v)
          const status = res.statusCode ?? 0
          resolve(new Response(status === 204 ? null : Buffer.concat(chunks), { status, headers: h }))
        })
      })
      req.on('error', reject)
      if (init.body !== undefined && init.body !== null) req.write(String(init.body))
      req.end()
    })
  const ssf = (method: string, path: string, token: string, body?: unknown) =>
    fetchTls(`${issuer}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    })

  it('creates a client with the CLI, gets a token with oauth4webapi, polls a revocation as a verified SET; deleted, its token is refused', async () => {
    const made = await warrant(['signal', 'client', 'create', 'siem', '--socket', sock()])
    expect(made.code, `${made.stderr}\n${hint()}`).toBe(0)
    const c = JSON.parse(made.stdout) as { client_id: string; client_secret: string }
    expect(c.client_id).toBe('ssf:siem')

    const as: oauth.AuthorizationServer = { issuer, token_endpoint: `${issuer}/token` }
    const res = await oauth.clientCredentialsGrantRequest(
      as,
      { client_id: c.client_id },
      oauth.ClientSecretBasic(c.client_secret),
      { scope: 'ssf' },
      {
        [oauth.customFetch]: fetchTls,
      },
    )
    const token = (await oauth.processClientCredentialsResponse(as, { client_id: c.client_id }, res)).access_token

    const created = await ssf('POST', '/ssf/streams', token, { events_requested: [EVENT_TYPES.credentialChange] })
    expect(created.status, hint()).toBe(201)
    const stream = (await created.json()) as { stream_id: string; aud: string; delivery: { endpoint_url: string } }
    expect(stream.aud).toBe('ssf:siem')

    const r = await warrant(['revoke', 'instance', X, '--reason', 'e2e oauth receiver', '--socket', sock()])
    expect(r.code, r.stderr).toBe(0)
    const pollPath = new URL(stream.delivery.endpoint_url).pathname
    const sets = await waitFor(
      'the SET at the poll endpoint',
      async () => {
        const p = (await (await ssf('POST', pollPath, token, { returnImmediately: true })).json()) as { sets: Record<string, string> }
        return Object.keys(p.sets).length > 0 ? p.sets : undefined
      },
      { timeoutMs: 20_000, hint },
    )
    const [jti, set] = Object.entries(sets)[0]!
    const keys = new JwksCache({ fetchJwks: async () => (await fetchTls(`${issuer}/jwks`)).json() })
    const v = await verifySet(set, { issuer, audience: 'ssf:siem', keys, replay: new MemorySetReplayCache(), nowSec: Math.floor(Date.now() / 1000) })
    expect([v.eventType, v.agent, v.claims.jti]).toEqual([EVENT_TYPES.credentialChange, { spiffeId: X }, jti])

    // the creation is audited, without the secret
    const audited = await warrantJson<{ event: Record<string, unknown> }[]>([
      'audit',
      'search',
      '--log',
      join(server.dataDir, 'broker-audit.sqlite3'),
      '--type',
      'signal',
    ])
    expect(audited.map((x) => x.event)).toContainEqual(
      expect.objectContaining({ type: 'signal', attributes: { action: 'ssf_client.created', client_id: 'ssf:siem' } }),
    )
    expect(JSON.stringify(audited)).not.toContain(c.client_secret)
    expect(server.output()).not.toContain(c.client_secret)

    const del = await warrant(['signal', 'client', 'delete', 'siem', '--socket', sock()])
    expect(del.code, del.stderr).toBe(0)
    const refused = await ssf('GET', '/ssf/streams', token)
    expect(refused.status).toBe(401)
  }, 90_000)
})
