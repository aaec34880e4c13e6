/**
 * Canonical JSON per RFC 8785 (JCS): object members sorted by their UTF-16
 * code units, no whitespace, numbers as ECMAScript serializes them, strings
 * escaped as JSON.stringify does (which is what JCS specifies). The work is
 * done by the `canonicalize` package, checked against the RFC's vectors in
 * test/unit/audit/canonical.test.ts; this module only fixes the refusals
 * (NaN, Infinity, lone surrogates, undefined at the top) to one error type.
 */
import canonicalize from 'canonicalize'

/** The JCS text of `value`. Throws TypeError for what JSON cannot carry (NaN, Infinity, a lone surrogate, a cycle, undefined). */
export function canonicalJson(value: unknown): string {
  let out: string | undefined
  try {
    out = canonicalize(value)
  } catch (err) {
    throw new TypeError(`not canonicalizable: ${(err as Error).message}`)
  }
  if (out === undefined) throw new TypeError('not canonicalizable: undefined')
  return out
}

const encoder = new TextEncoder()

/** UTF-8 bytes of the JCS text of `value`: what is hashed, chained and signed over. */
export function canonicalBytes(value: unknown): Uint8Array {
  return encoder.encode(canonicalJson(value))
}
