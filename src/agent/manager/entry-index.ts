/**
 * The entries the server says this agent may serve, indexed by selector, and
 * the per-instance template rules (an entry whose SPIFFE ID holds
 * `{instance}` gives each matching process its own identity).
 */
import type { AgentEntry } from './ports.js'

/** The placeholder of per-instance template entries (as the server's `INSTANCE_PLACEHOLDER`). */
export const INSTANCE_PLACEHOLDER = '{instance}'

/** True for an entry whose SPIFFE ID is a per-instance template. */
export function isTemplateEntry(e: Pick<AgentEntry, 'spiffeId'>): boolean {
  return e.spiffeId.includes(INSTANCE_PLACEHOLDER)
}

/** Could `template` produce `spiffeId` (instance IDs are one path segment)? */
export function templateCovers(template: string, spiffeId: string): boolean {
  const i = template.indexOf(INSTANCE_PLACEHOLDER)
  const head = template.slice(0, i)
  const tail = template.slice(i + INSTANCE_PLACEHOLDER.length)
  if (!spiffeId.startsWith(head) || !spiffeId.endsWith(tail) || spiffeId.length <= head.length + tail.length) return false
  return !spiffeId.slice(head.length, spiffeId.length - tail.length).includes('/')
}

export class EntryIndex {
  readonly #entries = new Map<string, AgentEntry>()
  readonly #bySelector = new Map<string, Set<string>>()

  get size(): number {
    return this.#entries.size
  }

  get(id: string): AgentEntry | undefined {
    return this.#entries.get(id)
  }

  has(id: string): boolean {
    return this.#entries.has(id)
  }

  /** Entries in the order they were first stored. */
  entries(): IterableIterator<[string, AgentEntry]> {
    return this.#entries.entries()
  }

  ids(): string[] {
    return [...this.#entries.keys()]
  }

  /**
   * Stores `e`. Returns false (and changes nothing) when the same revision of
   * the same identity is already stored; else true and the version it replaced.
   */
  put(e: AgentEntry): { changed: false } | { changed: true; prev: AgentEntry | undefined } {
    const prev = this.#entries.get(e.id)
    if (prev && prev.revision === e.revision && prev.spiffeId === e.spiffeId) return { changed: false }
    if (prev) this.#unindex(prev)
    this.#entries.set(e.id, e)
    for (const s of e.selectors) {
      let set = this.#bySelector.get(s)
      if (!set) this.#bySelector.set(s, (set = new Set()))
      set.add(e.id)
    }
    return { changed: true, prev }
  }

  /** Removes an entry; returns it, or undefined when unknown. */
  remove(id: string): AgentEntry | undefined {
    const prev = this.#entries.get(id)
    if (!prev) return undefined
    this.#unindex(prev)
    this.#entries.delete(id)
    return prev
  }

  /** Entry ids whose (non-empty) selectors are all within `selectors`. */
  match(selectors: ReadonlySet<string>): Set<string> {
    const out = new Set<string>()
    for (const s of selectors) {
      const ids = this.#bySelector.get(s)
      if (!ids) continue
      for (const id of ids) {
        if (out.has(id)) continue
        const e = this.#entries.get(id)
        if (e && e.selectors.length > 0 && e.selectors.every((x) => selectors.has(x))) out.add(id)
      }
    }
    return out
  }

  #unindex(e: AgentEntry): void {
    for (const s of e.selectors) {
      const set = this.#bySelector.get(s)
      set?.delete(e.id)
      if (set?.size === 0) this.#bySelector.delete(s)
    }
  }
}
