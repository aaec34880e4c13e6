/**
 * RFC 8414 authorization server metadata for the broker, and the endpoint
 * URLs derived from the issuer (every endpoint lives under the issuer's path).
 *
 * Client authentication methods: `tls_client_auth` (RFC 8705, the X.509-SVID)
 * and `private_key_jwt`, the registered name (RFC 8414 / OIDC) for a JWT
 * client assertion, which is what a JWT-SVID sent as `client_assertion` is;
 * no method name is registered for the SPIFFE profile's assertion type yet,
 * so the accepted `client_assertion_type` values are listed in
 * `client_assertion_types_supported` (a warrant extension) and the SVID
 * signature algorithms in `token_endpoint_auth_signing_alg_values_supported`.
 */
import { CLIENT_ASSERTION_TYPE, GRANT_TYPE, TOKEN_TYPE } from '../../tokens/claims.js'
import { CIBA_GRANT_TYPE, INTENT_DETAIL_TYPE } from '../intents/intent.js'

export interface BrokerEndpoints {
  issuer: string
  token: string
  jwks: string
  introspection: string
  revocation: string
  tasks: string
  /** The revocation feed (Server-Sent Events, resumable by seq) and the signed revocation list. */
  revocationFeed: string
  revocationList: string
  /** OpenID CIBA's backchannel authentication endpoint and the intents' outcome reports (with `[broker.intents]`). */
  backchannelAuthentication: string
  intentOutcome: string
  /** Path prefix of every route (the issuer's path, no trailing slash; '' at the root). */
  basePath: string
  /** Path of the metadata document (RFC 8414 §3: the well-known segment goes before the issuer's path). */
  metadataPath: string
}

export function brokerEndpoints(issuer: string): BrokerEndpoints {
  const u = new URL(issuer)
  const basePath = u.pathname.replace(/\/+$/, '')
  const origin = `${u.protocol}//${u.host}`
  const at = (p: string) => `${origin}${basePath}${p}`
  return {
    issuer,
    token: at('/token'),
    jwks: at('/jwks'),
    introspection: at('/introspect'),
    revocation: at('/revoke'),
    tasks: at('/tasks'),
    revocationFeed: at('/revocations/feed'),
    revocationList: at('/revocations/list'),
    backchannelAuthentication: at('/bc-authorize'),
    intentOutcome: at('/intents/outcome'),
    basePath,
    metadataPath: `/.well-known/oauth-authorization-server${basePath}`,
  }
}

/** The SVID signature algorithms (SPIFFE JWT-SVID: RS/ES/PS only). */
const SVID_ALGS = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']

export function brokerMetadata(
  e: BrokerEndpoints,
  opts: { dpopAlgorithms: readonly string[]; authorizationDetailsTypes?: readonly string[]; intents?: boolean },
): Record<string, unknown> {
  const authMethods = ['tls_client_auth', 'private_key_jwt']
  const detailTypes = [...new Set([...(opts.authorizationDetailsTypes ?? []), ...(opts.intents ? [INTENT_DETAIL_TYPE] : [])])]
  return {
    issuer: e.issuer,
    token_endpoint: e.token,
    jwks_uri: e.jwks,
    introspection_endpoint: e.introspection,
    revocation_endpoint: e.revocation,
    grant_types_supported: [GRANT_TYPE.tokenExchange, GRANT_TYPE.clientCredentials, ...(opts.intents ? [CIBA_GRANT_TYPE] : [])],
    response_types_supported: [],
    token_endpoint_auth_methods_supported: authMethods,
    token_endpoint_auth_signing_alg_values_supported: SVID_ALGS,
    introspection_endpoint_auth_methods_supported: authMethods,
    introspection_endpoint_auth_signing_alg_values_supported: SVID_ALGS,
    revocation_endpoint_auth_methods_supported: authMethods,
    revocation_endpoint_auth_signing_alg_values_supported: SVID_ALGS,
    client_assertion_types_supported: [CLIENT_ASSERTION_TYPE.jwtSpiffe, CLIENT_ASSERTION_TYPE.jwtBearer],
    dpop_signing_alg_values_supported: [...opts.dpopAlgorithms],
    tls_client_certificate_bound_access_tokens: true,
    token_types_supported: [TOKEN_TYPE.accessToken, TOKEN_TYPE.jwt, TOKEN_TYPE.jwtSvid],
    authorization_details_types_supported: detailTypes,
    // OpenID CIBA (intents that wait for a human): poll mode, no user code; the approver group is the login_hint
    ...(opts.intents
      ? {
          backchannel_authentication_endpoint: e.backchannelAuthentication,
          backchannel_token_delivery_modes_supported: ['poll'],
          backchannel_user_code_parameter_supported: false,
          warrant_intent_outcome_endpoint: e.intentOutcome,
        }
      : {}),
    // warrant extensions: where verifiers learn of revocations (mutual TLS with an SVID)
    warrant_revocation_feed_endpoint: e.revocationFeed,
    warrant_revocation_list_endpoint: e.revocationList,
  }
}
