/**
 * The MCP e2e's demo MCP server (src/cli/quickstart-demo-mcp.ts, built with
 * the official MCP TypeScript SDK) as a process of its own, so the agent
 * identifies it by executable path: HTTPS with its X.509-SVID from the
 * Workload API; every request must carry a `Txn-Token` with scope
 * `orders:read`, the gateway on its path and `tctx.tool` = `orders`.
 *
 * `node --import tsx test/helpers/demo-mcp-server.ts '<json options>'` (with
 * `socketPath`, the agent's Workload API); it prints `{"kind":"ready","port":N}`
 * and one `{"kind":"request",...}` line per request on stdout.
 */
import { fileURLToPath } from 'node:url'
import { toPemBlock } from '../../src/common/crypto/pem.js'
import { startDemoMcpServer } from '../../src/cli/quickstart-demo-mcp.js'
import { WorkloadApiClient } from '../../src/workload-client/workload-api-client.js'
import { X509Source } from '../../src/workload-client/x509-source.js'

export { startDemoMcpServer, type DemoMcpOptions } from '../../src/cli/quickstart-demo-mcp.js'

async function main(): Promise<void> {
  const { socketPath, gateway, ...args } = JSON.parse(process.argv[2] ?? '{}') as {
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
    name: 'demo-orders',
    route: { scopes: ['orders:read'], policy: { require: [gateway], context: { tool: 'orders' } } },
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
