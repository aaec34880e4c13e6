/** The in-process locks of the PostgreSQL datastore (FIFO, so no caller starves). */

export type Release = () => void

function once(fn: () => void): Release {
  let done = false
  return () => {
    if (done) return
    done = true
    fn()
  }
}

/** One holder at a time. */
export class Mutex {
  #held = false
  readonly #waiters: (() => void)[] = []

  acquire(): Promise<Release> {
    return new Promise((resolve) => {
      const grant = (): void => {
        this.#held = true
        resolve(
          once(() => {
            this.#held = false
            this.#waiters.shift()?.()
          }),
        )
      }
      if (!this.#held && this.#waiters.length === 0) grant()
      else this.#waiters.push(grant)
    })
  }
}

/**
 * Shared holders (single writes outside a transaction) run together; an
 * exclusive holder (a transaction, or close) runs alone. Requests are granted
 * in arrival order: a shared request behind a waiting exclusive one waits too.
 */
export class RwLock {
  #shared = 0
  #exclusive = false
  readonly #queue: { exclusive: boolean; grant: () => void }[] = []

  shared(): Promise<Release> {
    return this.#request(false)
  }

  exclusive(): Promise<Release> {
    return this.#request(true)
  }

  #request(exclusive: boolean): Promise<Release> {
    return new Promise((resolve) => {
      this.#queue.push({
        exclusive,
        grant: () => {
          if (exclusive) this.#exclusive = true
          else this.#shared++
          resolve(
            once(() => {
              if (exclusive) this.#exclusive = false
              else this.#shared--
              this.#pump()
            }),
          )
        },
      })
      this.#pump()
    })
  }

  #pump(): void {
    for (;;) {
      const next = this.#queue[0]
      if (next === undefined || this.#exclusive) return
      if (next.exclusive && this.#shared > 0) return
      this.#queue.shift()
      next.grant()
      if (next.exclusive) return
    }
  }
}
