/**
 * Ceiling narrowings: for a period, the agents under a prefix may be given
 * only some of the scopes (and resources) their bounds allow. A signal's
 * `narrow` action records one (src/signals/policy.ts); the broker's ceiling
 * source intersects every narrowing in force that covers an ID with the
 * bounds' ceiling, so new tokens, renewals and delegations are held to it at
 * once. Tokens already issued keep their scopes until they expire or are
 * revoked. Pure but for the clock it is given.
 */
import type { Ceiling } from '../spiffe/bounds/ceiling.js'
import type { SpiffeId } from '../spiffe/spiffe-id.js'
import { underPrefix } from '../tokens/revocation.js'
import type { CeilingSource } from './ports.js'

export interface Narrowing {
  /** A SPIFFE ID: it and everything under it. */
  readonly prefix: string
  /** The scopes that remain allowed (intersected with the ceiling's). */
  readonly scopes: readonly string[]
  /** The resources that remain allowed; undefined: resources are not narrowed. */
  readonly resources?: readonly string[]
  /** Unix seconds; the narrowing ends then. */
  readonly notAfter: number
  readonly reason: string
}

export class Narrowings {
  readonly #nowSec: () => number
  #list: Narrowing[] = []

  constructor(o: { nowSec?: () => number } = {}) {
    this.#nowSec = o.nowSec ?? (() => Math.floor(Date.now() / 1000))
  }

  add(n: Narrowing): void {
    this.#list = [...this.#list.filter((x) => x.notAfter > this.#nowSec()), n]
  }

  /** The narrowings in force, oldest first. */
  active(): Narrowing[] {
    const now = this.#nowSec()
    return this.#list.filter((n) => n.notAfter > now)
  }

  /** `c` held to every narrowing in force that covers `id`. */
  apply(id: SpiffeId, c: Ceiling): Ceiling {
    const s = id.toString()
    const covering = this.active().filter((n) => underPrefix(s, n.prefix))
    if (covering.length === 0) return c
    let scopes = c.scopes
    let resources = c.resources
    for (const n of covering) {
      scopes = scopes.filter((x) => n.scopes.includes(x))
      if (n.resources !== undefined) resources = resources.filter((r) => n.resources!.includes(r))
    }
    return Object.freeze({ ...c, scopes: Object.freeze(scopes), resources: Object.freeze(resources) })
  }
}

/** `base` narrowed by `narrowings`. */
export function narrowedCeilingSource(base: CeilingSource, narrowings: Narrowings): CeilingSource {
  return {
    ceilingFor: (id) => {
      const c = base.ceilingFor(id)
      return c instanceof Promise ? c.then((x) => narrowings.apply(id, x)) : narrowings.apply(id, c)
    },
  }
}
