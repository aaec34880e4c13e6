/**
 * A demo MCP server behind the gateway, built with the official MCP
 * TypeScript SDK (`McpServer`, Streamable HTTP transport, stateless, JSON
 * responses): HTTPS with its own X.509-SVID from the Workload API; every
 * request must carry a `Txn-Token` that `txnTokenMiddleware` accepts (the
 * broker's JWKS, `aud` = the trust domain, scope `orders:read`, the
 * gateway on the path) before the SDK sees it. One tool, `lookup_order`,
 * answers with the order and what the server learnt of the call: the
 * Txn-Token's `sub`, `txn`, `req_wl`, `tctx` and which of the agent's
 * credentials it saw (it must see none). It never echoes a token.
 *
 * As a process (so the agent identifies it by executable path):
 * `node --import tsx test/helpers/demo-mcp-server.ts '<json options>'` (with
 * `socketPath`, the agent's Workload API); it prints `{"kind":"ready","port":N}`
 * and one `{"kind":"request",...}` line per request on stdout.
 */
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import { z } from 'zod'
import { toPemBlock } from '../../src/common/crypto/pem.js'
import { txnTokenMiddleware, type TxnRequest } from '../../src/resource-server/txn-token-middleware.js'
import { WorkloadApiClient } from '../../src/workload-client/workload-api-client.js'
import { X509Source } from '../../src/workload-client/x509-source.js'

export interface DemoMcpOptions {
  /** The broker's issuer URL (its JWKS at `<issuer>/jwks`). */
  issuer: string
  /** `spiffe://<td>`. */
  trustDomain: string
  /** PEM that verifies the broker's certificate (the trust bundle). */
  ca: string
  /** The gateway's SPIFFE ID: it must be on the Txn-Token's path. */
  gateway: string
  cert: string
  key: string
  port?: number
  onRequest?: (r: { method: string; path: string; status: number; sub?: string; authorization: boolean; dpop: boolean }) => void
}

export async function startDemoMcpServer(o: DemoMcpOptions): Promise<{ port: number; close(): Promise<void> }> {
  const checkTxn = txnTokenMiddleware({
    issuer: o.issuer,
    trustDomain: o.trustDomain,
    jwks: { url: `${o.issuer}/jwks`, ca: o.ca },
    defaultRoute: { scopes: ['orders:read'], policy: { require: [o.gateway], context: { tool: 'orders' } } },
  })
  const server = https.createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' }, (req, res) => {
    const saw = { authorization: req.headers.authorization !== undefined, dpop: req.headers.dpop !== undefined }
    res.on('finish', () =>
      o.onRequest?.({
        method: req.method ?? '',
        path: req.url ?? '',
        status: res.statusCode,
        ...saw,
        ...((req as TxnRequest).txn ? { sub: (req as TxnRequest).txn!.sub } : {}),
      }),
    )
    checkTxn(req, res, (err?: unknown) => {
      if (err !== undefined) {
        res.writeHead(500).end()
        return
      }
      const txn = (req as TxnRequest).txn!
      const chunks: Buffer[] = []
      req.on('data', (c: Buffer) => chunks.push(c))
      req.on('end', () => {
        let body: unknown
        try {
          body = chunks.length > 0 ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined
        } catch {
          res.writeHead(400).end()
          return
        }
        // stateless: a server and a transport per request
        const mcp = new McpServer({ name: 'demo-orders', version: '1.0.0' })
        mcp.registerTool('lookup_order', { description: 'Look up an order by its ID', inputSchema: { order_id: z.string() } }, ({ order_id }) => ({
          content: [
            {
              type: 'text' as const,
              text: JSON.stringify({ order_id, status: 'shipped', sub: txn.sub, txn: txn.txn, req_wl: txn.req_wl, tctx: txn.tctx, saw }),
            },
          ],
        }))
        const transport = new StreamableHTTPServerTransport({ enableJsonResponse: true }) // no sessionIdGenerator: stateless
        res.on('close', () => {
          void transport.close()
          void mcp.close()
        })
        mcp
          .connect(transport)
          .then(() => transport.handleRequest(req, res, body))
          .catch(() => {
            if (!res.headersSent) res.writeHead(500)
            res.end()
          })
      })
    })
  })
  await new Promise<void>((r) => server.listen(o.port ?? 0, '127.0.0.1', () => r()))
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections()
        server.close(() => r())
      }),
  }
}

async function main(): Promise<void> {
  const { socketPath, ...args } = JSON.parse(process.argv[2] ?? '{}') as {
    issuer: string
    trustDomain: string
    ca: string
    gateway: string
    port?: number
    socketPath: string
  }
  const source = await X509Source.create({ client: new WorkloadApiClient({ socketPath }) })
  const svid = source.getX509Svid()
  const srv = await startDemoMcpServer({
    ...args,
    cert: svid.certificates.map((c) => toPemBlock('CERTIFICATE', c)).join(''),
    key: svid.privateKey!.export({ type: 'pkcs8', format: 'pem' }) as string,
    onRequest: (r) => process.stdout.write(`${JSON.stringify({ kind: 'request', ...r })}\n`),
  })
  process.stdout.write(`${JSON.stringify({ kind: 'ready', port: srv.port, spiffe_id: svid.id.toString() })}\n`)
  process.on('SIGTERM', () => {
    void srv.close().then(() => source.close().then(() => process.exit(0)))
  })
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    process.stderr.write(`demo MCP server: ${String(err)}\n`)
    process.exit(1)
  })
}
