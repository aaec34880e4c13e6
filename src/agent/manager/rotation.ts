/**
 * Every decision of when the agent renews a workload X.509-SVID, in one place
 * (the agent's own SVID uses `renewalTime` too). Cached SVIDs, shared or
 * per-instance, carry an expiry and a planned rotation time; the X.509 cache
 * (`x509-svids.ts`) and the instance lifecycles (`instances.ts`) only ask
 * these functions and act on the answer.
 *
 *  - a freshly minted SVID is renewed at half its lifetime, ±10% jitter so a
 *    fleet does not renew at once (`scheduleRenewal`);
 *  - unless the entry changed (TTL, DNS names, hint) while it was being
 *    minted, or changes while it is cached: then it is renewed now
 *    (`scheduleRenewal(…, entryChanged)`, `rotateNow`), served meanwhile;
 *  - after a signing failure it is retried when the backoff ends
 *    (`retryAt`), still served while valid;
 *  - it is due once its rotation time has come (`isDue`) and dropped, never
 *    served, once expired (`isExpired`).
 */

/** The rotation state of a cached SVID (epoch ms). */
export interface Rotating {
  expiresAt: number
  rotateAt: number
}

/**
 * When to renew a credential valid from `issuedAt` to `expiresAt`: at half
 * its lifetime, moved by up to ±`jitter` (default 10%) of that half-life.
 */
export function renewalTime(issuedAt: number, expiresAt: number, random: () => number = Math.random, jitter = 0.1): number {
  const half = Math.max(0, expiresAt - issuedAt) / 2
  const offset = half * jitter * (2 * random() - 1)
  return Math.round(issuedAt + half + offset)
}

/** The rotation time of an SVID minted at `now`: its renewal time, or now when its entry changed meanwhile. */
export function scheduleRenewal(now: number, expiresAt: number, entryChanged: boolean, random: () => number): number {
  return entryChanged ? now : renewalTime(now, expiresAt, random)
}

/** Expired: no longer served, dropped from the cache. */
export function isExpired(svid: Rotating, now: number): boolean {
  return svid.expiresAt <= now
}

/** Its rotation time has come. */
export function isDue(svid: Rotating, now: number): boolean {
  return svid.rotateAt <= now
}

/** Its entry changed (same identity, other parameters): renew now, keep serving meanwhile. */
export function rotateNow(svid: Rotating, now: number): void {
  svid.rotateAt = now
}

/** Signing failed: renew again when the backoff ends, keep serving meanwhile. */
export function retryAt(svid: Rotating, until: number): void {
  svid.rotateAt = until
}
