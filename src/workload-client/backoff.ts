import { IdentityError } from '../errors/identity-error.js'

/** Retry delays of a watch: exponential from `initialMs` to `maxMs` with ±20% jitter; `reset()` after a success. */
export interface BackoffOptions {
  /** First delay. Default 1 s (go-spiffe). */
  initialMs?: number
  /** Largest delay. Default 30 s. */
  maxMs?: number
}

export class Backoff {
  readonly #initial: number
  readonly #max: number
  #next: number

  constructor(o: BackoffOptions = {}) {
    this.#initial = o.initialMs ?? 1000
    this.#max = o.maxMs ?? 30_000
    if (!(this.#initial > 0) || !(this.#max >= this.#initial)) throw new RangeError('backoff needs 0 < initialMs <= maxMs')
    this.#next = this.#initial
  }

  /** The delay to wait now; each call doubles the next one up to the maximum. */
  next(): number {
    const d = this.#next
    this.#next = Math.min(this.#max, this.#next * 2)
    return Math.round(d * (0.8 + Math.random() * 0.4))
  }

  reset(): void {
    this.#next = this.#initial
  }
}

/** The abort reason as an error (ERR_UNAVAILABLE "aborted" when the signal carries none). */
export function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new IdentityError('ERR_UNAVAILABLE', 'workloadapi: aborted')
}

/** Waits `ms`, or rejects with the abort reason when `signal` fires first. */
export function delay(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(abortError(signal))
    const onAbort = () => {
      clearTimeout(t)
      reject(abortError(signal!))
    }
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}
