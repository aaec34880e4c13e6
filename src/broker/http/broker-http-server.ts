/**
 * The broker's HTTPS endpoints (Fastify on node:https, TLS 1.2+):
 *
 *   GET  /.well-known/oauth-authorization-server[issuer path]   RFC 8414 metadata
 *   POST <issuer>/token        RFC 6749 / 8693 token endpoint (form), DPoP (RFC 9449)
 *   GET  <issuer>/jwks         the broker's signing keys
 *   POST <issuer>/introspect   RFC 7662, callers on the introspection allow-list
 *   POST <issuer>/revoke       RFC 7009
 *   POST/GET <issuer>/tasks[/:id[/end]]   tasks, for orchestrators (JSON, mutual TLS)
 *   POST <issuer>/bc-authorize, <issuer>/intents/outcome   intents (OpenID CIBA, outcome reports): intents/http.ts
 *
 * TLS requests a client certificate but does not verify it
 * (`rejectUnauthorized: false`): clients without one may authenticate with a
 * JWT-SVID assertion, and a presented certificate is verified per request the
 * SPIFFE way (client-auth.ts). The server certificate comes from a
 * `TlsIdentity` that rotates (`setSecureContext`). Connections are capped per
 * source address, the TLS handshake, headers and the whole request have
 * deadlines, and headers and bodies have size limits.
 */
import https from 'node:https'
import type { AddressInfo, Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import { createDpopNonces, MemoryReplayCache, verifyDpopProof, x5tS256, type DpopNonces } from '../../tokens/dpop.js'
import type { BrokerConfig } from '../config.js'
import { matchesIdList } from '../config.js'
import type { AuthenticatedClient, BrokerService, KeyBinding } from '../contract.js'
import { ClientAuthenticator, type TrustSource } from './client-auth.js'
import { parseForm, parseTokenRequest, single, type Form } from './form.js'
import { brokerEndpoints, brokerMetadata, type BrokerEndpoints } from './metadata.js'
import { noStore, replyOAuthError } from './oauth-reply.js'
import { taskErrorStatus, taskId, taskListFilterFromWire, taskSpecFromWire, taskToWire } from './task-wire.js'
import { revocationEntryToWire } from '../../tokens/revocation.js'
import { revocationRequestFromWire } from './revocation-wire.js'
import type { StoredRevocation } from '../store/broker-store.js'
import type { CredentialVault } from '../credentials.js'
import type { SsfTransmitter } from '../ssf-transmitter.js'
import type { SsfClients } from '../ssf-clients.js'
import type { PushAnswer } from '../ssf-receiver.js'
import { registerSsfPushRoute, registerSsfRoutes } from './ssf-wire.js'
import type { IntentService } from '../intents/intent-service.js'
import { registerIntentRoutes, replyIntentError } from '../intents/http.js'

/** The broker's own TLS certificate and key (PEM), current and on change. */
export interface TlsIdentity {
  current(): { certChainPem: string; keyPem: string }
  /** Calls `fn` after every rotation; returns the unsubscribe function. */
  onChange(fn: () => void): () => void
}

export type BrokerHttpConfig = Pick<
  BrokerConfig,
  'issuer' | 'bindAddress' | 'introspectors' | 'orchestrators' | 'federatedTrustDomains' | 'maxAssertionLifetimeSeconds' | 'dpop' | 'limits'
>

export interface BrokerHttpOptions {
  service: BrokerService
  config: BrokerHttpConfig
  trust: TrustSource
  identity: TlsIdentity
  log: Logger
  /** Milliseconds since the epoch. Default Date.now. */
  now?: () => number
  /** RFC 9396 types the domain understands (metadata only). */
  authorizationDetailsTypes?: readonly string[]
  /** Tools' sealed static credentials (credential shielding): `POST <issuer>/credentials/release` for credential readers. */
  credentials?: CredentialVault
  /** The Shared Signals transmitter, when configured: its routes are in ssf-wire.ts. */
  ssf?: SsfTransmitter
  /** Registered SSF receiver clients: `client_credentials` with HTTP Basic at /token, their Bearer token at the SSF API only. */
  ssfClients?: SsfClients
  /** Intents and human approval (`[broker.intents]`): CIBA and outcome routes in intents/http.ts, the CIBA grant and inline intents at /token. */
  intents?: IntentService
  /** The Shared Signals receivers' push endpoint (RFC 8935), when one subscribes by push. */
  ssfPush?: (path: string, authorization: string | undefined, set: string) => Promise<PushAnswer>
}

export interface BrokerHttpServer {
  readonly host: string
  readonly port: number
  readonly endpoints: BrokerEndpoints
  readonly app: FastifyInstance
  close(): Promise<void>
}

const FORM = 'application/x-www-form-urlencoded'

function mediaType(h: string | undefined): string {
  return (h ?? '').split(';')[0]!.trim().toLowerCase()
}

/** The DER chain the client presented (leaf first), or [] when it sent none. */
export function peerChain(socket: TLSSocket): Uint8Array[] {
  const leaf = socket.getPeerCertificate(true)
  if (!leaf || !leaf.raw) return []
  const out: Uint8Array[] = []
  const seen = new Set<string>()
  let c: typeof leaf | undefined = leaf
  while (c?.raw && !seen.has(c.fingerprint256) && out.length < 8) {
    seen.add(c.fingerprint256)
    out.push(new Uint8Array(c.raw))
    c = c.issuerCertificate
  }
  return out
}

/** Unverified read of a proof's `nonce` claim (the full verification follows client authentication). */
function proofNonce(proof: string): unknown {
  const parts = proof.split('.')
  if (parts.length !== 3) return undefined
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as unknown
    return typeof claims === 'object' && claims !== null ? (claims as Record<string, unknown>).nonce : undefined
  } catch {
    return undefined
  }
}

