/**
 * The audit log: events (event.ts), their canonical form (canonical.ts), the
 * hash chain (hash-chain.ts), the Merkle tree and its proofs (merkle.ts),
 * signed checkpoints (checkpoint.ts), offline proofs (proof.ts), log
 * verification (verify.ts), and the SQLite store (store/).
 */
export { canonicalBytes, canonicalJson } from './canonical.js'
export {
  AUDIT_EVENT_TYPES,
  AUDIT_EVENT_VERSION,
  AUDIT_OUTCOMES,
  AuditEventSchema,
  delegationChainHash,
  parseAuditEvent,
  type AuditEvent,
  type AuditEventInput,
  type AuditEventType,
  type AuditOutcome,
} from './event.js'
export { assertNoSecrets, hashIdentifier, HASHED_ID_PREFIX } from './redact.js'
export { chainHash, GENESIS } from './hash-chain.js'
export {
  consistencyProof,
  EMPTY_ROOT,
  inclusionProof,
  leafHash,
  MerkleAccumulator,
  nodeHash,
  subtreeRoot,
  verifyConsistency,
  verifyInclusion,
} from './merkle.js'
export {
  checkpointText,
  ecdsaNoteSigner,
  openCheckpoint,
  parseCheckpointInsecure,
  parseVerifierKey,
  signCheckpoint,
  verifierKey,
  type Checkpoint,
  type NoteSigner,
  type NoteVerifier,
} from './checkpoint.js'
export { verifyConsistencyBundle, verifyInclusionBundle, type ConsistencyBundle, type InclusionBundle } from './proof.js'
export { LogVerifier, type TamperKind, type VerifyProblem, type VerifyReport } from './verify.js'
export type { AuditReceipt, AuditSink } from './sink.js'
export { AuditLog, type AuditLogHooks, type AuditLogOptions, type StoredCheckpoint } from './store/audit-log.js'
export { AuditLogReader, type EventFilter } from './store/log-reader.js'
