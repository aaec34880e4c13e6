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
  dnsNameUnder,
  intersect,
  isUnbounded,
  narrows,
  parseBounds,
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
  BOUNDS_DOCUMENT_TYPE,
  MAX_BOUNDS_DOCUMENT_LENGTH,
  signBoundsDocument,
  verifyBoundsDocument,
  type BoundsDocument,
  type BoundsDocumentPayload,
  type SignBoundsDocumentOptions,
  type VerifyBoundsDocumentOptions,
} from './document.js'