/** Bytes a revocation subscriber may leave unread before it is disconnected. */
const FEED_MAX_BUFFERED_BYTES = 4 * 1024 * 1024
/** A comment line on an idle feed, so proxies and the subscriber see the connection alive. */
const FEED_PING_MS = 15_000

export async function startBrokerHttpServer(o: BrokerHttpOptions): Promise<BrokerHttpServer> {
  const cfg = o.config
  const now = o.now ?? Date.now
  const nowSec = () => Math.floor(now() / 1000)
  const log = o.log.child({ [F.SUBSYSTEM]: 'broker_http' })
  const endpoints = brokerEndpoints(cfg.issuer)
  const auth = new ClientAuthenticator({
    issuer: cfg.issuer,
    trust: o.trust,
    federatedTrustDomains: cfg.federatedTrustDomains,
    maxAssertionLifetimeSeconds: cfg.maxAssertionLifetimeSeconds,
    now,
  })
  const replay = new MemoryReplayCache({ nowSec })
  const nonces: DpopNonces | undefined = cfg.dpop.nonceRequired ? createDpopNonces({ windowSec: cfg.dpop.nonceTtlSeconds }) : undefined
  const metadata = brokerMetadata(endpoints, {
    dpopAlgorithms: cfg.dpop.algorithms,
    ...(o.authorizationDetailsTypes ? { authorizationDetailsTypes: o.authorizationDetailsTypes } : {}),
    intents: o.intents !== undefined,
  })

  const tlsOptions = () => {
    const id = o.identity.current()
    return { cert: id.certChainPem, key: id.keyPem, minVersion: 'TLSv1.2' as const }
  }
  let server: https.Server | undefined
  const perAddress = new Map<string, number>()
  const app = Fastify({
    serverFactory: (handler) => {
      server = https.createServer(
        {
          ...tlsOptions(),
          requestCert: true,
          rejectUnauthorized: false,
          handshakeTimeout: 5_000,
          maxHeaderSize: cfg.limits.headerBytes,
        },
        handler,
      )
      server.headersTimeout = Math.min(cfg.limits.requestTimeoutMs, 10_000)
      server.requestTimeout = cfg.limits.requestTimeoutMs
      server.keepAliveTimeout = 30_000
      // Connection guard: at most maxConnectionsPerAddress TCP connections per source address.
      server.on('connection', (socket: Socket) => {
        const addr = socket.remoteAddress ?? 'unknown'
        const n = (perAddress.get(addr) ?? 0) + 1
        if (n > cfg.limits.maxConnectionsPerAddress) {
          log.warn({ [F.PEER]: addr, [F.COUNT]: n - 1 }, 'Broker connection refused: too many from this address')
          socket.destroy()
          return
        }
        perAddress.set(addr, n)
        socket.once('close', () => {
          const left = (perAddress.get(addr) ?? 1) - 1
          if (left <= 0) perAddress.delete(addr)
          else perAddress.set(addr, left)
        })
      })
      // No renegotiation (TLS 1.2 only; 1.3 has none): a connection's client certificate is fixed once the
      // handshake is done, so its chain is read once per connection (getPeerCertificate is costly).
      server.on('secureConnection', (socket: TLSSocket) => {
        socket.disableRenegotiation()
        // An attempt ends the connection (left alone, it hangs half-renegotiated).
        socket.prependListener('error', (err: NodeJS.ErrnoException) => {
          if (err.code === 'ERR_TLS_RENEGOTIATION_DISABLED') {
            log.info({ [F.PEER]: socket.remoteAddress }, 'Broker TLS renegotiation refused')
            socket.destroy()
          }
        })
      })
      server.on('tlsClientError', (err) => log.debug({ [F.ERR]: err.message }, 'Broker TLS handshake failed'))
      return server
    },
    bodyLimit: cfg.limits.bodyBytes,
    logger: false,
    return503OnClosing: true,
    forceCloseConnections: true,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
  }) as unknown as FastifyInstance

  const unsubscribe = o.identity.onChange(() => {
    try {
      server?.setSecureContext(tlsOptions())
      log.info({}, 'Broker TLS certificate rotated')
    } catch (err) {
      log.error({ [F.ERR]: String(err) }, 'Broker TLS certificate could not be installed')
    }
  })

  // Bodies: forms arrive as strings for the OAuth endpoints to parse themselves (duplicate parameters matter);
  // JSON only for /tasks; anything else is kept as a string and refused by the route.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser(FORM, { parseAs: 'string' }, (_req, body, done) => done(null, body))
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    try {
      done(
        null,
        JSON.parse(body as string, (k, v: unknown) => (k === '__proto__' || k === 'constructor' ? undefined : v)),
      )
    } catch {
      done(new IdentityError('ERR_REQUEST_MALFORMED', 'request body is not JSON'), undefined)
    }
  })
  app.addContentTypeParser('*', { parseAs: 'string' }, (_req, body, done) => done(null, body))

  const realm = cfg.issuer
  app.setErrorHandler((err, req, reply) => {
    if (isIdentityError(err)) return replyOAuthError(reply, err, { log, endpoint: req.routeOptions.url ?? req.url, realm })
    const status = (err as { statusCode?: number }).statusCode
    // Fastify's own refusals (body too large, bad content length, ...): the caller's fault, said plainly.
    if (status !== undefined && status >= 400 && status < 500) {
      log.info({ endpoint: req.url, [F.ERR]: err instanceof Error ? err.message : String(err), status }, 'Broker request refused')
      return noStore(reply).code(status).type('application/json').send({ error: 'invalid_request' })
    }
    return replyOAuthError(reply, err, { log, endpoint: req.url, realm })
  })
  app.setNotFoundHandler((_req, reply) => noStore(reply).code(404).type('application/json').send({ error: 'not_found' }))

  const chains = new WeakMap<TLSSocket, readonly Uint8Array[]>()
  const chainOf = (req: FastifyRequest): readonly Uint8Array[] => {
    const socket = req.raw.socket as TLSSocket
    let chain = chains.get(socket)
    if (chain === undefined) {
      chain = peerChain(socket)
      chains.set(socket, chain)
    }
    return chain
  }
  const formOf = (req: FastifyRequest): Form => {
    if (mediaType(req.headers['content-type']) !== FORM || typeof req.body !== 'string') {
      throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', `content type must be ${FORM}`)
    }
    return parseForm(req.body)
  }
  const withNonce = (reply: FastifyReply) => (nonces ? reply.header('dpop-nonce', nonces.issue(nowSec())) : reply)

  // RFC 8414 metadata (and the same document under the issuer for clients that look there).
  app.get(endpoints.metadataPath, async (_req, reply) => reply.header('cache-control', 'public, max-age=300').send(metadata))

  app.get(`${endpoints.basePath}/jwks`, async (_req, reply) =>
    reply
      .header('cache-control', 'public, max-age=60')
      .type('application/jwk-set+json')
      .send(await o.service.jwks()),
  )

  // SSF receiver clients (ssf-clients.ts): HTTP Basic is theirs alone, answered apart from the agents' path, so
  // their credentials never reach client-auth.ts (tasks, exchange, introspection, revocation know nothing of them).
  const ssfClientToken = async (req: FastifyRequest, reply: FastifyReply, form: Form) => {
    try {
      const res = await o.ssfClients!.token(req.headers.authorization, form)
      return noStore(reply).type('application/json').send(res)
    } catch (err) {
      const code = isIdentityError(err) ? err.code : undefined
      if (code === 'ERR_CLIENT_AUTH_FAILED') {
        log.info(
          {
            endpoint: 'token',
            grant_type: 'client_credentials',
            [F.ERROR_CODE]: code,
            ...(isIdentityError(err) && err.details ? { details: err.details } : {}),
          },
          'SSF client authentication failed',
        )
        return noStore(reply)
          .code(401)
          .header('www-authenticate', `Basic realm="${realm.replace(/["\\]/g, '')}"`)
          .type('application/json')
          .send({ error: 'invalid_client' })
      }
      return replyOAuthError(reply, err, { log, endpoint: 'token', realm, grantType: 'client_credentials' })
    }
  }

  app.post(`${endpoints.basePath}/token`, async (req, reply) => {
    let spiffeId: string | undefined
    let grantType: string | undefined
    try {
      const form = formOf(req)
      grantType = single(form, 'grant_type')
      if (o.ssfClients !== undefined && /^basic /i.test(req.headers.authorization ?? '')) return await ssfClientToken(req, reply, form)
      // RFC 9449 §4.3 check 1: at most one DPoP header (Node joins repeated ones with ", "; a JWS has no comma).
      const dpopHeader = req.headers.dpop
      const proofCount = req.raw.rawHeaders.filter((_, i) => i % 2 === 0 && req.raw.rawHeaders[i]!.toLowerCase() === 'dpop').length
      if (proofCount > 1 || (typeof dpopHeader === 'string' && dpopHeader.includes(','))) {
        throw new IdentityError('ERR_DPOP_PROOF_INVALID', 'invalid DPoP proof', { details: { reason: 'multiple_headers' } })
      }
      const proof = typeof dpopHeader === 'string' && dpopHeader !== '' ? dpopHeader : undefined
      // A proof without a current server nonce is answered use_dpop_nonce before anything is verified or
      // consumed (RFC 9449 §8), so the client's retry can reuse its client assertion.
      if (proof !== undefined && nonces) {
        const n = proofNonce(proof)
        if (typeof n !== 'string' || !nonces.check(n, nowSec())) {
          throw new IdentityError('ERR_DPOP_NONCE_REQUIRED', 'DPoP nonce required', {
            details: { reason: typeof n === 'string' ? 'nonce_stale' : 'nonce_missing' },
          })
        }
      }
      const pending = await auth.verify(form, chainOf(req), { authorizationHeader: req.headers.authorization, connection: req.raw.socket })
      const client = pending.client
      spiffeId = client.spiffeId
      let binding: KeyBinding
      if (proof !== undefined) {
        const verified = await verifyDpopProof(proof, {
          method: req.method,
          url: endpoints.token,
          nowSec: nowSec(),
          maxAgeSec: cfg.dpop.iatWindowSeconds,
          algorithms: cfg.dpop.algorithms,
          replay,
          ...(nonces ? { nonces } : {}),
        })
        binding = { kind: 'dpop', jkt: verified.jkt }
      } else if (client.method === 'tls_client_auth' && client.certDer) {
        binding = { kind: 'mtls', x5tS256: x5tS256(client.certDer) }
      } else {
        binding = { kind: 'bearer' }
      }
      const tokenRequest = parseTokenRequest(form)
      pending.commit()
      const res = o.intents?.handles(tokenRequest)
        ? await o.intents.token(tokenRequest, single(form, 'auth_req_id'), client, binding)
        : await o.service.token(tokenRequest, client, binding)
      log.info(
        { endpoint: 'token', [F.SPIFFE_ID]: client.spiffeId, grant_type: tokenRequest.grantType, binding: binding.kind, auth_method: client.method },
        'Token issued',
      )
      return withNonce(noStore(reply)).type('application/json').send(res)
    } catch (err) {
      withNonce(reply)
      return replyIntentError(reply, err, { log, endpoint: 'token', spiffeId, realm, grantType })
    }
  })

  const authenticated = async (req: FastifyRequest, form: Form): Promise<AuthenticatedClient> =>
    auth.authenticate(form, chainOf(req), { authorizationHeader: req.headers.authorization, connection: req.raw.socket })

  app.post(`${endpoints.basePath}/introspect`, async (req, reply) => {
    let spiffeId: string | undefined
    try {
      const form = formOf(req)
      const client = await authenticated(req, form)
      spiffeId = client.spiffeId
      if (!matchesIdList(cfg.introspectors, client.spiffeId)) {
        throw new IdentityError('ERR_CLIENT_UNAUTHORIZED', 'caller may not introspect', { details: { reason: 'not on the introspection allow-list' } })
      }
      const token = single(form, 'token')
      if (token === undefined) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'parameter "token" is required')
      const res = await o.service.introspect(token, client)
      log.debug({ endpoint: 'introspect', [F.SPIFFE_ID]: client.spiffeId, active: res.active }, 'Token introspected')
      return noStore(reply).type('application/json').send(res)
    } catch (err) {
      return replyOAuthError(reply, err, { log, endpoint: 'introspect', spiffeId, realm })
    }
  })

  // Credential shielding: a credential reader (the gateway) gets a tool's static credential to inject into the request it
  // forwards. Form `tool=<name>`; the answer is no-store JSON; a refusal is unauthorized_client whatever the reason.
  if (o.credentials) {
    const vault = o.credentials
    app.post(`${endpoints.basePath}/credentials/release`, async (req, reply) => {
      let spiffeId: string | undefined
      try {
        const form = formOf(req)
        const client = await authenticated(req, form)
        spiffeId = client.spiffeId
        const tool = single(form, 'tool')
        if (tool === undefined) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'parameter "tool" is required')
        const c = await vault.release(tool, client)
        return noStore(reply).type('application/json').send({ tool: c.tool, header: c.header, value: c.value, version: c.version })
      } catch (err) {
        return replyOAuthError(reply, err, { log, endpoint: 'credentials.release', spiffeId, realm })
      }
    })
  }

  app.post(`${endpoints.basePath}/revoke`, async (req, reply) => {
    let spiffeId: string | undefined
    try {
      const form = formOf(req)
      const client = await authenticated(req, form)
      spiffeId = client.spiffeId
      const token = single(form, 'token')
      if (token === undefined) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'parameter "token" is required')
      await o.service.revoke(token, client)
      log.info({ endpoint: 'revoke', [F.SPIFFE_ID]: client.spiffeId }, 'Revocation request handled')
      // RFC 7009 §2.2: 200 whether or not the token was known.
      return noStore(reply).code(200).send()
    } catch (err) {
      return replyOAuthError(reply, err, { log, endpoint: 'revoke', spiffeId, realm })
    }
  })

  // Revocations for verifiers (any authenticated SVID client): a Server-Sent Events feed, resumable from a seq
  // (Last-Event-ID or ?since=), and the signed list for offline verifiers.
  const subscriber = async (req: FastifyRequest): Promise<AuthenticatedClient> =>
    auth.authenticate(new Map(), chainOf(req), { authorizationHeader: req.headers.authorization, connection: req.raw.socket })
  const sinceOf = (req: FastifyRequest): number => {
    const h = req.headers['last-event-id']
    const q = (req.query as { since?: unknown }).since
    const v = typeof h === 'string' ? h : q
    if (v === undefined) return 0
    if (typeof v !== 'string' || !/^[0-9]{1,15}$/.test(v)) throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', 'since must be a sequence number')
    return Number(v)
  }
  app.get(`${endpoints.basePath}/revocations/feed`, async (req, reply) => {
    let spiffeId: string | undefined
    let since: number
    try {
      const client = await subscriber(req)
      spiffeId = client.spiffeId
      since = sinceOf(req)
    } catch (err) {
      return replyOAuthError(reply, err, { log, endpoint: 'revocations.feed', spiffeId, realm })
    }
    reply.hijack()
    const raw = reply.raw
    raw.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', 'x-accel-buffering': 'no' })
    let last = since
    let live = false
    const pending: StoredRevocation[] = []
    const send = (e: StoredRevocation) => {
      if (e.seq <= last) return
      last = e.seq
      raw.write(`id: ${e.seq}\nevent: revocation\ndata: ${JSON.stringify(revocationEntryToWire(e))}\n\n`)
      // A subscriber that does not read is cut off (it resumes from its last seq when it reconnects).
      if (raw.writableLength > FEED_MAX_BUFFERED_BYTES) {
        log.warn({ endpoint: 'revocations.feed', [F.SPIFFE_ID]: spiffeId, seq: e.seq }, 'Revocation subscriber too slow; disconnected')
        raw.destroy()
      }
    }
    // Subscribe before reading the backlog, so nothing recorded in between is missed.
    const unsubscribe = o.service.onRevocation((e) => (live ? send(e) : pending.push(e)))
    const ping = setInterval(() => raw.write(': ping\n\n'), FEED_PING_MS)
    ping.unref()
    raw.once('close', () => {
      clearInterval(ping)
      unsubscribe()
      log.debug({ endpoint: 'revocations.feed', [F.SPIFFE_ID]: spiffeId, seq: last }, 'Revocation subscriber left')
    })
    try {
      for (const e of await o.service.listRevocations(since)) send(e)
      for (const e of pending.splice(0)) send(e)
      live = true
      raw.write(`event: synced\ndata: ${JSON.stringify({ seq: last })}\n\n`)
      log.info({ endpoint: 'revocations.feed', [F.SPIFFE_ID]: spiffeId, since, seq: last }, 'Revocation subscriber joined')
    } catch (err) {
      log.error({ endpoint: 'revocations.feed', [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Revocation feed failed')
      raw.destroy()
    }
  })
  // Revocation admins (mTLS or JWT-SVID, on the broker's revocation_admins list): the admin socket's POST /v1/revocations over HTTPS.
  app.post(`${endpoints.basePath}/revocations`, async (req, reply) => {
    let spiffeId: string | undefined
    try {
      const client = await subscriber(req)
      spiffeId = client.spiffeId
      if (mediaType(req.headers['content-type']) !== 'application/json')
        throw new IdentityError('ERR_REVOCATION_INVALID', 'invalid revocation: content type must be application/json')
      const r = await o.service.revokeAt(revocationRequestFromWire(req.body), client)
      log.info({ endpoint: 'revocations.create', [F.SPIFFE_ID]: client.spiffeId, seq: r.entry.seq, kind: r.entry.kind, created: r.created }, 'Revocation')
      return noStore(reply)
        .code(r.created ? 201 : 200)
        .type('application/json')
        .send({ ...revocationEntryToWire(r.entry), created: r.created, tokens_revoked: r.tokens })
    } catch (err) {
      const code = isIdentityError(err) ? err.code : undefined
      const status = code === 'ERR_CLIENT_AUTH_FAILED' ? 401 : code === 'ERR_CLIENT_UNAUTHORIZED' ? 403 : code === 'ERR_REVOCATION_INVALID' ? 400 : 500
      log[status >= 500 ? 'error' : 'info'](
        {
          endpoint: 'revocations.create',
          [F.SPIFFE_ID]: spiffeId,
          [F.ERROR_CODE]: code ?? 'internal',
          [F.ERR]: err instanceof Error ? err.message : String(err),
        },
        'Revocation request refused',
      )
      const body: Record<string, unknown> = {
        error: status === 401 ? 'invalid_client' : status === 403 ? 'unauthorized_client' : status === 400 ? 'invalid_request' : 'server_error',
      }
      // the caller's own malformed request is described; nothing else is
      if (status === 400 && err instanceof Error) body.error_description = err.message.slice(0, 300)
      return noStore(reply).code(status).type('application/json').send(body)
    }
  })
  app.get(`${endpoints.basePath}/revocations/list`, async (req, reply) => {
    let spiffeId: string | undefined
    try {
      spiffeId = (await subscriber(req)).spiffeId
      const jws = await o.service.signedRevocationList()
      return noStore(reply).type('application/jwt').send(jws)
    } catch (err) {
      return replyOAuthError(reply, err, { log, endpoint: 'revocations.list', spiffeId, realm })
    }
  })

  if (o.ssf)
    registerSsfRoutes(app, {
      transmitter: o.ssf,
      basePath: endpoints.basePath,
      authenticate: subscriber,
      ...(o.ssfClients ? { clients: o.ssfClients } : {}),
      log,
    })
  if (o.ssfPush) registerSsfPushRoute(app, { basePath: endpoints.basePath, receive: o.ssfPush, log })
  if (o.intents)
    registerIntentRoutes(app, {
      intents: o.intents,
      basePath: endpoints.basePath,
      authenticate: authenticated,
      formOf,
      reporters: o.intents.config.outcomeReporters ?? cfg.introspectors,
      realm,
      log,
    })

  // Tasks for orchestrator workloads: mutual TLS with an X.509-SVID on the orchestrator allow-list; JSON.
  const orchestrator = async (req: FastifyRequest): Promise<AuthenticatedClient> => {
    const client = await auth.authenticate(new Map(), chainOf(req), { authorizationHeader: req.headers.authorization, connection: req.raw.socket })
    if (!matchesIdList(cfg.orchestrators, client.spiffeId)) {
      throw new IdentityError('ERR_CLIENT_UNAUTHORIZED', 'caller is not an orchestrator', {
        details: { reason: 'not on the orchestrator allow-list', spiffe_id: client.spiffeId },
      })
    }
    return client
  }
  const taskRoute =
    (endpoint: string, fn: (req: FastifyRequest, client: AuthenticatedClient) => Promise<{ status: number; body: unknown }>) =>
    async (req: FastifyRequest, reply: FastifyReply) => {
      let spiffeId: string | undefined
      try {
        const client = await orchestrator(req)
        spiffeId = client.spiffeId
        const r = await fn(req, client)
        return noStore(reply).code(r.status).type('application/json').send(r.body)
      } catch (err) {
        const code = isIdentityError(err) ? err.code : undefined
        const status = taskErrorStatus(code)
        const fields = {
          endpoint,
          [F.ERROR_CODE]: code ?? 'internal',
          [F.SPIFFE_ID]: spiffeId,
          [F.ERR]: err instanceof Error ? err.message : String(err),
          ...(isIdentityError(err) && err.details ? { details: err.details } : {}),
        }
        if (status >= 500) log.error(fields, 'Task request failed')
        else log.info(fields, 'Task request refused')
        // Invalid specs are described (the caller's own input); everything else is a bare code.
        const body: Record<string, unknown> = {
          error:
            code === 'ERR_CLIENT_AUTH_FAILED'
              ? 'invalid_client'
              : code === 'ERR_CLIENT_UNAUTHORIZED'
                ? 'unauthorized_client'
                : status === 404
                  ? 'not_found'
                  : status >= 500
                    ? 'server_error'
                    : 'invalid_request',
        }
        if (code === 'ERR_TASK_INVALID' && isIdentityError(err)) body.error_description = err.message.slice(0, 500)
        return noStore(reply).code(status).type('application/json').send(body)
      }
    }
  const ownTask = async (id: string, client: AuthenticatedClient) => {
    const t = await o.service.getTask(id)
    // An orchestrator sees and ends only the tasks it created; others' look like unknown ones.
    if (t.createdBy !== client.spiffeId)
      throw new IdentityError('ERR_TASK_NOT_FOUND', 'task not found', { details: { reason: 'created by another orchestrator', created_by: t.createdBy } })
    return t
  }
  app.post(
    `${endpoints.basePath}/tasks`,
    taskRoute('tasks.create', async (req, client) => {
      if (mediaType(req.headers['content-type']) !== 'application/json')
        throw new IdentityError('ERR_TASK_INVALID', 'invalid task: content type must be application/json')
      const t = await o.service.createTask(taskSpecFromWire(req.body), client)
      log.info({ endpoint: 'tasks.create', [F.SPIFFE_ID]: client.spiffeId, task_id: t.taskId, agent: t.agent }, 'Task created')
      return { status: 201, body: taskToWire(t, now()) }
    }),
  )
  app.get(
    `${endpoints.basePath}/tasks`,
    taskRoute('tasks.list', async (req, client) => {
      const tasks = await o.service.listTasks(taskListFilterFromWire(req.query))
      return { status: 200, body: { tasks: tasks.filter((t) => t.createdBy === client.spiffeId).map((t) => taskToWire(t, now())) } }
    }),
  )
  app.get(
    `${endpoints.basePath}/tasks/:id`,
    taskRoute('tasks.get', async (req, client) => {
      const t = await ownTask(taskId((req.params as { id?: unknown }).id), client)
      return { status: 200, body: taskToWire(t, now()) }
    }),
  )
  app.post(
    `${endpoints.basePath}/tasks/:id/end`,
    taskRoute('tasks.end', async (req, client) => {
      const t = await ownTask(taskId((req.params as { id?: unknown }).id), client)
      const ended = await o.service.endTask(t.taskId, client)
      log.info({ endpoint: 'tasks.end', [F.SPIFFE_ID]: client.spiffeId, task_id: t.taskId }, 'Task ended')
      return { status: 200, body: taskToWire(ended, now()) }
    }),
  )

  try {
    await app.listen({ host: cfg.bindAddress.host, port: cfg.bindAddress.port })
  } catch (err) {
    unsubscribe()
    await app.close().catch(() => undefined)
    throw new IdentityError('ERR_CONFIG_INVALID', `broker cannot listen on ${cfg.bindAddress.host}:${cfg.bindAddress.port}: ${(err as Error).message}`, {
      cause: err,
    })
  }
  const addr = server!.address() as AddressInfo
  log.info({ [F.ADDRESS]: `${addr.address}:${addr.port}`, issuer: cfg.issuer }, 'Broker listening')
  return {
    host: addr.address,
    port: addr.port,
    endpoints,
    app,
    async close() {
      unsubscribe()
      await app.close()
    },
  }
}
