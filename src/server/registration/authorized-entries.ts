import type { Clock } from '../../common/clock.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { AttestedNode, RegistrationEntry } from '../datastore/types.js'
import type { RegistrationService } from './service.js'

/** How long an answer is kept at most (a backstop: every entry write and every expiry already ends it). */
const MAX_AGE_MS = 30_000
/** Answers kept at most (all are dropped when the map is full). */
const MAX_ANSWERS = 10_000

type Node = Pick<AttestedNode, 'agentId' | 'selectors'>

/**
 * The entries each agent may sign for, by entry ID, as issuance needs them.
 * Looking them up costs a query per entry in the agent's subtree
 * (`RegistrationService.authorizedSet`), so the answer is kept per agent and
 * node selector set until any entry changes (every write goes through the
 * registration service, which announces it), until the first of the entries,
 * or of the node aliases that led to them, expires, and for MAX_AGE_MS at
 * most. A lookup that started before a change never fills the cache.
 */
export class AuthorizedEntries {
  readonly #registration: Pick<RegistrationService, 'authorizedSet' | 'onChange'>
  readonly #clock: Clock
  readonly #answers = new Map<string, { entries: ReadonlyMap<string, RegistrationEntry>; until: number }>()
  #generation = 0
  readonly #unsubscribe: () => void

  constructor(opts: { registration: Pick<RegistrationService, 'authorizedSet' | 'onChange'>; clock: Clock }) {
    this.#registration = opts.registration
    this.#clock = opts.clock
    this.#unsubscribe = opts.registration.onChange(() => {
      this.#generation++
      this.#answers.clear()
    })
  }

  /** The entries `node` may sign for, by ID. */
  async of(node: Node): Promise<ReadonlyMap<string, RegistrationEntry>> {
    const key = `${node.agentId}\n${JSON.stringify(node.selectors)}`
    const now = this.#clock.now()
    const hit = this.#answers.get(key)
    if (hit && now < hit.until) return hit.entries
    const generation = this.#generation
    const { entries: list, validUntil } = await this.#registration.authorizedSet(node)
    const entries = new Map(list.map((e) => [e.id, e]))
    const until = validUntil === null ? now + MAX_AGE_MS : Math.min(validUntil, now + MAX_AGE_MS)
    if (generation === this.#generation) {
      if (this.#answers.size >= MAX_ANSWERS) this.#answers.clear()
      this.#answers.set(key, { entries, until })
    }
    return entries
  }

  /** Entry `entryId` if `node` may sign for it; ERR_ID_NOT_AUTHORIZED otherwise. */
  async entry(node: Node, entryId: string): Promise<RegistrationEntry> {
    return entryIn(await this.of(node), node, entryId)
  }

  /** Stops following entry changes. */
  close(): void {
    this.#unsubscribe()
    this.#answers.clear()
  }
}

/** Entry `entryId` of an agent's authorized entries; ERR_ID_NOT_AUTHORIZED when it is not among them. */
export function entryIn(entries: ReadonlyMap<string, RegistrationEntry>, node: Pick<AttestedNode, 'agentId'>, entryId: string): RegistrationEntry {
  const e = entries.get(entryId)
  if (!e) throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `entry ${entryId.slice(0, 64)} is not authorized for agent ${node.agentId}`)
  return e
}
