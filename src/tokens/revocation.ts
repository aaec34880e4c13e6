/**
 * Revocations as a resource server sees them: the entries of the broker's
 * revocation feed and signed list, and the one rule that decides whether a
 * verified token is covered. Pure (no I/O): the broker, the resource-server
 * middleware and offline verifiers share it, so they can never disagree.
 *
 * Five kinds, all of them matched against the claims of a token the caller
 * has already verified:
 * - `token`: a token and every token derived from it (renewals, delegations),
 *   by `jti`. The broker expands the subtree when it revokes and ships the
 *   `jtis`; nothing can be derived from a revoked token afterwards. Txn-Tokens
 *   are not in the broker's tree: one started from a covered access token
 *   names it in `tctx.source_jti` (RevocableClaims.sourceJtis).
 * - `chain`: a whole delegation chain. By `jti`: every token of the tree that
 *   token belongs to, from its root (the broker ships the `jtis`). By SPIFFE
 *   ID: every token in whose `act` chain that agent appears, at any depth.
 * - `instance`: an agent instance (its SPIFFE ID): every token it holds
 *   (`client_id`), every token issued for it (`sub`, including what it
 *   delegated) and every token it acted on.
 * - `task`: every token of the task (`task_id`), whatever the agent.
 * - `prefix`: a SPIFFE ID and everything under it (path-segment aware),
 *   matched like `instance`; with `notAfter`, only until then.
 *
 * Times are epoch seconds.
 */
import { compactVerify, decodeProtectedHeader } from 'jose'
import { IdentityError } from '../errors/identity-error.js'
import type { JwksCache } from './jwks-cache.js'

/** JOSE `typ` of the broker's signed revocation list. */
export const REVOCATION_LIST_TYP = 'revocation-list+jwt'

export const REVOCATION_KINDS = ['token', 'chain', 'instance', 'task', 'prefix'] as const
export type RevocationKind = (typeof REVOCATION_KINDS)[number]

export interface RevocationEntry {
  /** Position in the broker's revocation feed; strictly increasing. */
  readonly seq: number
  readonly kind: RevocationKind
  /** A jti (token, chain), a SPIFFE ID (instance, prefix, chain), or a task ID. */
  readonly value: string
  /** The token jtis covered (token, and chain by jti): expanded by the broker when it revoked. */
  readonly jtis?: readonly string[]
  readonly createdAt: number
  /** A prefix quarantine ends then (exclusive). */
  readonly notAfter?: number
  /** After this the entry covers no token that can still be valid, and may be dropped. */
  readonly expiresAt: number
}

/** What a verified token says about who it is for and how it came to be. */
export interface RevocableClaims {
  readonly jti: string
  readonly sub: string
  readonly clientId?: string
  readonly taskId?: string
  /** The `act` chain, current actor first. */
  readonly actors: readonly string[]
  /**
   * The tokens this one was derived from without being recorded in the
   * broker's token tree (a Txn-Token's `tctx.source_jti`): a token or chain
   * revocation that covers one of them covers this token too.
   */
  readonly sourceJtis?: readonly string[]
}

const MAX_VALUE = 2048
const MAX_JTIS = 100_000

/** Whether `id` is `prefix` or lies under it as a path (`spiffe://td/a` covers `spiffe://td/a/b`, not `spiffe://td/ab`). */
export function underPrefix(id: string, prefix: string): boolean {
  if (id === prefix) return true
  const p = prefix.endsWith('/') ? prefix : `${prefix}/`
  return id.startsWith(p)
}

/** The actors of a verified `act` claim, current actor first; stops at a malformed level. */
export function actorsOf(act: unknown): string[] {
  const out: string[] = []
  let a = act
  while (a !== null && typeof a === 'object' && typeof (a as { sub?: unknown }).sub === 'string' && out.length < 64) {
    out.push((a as { sub: string }).sub)
    a = (a as { act?: unknown }).act
  }
  return out
}

/** The revocable view of a verified access token's claims. */
export function revocableClaims(claims: Readonly<Record<string, unknown>>): RevocableClaims {
  return {
    jti: typeof claims.jti === 'string' ? claims.jti : '',
    sub: typeof claims.sub === 'string' ? claims.sub : '',
    ...(typeof claims.client_id === 'string' ? { clientId: claims.client_id } : {}),
    ...(typeof claims.task_id === 'string' ? { taskId: claims.task_id } : {}),
    actors: actorsOf(claims.act),
  }
}

