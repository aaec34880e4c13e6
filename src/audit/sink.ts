/**
 * What a credential operation needs from the audit log: one method. The
 * broker and the server take an `AuditSink` from their composition root and
 * release a token or an SVID only once `append` has resolved (its event is
 * durable); a rejection (IdentityError ERR_AUDIT_UNAVAILABLE) means the
 * operation must fail closed.
 */
import type { AuditEventInput } from './event.js'

export interface AuditReceipt {
  /** 1-based position in the log. */
  readonly seq: number
  /** The event's Merkle leaf index (seq - 1). */
  readonly leafIndex: number
  /** Hex chain value after this event (hash-chain.ts). */
  readonly chainHash: string
  /** The event's time as logged. */
  readonly time: string
}

export interface AuditSink {
  append(event: AuditEventInput): Promise<AuditReceipt>
}
