export { HealthService, type ServingStatus } from '../../common/grpc/health.js'
