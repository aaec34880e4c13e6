import { IdentityError } from '../../errors/identity-error.js'
import type { Selector } from '../datastore/types.js'

const TYPE_RE = /^[a-z0-9_]{1,64}$/
const MAX_VALUE = 1024

/** Parses `type:value` (`unix:uid:1000` → {type:'unix', value:'uid:1000'}). Throws ERR_INVALID_ARGUMENT. */
export function parseSelector(s: string): Selector {
  if (typeof s !== 'string') throw new IdentityError('ERR_INVALID_ARGUMENT', 'selector must be a string')
  const i = s.indexOf(':')
  if (i <= 0 || i === s.length - 1) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `selector "${s.slice(0, 80)}" must have the form type:value`)
  }
  return checkSelector({ type: s.slice(0, i), value: s.slice(i + 1) })
}

export function checkSelector(sel: Selector): Selector {
  if (!TYPE_RE.test(sel.type)) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `selector type "${String(sel.type).slice(0, 80)}" must be 1-64 of [a-z0-9_]`)
  }
  // eslint-disable-next-line no-control-regex -- control characters are what this refuses
  if (typeof sel.value !== 'string' || sel.value.length === 0 || sel.value.length > MAX_VALUE || /[\x00-\x1f\x7f]/.test(sel.value)) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', `selector value for type "${sel.type}" must be 1-${MAX_VALUE} printable characters`)
  }
  return { type: sel.type, value: sel.value }
}

export function formatSelector(sel: Selector): string {
  return `${sel.type}:${sel.value}`
}

/** Sorted and de-duplicated, the canonical order stored and compared. */
export function canonicalSelectors(sels: readonly Selector[]): Selector[] {
  const m = new Map<string, Selector>()
  for (const s of sels) m.set(formatSelector(s), { type: s.type, value: s.value })
  return [...m.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([, s]) => s)
}

/** True when every selector of `subset` is in `set`. */
export function isSubset(subset: readonly Selector[], set: readonly Selector[] | ReadonlySet<string>): boolean {
  const s = set instanceof Set ? set : new Set((set as readonly Selector[]).map(formatSelector))
  return subset.every((x) => s.has(formatSelector(x)))
}
