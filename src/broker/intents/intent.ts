/**
 * The intent as an RFC 9396 authorization detail of type `warrant_intent`,
 * what an agent sends (at `<issuer>/bc-authorize` or the token endpoint):
 *
 *   {"type": "warrant_intent", "actions": ["api:execute"],
 *    "locations": ["https://grid.example/control/breaker-reset"],
 *    "params_digest": "<base64url SHA-256 of the parameters>",
 *    "declared_risk": 0.85, "task": "task-42"}
 *
 * exactly one action and one location; never the parameters. The token of an
 * approved intent carries `{type, actions, locations, params_digest, intent_id}`
 * (and `task`): that action on that resource, nothing else. Also the views of
 * an intent for approvers and the admin socket's wire form.
 */
import { IdentityError } from '../../errors/identity-error.js'
import { resourceProblem } from '../../spiffe/bounds/bounds.js'
import type { AuthorizationDetail } from '../../tokens/claims.js'
import type { IntentRecord } from '../store/intent-store.js'
import type { ApprovalView, IntentStatus } from './contract.js'

/** The RFC 9396 `type` of a declared intent. */
export const INTENT_DETAIL_TYPE = 'warrant_intent'
/** OpenID CIBA Core §10.1: the grant type of a backchannel token request. */
export const CIBA_GRANT_TYPE = 'urn:openid:params:grant-type:ciba'

export const INTENT_STATUSES: readonly IntentStatus[] = ['approved', 'pending', 'denied', 'refused', 'expired', 'used', 'mismatch']

const ACTION = /^[\x21\x23-\x5B\x5D-\x7E]{1,128}$/
const DIGEST = /^[A-Za-z0-9_-]{43}$/
const TASK = /^[A-Za-z0-9._-]{1,128}$/
const KNOWN = new Set(['type', 'actions', 'locations', 'params_digest', 'declared_risk', 'task'])

/** What an agent declared. */
export interface DeclaredIntent {
  readonly action: string
  readonly resource: string
  readonly paramsDigest: string
  readonly declaredRisk?: number
  readonly taskId?: string
}

function invalid(msg: string): IdentityError {
  return new IdentityError('ERR_INTENT_INVALID', `invalid intent: ${msg}`)
}

/** The one `warrant_intent` entry of an `authorization_details` list (ERR_INTENT_INVALID otherwise). */
export function parseIntentDetails(details: readonly AuthorizationDetail[] | undefined): DeclaredIntent {
  if (details === undefined || details.length === 0) throw invalid('authorization_details with one warrant_intent entry is required')
  if (details.length !== 1 || details[0]!.type !== INTENT_DETAIL_TYPE) throw invalid('exactly one authorization detail, of type warrant_intent')
  const d = details[0]! as Record<string, unknown>
  const extra = Object.keys(d).find((k) => !KNOWN.has(k))
  if (extra !== undefined) throw invalid(`unknown member "${extra.slice(0, 64)}" (parameters are declared by their digest only)`)
  const actions = d.actions
  if (!Array.isArray(actions) || actions.length !== 1 || typeof actions[0] !== 'string' || !ACTION.test(actions[0]))
    throw invalid('actions must hold exactly one action (a scope-like token)')
  const locations = d.locations
  if (!Array.isArray(locations) || locations.length !== 1 || typeof locations[0] !== 'string' || locations[0].length > 2048)
    throw invalid('locations must hold exactly one resource URI')
  const p = resourceProblem(locations[0])
  if (p) throw invalid(`locations: ${p}`)
  if (typeof d.params_digest !== 'string' || !DIGEST.test(d.params_digest)) throw invalid('params_digest must be the base64url SHA-256 of the parameters')
  const risk = d.declared_risk
  if (risk !== undefined && (typeof risk !== 'number' || !Number.isFinite(risk) || risk < 0 || risk > 1))
    throw invalid('declared_risk must be a number from 0 to 1')
  const task = d.task
  if (task !== undefined && (typeof task !== 'string' || !TASK.test(task))) throw invalid('task must match [A-Za-z0-9._-]{1,128}')
  return {
    action: actions[0],
    resource: locations[0],
    paramsDigest: d.params_digest,
    ...(risk !== undefined ? { declaredRisk: risk } : {}),
    ...(task !== undefined ? { taskId: task } : {}),
  }
}

/** The authorization detail an approved intent's token carries. */
export function tokenDetail(intentId: string, i: DeclaredIntent): AuthorizationDetail {
  return {
    type: INTENT_DETAIL_TYPE,
    actions: [i.action],
    locations: [i.resource],
    params_digest: i.paramsDigest,
    intent_id: intentId,
    ...(i.taskId !== undefined ? { task: i.taskId } : {}),
  }
}

/** Does a token's `authorization_details` carry an intent (an action-bound token)? */
export function isActionBound(details: readonly AuthorizationDetail[] | undefined): boolean {
  return details !== undefined && details.some((d) => d.type === INTENT_DETAIL_TYPE)
}

/** What approvers see (console, CLI): never the parameters, only their digest. */
export function toApprovalView(r: IntentRecord): ApprovalView {
  return {
    id: r.id,
    action: r.action,
    resource: r.resource,
    paramsDigest: r.paramsDigest,
    ...(r.declaredRisk !== undefined ? { declaredRisk: r.declaredRisk } : {}),
    risk: r.risk,
    factors: r.factors,
    status: r.status,
    decidedBy: r.decidedBy,
    ...(r.approver !== undefined ? { approver: r.approver } : {}),
    ...(r.reason !== undefined ? { reason: r.reason } : {}),
    ...(r.approverGroup !== undefined ? { approverGroup: r.approverGroup } : {}),
    custody: {
      agentId: r.agent,
      ...(r.taskId !== undefined ? { taskId: r.taskId } : {}),
      ...(r.nodeAttestation !== undefined ? { nodeAttestation: r.nodeAttestation } : {}),
      delegation: r.delegation,
    },
    createdAt: r.createdAt,
    expiresAt: r.expiresAt,
    ...(r.authReqId !== undefined ? { authReqId: r.authReqId } : {}),
    ...(r.bindingMessage !== undefined ? { bindingMessage: r.bindingMessage } : {}),
    ...(r.tokenJti !== undefined ? { tokenId: r.tokenJti } : {}),
  }
}

/** The admin socket's JSON form of a view (snake_case, as `warrant approval list --output json` prints it). */
export function approvalToWire(v: ApprovalView): Record<string, unknown> {
  return {
    id: v.id,
    status: v.status,
    action: v.action,
    resource: v.resource,
    params_digest: v.paramsDigest,
    ...(v.declaredRisk !== undefined ? { declared_risk: v.declaredRisk } : {}),
    risk: v.risk,
    factors: v.factors,
    ...(v.decidedBy !== undefined ? { decided_by: v.decidedBy } : {}),
    ...(v.approver !== undefined ? { approver: v.approver } : {}),
    ...(v.reason !== undefined ? { reason: v.reason } : {}),
    ...(v.approverGroup !== undefined ? { approver_group: v.approverGroup } : {}),
    agent: v.custody.agentId,
    ...(v.custody.taskId !== undefined ? { task_id: v.custody.taskId } : {}),
    ...(v.custody.nodeAttestation !== undefined ? { node_attestation: v.custody.nodeAttestation } : {}),
    delegation: v.custody.delegation,
    created_at: v.createdAt,
    expires_at: v.expiresAt,
    ...(v.bindingMessage !== undefined ? { binding_message: v.bindingMessage } : {}),
    ...(v.tokenId !== undefined ? { token_id: v.tokenId } : {}),
  }
}
