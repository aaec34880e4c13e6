/**
 * The gateway's wire: HTTPS (node:https, TLS 1.2+) in front of the tools.
 * `https://<gateway>/tools/<name>/<path>` is one call:
 *
 * 1. the tool is looked up in the registry;
 * 2. the caller is authenticated: a broker access token (`Authorization:
 *    DPoP` with its proof, `htu` = the gateway URL the agent called; an
 *    mTLS-bound token with its certificate; `Bearer` only where the token
 *    library allows it) verified against the broker's JWKS, else the
 *    X.509-SVID of the TLS connection, verified against the bundle of the
 *    leaf's own trust domain (the TLS layer requests a certificate but does
 *    not verify it, so token clients without one can connect);
 * 3. the policy (policy.ts): allowed agents, ceiling from the signed bounds
 *    document, the token's scope;
 * 4. a Txn-Token from the broker for this call (txn-token-client.ts);
 * 5. one `gateway.call` audit event, durable before anything is forwarded
 *    (an unavailable log refuses the call);
 * 6. the request is forwarded to the tool over HTTPS (the tool's SVID
 *    verified against its trust domain's bundle, or its certificate against
 *    the configured CA and its host name), the agent's credentials and
 *    hop-by-hop headers stripped and `Txn-Token` added; bodies stream both
 *    ways.
 *
 * Refusals are small OAuth-style JSON bodies (`{"error": ...}`, 401 with a
 * challenge for authentication, 403 for policy, 404 for an unknown tool,
 * 502/503/504 upstream); the reason goes only to the log and the audit
 * event. No token is ever logged.
 */
import https from 'node:https'
import type { IncomingMessage, ServerResponse, ClientRequest } from 'node:http'
import { checkServerIdentity, type PeerCertificate, type TLSSocket } from 'node:tls'
import type { AddressInfo, Socket } from 'node:net'
import { X509Certificate } from 'node:crypto'
import { F, type Logger } from '../common/log/logger.js'
import type { AuditEventInput } from '../audit/event.js'
import type { AuditSink } from '../audit/sink.js'
import { IdentityError, isIdentityError } from '../errors/identity-error.js'
import type { Ceiling } from '../spiffe/bounds/ceiling.js'
import type { X509BundleSource } from '../spiffe/bundle/x509-bundle.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import { parseLeafSpiffeId, verifyX509Svid } from '../spiffe/x509-svid/verify.js'
import { DPOP_ALGORITHMS, type DpopReplayCache } from '../tokens/dpop.js'
import type { JwksCache } from '../tokens/jwks-cache.js'
import { ResourceRequestError, verifyResourceRequest } from '../tokens/request.js'
import { peerCertificateChain, verifyPeerChain } from '../workload-client/tls/verify-peer.js'
import { agentResponseHeaders, toolRequestHeaders } from './headers.js'
import { isMetadataPath, mcpChallenge, mcpResource, metadataAnswer, schemeOf, type McpContext } from './mcp.js'
import { decide, type Caller } from './policy.js'
import { routeOf, TOOL_NAME_RE, type Tool, type ToolRegistry } from './registry.js'
import type { IssuedTxnToken, TxnTokenRequest } from './txn-token-client.js'

/** The gateway's TLS certificate and key (its X.509-SVID), rotating. */
export interface GatewayIdentity {
  current(): { certChainPem: string; keyPem: string }
  /** Calls `fn` after every change; returns the unsubscribe function. */
  onChange(fn: () => void): () => void
}

export interface GatewayTrust {
  localTrustDomain(): TrustDomain
  /** Live X.509 bundles (local and federated). */
  bundles(): X509BundleSource
  /** PEM of every trusted X.509 authority (for OpenSSL's first check of a tool's chain). */
  authoritiesPem(): string
}

