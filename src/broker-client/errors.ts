/**
 * A broker's or resource server's OAuth error answer as an IdentityError: the
 * code is the one `errors/oauth.ts` maps to that `error` value (so
 * `invalid_grant` is ERR_GRANT_INVALID here as on the broker), and
 * `details.oauth_error` keeps the wire value. Messages never carry a token,
 * a proof or a key; the server's `error_description` is kept in the details
 * only (it describes the request, not a credential).
 */
import type { ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'
import { OAUTH_ERRORS } from '../errors/oauth.js'

/** `error` value → warrant code: the first code of OAUTH_ERRORS with that wire value. */
const BY_WIRE: ReadonlyMap<string, ErrorCode> = (() => {
  const m = new Map<string, ErrorCode>()
  for (const [code, w] of Object.entries(OAUTH_ERRORS) as [ErrorCode, { error: string }][]) if (!m.has(w.error)) m.set(w.error, code)
  m.set('server_error', 'ERR_INTERNAL')
  return m
})()

/** The warrant code for an OAuth `error` value (ERR_INTERNAL for unknown values). */
export function codeForOAuthError(error: string | undefined): ErrorCode {
  return (error !== undefined ? BY_WIRE.get(error) : undefined) ?? 'ERR_INTERNAL'
}

/** RFC 6749 §5.2 body, or a 401 challenge (RFC 6750 §3 / RFC 9449 §7.1), turned into a typed error. */
export function oauthError(what: string, status: number, body: unknown, wwwAuthenticate?: string): IdentityError {
  const b = typeof body === 'object' && body !== null ? (body as Record<string, unknown>) : {}
  let error = typeof b.error === 'string' ? b.error.slice(0, 64) : undefined
  if (error === undefined && wwwAuthenticate !== undefined) error = /error="([^"]{1,64})"/.exec(wwwAuthenticate)?.[1]
  const description = typeof b.error_description === 'string' ? b.error_description.slice(0, 200) : undefined
  const code = error === undefined && status === 503 ? 'ERR_UNAVAILABLE' : codeForOAuthError(error)
  return new IdentityError(code, `broker-client: ${what} refused (${error ?? `HTTP ${status}`})`, {
    details: { oauth_error: error ?? null, status, ...(description !== undefined ? { description } : {}) },
  })
}

/** The OAuth `error` value an IdentityError from this client carries, if it came from the wire. */
export function oauthErrorOf(err: unknown): string | undefined {
  if (!(err instanceof IdentityError)) return undefined
  const v = err.details?.['oauth_error']
  return typeof v === 'string' ? v : undefined
}
