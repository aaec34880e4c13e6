/**
 * The broker's one error boundary for its OAuth endpoints: logs the error
 * once with everything (code, reason, client), answers the RFC 6749 §5.2
 * JSON body from `oauthWireError` with `Cache-Control: no-store`, and says
 * little: a description only for request-shape errors (the caller's own
 * input) and for a step-up (the fixed text telling the agent where to go;
 * never which signal), nothing for authentication and authorization failures, and a
 * bare `server_error` for anything unexpected.
 */
import type { FastifyReply } from 'fastify'
import { isIdentityError } from '../../errors/identity-error.js'
import { oauthWireError } from '../../errors/oauth.js'
import { GRANT_TYPE } from '../../tokens/claims.js'
import { F, type Logger } from '../../common/log/logger.js'

/** Codes whose message describes the caller's own malformed input and may be returned. */
const DESCRIBED = new Set(['ERR_TOKEN_REQUEST_INVALID', 'ERR_REQUEST_MALFORMED', 'ERR_GRANT_TYPE_UNSUPPORTED', 'ERR_STEP_UP_REQUIRED'])

export function noStore(reply: FastifyReply): FastifyReply {
  return reply.header('cache-control', 'no-store').header('pragma', 'no-cache')
}

export interface ErrorContext {
  log: Logger
  endpoint: string
  /** The request's `grant_type` on the token endpoint, when known. */
  grantType?: string | undefined
  spiffeId?: string | undefined
  /** The realm for `WWW-Authenticate` on 401 (the issuer). */
  realm: string
}

export function replyOAuthError(reply: FastifyReply, err: unknown, ctx: ErrorContext): FastifyReply {
  const code = isIdentityError(err) ? err.code : undefined
  const wire = oauthWireError(code)
  const fields = {
    endpoint: ctx.endpoint,
    [F.ERROR_CODE]: code ?? 'internal',
    ...(ctx.spiffeId !== undefined ? { [F.SPIFFE_ID]: ctx.spiffeId } : {}),
    ...(isIdentityError(err) && err.details ? { details: err.details } : {}),
    [F.ERR]: err instanceof Error ? err.message : String(err),
    ...(err instanceof Error && err.cause instanceof Error ? { cause: err.cause.message } : {}),
  }
  if (wire.status >= 500) ctx.log.error(fields, 'Broker request failed')
  else ctx.log.info(fields, 'Broker request refused')
  // RFC 8693 §2.2.2: a token exchange whose subject or actor token is invalid, or unacceptable by policy, MUST be
  // answered invalid_request (the log keeps the precise code); every other grant keeps invalid_grant.
  const error = wire.error === 'invalid_grant' && ctx.grantType === GRANT_TYPE.tokenExchange ? 'invalid_request' : wire.error
  const body: Record<string, string> = { error }
  if (code !== undefined && DESCRIBED.has(code) && isIdentityError(err)) body.error_description = err.message.slice(0, 200)
  noStore(reply).code(wire.status)
  if (wire.status === 401) {
    // RFC 6749 §5.2 (invalid_client) and RFC 6750 §3: a 401 carries a challenge.
    reply.header('www-authenticate', `Bearer realm="${ctx.realm.replace(/["\\]/g, '')}", error="${wire.error}"`)
  }
  return reply.type('application/json').send(body)
}
