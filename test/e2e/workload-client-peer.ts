/**
 * A workload process for the workload-client e2e test, using only the public
 * library (src/workload-client): it gets its SVID from the agent's Workload
 * API through an X509Source and either serves mutual TLS or calls a server.
 * Prints one JSON object per line.
 *
 *   serve <socket> <allowed client ID>       https server on 127.0.0.1:0; prints {port, id}, then {rotated, serial} per update
 *   call <socket> <port> <expected server ID> one GET /; prints {status, body, server_serial} or {error, code}
 */
import { X509Certificate } from 'node:crypto'
import { request } from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { authorizeId, createMtlsHttpsServer, mtlsAgent, peerOf, X509Source } from '../../src/workload-client/index.js'

const out = (o: Record<string, unknown>) => process.stdout.write(`${JSON.stringify(o)}\n`)
const serialOf = (der: Uint8Array) => new X509Certificate(der).serialNumber
const [mode, socketPath, ...rest] = process.argv.slice(2)

const source = await X509Source.create({ socketPath: socketPath!, signal: AbortSignal.timeout(60_000) })

if (mode === 'serve') {
  const server = createMtlsHttpsServer(
    source,
    authorizeId(rest[0]!),
    (req, res) => {
      const peer = peerOf(req.socket as TLSSocket)
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ server: source.getX509Svid().id.toString(), client: peer?.id.toString() ?? null }))
    },
    { onRefused: (err) => out({ refused: (err as { code?: string }).code ?? 'unknown' }) },
  )
  source.on('update', () => out({ rotated: true, serial: serialOf(source.getX509Svid().leaf) }))
  server.listen(0, '127.0.0.1', () =>
    out({ port: (server.address() as AddressInfo).port, id: source.getX509Svid().id.toString(), serial: serialOf(source.getX509Svid().leaf) }),
  )
  const stop = () => server.close(() => void source.close().then(() => process.exit(0)))
  process.once('SIGTERM', stop)
} else if (mode === 'call') {
  const agent = mtlsAgent(source, authorizeId(rest[1]!))
  await new Promise<void>((resolve) => {
    const req = request({ host: '127.0.0.1', port: Number(rest[0]), path: '/', agent }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => {
        const cert = (res.socket as TLSSocket).getPeerCertificate()
        out({ status: res.statusCode, body: JSON.parse(body) as unknown, server_serial: cert.serialNumber, client_id: source.getX509Svid().id.toString() })
        resolve()
      })
    })
    req.on('error', (err: Error & { code?: string }) => {
      out({ error: err.message, code: err.code ?? null })
      resolve()
    })
    req.end()
  })
  agent.destroy()
  await source.close()
  process.exit(0)
} else {
  process.stderr.write(`unknown mode ${mode}\n`)
  process.exit(2)
}
