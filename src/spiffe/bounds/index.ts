/**
 * Namespace operating bounds: limits per SPIFFE path prefix that narrow down
 * the tree, their signed document, and helpers that let a relying party
 * decide from an SVID alone. Pure (no I/O).
 */
export {
  BOUND_NAMES,
  boundsEqual,
  boundsError,
  boundsToJson,
  collectBounds,
  delegateeCovered,
  delegateePatternProblem,
  dnsNameUnder,
  intersect,
  isUnbounded,
  MAX_DELEGATION_DEPTH_LIMIT,
  narrows,
  parseBounds,
  resourceProblem,
  type BoundName,
  type Bounds,
  type BoundsIssue,
  type BoundsJson,
  type BoundsViolation,
} from './bounds.js'
export { BoundsSet, boundsFor, normalizePrefix, type EffectiveBounds, type PrefixBoundsJson } from './bounds-set.js'
export {
  authorize,
  checkBounds,
  checkEffective,
  describeFailure,
  matchBoundedPrefix,
  matchWithinBounds,
  type AuthorizeOptions,
  type BoundsFailure,
  type BoundsRequest,
} from './authorize.js'
export {
  ceilingFor,
  checkCeiling,
  DEFAULT_MAX_DELEGATION_DEPTH,
  describeCeilingFailure,
  type Ceiling,
  type CeilingFailure,
  type CeilingRequest,
} from './ceiling.js'
export {
  BOUNDS_DOCUMENT_TYPE,
  MAX_BOUNDS_DOCUMENT_LENGTH,
  signBoundsDocument,
  verifyBoundsDocument,
  type BoundsDocument,
  type BoundsDocumentPayload,
  type SignBoundsDocumentOptions,
  type VerifyBoundsDocumentOptions,
} from './document.js'
