/**
 * Instance ends waiting to be reported to the server (EndInstance): reported
 * 8 at a time until none is left or one fails, then retried after an
 * exponential backoff; bounded (the oldest is dropped, and ended at the next
 * agent start by EndAllInstances).
 */
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { Backoff } from './backoff.js'
import type { InstanceClient } from './ports.js'

/** Ends reported at once. */
const END_BATCH = 8

export interface EndQueueOptions {
  client: InstanceClient
  clock: Clock
  log: Logger
  backoff: Backoff
  /** Most ends kept while the server is unreachable (oldest dropped). */
  maxPending: number
  closed(): boolean
}

export class EndQueue {
  readonly #o: EndQueueOptions
  readonly #pending = new Set<string>()
  #retryAt = 0
  #running: Promise<void> | undefined

  constructor(opts: EndQueueOptions) {
    if (!(opts.maxPending >= 1)) throw new RangeError('maxPendingEnds must be at least 1')
    this.#o = opts
  }

  get size(): number {
    return this.#pending.size
  }

  /** Queues the end of an instance and reports it now unless in the backoff. */
  add(instanceId: string): void {
    this.#pending.add(instanceId)
    while (this.#pending.size > this.#o.maxPending) {
      const oldest = this.#pending.values().next().value!
      this.#pending.delete(oldest)
      this.#o.log.warn({ instance_id: oldest }, 'Too many unreported instance ends; dropping the oldest (the next agent start ends it)')
    }
    if (this.#retryAt <= this.#o.clock.now()) void this.flush()
  }

  /** Ends are waiting and the backoff is over. */
  due(now: number): boolean {
    return this.#pending.size > 0 && this.#retryAt <= now
  }

  /** Reports queued ends until none is left or one fails (then waits for the backoff); one run at a time. */
  flush(): Promise<void> {
    if (this.#running) return this.#running
    if (this.#pending.size === 0) return Promise.resolve()
    const { client, clock, log, backoff } = this.#o
    const p = (async () => {
      try {
        while (this.#pending.size > 0 && !this.#o.closed()) {
          const batch = [...this.#pending].slice(0, END_BATCH)
          const outcomes = await Promise.all(
            batch.map((id) =>
              client.endInstance(id).then(
                () => true,
                (err: unknown) => (err instanceof IdentityError && err.code === 'ERR_NOT_FOUND' ? true : err),
              ),
            ),
          )
          let firstErr: unknown
          for (let k = 0; k < batch.length; k++) {
            if (outcomes[k] === true) this.#pending.delete(batch[k]!)
            else firstErr ??= outcomes[k]
          }
          if (firstErr !== undefined) {
            const delay = backoff.next()
            this.#retryAt = clock.now() + delay
            log.warn({ [F.COUNT]: this.#pending.size, retry_in_ms: delay, [F.ERR]: firstErr }, 'Reporting instance ends failed; will retry')
            return
          }
          backoff.reset()
          this.#retryAt = 0
        }
      } finally {
        this.#running = undefined
      }
    })()
    this.#running = p
    return p
  }
}
