/**
 * The gateway demo's workloads (quickstart-gateway.ts), each a process of its
 * own that the agent tells apart by its executable path (a hard link to node)
 * and that gets its identity from the Workload API only:
 *
 * - `tool`: the demo MCP server `search` behind the gateway (quickstart-demo-mcp.ts,
 *   built with the official MCP SDK). HTTPS with its X.509-SVID; every MCP
 *   request needs a Txn-Token (`txnTokenMiddleware`, scope `tools:search`,
 *   minted for this tool, the gateway on its path); its tools answer what the
 *   token says about the call (subject, transaction, path), never the token.
 * - `payments`: `POST /payments` needs a Txn-Token with `payments:write`
 *   whose path has passed the fraud-check service (`require`), so an agent
 *   that calls it through the gateway alone is refused (403 access_denied).
 * - `fraud-check`: `POST /check` needs a Txn-Token from the gateway; it
 *   checks the payment, replaces the token at the broker
 *   (`BrokerClient.replaceTxnToken`, mutual TLS with its own SVID: the
 *   replacement keeps the transaction and appends fraud-check to its path)
 *   and calls payments with the replacement.
 * - `outsider`: a demo agent outside the tool's namespace; calls the MCP tool
 *   through the gateway with the SDK's client (a broker token for the tool
 *   from its own task), prints `{"result":{...}}` and exits.
 *
 * The services answer `GET /healthz` without a token (the quickstart waits on
 * it) and serve until SIGTERM; the quickstart restarts them on the same port.
 *
 * Usage (from the quickstart): `<link to node> --import tsx quickstart-demo-services.ts <role> <json args>`.
 */
import { randomUUID } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:https'
import { BrokerClient } from '../broker-client/index.js'
import type { Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import { txnTokenMiddleware, type TxnRequest, type TxnRoutes } from '../resource-server/index.js'
import type { TxnTokenClaims } from '../tokens/txn-token.js'
import type { X509Source } from '../workload-client/x509-source.js'
import { startDemoMcpServer } from './quickstart-demo-mcp.js'
import { FRAUD_LIMIT, PAYMENTS_SCOPE, SEARCH_SCOPE, sourceFor, stderrLog, tlsOf } from './quickstart-demo-support.js'
import { callMcpTool, McpCallError } from './quickstart-mcp-agent.js'
import { httpsCall, oauthError } from './quickstart-oauth.js'

export interface ServiceArgs {
  /** The SPIFFE ID this process expects from the Workload API. */
  spiffeId: string
  socketPath: string
  /** The broker's issuer (its JWKS at `<issuer>/jwks`). */
  issuer: string
  /** `spiffe://<td>`: the Txn-Tokens' audience. */
  trustDomain: string
  /** PEM file verifying the broker's and the other demo services' certificates (the trust bundle). */
  caFile: string
  /** Where the service listens (127.0.0.1); fixed, so a restarted service is where the gateway's registry says. */
  port?: number
  /** fraud-check: the gateway (the only caller it takes), and payments' origin. */
  gatewayId?: string
  paymentsUrl?: string
  /** payments: the hop every payment must have passed. */
  fraudCheckId?: string
  /** outsider: the MCP tool's URL at the gateway, and its task. tool: gatewayId (on every Txn-Token's path). */
  toolUrl?: string
  taskId?: string
}

/** What the outsider reports: the broker's answer to its token request, the gateway's to its MCP call with that token. */
export interface OutsiderResult {
  spiffeId: string
  tokenStatus: number
  status: number
  error: string
}

/** The workloads on a Txn-Token's path, in order. */
const pathOf = (c: TxnTokenClaims) => c.txn_path.map((h) => h.wl)

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' })
  res.end(text)
}

async function readBody(req: IncomingMessage, limit = 64 * 1024): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > limit) throw new Error('body too large')
    chunks.push(c as Buffer)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/** The payment a request asks for: `{"amount": <positive number>, "to": <string>}`, or undefined. */
