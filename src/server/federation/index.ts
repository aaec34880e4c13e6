export { federationAdminService, relationshipToMsg, type FederationAdminDeps } from './admin-service.js'
export {
  checkBundleEndpointUrl,
  DEFAULT_FETCH_TIMEOUT_MS,
  DEFAULT_MAX_BUNDLE_BYTES,
  fetchBundle,
  MAX_REDIRECTS,
  parseDocument,
  type FetchBundleOptions,
  type FetchProfile,
} from './client.js'
export { bundleEndpointConfigSchema, federatesWithConfigSchema, federationConfigSchema, relationshipsFromConfig, type FederationFileConfig } from './config.js'
export {
  DEFAULT_REFRESH_HINT_SECONDS,
  MOZILLA_INTERMEDIATE_CIPHERS,
  parseAddress,
  startBundleEndpoint,
  type BundleEndpoint,
  type BundleEndpointOptions,
  type BundleEndpointProfile,
  type ServerCredentials,
} from './endpoint.js'
export {
  FederationRefresher,
  INITIAL_BACKOFF_MS,
  systemTimers,
  type FederationRefresherOptions,
  type ReadText,
  type RefreshStatus,
  type Timers,
} from './refresher.js'
export {
  FEDERATION_KV_NAMESPACE,
  RelationshipStore,
  validateRelationship,
  type FederationProfile,
  type FederationRelationship,
  type RelationshipInput,
  type RelationshipPatch,
} from './relationships.js'
