/**
 * The Workload API client library (go-spiffe's `workloadapi` and `tlsconfig`):
 * a client of the agent's socket, sources that follow rotation, and mutual
 * TLS between workloads that authorizes peers by SPIFFE ID.
 */
export { ENDPOINT_SOCKET_ENV, resolveWorkloadApiTarget, workloadApiTarget } from './address.js'
export type { BackoffOptions } from './backoff.js'
export { fromWorkloadApiError, isRetryable } from './errors.js'
export { WorkloadApiClient, type CallOptions, type ValidatedJwtSvid, type Watcher, type WorkloadApiClientOptions } from './workload-api-client.js'
export { parseJwtBundles, parseX509Bundles, parseX509Context, type X509Context } from './x509-context.js'
export { JwtSource, type JwtSourceEvents, type JwtSourceOptions } from './jwt-source.js'
export { X509Source, type SvidPicker, type X509SourceEvents, type X509SourceOptions } from './x509-source.js'
export {
  adaptMatcher,
  authorizeAll,
  authorizeAny,
  authorizeId,
  authorizeIf,
  authorizeMemberOf,
  authorizeOneOf,
  authorizePrefix,
  authorizeWithinBounds,
  type Authorizer,
  type WithinBoundsOptions,
} from './tls/authorizer.js'
export { peerCertificateChain, verifyPeerChain, type VerifiedPeer } from './tls/verify-peer.js'
export {
  connectMtls,
  createMtlsHttpsServer,
  createMtlsServer,
  mtlsAgent,
  mtlsClientOptions,
  mtlsServerOptions,
  peerOf,
  serveMtls,
  tlsServerOptions,
  type MtlsBinding,
  type MtlsClientOptionsExtra,
  type ServeMtlsOptions,
} from './tls/mtls.js'
