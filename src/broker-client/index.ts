/**
 * The agent-side broker client: discovery, SVID client authentication, a
 * non-extractable DPoP key, token requests, renewal at 75% of the TTL,
 * delegation, introspection, revocation and resource calls.
 */
export { AccessToken, type IssuedTokenType, type TokenFields } from './access-token.js'
export {
  BrokerClient,
  CIBA_GRANT_TYPE,
  type BackchannelRequest,
  type BrokerClientOptions,
  type BrokerMetadata,
  type CallOpts,
  type DelegateParams,
  type Introspection,
  type NarrowParams,
  type TokenParams,
} from './broker-client.js'
export { DpopKey, type DpopProofRequest } from './dpop-key.js'
export { codeForOAuthError, oauthError, oauthErrorOf } from './errors.js'
export { renewalTime, TokenSource, unrefTimers, type Timers, type TokenSourceEvents, type TokenSourceOptions } from './token-source.js'
export {
  httpsTransport,
  type HttpRequest,
  type HttpResponse,
  type HttpsTransport,
  type HttpsTransportOptions,
  type Transport,
  type X509SvidSource,
} from './transport.js'
