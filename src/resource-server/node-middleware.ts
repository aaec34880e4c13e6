/**
 * The resource-server check for Node's `http`/`https` (and Express, whose
 * middleware has the same shape): `(req, res, next)`. On success
 * `req.warrant` holds the verified request (claims, binding, actor, chain)
 * and `next()` runs; otherwise the response is the refusal (401/403/400/503
 * with `WWW-Authenticate` and, when due, `DPoP-Nonce`) and `next` is not called.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createRequestVerifier, type ResourceServerOptions, type WarrantContext } from './verifier.js'

export type WarrantRequest = IncomingMessage & { warrant?: WarrantContext }

export function warrantMiddleware(opts: ResourceServerOptions): (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void {
  const verifier = createRequestVerifier(opts)
  return (req, res, next) => {
    const refuse = (err: unknown): void => {
      if (res.headersSent) {
        res.destroy()
        return
      }
      const r = verifier.refusal(err, req)
      res.writeHead(r.status, r.headers)
      res.end(r.body)
    }
    verifier
      .verify(req)
      .then((ctx) => {
        ;(req as WarrantRequest).warrant = ctx
        if (ctx.dpopNonce !== undefined) res.setHeader('dpop-nonce', ctx.dpopNonce)
        next()
      }, refuse)
      // a handler that throws synchronously inside next(): a logged 500, never an unhandled rejection
      .catch(refuse)
  }
}
