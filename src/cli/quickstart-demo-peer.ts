/**
 * The quickstart's two demo workloads besides the demo agent, each a process
 * of its own that the agent tells apart by its executable path (the
 * quickstart runs them through hard links to node) and that gets its
 * identity from the Workload API only:
 *
 * - `api`: the demo resource server, HTTPS with its X.509-SVID (DNS name
 *   localhost), every request checked by src/resource-server's middleware
 *   (`GET /data` needs `demo:read`, `POST /data` needs `demo:write`). Prints
 *   `{"ready":{"url":...}}` once it listens, serves until SIGTERM.
 * - `sub-agent`: reads a delegation grant and the resource server's URL
 *   (JSON) on stdin, redeems the grant for a token
 *   bound to its own DPoP key, calls the resource server, tries a route its
 *   narrower token does not cover and asks the broker for more than it was
 *   given. Prints `{"result":{...}}` and exits.
 *
 * Usage (from the quickstart): `<link to node> --import tsx quickstart-demo-peer.ts <role> <json args>`.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Server } from 'node:https'
import type { AddressInfo } from 'node:net'
import { warrantMiddleware, type WarrantRequest } from '../resource-server/index.js'
import { BrokerClient, oauthErrorOf } from '../broker-client/index.js'
import { IdentityError } from '../errors/identity-error.js'
import { sourceFor, stderrLog, tlsOf } from './quickstart-demo-support.js'

export interface PeerArgs {
  /** The SPIFFE ID this process expects from the Workload API. */
  spiffeId: string
  socketPath: string
  issuer: string
  /** PEM file verifying the broker's (and the resource server's) TLS certificate. */
  caFile: string
  /** The resource indicator (RFC 8707) of the demo resource server. */
  resource: string
}

/** What the sub-agent reports. */
export interface SubAgentResult {
  spiffeId: string
  scope: string
  expiresIn: number
  act: unknown
  call: { status: number }
  widerCall: { status: number; error: string }
  widerToken: { status: number; error: string }
}

async function runApi(a: PeerArgs): Promise<void> {
  const log = stderrLog({ role: 'demo-api' })
  const source = await sourceFor(a, log)
  let handle: (req: WarrantRequest, res: import('node:http').ServerResponse) => void = (_req, res) => {
    res.writeHead(503)
    res.end()
  }
  const server: Server = createServer({ ...tlsOf(source.getX509Svid()), minVersion: 'TLSv1.2' }, (req, res) => handle(req, res))
  source.on('update', () => server.setSecureContext({ ...tlsOf(source.getX509Svid()), minVersion: 'TLSv1.2' }))
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  const origin = `https://localhost:${(server.address() as AddressInfo).port}`
  const check = warrantMiddleware({
    issuer: a.issuer,
    audience: a.resource,
    jwks: { url: `${a.issuer}/jwks`, caFile: a.caFile },
    origin,
    routeScopes: { 'GET /data': ['demo:read'], 'POST /data': ['demo:write'] },
    log,
  })
  handle = (req, res) =>
    check(req, res, () => {
      const w = req.warrant!
      log.info({ method: req.method, sub: w.claims.sub, actor: w.actor, scope: w.claims.scope }, 'Resource request served')
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ ok: true, sub: w.claims.sub, actor: w.actor ?? null, scope: w.claims.scope }))
    })
  process.stdout.write(`${JSON.stringify({ ready: { url: origin, spiffeId: source.getX509Svid().id.toString() } })}\n`)
  const stop = () => {
    server.close()
    server.closeAllConnections()
    void source.close().then(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = []
  for await (const c of process.stdin) chunks.push(c as Buffer)
  return Buffer.concat(chunks).toString('utf8').trim()
}

async function runSubAgent(a: PeerArgs): Promise<void> {
  const log = stderrLog({ role: 'demo-sub-agent' })
  // Identity and broker first, so the (short-lived) grant waits for nothing once it arrives.
  const source = await sourceFor(a, log)
  const client = await BrokerClient.create({ issuer: a.issuer, source, ca: readFileSync(a.caFile, 'utf8'), log })
  try {
    const { grant, apiUrl } = JSON.parse(await readStdin()) as { grant: string; apiUrl: string }
    const t = await client.redeemGrant(grant)
    const data = `${apiUrl}/data`
    const call = await client.fetchWithToken(data, { method: 'GET' }, t)
    const wider = await client.fetchWithToken(data, { method: 'POST' }, t)
    let widerToken = { status: 200, error: '' }
    try {
      await client.renew(t, { scopes: ['demo:read', 'demo:write'] })
    } catch (err) {
      const error = oauthErrorOf(err)
      if (error === undefined) throw err
      widerToken = { status: Number((err as IdentityError).details?.['status'] ?? 0), error }
    }
    const result: SubAgentResult = {
      spiffeId: source.getX509Svid().id.toString(),
      scope: t.scopes.join(' '),
      expiresIn: Math.round(t.ttlMs / 1000),
      act: t.claims.act,
      call: { status: call.status },
      widerCall: { status: wider.status, error: /error="([^"]+)"/.exec(wider.headers.get('www-authenticate') ?? '')?.[1] ?? '' },
      widerToken,
    }
    process.stdout.write(`${JSON.stringify({ result })}\n`)
  } finally {
    await client.close()
    await source.close()
  }
}

async function main(): Promise<void> {
  const [role, json] = process.argv.slice(2)
  const a = JSON.parse(json ?? '{}') as PeerArgs
  if (role === 'api') return runApi(a)
  if (role === 'sub-agent') return runSubAgent(a)
  throw new Error(`unknown role ${role ?? ''}`)
}

main().catch((err: unknown) => {
  const msg = err instanceof IdentityError ? `${err.code}: ${err.message}` : (err as Error).message
  process.stdout.write(`${JSON.stringify({ error: msg })}\n`)
  try {
    writeFileSync(2, `${(err as Error).stack ?? msg}\n`)
  } catch {
    // stderr gone
  }
  process.exit(1)
})
