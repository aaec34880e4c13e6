import { createServer, type Server } from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { ServerCredentials } from '../../../../src/server/federation/endpoint.js'

export type Route = (req: IncomingMessage, res: ServerResponse) => void

/** A tiny HTTPS server whose answers are chosen per path, for misbehaving bundle endpoints. */
export async function startTestServer(
  creds: () => ServerCredentials,
  routes: Record<string, Route>,
): Promise<{ port: number; hits: Map<string, number>; close(): Promise<void> }> {
  const hits = new Map<string, number>()
  const c0 = creds()
  const server: Server = createServer({ cert: c0.certChainPem, key: c0.keyPem }, (req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? ''
    hits.set(path, (hits.get(path) ?? 0) + 1)
    const route = routes[path]
    if (!route) res.writeHead(404).end()
    else route(req, res)
  })
  server.prependListener('connection', () => {
    const c = creds()
    server.setSecureContext({ cert: c.certChainPem, key: c.keyPem })
  })
  const sockets = new Set<Socket>()
  server.on('connection', (s: Socket) => {
    sockets.add(s)
    s.on('close', () => sockets.delete(s))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const addr = server.address()
  return {
    port: typeof addr === 'object' && addr ? addr.port : 0,
    hits,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r())
        for (const s of sockets) s.destroy()
      }),
  }
}

export function json(body: string, contentType = 'application/json'): Route {
  return (_req, res) => res.writeHead(200, { 'Content-Type': contentType }).end(body)
}
