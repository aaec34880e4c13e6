export { ERROR_CODES, GrpcStatus, type ErrorCode, type GrpcStatusCode } from './codes.js'
export { IdentityError, isIdentityError } from './identity-error.js'
