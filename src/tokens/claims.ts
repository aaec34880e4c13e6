/**
 * The broker's tokens as resource servers see them: the one contract shared by
 * the broker (which mints them), the verification library (which checks them)
 * and the agent-side client. Pure: types and constants only.
 */

export const TOKEN_TYPE = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  /** A JWT-SVID as a subject or actor token (RFC 8693 leaves the URI open; this is SPIFFE's). */
  jwtSvid: 'urn:ietf:params:oauth:token-type:jwt-svid',
  txnToken: 'urn:ietf:params:oauth:token-type:txn_token',
} as const

export const GRANT_TYPE = {
  tokenExchange: 'urn:ietf:params:oauth:grant-type:token-exchange',
  clientCredentials: 'client_credentials',
} as const

export const CLIENT_ASSERTION_TYPE = {
  /** SPIFFE client-authentication profile: a JWT-SVID as the client assertion. */
  jwtSpiffe: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe',
  /** RFC 7523; warrant accepts a JWT-SVID here too. */
  jwtBearer: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
} as const

/** JOSE `typ` of a broker access token (RFC 9068) and of a DPoP proof (RFC 9449). */
export const ACCESS_TOKEN_TYP = 'at+jwt'
export const DPOP_PROOF_TYP = 'dpop+jwt'

/** One hop of a delegation chain (RFC 8693 §4.1): the current actor, and the actor before it nested inside. */
export interface ActClaim {
  readonly sub: string
  readonly act?: ActClaim
}

/** Confirmation (RFC 7800): how the token is bound to a key the holder proves. */
export interface ConfirmationClaim {
  /** RFC 9449: base64url SHA-256 JWK thumbprint (RFC 7638) of the DPoP key. */
  readonly jkt?: string
  /** RFC 8705: base64url SHA-256 of the DER client certificate (the X.509-SVID). */
  readonly 'x5t#S256'?: string
}

/** RFC 9396 authorization details: each entry has a `type`, the rest is type-specific. */
export interface AuthorizationDetail {
  readonly type: string
  readonly [k: string]: unknown
}

/** Claims of a broker access token (RFC 9068 plus warrant's task claims). */
export interface AccessTokenClaims {
  readonly iss: string
  /** The agent instance's SPIFFE ID: whom the token speaks for. */
  readonly sub: string
  readonly aud: string | readonly string[]
  readonly exp: number
  readonly iat: number
  readonly nbf: number
  readonly jti: string
  /** Space-separated scopes (RFC 8693 §4.2). */
  readonly scope: string
  /** The authenticated client's SPIFFE ID (RFC 9068 §2.2). */
  readonly client_id: string
  readonly task_id?: string
  readonly orchestration_id?: string
  readonly authorization_details?: readonly AuthorizationDetail[]
  /** Present on delegated tokens: the current actor outermost, earlier actors nested. */
  readonly act?: ActClaim
  /** Absent only on bearer tokens, which a namespace must allow explicitly. */
  readonly cnf?: ConfirmationClaim
}

/** Depth of a delegation chain: the number of nested `act` claims (0 for a direct token). */
export function delegationDepth(act: ActClaim | undefined): number {
  let depth = 0
  for (let a = act; a !== undefined; a = a.act) depth++
  return depth
}
