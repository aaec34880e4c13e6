/**
 * An in-memory audit sink for the server's services: every event is checked
 * against src/audit's schema and secret guard (`parseAuditEvent`), as the
 * real log checks it, and kept. `failing` rejects every append as an
 * unavailable log does; `hold` keeps appends pending until `release()`.
 */
import { parseAuditEvent } from '../../../../src/audit/event.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import type { Logger } from '../../../../src/common/log/logger.js'
import { ServerAudit, type ServerAuditEvent, type ServerAuditSink } from '../../../../src/server/audit/server-audit.js'
import { createServerMetrics } from '../../../../src/server/metrics.js'
import { captureLogger } from '../../../helpers/capture-logger.js'

export class MemorySink implements ServerAuditSink {
  readonly events: ServerAuditEvent[] = []
  failing = false
  #held: (() => void)[] | undefined

  append(event: ServerAuditEvent): Promise<unknown> {
    if (this.failing) return Promise.reject(new IdentityError('ERR_AUDIT_UNAVAILABLE', 'audit log unavailable'))
    parseAuditEvent({ v: 1, time: new Date(0).toISOString(), ...event })
    if (this.#held) return new Promise<void>((resolve) => this.#held!.push(() => (this.events.push(event), resolve())))
    this.events.push(event)
    return Promise.resolve()
  }

  /** Holds every later append until `release()`. */
  hold(): void {
    this.#held = []
  }

  /** Makes the held appends durable, in order. */
  release(): void {
    const held = this.#held ?? []
    this.#held = undefined
    for (const done of held) done()
  }

  of(type: ServerAuditEvent['type']): ServerAuditEvent[] {
    return this.events.filter((e) => e.type === type)
  }
}

/** A ServerAudit over a MemorySink, with the log lines and the lost-events metric. */
export function memoryAudit(log: Logger & { lines: { level: string; msg: string; fields: Record<string, unknown> }[] } = captureLogger()) {
  const sink = new MemorySink()
  const metrics = createServerMetrics()
  const audit = new ServerAudit({ sink, log, registry: metrics.registry })
  const lost = async (): Promise<number> =>
    (await metrics.registry.getSingleMetric('warrant_server_audit_events_lost_total')!.get()).values.reduce((n, v) => n + v.value, 0)
  return { sink, audit, log, lost }
}

/** Nothing in the events looks like a token, a PEM block or DER (certificate, CSR, key) in base64, nor holds `secret`. */
export function expectNoSecrets(events: readonly ServerAuditEvent[], secret?: string): void {
  const text = JSON.stringify(events)
  if (/eyJ[A-Za-z0-9_-]{2,}\.|-----BEGIN|MII[A-Za-z0-9+/]{16}/.test(text)) throw new Error(`an audit event carries token or key material: ${text}`)
  if (secret !== undefined && text.includes(secret)) throw new Error('an audit event carries a secret value')
}
