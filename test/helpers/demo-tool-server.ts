/**
 * A demo tool server behind the gateway: HTTPS with its own X.509-SVID from
 * the Workload API, every request must carry a `Txn-Token` that
 * `verifyTxnToken` accepts (the broker's JWKS, `aud` = the trust domain); it
 * answers JSON with the verified `txn`, `sub`, `scope`, `txn_path`, `tctx`
 * and which of the agent's credentials it saw (it must see none). It never
 * echoes the token.
 *
 * In-process: `startDemoToolServer(o)`. As a process (so the agent identifies
 * it by executable path): `node --import tsx test/helpers/demo-tool-server.ts '<json options>'`
 * (with `socketPath`, the agent's Workload API); it prints `{"kind":"ready","port":N}` and
 * one `{"kind":"request",...}` line per request on stdout.
 */
import { createHash } from 'node:crypto'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import { httpsJwksFetcher } from '../../src/resource-server/jwks-fetcher.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { verifyTxnToken } from '../../src/tokens/txn-token.js'
import { toPemBlock } from '../../src/common/crypto/pem.js'
import { WorkloadApiClient } from '../../src/workload-client/workload-api-client.js'
import { X509Source } from '../../src/workload-client/x509-source.js'
import { IdentityError } from '../../src/errors/identity-error.js'

export interface DemoToolOptions {
  /** The broker's issuer URL (its JWKS at `<issuer>/jwks`). */
  issuer: string
  /** `spiffe://<td>`. */
  trustDomain: string
  /** PEM that verifies the broker's certificate (the trust bundle). */
  ca: string
  /** The tool's certificate chain and key (PEM). */
  cert: string
  key: string
  port?: number
  onRequest?: (r: DemoToolRequest) => void
}

export interface DemoToolRequest {
  method: string
  path: string
  status: number
  reason?: string
  sub?: string
  txn?: string
}

export interface DemoToolServer {
  readonly port: number
  close(): Promise<void>
}

export async function startDemoToolServer(o: DemoToolOptions): Promise<DemoToolServer> {
  const keys = new JwksCache({ fetchJwks: httpsJwksFetcher({ url: `${o.issuer}/jwks`, ca: o.ca }) })
  const server = https.createServer({ cert: o.cert, key: o.key, minVersion: 'TLSv1.2' }, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const answer = (status: number, body: Record<string, unknown>, log: Partial<DemoToolRequest>) => {
        o.onRequest?.({ method: req.method ?? '', path: req.url ?? '', status, ...log })
        const text = JSON.stringify(body)
        res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'txn-token': 'echoed-by-a-careless-tool' })
        res.end(text)
      }
      const token = req.headers['txn-token']
      if (typeof token !== 'string') return answer(401, { error: 'txn_token_missing' }, { reason: 'missing' })
      verifyTxnToken(token, { issuer: o.issuer, trustDomain: o.trustDomain, keys, nowSec: Math.floor(Date.now() / 1000) })
        .then((c) =>
          answer(
            200,
            {
              ok: true,
              method: req.method,
              path: req.url,
              body: Buffer.concat(chunks).toString('utf8'),
              sub: c.sub,
              scope: c.scope,
              txn: c.txn,
              req_wl: c.req_wl,
              txn_path: c.txn_path,
              tctx: c.tctx,
              rctx: c.rctx ?? null,
              saw: { authorization: req.headers.authorization !== undefined, dpop: req.headers.dpop !== undefined },
              // a credential the gateway injected, by its hash only (so no response can carry it)
              ...(typeof req.headers['x-api-key'] === 'string' ? { api_key_sha256: createHash('sha256').update(req.headers['x-api-key']).digest('hex') } : {}),
            },
            { sub: c.sub, txn: c.txn },
          ),
        )
        .catch((err: unknown) =>
          answer(401, { error: 'invalid_txn_token' }, { reason: err instanceof IdentityError ? String(err.details?.['reason'] ?? err.code) : 'error' }),
        )
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
  const { socketPath, ...args } = JSON.parse(process.argv[2] ?? '{}') as { issuer: string; trustDomain: string; ca: string; port?: number; socketPath: string }
  const source = await X509Source.create({ client: new WorkloadApiClient({ socketPath }) })
  const svid = source.getX509Svid()
  const srv = await startDemoToolServer({
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
    process.stderr.write(`demo tool server: ${String(err)}\n`)
    process.exit(1)
  })
}