/** Checks an entry from the wire; throws ERR_REVOCATION_INVALID. */
export function parseRevocationEntry(v: unknown): RevocationEntry {
  const bad = (why: string): never => {
    throw new IdentityError('ERR_REVOCATION_INVALID', `invalid revocation entry: ${why}`)
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return bad('not an object')
  const o = v as Record<string, unknown>
  const int = (k: string, opt = false): number | undefined => {
    const x = o[k]
    if (x === undefined && opt) return undefined
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) return bad(`${k} must be a non-negative integer`)
    return x
  }
  const seq = int('seq')!
  if (typeof o.kind !== 'string' || !(REVOCATION_KINDS as readonly string[]).includes(o.kind)) return bad('unknown kind')
  const kind = o.kind as RevocationKind
  if (typeof o.value !== 'string' || o.value.length === 0 || o.value.length > MAX_VALUE) return bad('value must be a non-empty string')
  let jtis: string[] | undefined
  if (o.jtis !== undefined) {
    if (!Array.isArray(o.jtis) || o.jtis.length > MAX_JTIS || !o.jtis.every((j) => typeof j === 'string' && j.length > 0 && j.length <= MAX_VALUE))
      return bad('jtis must be a list of strings')
    jtis = o.jtis as string[]
  }
  if ((kind === 'token' || (kind === 'chain' && !o.value.startsWith('spiffe://'))) && jtis === undefined) return bad(`${kind} by jti needs jtis`)
  const notAfter = int('not_after', true)
  return {
    seq,
    kind,
    value: o.value,
    ...(jtis ? { jtis } : {}),
    createdAt: int('created_at')!,
    ...(notAfter !== undefined ? { notAfter } : {}),
    expiresAt: int('expires_at')!,
  }
}

/** The wire form of an entry (snake_case, as the feed and the signed list carry it). */
export function revocationEntryToWire(e: RevocationEntry): Record<string, unknown> {
  return {
    seq: e.seq,
    kind: e.kind,
    value: e.value,
    ...(e.jtis ? { jtis: e.jtis } : {}),
    created_at: e.createdAt,
    ...(e.notAfter !== undefined ? { not_after: e.notAfter } : {}),
    expires_at: e.expiresAt,
  }
}

/** Whether one entry covers a token at `now`. */
function coversJti(jtis: readonly string[], c: RevocableClaims): boolean {
  return jtis.includes(c.jti) || (c.sourceJtis?.some((j) => jtis.includes(j)) ?? false)
}

export function entryCovers(e: RevocationEntry, c: RevocableClaims, now: number): boolean {
  if (e.expiresAt <= now) return false
  const parties = (): string[] => [c.sub, ...(c.clientId !== undefined ? [c.clientId] : []), ...c.actors]
  switch (e.kind) {
    case 'token':
      return coversJti(e.jtis!, c)
    case 'chain':
      return e.jtis !== undefined ? coversJti(e.jtis, c) : c.actors.includes(e.value)
    case 'instance':
      return parties().includes(e.value)
    case 'task':
      return c.taskId === e.value
    case 'prefix':
      return (e.notAfter === undefined || now < e.notAfter) && parties().some((p) => underPrefix(p, e.value))
  }
}

/**
 * The revocations a verifier knows, indexed so that a check costs a few map
 * lookups whatever the list's length. Applied in feed order; `lastSeq` is
 * where a reconnecting subscriber resumes.
 */
export class RevocationSet {
  readonly #entries = new Map<number, RevocationEntry>()
  readonly #byJti = new Map<string, number>()
  readonly #byParty = new Map<string, number>()
  readonly #byActor = new Map<string, number>()
  readonly #byTask = new Map<string, number>()
  readonly #prefixes = new Set<number>()
  #lastSeq = 0

  get lastSeq(): number {
    return this.#lastSeq
  }

  get size(): number {
    return this.#entries.size
  }

