/**
 * An inclusion proof a third party can check offline: the event's canonical
 * bytes, its leaf index, the audit path, and the signed checkpoint whose root
 * the path leads to. `verifyInclusionBundle` needs only the log's verifier
 * key. (The same shape as C2SP `tlog-proof` in spirit; JSON here.)
 */
import { z } from 'zod'
import { IdentityError } from '../errors/identity-error.js'
import { openCheckpoint, type Checkpoint, type NoteVerifier } from './checkpoint.js'
import { parseAuditEvent, type AuditEvent } from './event.js'
import { leafHash, verifyConsistency, verifyInclusion } from './merkle.js'

export const INCLUSION_FORMAT = 'warrant-audit-inclusion-v1'
export const CONSISTENCY_FORMAT = 'warrant-audit-consistency-v1'

const b64Hash = z.string().regex(/^[A-Za-z0-9+/]{43}=$/, 'must be a base64 SHA-256')

export const InclusionBundleSchema = z.strictObject({
  format: z.literal(INCLUSION_FORMAT),
  seq: z.number().int().min(1),
  leaf_index: z.number().int().min(0),
  tree_size: z.number().int().min(1),
  /** The event's canonical JSON, exactly the bytes hashed into the leaf. */
  event: z.string(),
  inclusion_path: z.array(b64Hash).max(64),
  /** The signed checkpoint (C2SP signed note) of tree_size. */
  checkpoint: z.string(),
})
export type InclusionBundle = z.infer<typeof InclusionBundleSchema>

export const ConsistencyBundleSchema = z.strictObject({
  format: z.literal(CONSISTENCY_FORMAT),
  first: z.string(),
  second: z.string(),
  consistency_path: z.array(b64Hash).max(128),
})
export type ConsistencyBundle = z.infer<typeof ConsistencyBundleSchema>

const invalid = (message: string): IdentityError => new IdentityError('ERR_AUDIT_PROOF_INVALID', message)

/**
 * Checks an inclusion bundle with only the verifier key: the checkpoint's
 * signature, its size, the event's schema, and the audit path from the
 * event's leaf hash to the signed root. Returns the event and checkpoint;
 * throws ERR_AUDIT_PROOF_INVALID (or ERR_AUDIT_CHECKPOINT_INVALID for the signature).
 */
export function verifyInclusionBundle(raw: unknown, verifier: NoteVerifier): { event: AuditEvent; checkpoint: Checkpoint; seq: number } {
  const r = InclusionBundleSchema.safeParse(raw)
  if (!r.success) throw invalid(`not an inclusion proof: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`)
  const b = r.data
  if (b.leaf_index !== b.seq - 1) throw invalid('the leaf index is not seq - 1')
  const checkpoint = openCheckpoint(b.checkpoint, verifier)
  if (checkpoint.size !== b.tree_size) throw invalid(`the proof is for a tree of ${b.tree_size} but the checkpoint signs ${checkpoint.size}`)
  let event: AuditEvent
  try {
    event = parseAuditEvent(JSON.parse(b.event))
  } catch (err) {
    throw invalid(`the proven event is not a valid audit event: ${(err as Error).message}`)
  }
  const path = b.inclusion_path.map((p) => Buffer.from(p, 'base64'))
  if (!verifyInclusion(leafHash(Buffer.from(b.event, 'utf8')), b.leaf_index, b.tree_size, path, checkpoint.rootHash)) {
    throw invalid(`event ${b.seq} is not in the tree of ${b.tree_size} signed by ${verifier.name}`)
  }
  return { event, checkpoint, seq: b.seq }
}

/** Checks that the log of `second` extends the log of `first` (both checkpoints signed by `verifier`). */
export function verifyConsistencyBundle(raw: unknown, verifier: NoteVerifier): { first: Checkpoint; second: Checkpoint } {
  const r = ConsistencyBundleSchema.safeParse(raw)
  if (!r.success) throw invalid(`not a consistency proof: ${r.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ')}`)
  const first = openCheckpoint(r.data.first, verifier)
  const second = openCheckpoint(r.data.second, verifier)
  if (first.origin !== second.origin) throw invalid('the two checkpoints are of different logs')
  const path = r.data.consistency_path.map((p) => Buffer.from(p, 'base64'))
  if (!verifyConsistency(first.size, second.size, first.rootHash, second.rootHash, path)) {
    throw invalid(`the tree of ${second.size} does not extend the tree of ${first.size}`)
  }
  return { first, second }
}
