/**
 * The Txn-Token check of a service inside the trust domain: exactly one
 * `Txn-Token` header (draft-ietf-oauth-transaction-tokens §7), verified with
 * verifyTxnToken against the broker's JWKS, and the route's scopes and
 * call-chain policy (which workloads must or must not appear on the
 * transaction's path, in which order, with which purpose). As Node
 * `http`/Express middleware (`req.txn`) and as a Fastify plugin
 * (`request.txn`; a route's `config.txnPolicy` / `config.txnScopes` override
 * the route table, `config.txn: false` exempts it). A refusal is 401
 * `invalid_token` or 403 (`insufficient_scope`, `access_denied`) with a small
 * JSON body; the reason is only logged.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/index.js'
import { oauthWireError } from '../errors/oauth.js'
import { JwksCache } from '../tokens/jwks-cache.js'
import type { RevocationSet } from '../tokens/revocation.js'
import { invalidTxnToken, TXN_TOKEN_HEADER, verifyTxnToken, type ChainPolicy, type TxnTokenClaims } from '../tokens/txn-token.js'
import { httpsJwksFetcher } from './jwks-fetcher.js'

/** What one route requires. */
export interface TxnRoute {
  readonly policy?: ChainPolicy
  readonly scopes?: readonly string[]
}

/** `{ 'POST /pay': {...}, '/refunds': {...} }` (method-specific first), or a function; unmatched routes get `defaultRoute`. */
export type TxnRoutes = Readonly<Record<string, TxnRoute>> | ((method: string, path: string) => TxnRoute | undefined)

export interface TxnTokenVerifierOptions {
  issuer: string
  /** `spiffe://<td>`: the Txn-Token's `aud`. */
  trustDomain: string
  jwks: { url: string; ca?: string | Buffer; caFile?: string } | JwksCache
  routes?: TxnRoutes
  defaultRoute?: TxnRoute
  revocations?: Pick<RevocationSet, 'covering'>
  clockSkewSec?: number
  log?: Logger
  nowSec?: () => number
}

export interface TxnTokenVerifier {
  verify(req: IncomingMessage, route?: { path?: string | undefined; route?: TxnRoute | undefined }): Promise<TxnTokenClaims>
  refusal(err: unknown, req: IncomingMessage): { status: number; headers: Record<string, string>; body: string }
}

function routeFor(opts: TxnTokenVerifierOptions, method: string, path: string): TxnRoute | undefined {
  const r = opts.routes
  if (r === undefined) return opts.defaultRoute
  if (typeof r === 'function') return r(method, path) ?? opts.defaultRoute
  return r[`${method} ${path}`] ?? r[path] ?? opts.defaultRoute
}

export function createTxnTokenVerifier(opts: TxnTokenVerifierOptions): TxnTokenVerifier {
  const keys =
    opts.jwks instanceof JwksCache ? opts.jwks : new JwksCache({ fetchJwks: httpsJwksFetcher(opts.jwks), ...(opts.nowSec ? { nowSec: opts.nowSec } : {}) })
  const log = (opts.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'txn-token' })
  const now = opts.nowSec ?? (() => Math.floor(Date.now() / 1000))
  return {
    async verify(req, r) {
      const method = req.method ?? 'GET'
      const path = r?.path ?? (req.url ?? '/').split('?')[0]!
      const values = req.headersDistinct[TXN_TOKEN_HEADER]
      if (values === undefined || values.length === 0) throw invalidTxnToken('missing')
      if (values.length > 1) throw invalidTxnToken('multiple')
      const route = r?.route ?? routeFor(opts, method, path)
      return verifyTxnToken(values[0]!, {
        issuer: opts.issuer,
        trustDomain: opts.trustDomain,
        keys,
        nowSec: now(),
        ...(opts.clockSkewSec !== undefined ? { clockSkewSec: opts.clockSkewSec } : {}),
        ...(opts.revocations ? { revocations: opts.revocations } : {}),
        ...(route?.scopes ? { requiredScopes: route.scopes } : {}),
        ...(route?.policy ? { policy: route.policy } : {}),
      })
    },
    refusal(err, req) {
      const code = err instanceof IdentityError ? err.code : undefined
      const known = code === 'ERR_TXN_TOKEN_INVALID' || code === 'ERR_SCOPE_INSUFFICIENT' || code === 'ERR_CALL_CHAIN_REFUSED'
      const wire = known ? oauthWireError(code) : { error: 'server_error', status: 500 }
      const fields = {
        [F.METHOD]: req.method,
        [F.PATH]: (req.url ?? '').split('?')[0],
        [F.ERROR_CODE]: code ?? 'ERR_INTERNAL',
        [F.REASON]: err instanceof IdentityError ? err.details?.['reason'] : undefined,
        txn: err instanceof IdentityError ? err.details?.['txn'] : undefined,
        required: err instanceof IdentityError ? err.details?.['required'] : undefined,
        workload: err instanceof IdentityError ? err.details?.['workload'] : undefined,
      }
      if (wire.status >= 500) log.error({ ...fields, [F.ERR]: err }, 'Txn-Token check failed')
      else log.warn(fields, 'Txn-Token refused')
      return { status: wire.status, headers: { 'content-type': 'application/json', 'cache-control': 'no-store' }, body: JSON.stringify({ error: wire.error }) }
    },
  }
}

export type TxnRequest = IncomingMessage & { txn?: TxnTokenClaims }

/** Node `http`/Express middleware: `req.txn` on success. */
export function txnTokenMiddleware(opts: TxnTokenVerifierOptions): (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void) => void {
  const verifier = createTxnTokenVerifier(opts)
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
      .then((claims) => {
        ;(req as TxnRequest).txn = claims
        next()
      }, refuse)
      .catch(refuse)
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    txn: TxnTokenClaims | null
  }
  interface FastifyContextConfig {
    txnPolicy?: ChainPolicy
    txnScopes?: readonly string[]
    txn?: boolean
  }
}

const plugin: FastifyPluginAsync<TxnTokenVerifierOptions> = async (app: FastifyInstance, opts: TxnTokenVerifierOptions) => {
  const verifier = createTxnTokenVerifier(opts)
  app.decorateRequest('txn', null)
  app.addHook('onRequest', async (request, reply) => {
    const config = request.routeOptions.config as { txnPolicy?: ChainPolicy; txnScopes?: readonly string[]; txn?: boolean } | undefined
    if (config?.txn === false) return
    const own = config?.txnPolicy !== undefined || config?.txnScopes !== undefined
    try {
      request.txn = await verifier.verify(request.raw, {
        path: request.routeOptions.url,
        route: own ? { ...(config.txnPolicy ? { policy: config.txnPolicy } : {}), ...(config.txnScopes ? { scopes: config.txnScopes } : {}) } : undefined,
      })
    } catch (err) {
      const r = verifier.refusal(err, request.raw)
      return reply.code(r.status).headers(r.headers).send(r.body)
    }
  })
}
;(plugin as unknown as Record<symbol, boolean>)[Symbol.for('skip-override')] = true

/** The Txn-Token check as a Fastify plugin (see the module comment). */
export const txnTokenFastify = plugin
