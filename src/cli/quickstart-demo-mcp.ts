/**
 * A demo MCP server behind the gateway (the quickstart's tool and the MCP
 * e2e's), built with the official MCP TypeScript SDK (`McpServer`, Streamable
 * HTTP transport, stateless, JSON responses): HTTPS with the workload's own
 * X.509-SVID; every request but `GET /healthz` must carry a `Txn-Token` that
 * `txnTokenMiddleware` accepts (the broker's JWKS, `aud` = the trust domain,
 * the route's scopes and call-chain policy) before the SDK sees it. Its tools,
 * `search` and `lookup_order`, answer with what the server learnt of the
 * call: the Txn-Token's `sub`, `txn`, `req_wl`, `tctx`, its path, and which
 * of the agent's credentials it saw (`Authorization`, `DPoP`: it must see
 * none). It never echoes a token.
 */
import https from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import { nullLogger, type Logger } from '../common/log/logger.js'
import { txnTokenMiddleware, type TxnRequest, type TxnRoute } from '../resource-server/txn-token-middleware.js'
import type { TxnTokenClaims } from '../tokens/txn-token.js'

export interface DemoMcpOptions {
  /** The broker's issuer URL (its JWKS at `<issuer>/jwks`). */
  issuer: string
  /** `spiffe://<td>`: the Txn-Tokens' audience. */
  trustDomain: string
  /** PEM that verifies the broker's certificate (the trust bundle). */
  ca: string
  /** What every MCP request's Txn-Token must satisfy (scopes, call-chain policy). */
  route: TxnRoute
  /** The server's certificate chain and key (its X.509-SVID). */
  cert: string
  key: string
  host?: string
  port?: number
  name?: string
  log?: Logger
  /** After each answered request (not `/healthz`). */
  onRequest?: (r: DemoMcpRequest) => void
}

/** One request as the MCP server saw it. */
export interface DemoMcpRequest {
  method: string
  path: string
  status: number
  /** The Txn-Token's subject, when one was accepted. */
  sub?: string
  /** Did the request carry an `Authorization` / `DPoP` header (the agent's credentials)? */
  authorization: boolean
  dpop: boolean
}

/** What the tools answer (JSON in their one text content). */
export interface DemoMcpAnswer {
  tool: string
  sub: string
  txn: string
  req_wl: string
  tctx: Record<string, unknown>
  /** The workloads on the Txn-Token's path, in order. */
  path: string[]
  saw: { authorization: boolean; dpop: boolean }
  [k: string]: unknown
}

export interface DemoMcpServer {
  readonly port: number
  /** A rotated SVID: new connections get it. */
  setCredentials(cert: string, key: string): void
  close(): Promise<void>
}

/** A stateless SDK server for one request: the tools answer from the request's verified Txn-Token. */
function mcpFor(name: string, txn: TxnTokenClaims, saw: { authorization: boolean; dpop: boolean }): McpServer {
  const answer = (tool: string, extra: Record<string, unknown>): { content: { type: 'text'; text: string }[] } => {
    const a: DemoMcpAnswer = {
      tool,
      ...extra,
      sub: txn.sub,
      txn: txn.txn,
      req_wl: txn.req_wl,
      tctx: txn.tctx,
      path: txn.txn_path.map((h) => h.wl),
      saw,
    }
    return { content: [{ type: 'text', text: JSON.stringify(a) }] }
  }
  const mcp = new McpServer({ name, version: '1.0.0' })
  mcp.registerTool('search', { description: 'Search the demo corpus', inputSchema: { query: z.string().max(200) } }, ({ query }) =>
    answer('search', { query, results: [`${query}: SPIFFE workload identity for AI agents`, `${query}: transaction tokens`] }),
  )
  mcp.registerTool('lookup_order', { description: 'Look up an order by its ID', inputSchema: { order_id: z.string().max(100) } }, ({ order_id }) =>
    answer('lookup_order', { order_id, status: 'shipped' }),
  )
  return mcp
}

async function readJson(req: IncomingMessage, limit = 256 * 1024): Promise<{ ok: true; body: unknown } | { ok: false }> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const c of req) {
    size += (c as Buffer).length
    if (size > limit) return { ok: false }
    chunks.push(c as Buffer)
  }
  if (chunks.length === 0) return { ok: true, body: undefined }
  try {
    return { ok: true, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown }
  } catch {
    return { ok: false }
  }
}

export async function startDemoMcpServer(o: DemoMcpOptions): Promise<DemoMcpServer> {
  const log = o.log ?? nullLogger
  const checkTxn = txnTokenMiddleware({ issuer: o.issuer, trustDomain: o.trustDomain, jwks: { url: `${o.issuer}/jwks`, ca: o.ca }, defaultRoute: o.route, log })
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    if (req.method === 'GET' && req.url === '/healthz') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
      return
    }
    const saw = { authorization: req.headers.authorization !== undefined, dpop: req.headers.dpop !== undefined }
    res.on('finish', () => {
      const txn = (req as TxnRequest).txn
      o.onRequest?.({ method: req.method ?? '', path: req.url ?? '', status: res.statusCode, ...saw, ...(txn ? { sub: txn.sub } : {}) })
    })
    checkTxn(req, res, (err?: unknown) => {
      if (err !== undefined) {
        res.writeHead(500).end()
        return
      }
      const txn = (req as TxnRequest).txn!
      void readJson(req).then(async (b) => {
        if (!b.ok) {
          res.writeHead(400, { 'content-type': 'application/json' }).end('{"error":"invalid_request"}')
          return
        }
        // stateless: a server and a transport per request
        const mcp = mcpFor(o.name ?? 'warrant-demo', txn, saw)
        const transport = new StreamableHTTPServerTransport({ enableJsonResponse: true })
        res.on('close', () => {
          void transport.close()
          void mcp.close()
        })
        try {
          await mcp.connect(transport)
          await transport.handleRequest(req, res, b.body)
        } catch (e) {
          log.error({ err: e instanceof Error ? e.message : String(e) }, 'MCP request failed')
          if (!res.headersSent) res.writeHead(500)
          res.end()
        }
      })
    })
  }
  const server = https.createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' }, handle)
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port ?? 0, o.host ?? '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  return {
    port: (server.address() as AddressInfo).port,
    setCredentials: (cert, key) => server.setSecureContext({ cert, key, minVersion: 'TLSv1.2' }),
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}
