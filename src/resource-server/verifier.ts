/**
 * What both middlewares share: options, turning a Node request into a
 * ResourceRequest (absolute URL, headers, client certificate), route scopes,
 * and the refusal's wire form. The checks themselves are the token library's
 * verifyResourceRequest.
 */
import type { IncomingMessage } from 'node:http'
import type { TLSSocket } from 'node:tls'
import { F, nullLogger, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/index.js'
import { createDpopNonces, MemoryReplayCache, type DpopNonces, type DpopReplayCache } from '../tokens/dpop.js'
import { JwksCache } from '../tokens/jwks-cache.js'
import { ResourceRequestError, verifyResourceRequest, type ResourceRequestOptions, type VerifiedResourceRequest } from '../tokens/request.js'
import { httpsJwksFetcher } from './jwks-fetcher.js'
import type { RevocationSet } from '../tokens/revocation.js'

/** `{ 'GET /tools/search': ['tools:read'], '/admin': ['admin'] }` (method-specific first), or a function. */
export type RouteScopes = Readonly<Record<string, readonly string[]>> | ((method: string, path: string) => readonly string[] | undefined)

export interface ResourceServerOptions {
  /** The broker's issuer URL. */
  issuer: string
  /** This resource server's identifier(s), matched against `aud`. */
  audience: string | readonly string[]
  /** The broker's JWKS: a URL fetched over HTTPS (with `ca`/`caFile`), or a cache the caller built. */
  jwks: { url: string; ca?: string | Buffer; caFile?: string } | JwksCache
  /**
   * The origin clients address (`https://rs.example.com`), used for the DPoP `htu`.
   * Without it the origin comes from the connection (TLS or not) and the Host
   * header; set it behind a proxy.
   */
  origin?: string
  /** Scopes every route needs unless routeScopes names others. */
  requiredScopes?: readonly string[]
  routeScopes?: RouteScopes
  allowBearer?: boolean
  refuseDelegated?: boolean
  maxDelegationDepth?: number
  clockSkewSec?: number
  /** Require server nonces in proofs (RFC 9449 §9); `true` creates them with a 5-minute window. */
  dpopNonces?: DpopNonces | true
  dpopAlgorithms?: readonly string[]
  replay?: DpopReplayCache
  realm?: string
  /** Revocations to refuse (a RevocationFeed from subscribeRevocations, or any RevocationSet). */
  revocations?: Pick<RevocationSet, 'covering'>
  log?: Logger
  nowSec?: () => number
}

/** What a verified request carries: `req.warrant`. */
export type WarrantContext = VerifiedResourceRequest

export interface RequestVerifier {
  /** `route.path`: the route pattern for routeScopes (default: the request path); `route.scopes` overrides them. */
  verify(req: IncomingMessage, route?: { path?: string | undefined; scopes?: readonly string[] | undefined }): Promise<WarrantContext>
  /** Status, headers and body for a refusal (any error), logged once with every detail. */
  refusal(err: unknown, req: IncomingMessage): { status: number; headers: Record<string, string>; body: string }
}

function scopesFor(opts: ResourceServerOptions, method: string, path: string): readonly string[] | undefined {
  const rs = opts.routeScopes
  if (rs === undefined) return opts.requiredScopes
  if (typeof rs === 'function') return rs(method, path) ?? opts.requiredScopes
  return rs[`${method} ${path}`] ?? rs[path] ?? opts.requiredScopes
}

export function createRequestVerifier(opts: ResourceServerOptions): RequestVerifier {
  const keys =
    opts.jwks instanceof JwksCache ? opts.jwks : new JwksCache({ fetchJwks: httpsJwksFetcher(opts.jwks), ...(opts.nowSec ? { nowSec: opts.nowSec } : {}) })
  const nonces = opts.dpopNonces === true ? createDpopNonces({ windowSec: 300 }) : opts.dpopNonces
  const replay = opts.replay ?? new MemoryReplayCache(opts.nowSec ? { nowSec: opts.nowSec } : {})
  const log = (opts.log ?? nullLogger).child({ [F.SUBSYSTEM]: 'resource-server' })
  const origin = opts.origin === undefined ? undefined : new URL(opts.origin).origin

  const base: Omit<ResourceRequestOptions, 'requiredScopes' | 'nowSec'> = {
    issuer: opts.issuer,
    audience: opts.audience,
    keys,
    dpop: { replay, ...(nonces ? { nonces } : {}), ...(opts.dpopAlgorithms ? { algorithms: opts.dpopAlgorithms } : {}) },
    ...(opts.allowBearer !== undefined ? { allowBearer: opts.allowBearer } : {}),
    ...(opts.refuseDelegated !== undefined ? { refuseDelegated: opts.refuseDelegated } : {}),
    ...(opts.maxDelegationDepth !== undefined ? { maxDelegationDepth: opts.maxDelegationDepth } : {}),
    ...(opts.clockSkewSec !== undefined ? { clockSkewSec: opts.clockSkewSec } : {}),
    ...(opts.realm !== undefined ? { realm: opts.realm } : {}),
    ...(opts.revocations !== undefined ? { revocations: opts.revocations } : {}),
  }

  return {
    async verify(req, route) {
      const method = req.method ?? 'GET'
      const target = req.url ?? '/'
      const socket = req.socket as Partial<TLSSocket>
      const tls = socket.encrypted === true
      const reqOrigin = origin ?? `${tls ? 'https' : 'http'}://${req.headers.host ?? 'invalid'}`
      let url: URL
      try {
        url = new URL(target, reqOrigin)
      } catch {
        throw new IdentityError('ERR_REQUEST_MALFORMED', 'malformed request', { details: { reason: 'url' } })
      }
      const cert = tls ? socket.getPeerCertificate?.(false) : undefined
      const certDer = cert !== undefined && cert !== null && Buffer.isBuffer(cert.raw) && cert.raw.length > 0 ? new Uint8Array(cert.raw) : undefined
      const dpop = req.headersDistinct['dpop']
      const required = route?.scopes ?? scopesFor(opts, method, route?.path ?? url.pathname)
      return verifyResourceRequest(
        {
          authorization: req.headers.authorization,
          dpop: dpop ?? undefined,
          method,
          url: `${url.origin}${url.pathname}`,
          ...(certDer ? { clientCertDer: certDer } : {}),
        },
        { ...base, ...(required ? { requiredScopes: required } : {}), ...(opts.nowSec ? { nowSec: opts.nowSec() } : {}) },
      )
    },

    refusal(err, req) {
      const e = err instanceof ResourceRequestError ? err : undefined
      const status = e?.status ?? (err instanceof IdentityError && err.code === 'ERR_REQUEST_MALFORMED' ? 400 : 500)
      const error = e?.error ?? (status === 400 ? 'invalid_request' : 'server_error')
      const fields = {
        [F.METHOD]: req.method,
        [F.PATH]: (req.url ?? '').split('?')[0],
        [F.ERROR_CODE]: err instanceof IdentityError ? err.code : 'ERR_INTERNAL',
        [F.REASON]: err instanceof IdentityError ? err.details?.['reason'] : undefined,
        [F.JTI]: err instanceof IdentityError ? err.details?.['jti'] : undefined,
        [F.KID]: err instanceof IdentityError ? err.details?.['kid'] : undefined,
      }
      if (status >= 500) log.error({ ...fields, [F.ERR]: err }, 'Resource request failed')
      else log.warn(fields, 'Resource request refused')
      const headers: Record<string, string> = { 'content-type': 'application/json', 'cache-control': 'no-store' }
      if (e?.wwwAuthenticate !== undefined) headers['www-authenticate'] = e.wwwAuthenticate
      if (e?.dpopNonce !== undefined) headers['dpop-nonce'] = e.dpopNonce
      return { status, headers, body: JSON.stringify({ error }) }
    },
  }
}
