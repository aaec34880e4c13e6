export { startWorkloadApi, type StartWorkloadApiOptions, type WorkloadApiServer } from './start-workload-api.js'
export type { WorkloadManager, WorkloadPeer, WorkloadIdentity, WorkloadBundle, WorkloadUpdate, JwtSvidResult, ValidatedJwtSvid } from './manager.js'
export { SECURITY_HEADER, workloadApiHandlers, workloadApiService, type PeerResolver } from './workload-api.js'
export { HealthService } from './health.js'
