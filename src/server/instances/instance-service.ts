import { randomBytes } from 'node:crypto'
import { IdentityError } from '../../errors/identity-error.js'
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { ServerAudit } from '../audit/server-audit.js'
import type { DataStore, RegistrationEntry } from '../datastore/types.js'
import { instanceSpiffeId, isTemplateId } from '../registration/validate.js'

/** One running workload process with its own identity, minted from a template entry. */
export interface InstanceRecord {
  instanceId: string
  entryId: string
  agentId: string
  /** The template with the instance ID substituted. */
  spiffeId: string
  pid: number
  /** Process start time as the agent read it (clock ticks since boot, /proc/<pid>/stat field 22). */
  startTime: string
  createdAt: number
  /** When the agent reported the process gone (or the server ended it); null while live. */
  endedAt: number | null
}

const NS = 'instances'
const INSTANCE_ID_RE = /^i[0-9a-z]{25}$/

/** Why an instance ended: its agent said so, its agent restarted (EndAllInstances), or it was revoked at the server. */
export type InstanceEndCause = 'agent' | 'agent_restart' | 'revoked'

/** The key an instance is counted under for `max_instances` (the node API signs with the same). */
export const liveInstanceKey = (agentId: string, instanceId: string): string => `${agentId}|${instanceId}`

/** 128 random bits as 25 base-36 characters behind an `i`: unguessable, SPIFFE-path-safe, never reused. */
export function newInstanceId(): string {
  const n = BigInt(`0x${randomBytes(16).toString('hex')}`)
  return `i${n.toString(36).padStart(25, '0')}`
}

/**
 * Per-instance identities: an agent registers each workload process that
 * matches a template entry and gets a fresh instance ID; the server signs
 * only for instances it recorded for that agent and entry, and never again
 * once the instance has ended.
 */
export class InstanceService {
  readonly #ds: DataStore
  readonly #clock: Clock
  readonly #log: Logger
  readonly #audit: Pick<ServerAudit, 'record'> | undefined

  /** `audit`: each start and end is recorded (`instance.started`, `instance.ended`), without waiting (see server-audit.ts). */
  constructor(o: { ds: DataStore; clock: Clock; log: Logger; audit?: Pick<ServerAudit, 'record'> }) {
    this.#ds = o.ds
    this.#clock = o.clock
    this.#log = o.log.child({ [F.SUBSYSTEM]: 'instances' })
    this.#audit = o.audit
  }

  #record(type: 'instance.started' | 'instance.ended', r: InstanceRecord, attributes: Record<string, string | number>): void {
    this.#audit?.record({
      type,
      outcome: 'success',
      actor: { spiffe_id: r.spiffeId, instance: r.instanceId },
      subject: r.spiffeId,
      node: r.agentId,
      attributes: { entry_id: r.entryId, ...attributes },
    })
  }

  async register(agentId: string, entry: RegistrationEntry, proc: { pid: number; startTime: string }): Promise<InstanceRecord> {
    if (!isTemplateId(entry.spiffeId)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'entry is not a per-instance template')
    if (!Number.isInteger(proc.pid) || proc.pid <= 0 || proc.pid > 4_194_304) throw new IdentityError('ERR_INVALID_ARGUMENT', 'pid out of range')
    if (!/^\d{1,20}$/.test(proc.startTime)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'start_time must be a decimal tick count')
    const instanceId = newInstanceId()
    const rec: InstanceRecord = {
      instanceId,
      entryId: entry.id,
      agentId,
      spiffeId: instanceSpiffeId(entry.spiffeId, instanceId),
      pid: proc.pid,
      startTime: proc.startTime,
      createdAt: this.#clock.now(),
      endedAt: null,
    }
    await this.#ds.kv.put(NS, instanceId, JSON.stringify(rec))
    this.#log.info({ instance_id: instanceId, [F.AGENT_ID]: agentId, [F.ENTRY_ID]: entry.id, [F.PID]: proc.pid }, 'Instance started')
    this.#record('instance.started', rec, { pid: proc.pid })
    return rec
  }

  async find(instanceId: string): Promise<InstanceRecord | undefined> {
    if (!INSTANCE_ID_RE.test(instanceId)) return undefined
    const v = await this.#ds.kv.get(NS, instanceId)
    return v ? (JSON.parse(v) as InstanceRecord) : undefined
  }

  async get(instanceId: string): Promise<InstanceRecord> {
    const r = await this.find(instanceId)
    if (!r) throw new IdentityError('ERR_NOT_FOUND', 'instance not found')
    return r
  }

  /**
   * The live instance `instanceId` of `agentId` for `entryId`, or
   * ERR_ID_NOT_AUTHORIZED (unknown, another agent's or entry's, or ended).
   */
  async authorize(agentId: string, entryId: string, instanceId: string): Promise<InstanceRecord> {
    const r = await this.find(instanceId)
    if (!r || r.agentId !== agentId || r.entryId !== entryId) {
      throw new IdentityError(
        'ERR_ID_NOT_AUTHORIZED',
        `instance ${instanceId.slice(0, 32)} is not recorded for agent ${agentId} and entry ${entryId.slice(0, 64)}`,
      )
    }
    if (r.endedAt !== null) throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `instance ${instanceId} has ended`)
    return r
  }

  /**
   * Marks an instance ended (idempotent) and, in the same transaction, frees
   * its place under every `max_instances` limit. Only its agent may end it.
   */
  async end(agentId: string, instanceId: string, cause: InstanceEndCause = 'agent'): Promise<InstanceRecord> {
    const r = await this.find(instanceId)
    if (!r || r.agentId !== agentId) throw new IdentityError('ERR_NOT_FOUND', 'instance not found')
    if (r.endedAt !== null) return r
    const ended = { ...r, endedAt: this.#clock.now() }
    await this.#ds.tx(async (t) => {
      await t.kv.put(NS, instanceId, JSON.stringify(ended))
      await t.liveInstances.release(liveInstanceKey(agentId, instanceId))
    })
    this.#log.info({ instance_id: instanceId, [F.AGENT_ID]: agentId }, 'Instance ended')
    this.#record('instance.ended', ended, { cause })
    return ended
  }

  /** Ends every live instance of an agent (a restarted agent lost track of its processes' instances). */
  async endAll(agentId: string): Promise<InstanceRecord[]> {
    const live = await this.list({ agentId, liveOnly: true })
    for (const r of live) await this.end(agentId, r.instanceId, 'agent_restart')
    return live
  }

  async list(filter: { agentId?: string; entryId?: string; liveOnly?: boolean } = {}): Promise<InstanceRecord[]> {
    const all = (await this.#ds.kv.list(NS)).map((kv) => JSON.parse(kv.value) as InstanceRecord)
    return all
      .filter(
        (r) =>
          (!filter.agentId || r.agentId === filter.agentId) && (!filter.entryId || r.entryId === filter.entryId) && (!filter.liveOnly || r.endedAt === null),
      )
      .sort((a, b) => a.createdAt - b.createdAt)
  }
}