  entries(): RevocationEntry[] {
    return [...this.#entries.values()]
  }

  /** Adds an entry (an entry already known by seq is ignored). */
  apply(e: RevocationEntry): void {
    if (this.#entries.has(e.seq)) return
    this.#entries.set(e.seq, e)
    if (e.seq > this.#lastSeq) this.#lastSeq = e.seq
    if (e.jtis) for (const j of e.jtis) this.#byJti.set(j, e.seq)
    else if (e.kind === 'chain') this.#byActor.set(e.value, e.seq)
    if (e.kind === 'instance') this.#byParty.set(e.value, e.seq)
    if (e.kind === 'task') this.#byTask.set(e.value, e.seq)
    if (e.kind === 'prefix') this.#prefixes.add(e.seq)
  }

  /** Drops entries that expired before `now`. */
  sweep(now: number): void {
    for (const e of [...this.#entries.values()]) {
      if (e.expiresAt > now) continue
      this.#entries.delete(e.seq)
      this.#prefixes.delete(e.seq)
      for (const [m, k] of [
        [this.#byParty, e.value],
        [this.#byActor, e.value],
        [this.#byTask, e.value],
      ] as const)
        if (m.get(k) === e.seq) m.delete(k)
      if (e.jtis) for (const j of e.jtis) if (this.#byJti.get(j) === e.seq) this.#byJti.delete(j)
    }
  }

  /** The entry that covers the token at `now`, if any. */
  covering(c: RevocableClaims, now: number): RevocationEntry | undefined {
    const hit = (seq: number | undefined): RevocationEntry | undefined => {
      if (seq === undefined) return undefined
      const e = this.#entries.get(seq)
      return e && entryCovers(e, c, now) ? e : undefined
    }
    const parties = [c.sub, ...(c.clientId !== undefined ? [c.clientId] : []), ...c.actors]
    let e = hit(this.#byJti.get(c.jti)) ?? (c.taskId !== undefined ? hit(this.#byTask.get(c.taskId)) : undefined)
    for (let i = 0; e === undefined && i < (c.sourceJtis?.length ?? 0); i++) e = hit(this.#byJti.get(c.sourceJtis![i]!))
    for (let i = 0; e === undefined && i < parties.length; i++) e = hit(this.#byParty.get(parties[i]!))
    for (let i = 0; e === undefined && i < c.actors.length; i++) e = hit(this.#byActor.get(c.actors[i]!))
    if (e === undefined)
      for (const seq of this.#prefixes) {
        e = hit(seq)
        if (e) break
      }
    return e
  }
}

export interface VerifiedRevocationList {
  readonly seq: number
  readonly issuedAt: number
  readonly expiresAt: number
  readonly entries: RevocationEntry[]
}

/**
 * Verifies the broker's signed revocation list with the issuer's JWKS only
 * (`typ` revocation-list+jwt, ES256/ES384 by `kid`, `iss`, not expired) and
 * returns its entries. Throws ERR_REVOCATION_INVALID: an offline verifier that
 * cannot verify a fresh list must not treat its tokens as unrevoked.
 */
export async function verifyRevocationList(
  jws: string,
  opts: { issuer: string; keys: Pick<JwksCache, 'getKey'>; nowSec?: number; algorithms?: readonly string[] },
): Promise<VerifiedRevocationList> {
  const bad = (why: string, cause?: unknown): never => {
    throw new IdentityError('ERR_REVOCATION_INVALID', `invalid revocation list: ${why}`, cause === undefined ? {} : { cause })
  }
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000)
  if (typeof jws !== 'string' || jws.length === 0 || jws.length > 16 * 1024 * 1024) return bad('not a compact JWS')
  let header: ReturnType<typeof decodeProtectedHeader>
  try {
    header = decodeProtectedHeader(jws)
  } catch (err) {
    return bad('malformed', err)
  }
  if (header.typ !== REVOCATION_LIST_TYP) return bad('typ')
  const algorithms = opts.algorithms ?? ['ES256', 'ES384']
  if (typeof header.alg !== 'string' || !algorithms.includes(header.alg)) return bad('alg')
  if (typeof header.kid !== 'string' || header.kid.length === 0 || header.kid.length > 256) return bad('kid')
  if (header.jwk !== undefined || header.jku !== undefined || header.x5c !== undefined || header.x5u !== undefined) return bad('header key')
  const key = await opts.keys.getKey(header.kid, header.alg)
  let payload: unknown
  try {
    const r = await compactVerify(jws, key, { algorithms: [header.alg] })
    payload = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(r.payload))
  } catch (err) {
    return bad('signature', err)
  }
  if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return bad('payload')
  const c = payload as Record<string, unknown>
  if (c.iss !== opts.issuer) return bad('iss')
  const num = (k: string): number => (typeof c[k] === 'number' && Number.isSafeInteger(c[k]) && c[k] >= 0 ? c[k] : bad(k))
  const iat = num('iat')
  const exp = num('exp')
  const seq = num('seq')
  if (exp <= now) return bad('expired')
  if (!Array.isArray(c.revocations)) return bad('revocations')
  return { seq, issuedAt: iat, expiresAt: exp, entries: c.revocations.map(parseRevocationEntry) }
}
