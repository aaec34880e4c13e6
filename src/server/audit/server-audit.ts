/**
 * The server's audit events: what it asks of an audit log (`ServerAuditSink`,
 * declared here by its consumer; the CLI passes `src/audit`'s `AuditLog`, which
 * fits it) and `ServerAudit`, through which the services append.
 *
 * Two ways to append, by what the event records:
 * - `durable` waits until the event is on disk. Node attestation (the root of
 *   every later identity) and an operator's changes (entries, bounds,
 *   revocations) use it: a refusal is answered, and a change acknowledged,
 *   only once its event is durable.
 * - `record` does not wait. Workload SVIDs, instance starts and ends use it:
 *   they are the hot path of every agent (batches of hundreds), each follows
 *   from state whose changes are audited durably (the attested node, the
 *   entry), an SVID is short-lived, and an audit log that cannot be written
 *   must not stop the trust domain's identities. The log commits each
 *   event-loop turn's events at once, so a killed process loses none of them.
 *
 * A lost event (log unavailable, event refused) is logged at error level and
 * counted (`warrant_server_audit_events_lost_total{type}`); it never throws.
 *
 * Never a token, CSR, key, PIN or attestation evidence: events carry IDs,
 * serials, times, audiences and codes only (the log refuses JWT- and
 * PEM-looking values too).
 */
import { Counter, type Registry } from 'prom-client'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'

export type ServerAuditEventType =
  | 'node_attestation.accepted'
  | 'node_attestation.refused'
  | 'x509_svid.issued'
  | 'jwt_svid.issued'
  | 'instance.started'
  | 'instance.ended'
  | 'instance.revoked'
  | 'prefix.quarantined'
  | 'revocation.deleted'
  | 'entry.created'
  | 'entry.updated'
  | 'entry.deleted'
  | 'bounds.changed'
  | 'join_token.created'
  | 'node.evicted'
  | 'node.banned'

/** An event as the server writes it: the members of `src/audit`'s event (snake_case) it uses. */
export interface ServerAuditEvent {
  type: ServerAuditEventType
  outcome: 'success' | 'refused' | 'error'
  /** A code (`ERR_JOIN_TOKEN_INVALID`), never prose. */
  reason?: string
  /** The identity the operation was for (its instance, for a per-instance identity), or the agent for its own. */
  actor?: { spiffe_id: string; instance?: string }
  /** The SVID's, entry's or prefix's SPIFFE ID. */
  subject?: string
  /** The attested agent involved. */
  node?: string
  /** A JWT-SVID's audience. */
  resource?: string[]
  /** The signing key's id (a JWT `kid`). */
  key_id?: string
  attributes?: Record<string, string | number | boolean>
}

/** What the server needs of an audit log: one method, resolved once the event is durable, rejected when it is lost. */
export interface ServerAuditSink {
  append(event: ServerAuditEvent): Promise<unknown>
}

/** Attribute values are at most 256 characters: a longer one is left out rather than cut. */
export const fits = (s: string): string | undefined => (s.length <= 256 ? s : undefined)

export class ServerAudit {
  readonly #sink: ServerAuditSink
  readonly #log: Logger
  readonly #lost: Counter<'type'> | undefined

  constructor(o: { sink: ServerAuditSink; log: Logger; registry?: Registry }) {
    this.#sink = o.sink
    this.#log = o.log.child({ [F.SUBSYSTEM]: 'audit' })
    this.#lost = o.registry
      ? new Counter({
          name: 'warrant_server_audit_events_lost_total',
          help: 'Audit events the server could not append (log unavailable or event refused), by type',
          labelNames: ['type'] as const,
          registers: [o.registry],
        })
      : undefined
  }

  /** Appends and waits until the event is durable: true, or false when it was lost (logged and counted). */
  durable(e: ServerAuditEvent): Promise<boolean> {
    let p: Promise<unknown>
    try {
      p = this.#sink.append(e)
    } catch (err) {
      p = Promise.reject(err)
    }
    return p.then(
      () => true,
      (err: unknown) => {
        this.#lose(e, err)
        return false
      },
    )
  }

  /** Appends without waiting; a lost event is logged and counted. */
  record(e: ServerAuditEvent): void {
    void this.durable(e)
  }

  #lose(e: ServerAuditEvent, err: unknown): void {
    this.#lost?.inc({ type: e.type })
    const code = (err as { code?: unknown } | null)?.code
    this.#log.error(
      { type: e.type, [F.ERROR_CODE]: typeof code === 'string' ? code : undefined, [F.ERR]: err instanceof Error ? err.message : String(err) },
      'Audit event lost',
    )
  }
}

/** Codes of a failure that is the server's, not a refusal of the caller. */
const SERVER_FAULTS: ReadonlySet<string> = new Set(['ERR_INTERNAL', 'ERR_DATASTORE', 'ERR_HSM_UNAVAILABLE', 'ERR_AUDIT_UNAVAILABLE'])

/** A failed operation's outcome and reason: its code, outcome `error` for the server's own faults (and anything not an IdentityError). */
export function failureOf(err: unknown): { outcome: 'refused' | 'error'; reason: string } {
  const code = err instanceof IdentityError ? err.code : 'ERR_INTERNAL'
  return { outcome: SERVER_FAULTS.has(code) ? 'error' : 'refused', reason: code }
}

/** An identifier a caller sent (an entry or instance ID), kept only when short and plain: no free text, no dots (so nothing JWT-like). */
export const plainId = (s: string): string | undefined => (/^[A-Za-z0-9_:-]{1,128}$/.test(s) ? s : undefined)

/** Epoch ms as the RFC 3339 time attributes use. */
export const isoTime = (ms: number): string => new Date(ms).toISOString()