function paymentOf(text: string): { amount: number; to: string } | undefined {
  try {
    const v = JSON.parse(text) as { amount?: unknown; to?: unknown }
    if (typeof v.amount === 'number' && v.amount > 0 && Number.isFinite(v.amount) && typeof v.to === 'string' && v.to.length <= 100)
      return { amount: v.amount, to: v.to }
  } catch {
    // not JSON
  }
  return undefined
}

type Handler = (req: TxnRequest & { txn: TxnTokenClaims }, res: ServerResponse) => void | Promise<void>

/**
 * An HTTPS service with this workload's SVID (rotated in place): `GET
 * /healthz` answers without a token, every other request is checked by
 * txnTokenMiddleware against `routes` first.
 */
async function serve(a: ServiceArgs, source: X509Source, log: Logger, routes: TxnRoutes, handle: Handler): Promise<void> {
  const check = txnTokenMiddleware({ issuer: a.issuer, trustDomain: a.trustDomain, jwks: { url: `${a.issuer}/jwks`, caFile: a.caFile }, routes, log })
  const server = createServer({ ...tlsOf(source.getX509Svid()), minVersion: 'TLSv1.2' }, (req, res) => {
    if (req.method === 'GET' && req.url === '/healthz') return reply(res, 200, { ok: true })
    check(req, res, () => {
      const r = req as TxnRequest & { txn: TxnTokenClaims }
      Promise.resolve()
        .then(() => handle(r, res))
        .catch((err: unknown) => {
          log.error({ err, path: req.url }, 'Demo service request failed')
          if (!res.headersSent) reply(res, 500, { error: 'server_error' })
          else res.destroy()
        })
    })
  })
  source.on('update', () => server.setSecureContext({ ...tlsOf(source.getX509Svid()), minVersion: 'TLSv1.2' }))
  await new Promise<void>((r, reject) => {
    server.once('error', reject)
    server.listen(a.port ?? 0, '127.0.0.1', () => r())
  })
  log.info({ port: a.port, spiffe_id: source.getX509Svid().id.toString() }, 'Demo service started')
  const stop = () => {
    server.close()
    server.closeAllConnections()
    void source.close().then(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

async function runTool(a: ServiceArgs): Promise<void> {
  const log = stderrLog({ role: 'demo-tool' })
  if (!a.gatewayId) throw new Error('the tool needs gatewayId')
  const source = await sourceFor(a, log)
  const { cert, key } = tlsOf(source.getX509Svid())
  // Every MCP request needs a Txn-Token minted for this tool (tctx.tool, so one replayed from a call to another
  // tool is refused) on a path through the gateway.
  const server = await startDemoMcpServer({
    issuer: a.issuer,
    trustDomain: a.trustDomain,
    ca: readFileSync(a.caFile, 'utf8'),
    route: { scopes: [SEARCH_SCOPE], policy: { require: [a.gatewayId], context: { tool: 'search' } } },
    cert,
    key,
    ...(a.port !== undefined ? { port: a.port } : {}),
    name: 'warrant-demo-search',
    log,
    onRequest: (r) => log.info({ ...r }, 'MCP request served'),
  })
  source.on('update', () => {
    const c = tlsOf(source.getX509Svid())
    server.setCredentials(c.cert, c.key)
  })
  log.info({ port: server.port, spiffe_id: source.getX509Svid().id.toString() }, 'Demo MCP tool started')
  const stop = () => {
    void server
      .close()
      .then(() => source.close())
      .then(() => process.exit(0))
  }
  process.once('SIGTERM', stop)
  process.once('SIGINT', stop)
}

async function runPayments(a: ServiceArgs): Promise<void> {
  const log = stderrLog({ role: 'demo-payments' })
  if (!a.fraudCheckId) throw new Error('payments needs fraudCheckId')
  const source = await sourceFor(a, log)
  const routes = { 'POST /payments': { scopes: [PAYMENTS_SCOPE], policy: { require: [a.fraudCheckId] } } }
  await serve(a, source, log, routes, async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/payments') return reply(res, 404, { error: 'not_found' })
    const p = paymentOf(await readBody(req))
    if (!p) return reply(res, 400, { error: 'invalid_request' })
    const id = `pay-${randomUUID().slice(0, 8)}`
    log.info({ payment: id, amount: p.amount, sub: req.txn.sub, txn: req.txn.txn, path: pathOf(req.txn) }, 'Payment accepted')
    reply(res, 201, { payment_id: id, amount: p.amount, to: p.to, sub: req.txn.sub, txn: req.txn.txn, path: pathOf(req.txn) })
  })
}

async function runFraudCheck(a: ServiceArgs): Promise<void> {
  const log = stderrLog({ role: 'demo-fraud-check' })
  if (!a.gatewayId || !a.paymentsUrl) throw new Error('fraud-check needs gatewayId and paymentsUrl')
  const paymentsUrl = `${a.paymentsUrl}/payments`
  const ca = readFileSync(a.caFile, 'utf8')
  const source = await sourceFor(a, log)
  const broker = await BrokerClient.create({ issuer: a.issuer, source, ca, log })
  const routes = { 'POST /check': { scopes: [PAYMENTS_SCOPE], policy: { callers: [a.gatewayId] } } }
  await serve(a, source, log, routes, async (req, res) => {
    if (req.method !== 'POST' || req.url !== '/check') return reply(res, 404, { error: 'not_found' })
    const body = await readBody(req)
    const p = paymentOf(body)
    if (!p) return reply(res, 400, { error: 'invalid_request' })
    if (p.amount > FRAUD_LIMIT) {
      log.warn({ amount: p.amount, sub: req.txn.sub, txn: req.txn.txn }, 'Payment refused by the fraud check')
      return reply(res, 403, { error: 'fraud_suspected' })
    }
    // The middleware verified the header, so it is exactly one value.
    const incoming = req.headers['txn-token'] as string
    const replacement = await broker.replaceTxnToken(incoming, { scopes: [PAYMENTS_SCOPE] })
    const r = await httpsCall(paymentsUrl, {
      method: 'POST',
      ca,
      headers: { 'content-type': 'application/json', 'txn-token': replacement.value },
      body,
    })
    log.info({ status: r.status, txn: req.txn.txn, error: r.status >= 400 ? oauthError(r) : undefined }, 'Payment passed on')
    res.writeHead(r.status, { 'content-type': 'application/json', 'cache-control': 'no-store' })
    res.end(r.body)
  })
}

async function runOutsider(a: ServiceArgs): Promise<void> {
  const log = stderrLog({ role: 'demo-outsider' })
  if (!a.toolUrl || !a.taskId) throw new Error('outsider needs toolUrl and taskId')
  const source = await sourceFor(a, log)
  const spiffeId = source.getX509Svid().id.toString()
  try {
    // The SDK's MCP client with its OAuth flow: the broker gives this agent a token for the tool (its own
    // namespace's bounds allow that resource), and the gateway refuses it all the same (the tool's allowed_agents).
    const outcome = await callMcpTool({
      url: a.toolUrl,
      ca: readFileSync(a.caFile, 'utf8'),
      creds: () => tlsOf(source.getX509Svid()),
      spiffeId,
      issuer: a.issuer,
      scope: SEARCH_SCOPE,
      taskId: a.taskId,
      tool: 'search',
      arguments: { query: 'payroll' },
    }).then(
      (r) => r.sent,
      (err: unknown) => (err instanceof McpCallError ? err.sent : Promise.reject(err)),
    )
    const call = outcome.filter((e) => e.url === a.toolUrl && e.authorized).at(-1)
    const token = outcome.find((e) => e.url === `${a.issuer}/token`)
    const result: OutsiderResult = { spiffeId, tokenStatus: token?.status ?? 0, status: call?.status ?? 0, error: call?.error ?? '' }
    process.stdout.write(`${JSON.stringify({ result })}\n`)
  } finally {
    await source.close()
  }
}

async function main(): Promise<void> {
  const [role, json] = process.argv.slice(2)
  const a = JSON.parse(json ?? '{}') as ServiceArgs
  if (role === 'tool') return runTool(a)
  if (role === 'payments') return runPayments(a)
  if (role === 'fraud-check') return runFraudCheck(a)
  if (role === 'outsider') return runOutsider(a)
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
