/**
 * Whether a value is an array, without narrowing its static type. Public
 * functions check their typed array arguments at run time (JavaScript callers
 * pass anything); `Array.isArray` would widen a `readonly T[]` to `any[]`.
 */
export function isList(v: unknown): boolean {
  return Array.isArray(v)
}
