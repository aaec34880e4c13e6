/**
 * The contract of intent declaration and human approval: what the broker's
 * intent service offers to its HTTPS wire, its admin socket (`warrant
 * approval`), and the operator console (src/console, through an adapter in
 * the CLI's composition). Types only.
 */

/** Where an intent stands. `refused`: forbidden by a rule, never shown to a human. */
export type IntentStatus = 'approved' | 'pending' | 'denied' | 'refused' | 'expired' | 'used' | 'mismatch'

/** One rule's contribution to the computed risk (the breakdown an approver sees). */
export interface RiskFactor {
  /** Stable rule name, e.g. `action:api:execute`, `node:join_token`, `history:refusals`. */
  readonly rule: string
  /** What it added to the risk (0..1 scale, may be negative). */
  readonly weight: number
  readonly detail: string
}

/** Who decided, recorded in the audit log and shown in the console. */
export interface Approver {
  /** The operator's name, or `cli:<uid>` for the admin socket, or `rule:<name>` for an automatic decision. */
  readonly id: string
  /** How the operator proved it: `webauthn`, `totp`, `unix-socket` (CLI), `rule` (automatic). */
  readonly method: 'webauthn' | 'totp' | 'unix-socket' | 'rule'
}

/** The chain of custody shown next to an intent. */
export interface CustodyChain {
  readonly agentId: string
  readonly instanceId?: string
  readonly taskId?: string
  /** The node's attestation kind (`tpm`, `join_token`, ...), when known. */
  readonly nodeAttestation?: string
  /** Delegation chain, outermost first (SPIFFE IDs). */
  readonly delegation: readonly string[]
}

/** An intent as listed to approvers (never the parameters, only their digest). */
export interface ApprovalView {
  readonly id: string
  readonly action: string
  readonly resource: string
  /** base64url SHA-256 of the parameters, as declared. */
  readonly paramsDigest: string
  readonly declaredRisk?: number
  /** Computed risk 0..1. */
  readonly risk: number
  readonly factors: readonly RiskFactor[]
  readonly status: IntentStatus
  /** The rule that decided (automatic approval, refusal) or routed it to a human. */
  readonly decidedBy?: string
  readonly approver?: Approver
  readonly reason?: string
  /** Approver group the intent was routed to (by namespace prefix). */
  readonly approverGroup?: string
  readonly custody: CustodyChain
  /** Unix seconds. */
  readonly createdAt: number
  readonly expiresAt: number
  /** The CIBA request carrying it, when one does. */
  readonly authReqId?: string
  /** The CIBA `binding_message` the agent sent with it, shown to the approver (plain text, short). */
  readonly bindingMessage?: string
  /** The `jti` of the action-bound token issued for it, once there is one (an identifier, never the token). */
  readonly tokenId?: string
}

/** What approvers (console, CLI) may do with the queue. Errors are IdentityErrors with stable codes. */
export interface ApprovalQueue {
  list(opts?: { status?: IntentStatus; limit?: number }): Promise<ApprovalView[]>
  get(id: string): Promise<ApprovalView | undefined>
  /** Approve a pending intent; refuses one that is not pending (ERR_INTENT_NOT_PENDING) or unknown (ERR_NOT_FOUND). */
  approve(id: string, approver: Approver, reason?: string): Promise<ApprovalView>
  deny(id: string, approver: Approver, reason?: string): Promise<ApprovalView>
  /** Called after every change of any intent; returns an unsubscribe function. */
  onChange(fn: (v: ApprovalView) => void): () => void
}
