/**
 * The audit event: one credential operation, typed and validated. Wire names
 * are snake_case, as in the logs; the canonical (RFC 8785) form of the
 * validated object is what the log chains, hashes and proves.
 *
 * Never a token, key, PIN, prompt or personal data: the schema is strict (an
 * unknown member is refused), free text is limited to code-like `reason`s
 * and short `attributes`, a possibly personal identifier goes in
 * `on_behalf_of` only as a keyed hash (`hashIdentifier`), and every string
 * passes `assertNoSecrets` (no JWT, no PEM).
 */
import { createHash } from 'node:crypto'
import { z } from 'zod'
import { IdentityError } from '../errors/identity-error.js'
import { SpiffeId } from '../spiffe/spiffe-id.js'
import { canonicalJson } from './canonical.js'
import { assertNoSecrets, HASHED_ID_RE } from './redact.js'

export const AUDIT_EVENT_TYPES = [
  'node_attestation.accepted',
  'node_attestation.refused',
  'x509_svid.issued',
  'jwt_svid.issued',
  'instance.started',
  'instance.ended',
  'entry.created',
  'entry.updated',
  'entry.deleted',
  'bounds.changed',
  'instance.revoked',
  'prefix.quarantined',
  'revocation.deleted',
  'join_token.created',
  'node.evicted',
  'node.banned',
  'task.created',
  'task.ended',
  'token.exchanged',
  'token.renewed',
  'token.delegated',
  'token.introspected',
  'token.revoked',
  'txn_token.issued',
  'gateway.call',
  'credential.stored',
  'credential.deleted',
  'credential.released',
  'approval',
  'signal',
] as const
export type AuditEventType = (typeof AUDIT_EVENT_TYPES)[number]

export const AUDIT_OUTCOMES = ['success', 'refused', 'error'] as const
export type AuditOutcome = (typeof AUDIT_OUTCOMES)[number]

/** The schema version this build writes (`v`). */
export const AUDIT_EVENT_VERSION = 1

/** RFC 3339 in UTC with `Z`, as `Date.prototype.toISOString` writes it (fractional seconds optional). */
export const TIME_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$/
/** Task, orchestration, instance, token (`jti`) and key (`kid`) identifiers: opaque, short, no spaces. */
export const ID_RE = /^[A-Za-z0-9._:~@/+=-]{1,128}$/
/** A reason is a code (`ERR_JOIN_TOKEN_INVALID`, `ceiling.scope`), not prose. */
export const REASON_RE = /^[A-Za-z0-9_.:/-]{1,128}$/
export const SCOPE_RE = /^[\x21\x23-\x5b\x5d-\x7e]{1,128}$/
export const ATTR_NAME_RE = /^[a-z][a-z0-9_]{0,63}$/
export const ACT_CHAIN_HASH_RE = /^[0-9a-f]{64}$/

/**
 * SpiffeId.isValid, remembered: a log sees the same few thousand IDs again and
 * again, and the full check is a sizeable part of validating an event (on the
 * append path and in `verify`). Only valid IDs are kept; the cache is
 * dropped whole when it fills.
 */
const validIds = new Set<string>()
export function isSpiffeId(s: string): boolean {
  if (validIds.has(s)) return true
  if (!SpiffeId.isValid(s)) return false
  if (validIds.size >= 10_000) validIds.clear()
  validIds.add(s)
  return true
}

const spiffeId = z.string().refine(isSpiffeId, 'must be a SPIFFE ID')
const id = z.string().regex(ID_RE, 'must be an identifier (1-128 characters of A-Z a-z 0-9 . _ : ~ @ / + = -)')

