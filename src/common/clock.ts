/** Injected time source, so rotation and expiry are testable without sleeps. */
export interface Clock {
  now(): number // epoch milliseconds
}

export const systemClock: Clock = { now: () => Date.now() }
