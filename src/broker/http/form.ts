/**
 * `application/x-www-form-urlencoded` bodies of the token, introspection and
 * revocation endpoints, and the token request they carry. A parameter sent
 * without a value counts as omitted (RFC 6749 §3.1); a single-valued
 * parameter sent twice is refused (RFC 6749 §3.1, "MUST NOT be included more
 * than once"); `resource` (RFC 8707 §2) and `audience` (RFC 8693 §2.1) may
 * repeat. Every failure is ERR_TOKEN_REQUEST_INVALID (`invalid_request`),
 * or ERR_TARGET_INVALID for a malformed resource (RFC 8707 §2).
 */
import { IdentityError } from '../../errors/identity-error.js'
import type { AuthorizationDetail } from '../../tokens/claims.js'
import { GRANT_TYPE } from '../../tokens/claims.js'
import type { TokenRequest } from '../contract.js'

/** Parameters that may appear more than once. */
const MULTI_VALUED = new Set(['resource', 'audience'])
/** More parameters than any request of ours needs. */
const MAX_PARAMS = 64
const MAX_SCOPES = 64
const MAX_AUTHORIZATION_DETAILS = 16
const MAX_JSON_PARAM = 8192
/** RFC 6749 appendix A.4: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ). */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/

export type Form = ReadonlyMap<string, readonly string[]>

function invalid(message: string, details?: Record<string, unknown>): IdentityError {
  return new IdentityError('ERR_TOKEN_REQUEST_INVALID', message, details ? { details } : undefined)
}

/** Parses a form body into name → values (non-empty values only, in order). */
export function parseForm(body: string): Form {
  if (typeof body !== 'string') throw invalid('request body must be a form')
  const out = new Map<string, string[]>()
  let count = 0
  for (const [k, v] of new URLSearchParams(body)) {
    if (++count > MAX_PARAMS) throw invalid('too many parameters')
    if (k === '') throw invalid('parameter without a name')
    if (v === '') continue
    const list = out.get(k)
    if (list) {
      if (!MULTI_VALUED.has(k)) throw invalid(`parameter "${k.slice(0, 64)}" repeated`, { param: k.slice(0, 64) })
      list.push(v)
    } else out.set(k, [v])
  }
  return out
}

/** The one value of a single-valued parameter, or undefined. */
export function single(form: Form, name: string): string | undefined {
  const v = form.get(name)
  if (!v) return undefined
  if (v.length > 1 && !MULTI_VALUED.has(name)) throw invalid(`parameter "${name}" repeated`)
  return v[0]
}

function required(form: Form, name: string): string {
  const v = single(form, name)
  if (v === undefined) throw invalid(`parameter "${name}" is required`)
  return v
}

function absoluteUri(v: string, what: string, code: 'ERR_TARGET_INVALID' | 'ERR_TOKEN_REQUEST_INVALID'): string {
  let u: URL
  try {
    u = new URL(v)
  } catch {
    throw new IdentityError(code, `${what} must be an absolute URI`)
  }
  if (u.hash !== '' || v.includes('#')) throw new IdentityError(code, `${what} must not have a fragment`)
  return v
}

function parseAuthorizationDetails(v: string): AuthorizationDetail[] {
  let parsed: unknown
  try {
    parsed = JSON.parse(v)
  } catch {
    throw invalid('authorization_details must be JSON')
  }
  if (!Array.isArray(parsed) || parsed.length === 0) throw invalid('authorization_details must be a non-empty JSON array')
  if (parsed.length > MAX_AUTHORIZATION_DETAILS) throw invalid('too many authorization_details')
  for (const d of parsed) {
    if (typeof d !== 'object' || d === null || Array.isArray(d)) throw invalid('each authorization detail must be an object')
    const t = (d as Record<string, unknown>).type
    if (typeof t !== 'string' || t === '') throw invalid('each authorization detail needs a string "type" (RFC 9396 §2)')
  }
  return parsed as AuthorizationDetail[]
}

/** A small JSON object parameter (`request_details`, `request_context`). */
function parseJsonObject(v: string, name: string): Record<string, unknown> {
  if (v.length > MAX_JSON_PARAM) throw invalid(`${name} too large`)
  let parsed: unknown
  try {
    parsed = JSON.parse(v)
  } catch {
    throw invalid(`${name} must be JSON`)
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw invalid(`${name} must be a JSON object`)
  if (Object.keys(parsed).length > 64) throw invalid(`${name} has too many members`)
  return parsed as Record<string, unknown>
}

/**
 * The token request of a form (after client authentication, whose parameters
 * it ignores). Checks the request's shape only; what it may get is the
 * domain's decision.
 */
export function parseTokenRequest(form: Form): TokenRequest {
  const grantType = required(form, 'grant_type')
  const subjectToken = single(form, 'subject_token')
  const subjectTokenType = single(form, 'subject_token_type')
  const actorToken = single(form, 'actor_token')
  const actorTokenType = single(form, 'actor_token_type')
  if (grantType === GRANT_TYPE.tokenExchange) {
    // RFC 8693 §2.1: subject_token and subject_token_type REQUIRED; actor_token_type exactly when actor_token.
    if (subjectToken === undefined) throw invalid('parameter "subject_token" is required')
    if (subjectTokenType === undefined) throw invalid('parameter "subject_token_type" is required')
    if (actorToken !== undefined && actorTokenType === undefined) throw invalid('actor_token_type is required with actor_token')
    if (actorToken === undefined && actorTokenType !== undefined) throw invalid('actor_token_type without actor_token')
  } else if (subjectToken !== undefined || actorToken !== undefined || subjectTokenType !== undefined || actorTokenType !== undefined) {
    throw invalid('subject and actor tokens belong to the token-exchange grant')
  }
  const resources = (form.get('resource') ?? []).map((r) => absoluteUri(r, 'resource', 'ERR_TARGET_INVALID'))
  const audiences = [...(form.get('audience') ?? [])]
  const scopeRaw = single(form, 'scope')
  let scopes: string[] | undefined
  if (scopeRaw !== undefined) {
    scopes = scopeRaw.split(' ').filter((s) => s !== '')
    if (scopes.length === 0) scopes = undefined
    else {
      if (scopes.length > MAX_SCOPES) throw invalid('too many scopes')
      for (const s of scopes) if (!SCOPE_TOKEN.test(s)) throw new IdentityError('ERR_SCOPE_INVALID', 'malformed scope')
      scopes = [...new Set(scopes)]
    }
  }
  const ad = single(form, 'authorization_details')
  const requestedTokenType = single(form, 'requested_token_type')
  const taskId = single(form, 'task_id')
  const mayAct = single(form, 'may_act')
  const details = single(form, 'request_details')
  const context = single(form, 'request_context')
  return {
    grantType,
    ...(subjectToken !== undefined ? { subjectToken } : {}),
    ...(subjectTokenType !== undefined ? { subjectTokenType } : {}),
    ...(actorToken !== undefined ? { actorToken } : {}),
    ...(actorTokenType !== undefined ? { actorTokenType } : {}),
    ...(requestedTokenType !== undefined ? { requestedTokenType } : {}),
    resources,
    audiences,
    ...(scopes !== undefined ? { scopes } : {}),
    ...(ad !== undefined ? { authorizationDetails: parseAuthorizationDetails(ad) } : {}),
    ...(taskId !== undefined ? { taskId } : {}),
    ...(mayAct !== undefined ? { mayAct } : {}),
    ...(details !== undefined ? { requestDetails: parseJsonObject(details, 'request_details') } : {}),
    ...(context !== undefined ? { requestContext: parseJsonObject(context, 'request_context') } : {}),
  }
}
