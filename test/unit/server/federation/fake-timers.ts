import type { FakeClock } from '../../../helpers/fake-clock.js'
import type { Timers } from '../../../../src/server/federation/refresher.js'

/** Timers driven by a FakeClock: `advance(ms)` moves the clock and runs what is due, in order. */
export class FakeTimers implements Timers {
  readonly #clock: FakeClock
  #queue: { at: number; seq: number; fn: () => void }[] = []
  #seq = 0

  constructor(clock: FakeClock) {
    this.#clock = clock
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const t = { at: this.#clock.now() + Math.max(0, ms), seq: ++this.#seq, fn }
    this.#queue.push(t)
    return t.seq
  }

  clearTimeout(handle: unknown): void {
    this.#queue = this.#queue.filter((t) => t.seq !== handle)
  }

  get pending(): number {
    return this.#queue.length
  }

  /** Earliest due time, or undefined. */
  get next(): number | undefined {
    return this.#queue.reduce<number | undefined>((m, t) => (m === undefined || t.at < m ? t.at : m), undefined)
  }

  /** Runs every timer due within `ms`; returns how many ran. */
  advance(ms: number): number {
    const target = this.#clock.now() + ms
    let ran = 0
    for (;;) {
      const due = this.#queue.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.seq - b.seq)[0]
      if (!due) break
      this.#queue = this.#queue.filter((t) => t !== due)
      if (due.at > this.#clock.now()) this.#clock.set(due.at)
      due.fn()
      ran++
    }
    this.#clock.set(target)
    return ran
  }
}