export interface GatewayServerOptions {
  /** Bind address. */
  host: string
  port: number
  /** The origin agents address (`https://gateway:8444`): the DPoP `htu`. */
  url: string
  identity: GatewayIdentity
  trust: GatewayTrust
  /** Foreign trust domains whose agents may call. */
  federatedTrustDomains: readonly TrustDomain[]
  registry: () => ToolRegistry
  ceilingFor: (id: SpiffeId) => Ceiling
  broker: {
    issuer: string
    keys: JwksCache
    replay: DpopReplayCache
    allowBearer: boolean
    /** A Txn-Token for one call. */
    txnToken(r: TxnTokenRequest): Promise<IssuedTxnToken>
    /** A tool's static credential from the broker (credential shielding); only for tools with `credential: true`. */
    releaseCredential?(tool: string): Promise<{ header: string; value: string }>
  }
  /** PEM of a CA for tool servers without an SVID. */
  toolCa?: string
  audit: AuditSink
  limits: { headerBytes: number; bodyBytes: number; requestTimeoutMs: number; upstreamTimeoutMs: number; maxConnectionsPerAddress: number }
  log: Logger
  now?: () => number
}

export interface GatewayServer {
  readonly port: number
  close(): Promise<void>
}

type Refusal = { status: number; error: string; reason: string; headers?: Record<string, string> }

const PURPOSE_RE = /^[\x20-\x7e]{1,256}$/

