/**
 * Composition of intents and human approval (`[broker.intents]`, src/broker/intents):
 * the service from its config and the broker's domain, and the ports only the
 * CLI can fill: the notifier (webhook, SMTP relay), the Shared Signals
 * transmitter for mismatch signals, the signals received about an agent (the
 * SSF receiver's store) and, embedded, the node attestation of an agent (the
 * server's datastore: the attestor of the node its entries are parented to).
 */
import type { AuditSink } from '../audit/sink.js'
import { F, type Logger } from '../common/log/logger.js'
import type { BrokerConfig } from '../broker/config.js'
import { parseIntentsConfig } from '../broker/intents/config.js'
import { IntentService } from '../broker/intents/intent-service.js'
import { ApprovalNotifier } from '../broker/intents/notify.js'
import type { CeilingSource } from '../broker/ports.js'
import type { BrokerServiceImpl } from '../broker/service.js'
import type { SsfTransmitter } from '../broker/ssf-transmitter.js'
import type { SsfStore } from '../broker/store/ssf-store.js'
import type { StepUpPort } from '../broker/step-ups.js'
import type { RunningServer } from '../server/server.js'

export interface RunningIntents {
  readonly service: IntentService
  readonly notifier: ApprovalNotifier
  stop(): void
}

/** The intents of a broker, when `[broker.intents]` is on (undefined otherwise); the expiry sweep started. */
export function startIntents(o: {
  config: BrokerConfig
  service: BrokerServiceImpl
  ceilings: CeilingSource
  audit?: AuditSink | undefined
  ssf?: SsfTransmitter | undefined
  ssfStore?: SsfStore | undefined
  stepUps?: StepUpPort | undefined
  nodeAttestation?: ((agent: string) => Promise<string | undefined>) | undefined
  log: Logger
}): RunningIntents | undefined {
  const cfg = parseIntentsConfig(o.config.sections.intents, { baseDir: o.config.sections.baseDir })
  if (!cfg) return undefined
  const log = o.log.child({ [F.SUBSYSTEM]: 'broker_intents' })
  const notifier = new ApprovalNotifier({
    groups: cfg.approverGroups,
    ...(cfg.smtp ? { smtp: cfg.smtp } : {}),
    ...(cfg.consoleUrl !== undefined ? { consoleUrl: cfg.consoleUrl } : {}),
    log,
  })
  const ssf = o.ssf
  const service = new IntentService({
    config: cfg,
    broker: o.service,
    ceilings: o.ceilings,
    requireTask: true,
    ...(o.audit ? { audit: o.audit } : {}),
    ...(o.nodeAttestation ? { nodeAttestation: o.nodeAttestation } : {}),
    ...(o.ssfStore ? { signalsAbout: receivedSignalCounter(o.ssfStore) } : {}),
    ...(o.stepUps ? { stepUps: o.stepUps } : {}),
    ...(ssf
      ? { raiseSignal: (s) => void ssf.send({ event: s.event, subject: s.subject, reason: s.reason, confidence: s.confidence, initiatingEntity: 'policy' }) }
      : {}),
    notifier,
    log,
  })
  service.start()
  log.info({ groups: Object.keys(cfg.approverGroups).length, smtp: cfg.smtp !== undefined }, 'Intents and human approval enabled')
  return {
    service,
    notifier,
    stop() {
      service.close()
      notifier.close()
    },
  }
}

/** The SPIFFE IDs a received signal's subject names (`uri`, or `application` of a `complex` subject). */
function subjectIds(subject: unknown): string[] {
  if (subject === null || typeof subject !== 'object') return []
  const s = subject as Record<string, unknown>
  if (s.format === 'uri' && typeof s.uri === 'string') return [s.uri]
  if (s.format === 'complex') return subjectIds(s.application)
  return []
}

/** Counts the signals received about an agent since a time, reading the SSF store's new rows as they come. */
export function receivedSignalCounter(store: SsfStore): (agent: string, sinceSec: number) => number {
  let cursor = 0
  const seen = new Map<string, number[]>()
  return (agent, sinceSec) => {
    for (;;) {
      const batch = store.listReceived(cursor, 1000)
      for (const r of batch) {
        cursor = Math.max(cursor, r.id)
        for (const id of subjectIds(r.subject)) {
          const l = seen.get(id) ?? []
          l.push(r.receivedAt)
          if (l.length > 1000) l.shift()
          seen.set(id, l)
        }
      }
      if (batch.length < 1000) break
    }
    return (seen.get(agent) ?? []).filter((t) => t >= sinceSec).length
  }
}

/** The agent SPIFFE ID's attestor segment (`spiffe://<td>/warrant/agent/<attestor>/<id>`). */
const AGENT_ID = /^spiffe:\/\/[^/]+\/warrant\/agent\/([^/]+)\//

/**
 * Embedded: how the node serving `agent` was attested, from the server's datastore (the entries of that SPIFFE ID and
 * the attestor of the agent each is parented to); undefined when the entries disagree or name no agent directly.
 * Cached for a minute.
 */
export function nodeAttestationFromEntries(server: Pick<RunningServer, 'ds'>): (agent: string) => Promise<string | undefined> {
  const cache = new Map<string, { v: string | undefined; until: number }>()
  return async (agent) => {
    const now = Date.now()
    const hit = cache.get(agent)
    if (hit && hit.until > now) return hit.v
    const { entries } = await server.ds.entries.list({ spiffeId: agent })
    const kinds = new Set(entries.map((e) => AGENT_ID.exec(e.parentId)?.[1] ?? '?'))
    const v = kinds.size === 1 && !kinds.has('?') ? [...kinds][0] : undefined
    if (cache.size > 10_000) cache.clear()
    cache.set(agent, { v, until: now + 60_000 })
    return v
  }
}
