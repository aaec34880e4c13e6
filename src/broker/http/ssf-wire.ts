/**
 * The broker's Shared Signals transmitter on its HTTPS wire (SSF 1.0, RFC 8936):
 *
 *   GET    /.well-known/ssf-configuration[issuer path]   transmitter metadata (public)
 *   POST   <issuer>/ssf/streams              create a poll stream (201)
 *   GET    <issuer>/ssf/streams[?stream_id]  one stream, or the caller's streams
 *   PATCH  <issuer>/ssf/streams              update events_requested, description (200)
 *   PUT    <issuer>/ssf/streams              replace them (200)
 *   DELETE <issuer>/ssf/streams?stream_id    delete (204)
 *   POST   <issuer>/ssf/subjects:add         include a subject again (200)
 *   POST   <issuer>/ssf/subjects:remove      leave a subject's events out (204)
 *   GET    <issuer>/ssf/status?stream_id     stream status
 *   POST   <issuer>/ssf/status               change it
 *   POST   <issuer>/ssf/verify               queue a verification event (204)
 *   POST   <issuer>/ssf/poll/:stream_id      RFC 8936 poll: ack, setErrs, then SETs
 *
 * Receivers authenticate as every broker client does (client-auth.ts: their
 * X.509-SVID over mutual TLS, or a JWT-SVID `Authorization: Bearer`) and must
 * be on the transmitter's receivers list, or are registered SSF clients
 * (ssf-clients.ts) with the broker's `at+jwt` Bearer token from `/token`
 * (`client_credentials`), their receiver identity `ssf:<name>`; a stream is
 * visible only to the receiver that created it. JSON in and out, `Cache-Control: no-store`.
 * Refusals: 400 (the caller's malformed request, described), 401, 403, 404
 * (unknown or another's stream), 429 (too many streams, verification too
 * soon), 500; the reason is only logged.
 *
 * As a receiver with push streams (RFC 8935), the broker also serves
 *
 *   POST   <issuer>/ssf/push/:path           one SET (application/secevent+jwt)
 *
 * authenticated by the stream's bearer secret (not by client certificate: the
 * SET's signature proves the transmitter); 202, 400 `{err, description}`, 401,
 * 404, or 503 when the SET may be applied later (the transmitter retries).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { AuthenticatedClient } from '../contract.js'
import type { PushAnswer } from '../ssf-receiver.js'
import type { SsfTransmitter } from '../ssf-transmitter.js'
import type { SsfClients } from '../ssf-clients.js'
import { ACCESS_TOKEN_TYP } from '../../tokens/claims.js'
import { noStore } from './oauth-reply.js'

export interface SsfWireOptions {
  readonly transmitter: SsfTransmitter
  /** The issuer's path ('' at the root), as in BrokerEndpoints.basePath. */
  readonly basePath: string
  /** Authenticates the caller by its SVID (the broker's ClientAuthenticator). */
  readonly authenticate: (req: FastifyRequest) => Promise<AuthenticatedClient>
  /** Registered SSF clients: a Bearer `at+jwt` token is theirs (anything else is the SVID path). */
  readonly clients?: SsfClients
  readonly log: Logger
}

function mediaType(h: string | undefined): string {
  return (h ?? '').split(';')[0]!.trim().toLowerCase()
}

const STATUS: Partial<Record<string, number>> = {
  ERR_CLIENT_AUTH_FAILED: 401,
  ERR_CLIENT_UNAUTHORIZED: 403,
  ERR_REQUEST_MALFORMED: 400,
  ERR_NOT_FOUND: 404,
  ERR_RESOURCE_EXHAUSTED: 429,
}

const ERROR: Partial<Record<number, string>> = { 400: 'invalid_request', 401: 'invalid_client', 403: 'access_denied', 404: 'not_found', 429: 'slow_down' }

/** The `Authorization: Bearer` token when its (unverified) JOSE `typ` is the broker's access token type: an SSF client's. */
function ssfClientToken(authorization: string | undefined): string | undefined {
  const m = /^Bearer ([A-Za-z0-9_.-]+)$/i.exec(authorization ?? '')
  if (m === null) return undefined
  try {
    const header = JSON.parse(Buffer.from(m[1]!.split('.')[0]!, 'base64url').toString('utf8')) as { typ?: unknown } | null
    return header !== null && typeof header === 'object' && header.typ === ACCESS_TOKEN_TYP ? m[1] : undefined
  } catch {
    return undefined
  }
}

