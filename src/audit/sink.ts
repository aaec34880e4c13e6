/**
 * What a credential operation needs from the audit log: one method. The
 * broker takes an `AuditSink` from its composition root and releases a token
 * only once `append` has resolved (its event is durable); a rejection
 * (IdentityError ERR_AUDIT_UNAVAILABLE) means the operation must fail closed.
 * The server declares its own port (server/audit/server-audit.ts), which
 * `AuditLog` fits; which of its events wait for durability is said there.
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
