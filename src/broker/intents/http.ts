/**
 * The intents' HTTPS endpoints on the broker (registered by
 * broker-http-server.ts when `[broker.intents]` is on):
 *
 *   POST <issuer>/bc-authorize       OpenID CIBA backchannel authentication request (form) carrying a
 *                                    `warrant_intent` in `authorization_details`; client authenticated like
 *                                    the token endpoint (X.509-SVID or JWT-SVID assertion)
 *   POST <issuer>/intents/outcome    outcome report by a resource server or gateway (form or JSON),
 *                                    authenticated like introspectors, on `outcome_reporters`
 *
 * and the one error reply of everything intents answer, the token endpoint's
 * CIBA grant included: CIBA's own errors (`slow_down`, `unknown_user_id`,
 * `invalid_binding_message`) and the CIBA handle of an inline intent that
 * waits for a human, else errors/oauth.ts through oauth-reply.ts.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import { matchesIdList, type IdMatcher } from '../config.js'
import type { AuthenticatedClient } from '../contract.js'
import { single, type Form } from '../http/form.js'
import { noStore, replyOAuthError, type ErrorContext } from '../http/oauth-reply.js'
import type { AuthorizationDetail } from '../../tokens/claims.js'
import type { IntentService } from './intent-service.js'

/** Parameters of a CIBA request this broker does not take (no user hints, no signed requests, no ping or push mode). */
const UNSUPPORTED = ['login_hint_token', 'id_token_hint', 'user_code', 'request', 'client_notification_token']

/** The error reply of the intents' endpoints (and the token endpoint: it falls back to replyOAuthError). */
export function replyIntentError(reply: FastifyReply, err: unknown, ctx: ErrorContext): FastifyReply {
  if (isIdentityError(err)) {
    const d = err.details ?? {}
    const oauthError = typeof d.oauth_error === 'string' ? d.oauth_error : undefined
    const ciba = d.ciba !== null && typeof d.ciba === 'object' ? (d.ciba as Record<string, unknown>) : undefined
    if (oauthError !== undefined || ciba !== undefined || err.code === 'ERR_INTENT_INVALID' || err.code === 'ERR_NOT_FOUND') {
      const status = err.code === 'ERR_NOT_FOUND' ? 404 : 400
      const error = oauthError ?? (ciba ? 'authorization_pending' : err.code === 'ERR_NOT_FOUND' ? 'not_found' : 'invalid_authorization_details')
      ctx.log.info({ endpoint: ctx.endpoint, [F.ERROR_CODE]: err.code, [F.SPIFFE_ID]: ctx.spiffeId, [F.ERR]: err.message, error }, 'Broker request refused')
      const body: Record<string, unknown> = { error }
      // the caller's own input is described; the pending intent's handle is the caller's to poll with
      if (error !== 'slow_down' && error !== 'not_found') body.error_description = err.message.slice(0, 200)
      if (ciba) Object.assign(body, ciba)
      return noStore(reply).code(status).type('application/json').send(body)
    }
  }
  return replyOAuthError(reply, err, ctx)
}

function parseDetails(v: string | undefined): AuthorizationDetail[] | undefined {
  if (v === undefined) return undefined
  if (v.length > 8192) throw new IdentityError('ERR_INTENT_INVALID', 'invalid intent: authorization_details too large')
  let parsed: unknown
  try {
    parsed = JSON.parse(v)
  } catch {
    throw new IdentityError('ERR_INTENT_INVALID', 'invalid intent: authorization_details must be JSON')
  }
  if (
    !Array.isArray(parsed) ||
    parsed.some((d) => d === null || typeof d !== 'object' || Array.isArray(d) || typeof (d as { type?: unknown }).type !== 'string')
  )
    throw new IdentityError('ERR_INTENT_INVALID', 'invalid intent: authorization_details must be a JSON array of objects with a type (RFC 9396 §2)')
  return parsed as AuthorizationDetail[]
}