/** Where one call's time went, for the debug log (milliseconds per phase, in order; each from the end of the one before). */
class Phases {
  readonly all: Record<string, number> = {}
  #t = performance.now()
  mark(name: string): void {
    const t = performance.now()
    this.all[name] = Math.round((t - this.#t) * 1000) / 1000
    this.#t = t
  }
}

function refusalOf(status: number, error: string, reason: string, headers?: Record<string, string>): Refusal {
  return { status, error, reason, ...(headers ? { headers } : {}) }
}

function send(res: ServerResponse, r: Refusal): void {
  if (res.headersSent) {
    res.destroy()
    return
  }
  const body = JSON.stringify({ error: r.error })
  res.writeHead(r.status, { 'content-type': 'application/json', 'cache-control': 'no-store', 'content-length': Buffer.byteLength(body), ...r.headers })
  res.end(body)
}

/** A refusal's reason as an audit reason code (`details.reason` when it is one, else the error code). */
function reasonOf(err: IdentityError): string {
  const r = err.details?.['reason']
  return typeof r === 'string' && /^[A-Za-z0-9_.:/-]{1,100}$/.test(r) ? r : err.code
}

/** The SPIFFE ID in a certificate's URI SAN, if any (no verification). */
function spiffeUriOf(cert: PeerCertificate): string | undefined {
  const san = cert.subjectaltname ?? ''
  return /(?:^|, )URI:(spiffe:\/\/[^,\s]+)/.exec(san)?.[1]
}

export async function startGatewayServer(o: GatewayServerOptions): Promise<GatewayServer> {
  const log = o.log.child({ [F.SUBSYSTEM]: 'gateway' })
  const now = o.now ?? Date.now
  const origin = new URL(o.url).origin
  const mcp: McpContext = { origin, issuer: o.broker.issuer, dpopAlgorithms: DPOP_ALGORITHMS }
  const perAddress = new Map<string, number>()
  /** Per TLS connection: the verified client SVID, while the bundles and the leaf hold (getPeerCertificate is costly). */
  const verified = new WeakMap<object, { id: string; certDer: Uint8Array | undefined; bundles: unknown; untilMs: number } | null>()

  const tlsOptions = () => {
    const c = o.identity.current()
    return { cert: c.certChainPem, key: c.keyPem }
  }

  // ---------------------------------------------------------------- upstream TLS
  let upstream: { key: unknown; agent: https.Agent } | undefined
  const upstreamAgent = (): https.Agent => {
    const id = o.identity.current()
    const ca = o.trust.authoritiesPem() + (o.toolCa ?? '')
    const key = `${id.certChainPem}|${ca}`
    if (upstream && upstream.key === key) return upstream.agent
    upstream?.agent.destroy()
    const agent = new https.Agent({
      keepAlive: true,
      maxCachedSessions: 0,
      minVersion: 'TLSv1.2',
      ca,
      cert: id.certChainPem,
      key: id.keyPem,
      rejectUnauthorized: true,
      // A tool with an X.509-SVID: its chain against the bundle of its own trust domain (not just any trusted CA).
      // Without one: the configured CA verified it (OpenSSL, rejectUnauthorized) and the host name must match.
      checkServerIdentity: (host, cert) => {
        if (spiffeUriOf(cert) !== undefined) {
          try {
            verifyPeerChain(peerCertificateChain(cert), o.trust.bundles(), { now: new Date(now()) })
            return undefined
          } catch (err) {
            return err instanceof Error ? err : new Error('tool certificate refused')
          }
        }
        if (o.toolCa === undefined) return new Error('tool presented no SVID and no tool CA is configured')
        return checkServerIdentity(host, cert)
      },
    })
    upstream = { key, agent }
    return agent
  }

  // ---------------------------------------------------------------- authentication
  const admitted = (td: TrustDomain) => td.equals(o.trust.localTrustDomain()) || o.federatedTrustDomains.some((f) => f.equals(td))

  /** The connection's verified client SVID, or undefined when it sent none; throws when it sent one that does not verify. */
  const connectionSvid = async (socket: TLSSocket): Promise<{ id: string; certDer: Uint8Array } | undefined> => {
    const bundles = o.trust.bundles()
    const hit = verified.get(socket)
    if (hit === null) return undefined
    if (hit && hit.bundles === bundles && now() < hit.untilMs) return { id: hit.id, certDer: hit.certDer! }
    const chain = peerCertificateChain(socket.getPeerCertificate(true))
    if (chain.length === 0) {
      verified.set(socket, null)
      return undefined
    }
    const leafId = parseLeafSpiffeId(chain[0]!)
    if (!admitted(leafId.trustDomain))
      throw new IdentityError('ERR_CLIENT_AUTH_FAILED', 'client authentication failed', { details: { reason: 'trust_domain' } })
    const v = await verifyX509Svid(chain, bundles, { now: new Date(now()) })
    const notAfter = Date.parse(new X509Certificate(chain[0]!).validTo)
    verified.set(socket, { id: v.id.toString(), certDer: chain[0]!, bundles, untilMs: Math.min(notAfter, now() + 60_000) })
    return { id: v.id.toString(), certDer: chain[0]! }
  }

  interface Authenticated {
    caller: Caller
    authn: 'x509-svid' | 'access-token'
    accessToken?: string
    jti?: string
  }

  const authenticate = async (req: IncomingMessage, path: string, tool: Tool | undefined): Promise<Authenticated> => {
    const socket = req.socket as TLSSocket
    let svid: { id: string; certDer: Uint8Array } | undefined
    let svidError: unknown
    try {
      svid = await connectionSvid(socket)
    } catch (err) {
      svidError = err
    }
    const authorization = req.headers.authorization
    if (authorization !== undefined) {
      const v = await verifyResourceRequest(
        {
          authorization,
          dpop: req.headersDistinct['dpop'] ?? undefined,
          method: req.method ?? 'GET',
          url: `${origin}${path}`,
          ...(svid ? { clientCertDer: svid.certDer } : {}),
        },
        {
          issuer: o.broker.issuer,
          // an MCP tool takes only tokens for its own resource URI (RFC 8707)
          audience: tool?.mcp === true ? [mcpResource(origin, tool)] : [origin, `${origin}/`, ...(tool ? [tool.audience] : [])],
          keys: o.broker.keys,
          dpop: { replay: o.broker.replay },
          allowBearer: o.broker.allowBearer,
          nowSec: Math.floor(now() / 1000),
        },
      )
      const id = v.actor ?? v.claims.client_id
      const token = authorization.slice(authorization.indexOf(' ') + 1).trim()
      return {
        caller: { spiffeId: id, tokenScopes: v.claims.scope.split(' ').filter((s) => s !== '') },
        authn: 'access-token',
        accessToken: token,
        jti: v.claims.jti,
      }
    }
    if (svidError !== undefined) throw svidError instanceof Error ? svidError : new Error('client certificate refused')
    if (svid === undefined) throw new IdentityError('ERR_CLIENT_AUTH_FAILED', 'no credentials', { details: { reason: 'no_credentials' } })
    return { caller: { spiffeId: svid.id }, authn: 'x509-svid' }
  }

  // ---------------------------------------------------------------- audit
  const audit = async (e: Omit<AuditEventInput, 'type'>): Promise<boolean> => {
    try {
      await o.audit.append({ type: 'gateway.call', ...e })
      return true
    } catch (err) {
      log.error({ [F.ERROR_CODE]: isIdentityError(err) ? err.code : 'ERR_INTERNAL', [F.ERR]: String(err) }, 'Gateway audit append failed')
      return false
    }
  }

  // ---------------------------------------------------------------- one call
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const started = now()
    const phases = new Phases()
    const target = req.url ?? '/'
    const route = routeOf(target)
    const toolName = route && TOOL_NAME_RE.test(route.name) ? route.name : undefined
    const tool = toolName !== undefined ? o.registry().get(toolName) : undefined
    const path = target.split('?')[0]!
    if (isMetadataPath(path)) {
      // RFC 9728 protected resource metadata of the MCP tools: public, no authentication, no audit event
      const a = metadataAnswer(req.method ?? 'GET', path, (n) => o.registry().get(n), mcp)
      res.writeHead(a.status, { ...a.headers, 'content-length': Buffer.byteLength(a.body) })
      res.end(req.method === 'HEAD' ? undefined : a.body)
      return
    }
    const fields: Record<string, unknown> = { [F.METHOD]: req.method, tool: toolName ?? null }
    const refused = async (r: Refusal, extra: Omit<AuditEventInput, 'type' | 'outcome'> = {}, outcome: 'refused' | 'error' = 'refused') => {
      log.warn({ ...fields, [F.REASON]: r.reason, status: r.status }, 'Gateway call refused')
      await audit({ outcome, reason: r.reason, ...extra, attributes: { tool: toolName ?? '(none)', status: r.status, ...extra.attributes } })
      send(res, r)
    }

    // authentication (before the registry answers anything)
    let who: Authenticated
    try {
      who = await authenticate(req, path, tool)
      phases.mark('authn_ms')
    } catch (err) {
      if (err instanceof ResourceRequestError) {
        const status = err.status === 403 ? 401 : err.status
        const headers: Record<string, string> = {}
        if (err.wwwAuthenticate !== undefined) headers['www-authenticate'] = err.wwwAuthenticate
        if (tool?.mcp === true && status === 401)
          headers['www-authenticate'] = mcpChallenge(tool, mcp, { error: err.error, scheme: schemeOf(req.headers.authorization) })
        if (err.dpopNonce !== undefined) headers['dpop-nonce'] = err.dpopNonce
        fields[F.ERROR_CODE] = err.code
        return refused(refusalOf(status, status >= 500 ? 'temporarily_unavailable' : err.error, `authn.${reasonOf(err)}`, headers))
      }
      fields[F.ERROR_CODE] = isIdentityError(err) ? err.code : 'ERR_INTERNAL'
      fields[F.ERR] = isIdentityError(err) ? err.message : String(err)
      const reason = isIdentityError(err) ? reasonOf(err) : 'internal'
      const challenge = tool?.mcp === true ? mcpChallenge(tool, mcp) : 'DPoP algs="ES256"'
      return refused(refusalOf(401, tool?.mcp === true ? 'invalid_token' : 'invalid_client', `authn.${reason}`, { 'www-authenticate': challenge }))
    }
    // an MCP tool is an OAuth resource server: an access token for it on every call, an SVID alone is not enough
    if (tool?.mcp === true && who.authn !== 'access-token')
      return refused(refusalOf(401, 'invalid_token', 'mcp.token_required', { 'www-authenticate': mcpChallenge(tool, mcp) }))
    const agentId = who.caller.spiffeId
    fields[F.SPIFFE_ID] = agentId
    const actor = { actor: { spiffe_id: agentId } }
    if (!route || !tool) return refused(refusalOf(404, 'not_found', 'tool_unknown'), actor)
    const scope = { resource: [tool.audience], scope: [...tool.scopes] }

    // policy
    const d = decide(tool, who.caller, o.ceilingFor(SpiffeId.fromString(agentId)))
    phases.mark('policy_ms')
    if (!d.allow) {
      fields['detail'] = d.detail
      const challenge = tool.mcp === true && d.error === 'insufficient_scope' ? { 'www-authenticate': mcpChallenge(tool, mcp, { error: d.error }) } : undefined
      return refused(refusalOf(403, d.error, d.reason, challenge), { ...actor, ...scope, ...(who.jti ? { attributes: { agent_token_jti: who.jti } } : {}) })
    }
    const purposeHeader = req.headers['txn-purpose']
    const purpose = typeof purposeHeader === 'string' && purposeHeader !== '' ? purposeHeader : undefined
    if (purpose !== undefined && !PURPOSE_RE.test(purpose)) return refused(refusalOf(400, 'invalid_request', 'purpose_invalid'), { ...actor, ...scope })

    // a declared body over the limit is refused before a token is minted (a chunked one is cut while it streams)
    const declared = Number(req.headers['content-length'] ?? 0)
    if (declared > o.limits.bodyBytes) return refused(refusalOf(413, 'invalid_request', 'body_too_large'), { ...actor, ...scope })

    // a Txn-Token for this call
    let txn: IssuedTxnToken
    try {
      txn = await o.broker.txnToken({
        agentId,
        ...(who.accessToken !== undefined ? { accessToken: who.accessToken } : {}),
        tool: tool.name,
        scopes: tool.scopes,
        ...(purpose !== undefined ? { purpose } : {}),
        ...(req.socket.remoteAddress !== undefined ? { reqIp: req.socket.remoteAddress } : {}),
      })
    } catch (err) {
      fields[F.ERROR_CODE] = isIdentityError(err) ? err.code : 'ERR_INTERNAL'
      fields['oauth_error'] = isIdentityError(err) ? err.details?.['oauth_error'] : undefined
      const broker = isIdentityError(err) && typeof err.details?.['oauth_error'] === 'string'
      // the broker refused (a revocation, the ceiling): the call is refused; the broker unreachable: unavailable
      if (broker && err.details?.['status'] !== 503 && err.details?.['status'] !== 500)
        return refused(refusalOf(403, 'access_denied', `txn_token.${String(err.details?.['oauth_error'])}`), { ...actor, ...scope })
      log.error({ ...fields, [F.ERR]: String(err) }, 'Txn-Token request failed')
      return refused(refusalOf(503, 'temporarily_unavailable', 'txn_token.unavailable'), { ...actor, ...scope }, 'error')
    }
    phases.mark('txn_token_ms')
    fields[F.JTI] = txn.jti
    fields['txn'] = txn.txn

    // credential shielding: the tool's static credential, from the broker, for the forwarded request only
    let credential: { header: string; value: string } | undefined
    if (tool.credential === true) {
      try {
        if (!o.broker.releaseCredential) throw new IdentityError('ERR_UNAVAILABLE', 'no credential source')
        credential = await o.broker.releaseCredential(tool.name)
      } catch (err) {
        log.error({ ...fields, [F.ERROR_CODE]: isIdentityError(err) ? err.code : 'ERR_INTERNAL' }, 'Tool credential unavailable')
        return refused(refusalOf(503, 'temporarily_unavailable', 'credential.unavailable'), { ...actor, ...scope }, 'error')
      }
    }

    // the decision is durable before anything reaches the tool
    const ok = await audit({
      outcome: 'success',
      ...actor,
      subject: agentId,
      ...scope,
      ...(txn.jti !== undefined ? { token_id: txn.jti } : {}),
      attributes: {
        tool: tool.name,
        ...(txn.txn !== undefined ? { txn: txn.txn } : {}),
        authn: who.authn,
        cached: txn.cached,
        ...(who.jti ? { agent_token_jti: who.jti } : {}),
      },
    })
    if (!ok) {
      send(res, refusalOf(503, 'temporarily_unavailable', 'audit_unavailable'))
      return
    }
    phases.mark('audit_ms')
    forward(req, res, tool, route.rest, txn.token, fields, started, phases, credential)
  }

  // ---------------------------------------------------------------- forwarding
  const forward = (
    req: IncomingMessage,
    res: ServerResponse,
    tool: Tool,
    rest: string,
    token: string,
    fields: Record<string, unknown>,
    started: number,
    phases: Phases,
    credential?: { header: string; value: string },
  ) => {
    const url = new URL(tool.endpoint + rest)
    let upstreamReq: ClientRequest
    let received = 0
    let done = false
    const fail = (status: number, error: string, reason: string, err?: unknown) => {
      if (done) return
      done = true
      log.warn({ ...fields, [F.REASON]: reason, status, [F.ERR]: err instanceof Error ? err.message : undefined }, 'Tool call failed')
      upstreamReq?.destroy()
      send(res, refusalOf(status, error, reason))
    }
    const deadline = setTimeout(() => fail(504, 'temporarily_unavailable', 'tool_timeout'), o.limits.upstreamTimeoutMs)
    deadline.unref()
    try {
      upstreamReq = https.request(url, {
        method: req.method ?? 'GET',
        headers: toolRequestHeaders(req.headers, {
          txnToken: token,
          host: url.host,
          ...(credential ? { credential } : {}),
          ...(req.socket.remoteAddress !== undefined ? { forwardedFor: req.socket.remoteAddress } : {}),
        }),
        agent: upstreamAgent(),
        timeout: o.limits.upstreamTimeoutMs,
      })
    } catch (err) {
      clearTimeout(deadline)
      fail(502, 'temporarily_unavailable', 'tool_request', err)
      return
    }
    // before the answer: 504; a tool that stalls mid-body: the stream is cut (the agent sees an incomplete response)
    upstreamReq.on('timeout', () => (done ? upstreamReq.destroy() : fail(504, 'temporarily_unavailable', 'tool_timeout')))
    upstreamReq.on('error', (err) => {
      clearTimeout(deadline)
      fail(502, 'temporarily_unavailable', 'tool_unreachable', err)
    })
    upstreamReq.on('response', (up) => {
      clearTimeout(deadline)
      if (done) {
        up.resume()
        return
      }
      done = true
      phases.mark('tool_headers_ms')
      res.writeHead(up.statusCode ?? 502, agentResponseHeaders(up.headers))
      up.pipe(res)
      up.on('error', () => res.destroy())
      up.on('aborted', () => res.destroy())
      up.on('end', () => {
        phases.mark('tool_body_ms')
        log.debug({ ...fields, status: up.statusCode, [F.DURATION_MS]: now() - started, phases: phases.all }, 'Gateway call forwarded')
      })
    })
    req.on('data', (c: Buffer) => {
      received += c.length
      if (received > o.limits.bodyBytes) {
        clearTimeout(deadline)
        fail(413, 'invalid_request', 'body_too_large')
        req.unpipe(upstreamReq)
        req.resume()
      }
    })
    req.on('aborted', () => upstreamReq.destroy())
    res.on('close', () => {
      if (!res.writableFinished) upstreamReq.destroy()
    })
    req.pipe(upstreamReq)
  }

  // ---------------------------------------------------------------- server
  const server = https.createServer(
    {
      ...tlsOptions(),
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: 'TLSv1.2',
      maxHeaderSize: o.limits.headerBytes,
    },
    (req, res) => {
      handle(req, res).catch((err: unknown) => {
        log.error({ [F.ERR]: String(err) }, 'Gateway call failed')
        send(res, refusalOf(500, 'server_error', 'internal'))
      })
    },
  )
  server.headersTimeout = Math.min(o.limits.requestTimeoutMs, 10_000)
  server.requestTimeout = o.limits.requestTimeoutMs
  server.on('connection', (socket: Socket) => {
    const addr = socket.remoteAddress ?? '?'
    const n = (perAddress.get(addr) ?? 0) + 1
    if (n > o.limits.maxConnectionsPerAddress) {
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
  server.on('tlsClientError', (err) => log.debug({ [F.ERR]: err.message }, 'TLS handshake failed'))
  const unsub = o.identity.onChange(() => server.setSecureContext(tlsOptions()))
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(o.port, o.host, () => {
      server.off('error', reject)
      resolve()
    })
  })
  const port = (server.address() as AddressInfo).port
  log.info({ [F.ADDRESS]: `${o.host}:${port}`, url: o.url }, 'Gateway listening')
  return {
    port,
    async close() {
      unsub()
      await new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeIdleConnections()
        setTimeout(() => server.closeAllConnections(), 5000).unref()
      })
      upstream?.agent.destroy()
    },
  }
}
