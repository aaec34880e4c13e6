/**
 * What the console needs from the broker, declared by its consumer (as the
 * agent's Workload API declares its manager): the composition root
 * (src/cli/console-composition.ts) adapts the real broker objects to it, the
 * tests and the screenshot script give it demo data. Plain data only; never
 * a token, key or secret (tokens are shown by `jti`).
 */
import type { ApprovalQueue, Approver } from '../broker/intents/contract.js'

export type { ApprovalQueue, ApprovalView, Approver } from '../broker/intents/contract.js'

/**
 * Seals the TOTP secrets operators set up in the console (AES-256-GCM under
 * a key the broker's key manager holds: in an HSM, never extractable); `open`
 * throws on any change to the sealed bytes or the AAD.
 */
export interface SecretSealer {
  seal(plaintext: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
  open(sealed: Uint8Array, aad: Uint8Array): Promise<Uint8Array>
}

/** The four revocation levels an operator uses from the console. */
export const REVOCATION_LEVELS = ['token', 'instance', 'task', 'chain'] as const
export type RevocationLevel = (typeof REVOCATION_LEVELS)[number]

/** A live (unexpired, unrevoked) token: its identifier and what it allows, never its value. */
export interface LiveToken {
  readonly jti: string
  readonly kind: 'access' | 'grant'
  readonly sub: string
  readonly clientId: string
  readonly taskId?: string
  readonly parentJti?: string
  readonly rootJti: string
  readonly scopes: readonly string[]
  readonly audiences: readonly string[]
  /** The delegation chain, current actor first (the token's `act`). */
  readonly actors: readonly string[]
  readonly binding: 'dpop' | 'mtls' | 'bearer'
  /** Epoch seconds. */
  readonly iat: number
  readonly exp: number
}

/** An agent instance (its SPIFFE ID) and the live tokens it holds (their client). */
export interface LiveInstance {
  readonly spiffeId: string
  readonly tokens: readonly LiveToken[]
}

export interface RevocationView {
  readonly seq: number
  readonly kind: string
  readonly value: string
  readonly reason?: string
  readonly createdBy: string
  /** Epoch seconds. */
  readonly createdAt: number
  readonly expiresAt: number
}

export interface AuditEntryView {
  readonly seq: number
  readonly time: string
  readonly type: string
  readonly outcome: string
  readonly actor?: string
  readonly subject?: string
  readonly reason?: string
  readonly tokenId?: string
  readonly taskId?: string
}

export interface AuditStatus {
  readonly size: number
  /** `ok`: the chain, tree and every checkpoint verified; `unsigned`: chained, no checkpoint yet; `failed`: see problems. */
  readonly verification: 'ok' | 'unsigned' | 'failed'
  readonly problems: readonly string[]
  /** Epoch ms of this verification. */
  readonly verifiedAt: number
  readonly checkpoint?: { readonly size: number; readonly note: string; readonly createdAt: number }
  readonly verifierKey?: string
}

export interface SignalView {
  readonly id: number
  readonly issuer: string
  readonly jti: string
  readonly eventType: string
  /** The subject, as compact JSON. */
  readonly subject: string
  /** What the response policy decided (action and target, or `record`). */
  readonly action: string
  readonly outcome: string
  /** Epoch seconds. */
  readonly receivedAt: number
}

/** Token requests in one interval. */
export interface RateBucket {
  /** Epoch ms of the bucket's start. */
  readonly start: number
  readonly issued: number
  readonly refused: number
}

/** Who did something in the console, as recorded. */
export type OperatorIdentity = Approver & { readonly method: 'webauthn' | 'totp' }

export interface ConsoleBackend {
  /** The intent approval queue; undefined when intents are not configured. */
  readonly approvals?: ApprovalQueue
  instances(): Promise<LiveInstance[]>
  revoke(req: { level: RevocationLevel; value: string; reason: string }, by: OperatorIdentity): Promise<{ seq: number; created: boolean; tokens: number }>
  revocations(): Promise<RevocationView[]>
  /** Undefined when the broker keeps no audit log. */
  readonly audit?: {
    recent(limit: number): Promise<AuditEntryView[]>
    status(): Promise<AuditStatus>
  }
  /** Undefined when the broker receives no Shared Signals. */
  readonly signals?: { received(limit: number): Promise<SignalView[]> }
  /** Issuance and refusal counts per interval, oldest first. */
  rates(): RateBucket[]
}