export interface IntentRoutesOptions {
  readonly intents: IntentService
  readonly basePath: string
  /** Authenticates the caller like the token endpoint (the form may carry a client assertion). */
  readonly authenticate: (req: FastifyRequest, form: Form) => Promise<AuthenticatedClient>
  /** The request's form (ERR_TOKEN_REQUEST_INVALID when it is not one). */
  readonly formOf: (req: FastifyRequest) => Form
  /** Who may report outcomes (the config's `outcome_reporters`, else the broker's introspectors). */
  readonly reporters: IdMatcher
  readonly realm: string
  readonly log: Logger
}

export function registerIntentRoutes(app: FastifyInstance, o: IntentRoutesOptions): void {
  const { log, realm } = o
  app.post(`${o.basePath}/bc-authorize`, async (req, reply) => {
    let spiffeId: string | undefined
    try {
      const form = o.formOf(req)
      const client = await o.authenticate(req, form)
      spiffeId = client.spiffeId
      const get = (n: string) => single(form, n)
      const details = parseDetails(get('authorization_details'))
      const res = await o.intents.bcAuthorize(
        {
          ...(details !== undefined ? { authorizationDetails: details } : {}),
          ...(get('login_hint') !== undefined ? { loginHint: get('login_hint')! } : {}),
          ...(get('binding_message') !== undefined ? { bindingMessage: get('binding_message')! } : {}),
          ...(get('requested_expiry') !== undefined ? { requestedExpiry: get('requested_expiry')! } : {}),
          ...(get('scope') !== undefined ? { scope: get('scope')! } : {}),
          ...(get('task_id') !== undefined ? { taskId: get('task_id')! } : {}),
          unsupported: UNSUPPORTED.filter((p) => form.has(p)),
        },
        client,
      )
      log.info({ endpoint: 'bc-authorize', [F.SPIFFE_ID]: client.spiffeId, intent_id: res.intent_id }, 'Backchannel authentication request accepted')
      return noStore(reply).type('application/json').send(res)
    } catch (err) {
      return replyIntentError(reply, err, { log, endpoint: 'bc-authorize', spiffeId, realm })
    }
  })

  app.post(`${o.basePath}/intents/outcome`, async (req, reply) => {
    let spiffeId: string | undefined
    try {
      const json = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase() === 'application/json'
      // JSON callers authenticate by mutual TLS (no room for a client assertion); forms may carry one
      const form: Form = json ? new Map() : o.formOf(req)
      const client = await o.authenticate(req, form)
      spiffeId = client.spiffeId
      if (!matchesIdList(o.reporters, client.spiffeId))
        throw new IdentityError('ERR_CLIENT_UNAUTHORIZED', 'caller may not report outcomes', { details: { reason: 'not an outcome reporter' } })
      const body = json && req.body !== null && typeof req.body === 'object' ? (req.body as Record<string, unknown>) : undefined
      const get = (n: string): string | undefined => {
        if (!body) return single(form, n)
        const v = body[n]
        if (v === undefined || v === null) return undefined
        if (typeof v !== 'string') throw new IdentityError('ERR_TOKEN_REQUEST_INVALID', `${n} must be a string`)
        return v
      }
      const opt = (k: string, v: string | undefined) => (v !== undefined ? { [k]: v } : {})
      const res = await o.intents.outcome(
        {
          ...opt('jti', get('jti')),
          ...opt('token', get('token')),
          ...opt('action', get('action')),
          ...opt('resource', get('resource')),
          ...opt('paramsDigest', get('params_digest')),
          ...opt('phase', get('phase')),
        },
        client,
      )
      log.info({ endpoint: 'intents.outcome', [F.SPIFFE_ID]: client.spiffeId, intent_id: res.intent_id, outcome: res.outcome }, 'Intent outcome reported')
      return noStore(reply)
        .code(res.refused ? 403 : 200)
        .type('application/json')
        .send(res.refused ? { error: 'access_denied', ...res } : res)
    } catch (err) {
      return replyIntentError(reply, err, { log, endpoint: 'intents.outcome', spiffeId, realm })
    }
  })
}
