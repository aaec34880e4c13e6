import type { ErrorCode } from './codes.js'

/**
 * How a warrant error code appears on the OAuth 2.0 wire: the `error` value
 * (RFC 6749 §5.2, RFC 6750 §3.1, RFC 9449 §7 and §12) and the HTTP status.
 * The token endpoint and the resource-server middleware both answer from this
 * table, so a code means the same thing wherever it surfaces.
 */
export interface OAuthWireError {
  readonly error: string
  readonly status: number
}

export const OAUTH_ERRORS: Partial<Record<ErrorCode, OAuthWireError>> = {
  ERR_TOKEN_REQUEST_INVALID: { error: 'invalid_request', status: 400 },
  ERR_REQUEST_MALFORMED: { error: 'invalid_request', status: 400 },
  ERR_CLIENT_AUTH_FAILED: { error: 'invalid_client', status: 401 },
  ERR_GRANT_INVALID: { error: 'invalid_grant', status: 400 },
  ERR_TASK_NOT_FOUND: { error: 'invalid_grant', status: 400 },
  ERR_TASK_ENDED: { error: 'invalid_grant', status: 400 },
  ERR_REVOKED: { error: 'invalid_grant', status: 400 },
  ERR_DELEGATION_INVALID: { error: 'invalid_grant', status: 400 },
  ERR_CLIENT_UNAUTHORIZED: { error: 'unauthorized_client', status: 400 },
  ERR_GRANT_TYPE_UNSUPPORTED: { error: 'unsupported_grant_type', status: 400 },
  ERR_SCOPE_INVALID: { error: 'invalid_scope', status: 400 },
  ERR_TARGET_INVALID: { error: 'invalid_target', status: 400 },
  ERR_DPOP_PROOF_INVALID: { error: 'invalid_dpop_proof', status: 400 },
  ERR_DPOP_NONCE_REQUIRED: { error: 'use_dpop_nonce', status: 400 },
  ERR_ACCESS_TOKEN_INVALID: { error: 'invalid_token', status: 401 },
  ERR_SCOPE_INSUFFICIENT: { error: 'insufficient_scope', status: 403 },
  ERR_TXN_TOKEN_INVALID: { error: 'invalid_token', status: 401 },
  ERR_CALL_CHAIN_REFUSED: { error: 'access_denied', status: 403 },
  ERR_RESOURCE_EXHAUSTED: { error: 'temporarily_unavailable', status: 503 },
  ERR_UNAVAILABLE: { error: 'temporarily_unavailable', status: 503 },
  ERR_AUDIT_UNAVAILABLE: { error: 'temporarily_unavailable', status: 503 },
  // intents and CIBA (OpenID CIBA Core §11 and §13)
  ERR_INTENT_INVALID: { error: 'invalid_authorization_details', status: 400 },
  ERR_INTENT_REFUSED: { error: 'access_denied', status: 403 },
  ERR_INTENT_MISMATCH: { error: 'access_denied', status: 403 },
  ERR_APPROVAL_PENDING: { error: 'authorization_pending', status: 400 },
  ERR_APPROVAL_DENIED: { error: 'access_denied', status: 400 },
  ERR_APPROVAL_EXPIRED: { error: 'expired_token', status: 400 },
  // a step-up (a Shared Signal's `step_up` action): OpenID Connect Core §3.1.2.6 `interaction_required`, a human must act
  // before anything is issued; the description says where (src/broker/step-ups.ts)
  ERR_STEP_UP_REQUIRED: { error: 'interaction_required', status: 400 },
}

/** The wire form of any error: known codes map, everything else is a 500 `server_error` that reveals nothing. */
export function oauthWireError(code: ErrorCode | undefined): OAuthWireError {
  return (code !== undefined ? OAUTH_ERRORS[code] : undefined) ?? { error: 'server_error', status: 500 }
}

/**
 * How a SET refusal appears on the Shared Signals wire: the RFC 8935 §2.4
 * `err` value (IANA "Security Event Token Error Codes") that a push receiver
 * answers with 400 and a poll receiver returns in `setErrs` (RFC 8936 §2.4.4).
 */
export const SET_DELIVERY_ERRORS: Partial<Record<ErrorCode, string>> = {
  ERR_SET_INVALID: 'invalid_request',
  ERR_SET_REPLAYED: 'invalid_request',
  ERR_SET_KEY_INVALID: 'invalid_key',
  ERR_SET_ISSUER_INVALID: 'invalid_issuer',
  ERR_SET_AUDIENCE_INVALID: 'invalid_audience',
  ERR_CLIENT_AUTH_FAILED: 'authentication_failed',
  ERR_ID_NOT_AUTHORIZED: 'access_denied',
}

/** The RFC 8935 `err` of any refusal; anything unknown is `invalid_request`. */
export function setDeliveryError(code: ErrorCode | undefined): string {
  return (code !== undefined ? SET_DELIVERY_ERRORS[code] : undefined) ?? 'invalid_request'
}
