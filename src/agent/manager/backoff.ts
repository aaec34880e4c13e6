/**
 * Exponential backoff with full jitter around the nominal delay (±`jitter`):
 * initial, initial·2, … up to max. `reset()` after a success.
 */
export class Backoff {
  readonly #initialMs: number
  readonly #maxMs: number
  readonly #jitter: number
  readonly #random: () => number
  #attempt = 0

  constructor(opts: { initialMs?: number; maxMs?: number; jitter?: number; random?: () => number } = {}) {
    this.#initialMs = opts.initialMs ?? 500
    this.#maxMs = opts.maxMs ?? 30_000
    this.#jitter = opts.jitter ?? 0.2
    this.#random = opts.random ?? Math.random
    if (!(this.#initialMs > 0) || !(this.#maxMs >= this.#initialMs)) throw new RangeError('backoff: need 0 < initialMs <= maxMs')
    if (!(this.#jitter >= 0 && this.#jitter < 1)) throw new RangeError('backoff: jitter must be in [0, 1)')
  }

  /** The delay before the next attempt (ms); each call doubles the nominal delay up to the maximum. */
  next(): number {
    const nominal = Math.min(this.#maxMs, this.#initialMs * 2 ** Math.min(this.#attempt, 30))
    this.#attempt++
    const factor = 1 + this.#jitter * (2 * this.#random() - 1)
    return Math.max(1, Math.round(nominal * factor))
  }

  reset(): void {
    this.#attempt = 0
  }

  get attempts(): number {
    return this.#attempt
  }
}
