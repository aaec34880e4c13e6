/** Resource-server middleware on the token library: Node `http`/Express and Fastify, and the HTTPS JWKS fetcher. */
export { warrantMiddleware, type WarrantRequest } from './node-middleware.js'
export { warrantFastify } from './fastify-plugin.js'
export { httpsJwksFetcher, type HttpsJwksFetcherOptions } from './jwks-fetcher.js'
export { createRequestVerifier, type ResourceServerOptions, type RouteScopes, type WarrantContext, type RequestVerifier } from './verifier.js'
export { RevocationFeed, subscribeRevocations, type RevocationFeedOptions } from './revocation-feed.js'
export {
  createTxnTokenVerifier,
  txnTokenMiddleware,
  txnTokenFastify,
  type TxnTokenVerifier,
  type TxnTokenVerifierOptions,
  type TxnRoute,
  type TxnRoutes,
  type TxnRequest,
} from './txn-token-middleware.js'
