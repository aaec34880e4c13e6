import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { RegistrationEntry } from '../datastore/types.js'
import type { InstanceService } from '../instances/instance-service.js'
import { instanceSpiffeId, isTemplateId } from '../registration/validate.js'

/** The SPIFFE ID an SVID is issued for, and the key its live instance is counted under (namespace bounds' `max_instances`). */
export interface Subject {
  spiffeId: SpiffeId
  instanceKey: string
}

const ID_CACHE_MAX = 10_000

/**
 * Decides the subject of an SVID: an entry's own SPIFFE ID, or for a
 * per-instance template the recorded, live instance's. IDs are parsed once
 * (entries and instances were validated when written).
 */
export class Subjects {
  readonly #instances: Pick<InstanceService, 'authorize'>
  readonly #ids = new Map<string, SpiffeId>()

  constructor(instances: Pick<InstanceService, 'authorize'>) {
    this.#instances = instances
  }

  /**
   * The subject for `entry` served by `agentId`. ERR_INVALID_ARGUMENT when
   * `instanceId` is given for a plain entry or missing for a template;
   * ERR_ID_NOT_AUTHORIZED when the instance is not this agent's live one.
   * Synchronous for plain entries (no promise per item of a batch).
   */
  of(entry: RegistrationEntry, agentId: string, instanceId: string): Subject | Promise<Subject> {
    if (!isTemplateId(entry.spiffeId)) {
      if (instanceId) throw new IdentityError('ERR_INVALID_ARGUMENT', 'instance_id is only for per-instance template entries')
      return { spiffeId: this.#parsed(entry.spiffeId), instanceKey: `${agentId}|${entry.id}` }
    }
    if (!instanceId) throw new IdentityError('ERR_INVALID_ARGUMENT', 'instance_id is required for a per-instance template entry')
    return this.#instances
      .authorize(agentId, entry.id, instanceId)
      .then((inst) => ({ spiffeId: this.#parsed(inst.spiffeId), instanceKey: `${agentId}|${inst.instanceId}` }))
  }

  /**
   * The SPIFFE ID a request for `entry` (and `instanceId`) asks for, before
   * anything is authorized: what revocations are checked against, so a
   * revoked instance is refused as such even once it has ended.
   */
  claimed(entry: RegistrationEntry, instanceId: string): string {
    return isTemplateId(entry.spiffeId) && instanceId ? instanceSpiffeId(entry.spiffeId, instanceId) : entry.spiffeId
  }

  #parsed(id: string): SpiffeId {
    let sid = this.#ids.get(id)
    if (sid === undefined) {
      sid = SpiffeId.fromString(id)
      if (this.#ids.size >= ID_CACHE_MAX) this.#ids.clear()
      this.#ids.set(id, sid)
    }
    return sid
  }
}
