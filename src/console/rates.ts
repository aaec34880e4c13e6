/**
 * Token endpoint decisions per minute, in memory since the process started:
 * what the console's issuance and refusal chart draws. The composition root
 * feeds it from the broker's token endpoint.
 */
import type { RateBucket } from './ports.js'

export class RateCounter {
  readonly #bucketMs: number
  readonly #keep: number
  readonly #now: () => number
  readonly #buckets = new Map<number, { issued: number; refused: number }>()

  constructor(o: { bucketMs?: number; keep?: number; now?: () => number } = {}) {
    this.#bucketMs = o.bucketMs ?? 60_000
    this.#keep = o.keep ?? 60
    this.#now = o.now ?? Date.now
  }

  #bucket(): { issued: number; refused: number } {
    const start = Math.floor(this.#now() / this.#bucketMs) * this.#bucketMs
    let b = this.#buckets.get(start)
    if (!b) {
      b = { issued: 0, refused: 0 }
      this.#buckets.set(start, b)
      const oldest = start - this.#keep * this.#bucketMs
      for (const k of this.#buckets.keys()) if (k <= oldest) this.#buckets.delete(k)
    }
    return b
  }

  issued(): void {
    this.#bucket().issued++
  }

  refused(): void {
    this.#bucket().refused++
  }

  /** Every bucket of the window, oldest first (empty minutes as zeros). */
  buckets(): RateBucket[] {
    const last = Math.floor(this.#now() / this.#bucketMs) * this.#bucketMs
    const out: RateBucket[] = []
    for (let i = this.#keep - 1; i >= 0; i--) {
      const start = last - i * this.#bucketMs
      const b = this.#buckets.get(start)
      out.push({ start, issued: b?.issued ?? 0, refused: b?.refused ?? 0 })
    }
    return out
  }
}