export function registerSsfRoutes(app: FastifyInstance, o: SsfWireOptions): void {
  const t = o.transmitter
  const base = o.basePath
  /** The receiver: an SSF client's `ssf:<name>` (its Bearer token), or the caller's SPIFFE ID (its SVID). */
  const receiverOf = async (req: FastifyRequest): Promise<string> => {
    const token = o.clients !== undefined ? ssfClientToken(req.headers.authorization) : undefined
    return token !== undefined ? o.clients!.verifyBearer(token) : (await o.authenticate(req)).spiffeId
  }

  const route =
    (endpoint: string, fn: (req: FastifyRequest, c: { spiffeId: string }) => Promise<{ status: number; body?: unknown }>) =>
    async (req: FastifyRequest, reply: FastifyReply) => {
      let spiffeId: string | undefined
      try {
        spiffeId = await receiverOf(req)
        const r = await fn(req, { spiffeId })
        noStore(reply).code(r.status)
        return r.body === undefined ? reply.send() : reply.type('application/json').send(r.body)
      } catch (err) {
        const code = isIdentityError(err) ? err.code : undefined
        const status = (code !== undefined ? STATUS[code] : undefined) ?? 500
        const fields = {
          endpoint,
          [F.ERROR_CODE]: code ?? 'internal',
          [F.SPIFFE_ID]: spiffeId,
          [F.ERR]: err instanceof Error ? err.message : String(err),
          ...(isIdentityError(err) && err.details ? { details: err.details } : {}),
        }
        if (status >= 500) o.log.error(fields, 'SSF request failed')
        else o.log.info(fields, 'SSF request refused')
        // RFC 6750 §3.1: a refused Bearer token (an SSF client's) is invalid_token; a caller without one (an SVID) invalid_client
        const bearerRefused = status === 401 && o.clients !== undefined && ssfClientToken(req.headers.authorization) !== undefined
        const body: Record<string, string> = { error: bearerRefused ? 'invalid_token' : (ERROR[status] ?? 'server_error') }
        if (status === 400 && err instanceof Error) body.error_description = err.message.slice(0, 300)
        if (status === 401) reply.header('www-authenticate', `Bearer error="${body.error}"`)
        return noStore(reply).code(status).type('application/json').send(body)
      }
    }

  const json = (req: FastifyRequest): unknown => {
    if (mediaType(req.headers['content-type']) !== 'application/json') throw new IdentityError('ERR_REQUEST_MALFORMED', 'content type must be application/json')
    return req.body
  }
  const streamIdOf = (req: FastifyRequest): unknown => (req.query as { stream_id?: unknown }).stream_id

  app.get(`/.well-known/ssf-configuration${base}`, async (_req, reply) => reply.header('cache-control', 'public, max-age=300').send(t.configuration()))

  app.post(
    `${base}/ssf/streams`,
    route('ssf.streams.create', async (req, c) => ({ status: 201, body: t.createStream(c.spiffeId, json(req)) })),
  )
  app.get(
    `${base}/ssf/streams`,
    route('ssf.streams.get', async (req, c) => {
      const id = streamIdOf(req)
      return { status: 200, body: id === undefined ? t.listStreams(c.spiffeId) : t.getStream(c.spiffeId, id) }
    }),
  )
  app.patch(
    `${base}/ssf/streams`,
    route('ssf.streams.update', async (req, c) => ({ status: 200, body: t.updateStream(c.spiffeId, json(req), false) })),
  )
  app.put(
    `${base}/ssf/streams`,
    route('ssf.streams.replace', async (req, c) => ({ status: 200, body: t.updateStream(c.spiffeId, json(req), true) })),
  )
  app.post(
    `${base}/ssf/subjects::add`,
    route('ssf.subjects.add', async (req, c) => {
      t.setSubject(c.spiffeId, json(req), true)
      return { status: 200 }
    }),
  )
  app.post(
    `${base}/ssf/subjects::remove`,
    route('ssf.subjects.remove', async (req, c) => {
      t.setSubject(c.spiffeId, json(req), false)
      return { status: 204 }
    }),
  )
  app.delete(
    `${base}/ssf/streams`,
    route('ssf.streams.delete', async (req, c) => {
      t.deleteStream(c.spiffeId, streamIdOf(req))
      return { status: 204 }
    }),
  )
  app.get(
    `${base}/ssf/status`,
    route('ssf.status.get', async (req, c) => ({ status: 200, body: t.getStatus(c.spiffeId, streamIdOf(req)) })),
  )
  app.post(
    `${base}/ssf/status`,
    route('ssf.status.update', async (req, c) => ({ status: 200, body: t.setStatus(c.spiffeId, json(req)) })),
  )
  app.post(
    `${base}/ssf/verify`,
    route('ssf.verify', async (req, c) => {
      t.requestVerification(c.spiffeId, json(req))
      return { status: 204 }
    }),
  )
  app.post(
    `${base}/ssf/poll/:streamId`,
    route('ssf.poll', async (req, c) => {
      const body = req.body === undefined || req.body === '' ? {} : json(req)
      const abort = new AbortController()
      const onClose = () => abort.abort()
      req.raw.socket.once('close', onClose)
      try {
        return { status: 200, body: await t.poll(c.spiffeId, (req.params as { streamId?: unknown }).streamId, body, { signal: abort.signal }) }
      } finally {
        req.raw.socket.off('close', onClose)
      }
    }),
  )
}

export const SET_MEDIA_TYPE = 'application/secevent+jwt'

/** The push endpoint of this broker's receivers: `receive` answers for the subscription the path names (404 when none does). */
export function registerSsfPushRoute(
  app: FastifyInstance,
  o: { basePath: string; receive: (path: string, authorization: string | undefined, set: string) => Promise<PushAnswer>; log: Logger },
): void {
  app.addContentTypeParser(SET_MEDIA_TYPE, { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => done(null, body))
  app.post(`${o.basePath}/ssf/push/:path`, async (req, reply) => {
    noStore(reply)
    const path = (req.params as { path?: unknown }).path
    if (mediaType(req.headers['content-type']) !== SET_MEDIA_TYPE || typeof req.body !== 'string')
      return reply
        .code(400)
        .type('application/json')
        .send({ err: 'invalid_request', description: `content type must be ${SET_MEDIA_TYPE}` })
    if (typeof path !== 'string' || !/^[0-9a-f]{32}$/.test(path)) return reply.code(404).send()
    try {
      const r = await o.receive(path, req.headers.authorization, req.body)
      if (r.status === 401) reply.header('www-authenticate', 'Bearer')
      return r.body === undefined ? reply.code(r.status).send() : reply.code(r.status).type('application/json').send(r.body)
    } catch (err) {
      o.log.error({ endpoint: 'ssf.push', [F.ERR]: err instanceof Error ? err.message : String(err) }, 'SSF push failed')
      return reply.code(503).send()
    }
  })
}