export const AuditEventSchema = z
  .strictObject({
    v: z.literal(AUDIT_EVENT_VERSION),
    time: z
      .string()
      .regex(TIME_RE, 'must be an RFC 3339 UTC time ending in Z')
      .refine((s) => !Number.isNaN(Date.parse(s)), 'must be a real time'),
    type: z.enum(AUDIT_EVENT_TYPES),
    outcome: z.enum(AUDIT_OUTCOMES),
    /** Why a refusal or error happened, as a code. */
    reason: z.string().regex(REASON_RE, 'must be a code, not prose').optional(),
    /** Who did it: the workload's (or agent's, or operator's) SPIFFE ID and, for a per-instance identity, its instance. */
    actor: z.strictObject({ spiffe_id: spiffeId, instance: id.optional() }).optional(),
    /** What it was done to or for: the SVID's ID, the token's subject, the entry's ID. */
    subject: spiffeId.optional(),
    /** The attested node (agent) involved. */
    node: spiffeId.optional(),
    task_id: id.optional(),
    orchestration_id: id.optional(),
    /** Target resources (RFC 8707 URIs), audience. */
    resource: z.array(z.string().min(1).max(2048)).max(32).optional(),
    scope: z.array(z.string().regex(SCOPE_RE, 'must be an OAuth scope token')).max(64).optional(),
    delegation_depth: z.number().int().min(0).max(64).optional(),
    /** `delegationChainHash` of the `act` chain (current actor first): links events of one chain without listing it. */
    act_chain_hash: z.string().regex(ACT_CHAIN_HASH_RE, 'must be a hex SHA-256').optional(),
    /** A token's `jti` (an identifier; never the token). */
    token_id: id.optional(),
    /** A signing key's `kid` or key ID (never the key). */
    key_id: id.optional(),
    /** A human (or other possibly personal identifier) on whose behalf: only as `hashIdentifier(salt, value)`. */
    on_behalf_of: z.string().regex(HASHED_ID_RE, 'must be a hashed identifier (hashIdentifier)').optional(),
    /** A few extra short values (numbers, flags, codes). */
    attributes: z
      .record(z.string().regex(ATTR_NAME_RE, 'must be a snake_case name'), z.union([z.string().max(256), z.number().finite(), z.boolean()]))
      .refine((r) => Object.keys(r).length <= 16, 'at most 16 attributes')
      .optional(),
  })
  .superRefine((e, ctx) => {
    if (e.outcome !== 'success' && e.reason === undefined) ctx.addIssue({ code: 'custom', path: ['reason'], message: 'a refusal or error needs a reason' })
    if (e.type === 'node_attestation.refused' && e.outcome === 'success')
      ctx.addIssue({ code: 'custom', path: ['outcome'], message: 'a refused attestation is not a success' })
    if (e.type === 'node_attestation.accepted' && e.outcome !== 'success')
      ctx.addIssue({ code: 'custom', path: ['outcome'], message: 'an accepted attestation is a success' })
  })

export type AuditEvent = z.infer<typeof AuditEventSchema>
/** What a caller supplies: `v` and `time` may be left to the log. */
export type AuditEventInput = Omit<AuditEvent, 'v' | 'time'> & { v?: typeof AUDIT_EVENT_VERSION; time?: string }

/**
 * Validates `raw` as an audit event (schema, then the secret guard); throws
 * IdentityError ERR_AUDIT_EVENT_INVALID naming each problem's path (never its value).
 */
export function parseAuditEvent(raw: unknown): AuditEvent {
  const r = AuditEventSchema.safeParse(raw)
  if (!r.success) {
    const issues = r.error.issues.map((i) => ({ path: i.path.map(String).join('.') || '(root)', message: i.message }))
    throw new IdentityError('ERR_AUDIT_EVENT_INVALID', `invalid audit event: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, {
      details: { issues },
    })
  }
  assertNoSecrets(r.data)
  return r.data
}

/** Hex SHA-256 of the canonical JSON array of a delegation chain's SPIFFE IDs (current actor first), for `act_chain_hash`. */
export function delegationChainHash(actors: readonly string[]): string {
  return createHash('sha256').update(canonicalJson(actors), 'utf8').digest('hex')
}
