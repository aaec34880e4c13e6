import { createHash } from 'node:crypto'
import { IdentityError } from '../../../errors/index.js'
import type { EntryPatch, NewEntry, NewRevocation, Page, Selector } from '../types.js'

/** Code-unit order on (type, value): the same in every implementation. */
export function compareSelectors(a: Selector, b: Selector): number {
  if (a.type !== b.type) return a.type < b.type ? -1 : 1
  if (a.value !== b.value) return a.value < b.value ? -1 : 1
  return 0
}

/** Sorted, unique by (type, value), plain copies. */
export function normalizeSelectors(selectors: readonly Selector[]): Selector[] {
  if (!Array.isArray(selectors)) throw new TypeError('selectors must be an array')
  const out: Selector[] = []
  for (const item of selectors as readonly unknown[]) {
    const s = item as Partial<Selector> | null | undefined
    if (typeof s?.type !== 'string' || typeof s.value !== 'string') {
      throw new TypeError('a selector needs string type and value')
    }
    out.push({ type: s.type, value: s.value })
  }
  out.sort(compareSelectors)
  return out.filter((s, i) => i === 0 || compareSelectors(out[i - 1] as Selector, s) !== 0)
}

/** The identity of an entry for duplicate detection: spiffeId + parentId + selector set. */
export function entryUniqueKey(spiffeId: string, parentId: string, sortedSelectors: readonly Selector[]): string {
  const canonical = JSON.stringify([spiffeId, parentId, sortedSelectors.map((s) => [s.type, s.value])])
  return createHash('sha256').update(canonical).digest('hex')
}

function checkString(name: string, v: unknown): void {
  if (typeof v !== 'string') throw new TypeError(`${name} must be a string`)
}
function checkTtl(name: string, v: unknown): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new RangeError(`${name} must be a non-negative integer`)
  }
}
function checkTime(name: string, v: unknown, nullable: boolean): void {
  if (nullable && v === null) return
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw new RangeError(`${name} must be an integer (epoch ms)`)
}
function checkStrings(name: string, v: unknown): void {
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new TypeError(`${name} must be an array of strings`)
}
function checkBool(name: string, v: unknown): void {
  if (typeof v !== 'boolean') throw new TypeError(`${name} must be a boolean`)
}

/** Shape checks shared by every implementation (programmer errors: TypeError / RangeError). */
export function checkEntryFields(e: EntryPatch, complete: boolean): void {
  const has = (k: keyof EntryPatch): boolean => complete || e[k] !== undefined
  if (has('spiffeId')) checkString('spiffeId', e.spiffeId)
  if (has('parentId')) checkString('parentId', e.parentId)
  if (has('selectors')) normalizeSelectors(e.selectors as Selector[])
  if (has('x509SvidTtl')) checkTtl('x509SvidTtl', e.x509SvidTtl)
  if (has('jwtSvidTtl')) checkTtl('jwtSvidTtl', e.jwtSvidTtl)
  if (has('dnsNames')) checkStrings('dnsNames', e.dnsNames)
  if (has('federatesWith')) checkStrings('federatesWith', e.federatesWith)
  if (has('hint')) checkString('hint', e.hint)
  if (has('admin')) checkBool('admin', e.admin)
  if (has('downstream')) checkBool('downstream', e.downstream)
  if (has('expiresAt')) checkTime('expiresAt', e.expiresAt, true)
}

export function checkNewEntry(e: NewEntry): void {
  if (e === null || typeof e !== 'object') throw new TypeError('entry must be an object')
  if (e.id !== undefined && (typeof e.id !== 'string' || e.id === '')) throw new TypeError('id must be a non-empty string')
  checkEntryFields(e, true)
}

export { checkBool, checkString, checkStrings, checkTime }

const TOKEN_PREFIX = 'w1:'

/** Opaque page token: the last key of the previous page. */
export function encodePageToken(lastKey: string): string {
  return Buffer.from(TOKEN_PREFIX + lastKey, 'utf8').toString('base64url')
}

export function decodePageToken(token: string | undefined): string | undefined {
  if (token === undefined || token === '') return undefined
  if (typeof token !== 'string') throw new TypeError('pageToken must be a string')
  const text = Buffer.from(token, 'base64url').toString('utf8')
  if (!text.startsWith(TOKEN_PREFIX) || Buffer.from(text, 'utf8').toString('base64url') !== token) {
    throw new IdentityError('ERR_INVALID_ARGUMENT', 'invalid page token')
  }
  return text.slice(TOKEN_PREFIX.length)
}

/** pageSize 0 (or absent) = everything. */
export function pageSizeOf(page: Page | undefined): number {
  const size = page?.pageSize ?? 0
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError('pageSize must be a non-negative integer')
  return size
}

export function entryNotFound(): IdentityError {
  return new IdentityError('ERR_ENTRY_NOT_FOUND', 'registration entry not found')
}

export function entryExists(existingId?: string): IdentityError {
  return new IdentityError(
    'ERR_ALREADY_EXISTS',
    'a registration entry with the same SPIFFE ID, parent ID and selectors already exists',
    existingId === undefined ? undefined : { details: { entryId: existingId } },
  )
}

export function revisionMismatch(expected: number, actual: number): IdentityError {
  return new IdentityError('ERR_INVALID_ARGUMENT', 'registration entry revision does not match', {
    details: { expectedRevision: expected, revision: actual },
  })
}

/** Shape checks for an attested node record or patch. */
export function checkNodeFields(n: Record<string, unknown>, complete: boolean): void {
  const has = (k: string): boolean => complete || n[k] !== undefined
  for (const k of ['agentId', 'attestor', 'serial', 'previousSerial']) if (has(k)) checkString(k, n[k])
  if (has('selectors')) normalizeSelectors(n.selectors as Selector[])
  if (has('expiresAt')) checkTime('expiresAt', n.expiresAt, false)
  for (const k of ['banned', 'canReattest']) if (has(k)) checkBool(k, n[k])
}

export function nodeNotFound(): IdentityError {
  return new IdentityError('ERR_NOT_FOUND', 'attested node not found')
}

export function nodeSelectorKey(s: Selector): string {
  return JSON.stringify([s.type, s.value])
}

/** Shape checks of a new revocation (programmer errors: TypeError / RangeError); the meaning is the service's to check. */
export function checkNewRevocation(r: NewRevocation): void {
  if (r === null || typeof r !== 'object') throw new TypeError('revocation must be an object')
  if (r.kind !== 'instance' && r.kind !== 'prefix') throw new TypeError("kind must be 'instance' or 'prefix'")
  checkString('value', r.value)
  if (r.value === '') throw new TypeError('value must not be empty')
  checkString('reason', r.reason)
  checkTime('notAfter', r.notAfter, true)
  checkTime('expiresAt', r.expiresAt, true)
}

/** A revocation ID: the positive integer its store assigned. */
export function checkRevocationId(id: unknown): void {
  if (typeof id !== 'number' || !Number.isSafeInteger(id) || id < 1) throw new RangeError('revocation id must be a positive integer')
}

export function revocationNotFound(): IdentityError {
  return new IdentityError('ERR_NOT_FOUND', 'revocation not found')
}

/** Is the revocation still in force at `now` (epoch ms)? */
export function revocationActive(r: { expiresAt: number | null }, now: number): boolean {
  return r.expiresAt === null || r.expiresAt > now
}
