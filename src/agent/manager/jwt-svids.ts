/**
 * FetchJWTSVID: the identities a caller's selectors (and process, for
 * template entries) entitle it to, each answered from the JWT-SVID cache or
 * minted by the server. Per-instance JWT-SVIDs are kept under the instance
 * and dropped with it.
 */
import type { Clock } from '../../common/clock.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { CallOpts } from '../../plugin/contracts.js'
import type { JwtSvidResult } from '../workload-api/manager.js'
import { isTemplateEntry, templateCovers, type EntryIndex } from './entry-index.js'
import type { InstanceState } from './instances.js'
import { jwtKey, type CachedJwt, type JwtSvidCache, type MintedJwt } from './jwt-svid-cache.js'
import type { AgentEntry, SvidSigner } from './ports.js'
import type { Proc } from './subscribers.js'
import { toMs } from './svid-mint.js'

/** The deduplicated, sorted audience of a request; ERR_INVALID_ARGUMENT when none is given. */
export function audienceOf(audience: readonly string[]): string[] {
  const out = [...new Set(audience.filter((a) => a !== ''))].sort()
  if (out.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
  return out
}

/** What JWT-SVID fetching needs of the instance lifecycles (declared here, by its consumer). */
export interface InstanceSource {
  instanceFor(proc: Proc | undefined, entry: AgentEntry): InstanceState | undefined
  ensureRegistered(inst: InstanceState): Promise<void>
}

export interface JwtSvidsOptions {
  entries: EntryIndex
  /** Absent: template entries are not served. */
  instances: InstanceSource | undefined
  cache: JwtSvidCache
  signer: SvidSigner
  clock: Clock
  /** Is the identity revoked (never served, minted or kept)? Default: never. */
  revoked?(spiffeId: string, instanceId: string | undefined): boolean
}

export class JwtSvids {
  readonly #o: JwtSvidsOptions

  constructor(opts: JwtSvidsOptions) {
    this.#o = opts
  }

  /** JWT-SVIDs for a sorted `audience` (see `audienceOf`) of every identity `matched` gives the caller, or only `spiffeId`. */
  async fetch(matched: Iterable<string>, audience: string[], spiffeId: string | undefined, proc: Proc | undefined, opts: CallOpts): Promise<JwtSvidResult[]> {
    const { entries, instances, cache } = this.#o
    const targets: { entry: AgentEntry; spiffeId: string; inst: InstanceState | undefined }[] = []
    for (const id of matched) {
      const e = entries.get(id)!
      if (!isTemplateEntry(e)) {
        if ((spiffeId === undefined || e.spiffeId === spiffeId) && !this.#o.revoked?.(e.spiffeId, undefined))
          targets.push({ entry: e, spiffeId: e.spiffeId, inst: undefined })
        continue
      }
      if (spiffeId !== undefined && !templateCovers(e.spiffeId, spiffeId)) continue
      const inst = instances?.instanceFor(proc, e)
      if (!instances || !inst) continue
      if (inst.instanceId === undefined) {
        try {
          await instances.ensureRegistered(inst)
        } catch (err) {
          throw err instanceof IdentityError ? err : new IdentityError('ERR_UNAVAILABLE', 'cannot register instance', { cause: err })
        }
      }
      if (inst.ended || inst.spiffeId === undefined || this.#o.revoked?.(inst.spiffeId, inst.instanceId)) continue
      if (spiffeId === undefined || inst.spiffeId === spiffeId) targets.push({ entry: e, spiffeId: inst.spiffeId, inst })
    }
    targets.sort((a, b) => (a.spiffeId < b.spiffeId ? -1 : a.spiffeId > b.spiffeId ? 1 : a.entry.id < b.entry.id ? -1 : 1))
    const seen = new Set<string>()
    const unique = targets.filter((t) => (seen.has(t.spiffeId) ? false : (seen.add(t.spiffeId), true)))
    // Fresh cached tokens are answered without a round of promises per identity.
    const fresh = unique.map((t) => cache.fresh(this.#key(t.entry, audience, t.inst)))
    const out = fresh.every((j) => j !== undefined)
      ? fresh
      : await Promise.all(
          unique.map((t, i) => {
            const f = fresh[i]
            return f !== undefined ? Promise.resolve(f) : this.#jwtFor(t.entry, audience, opts, t.inst)
          }),
        )
    return out.map((j, i) => ({ spiffeId: unique[i]!.spiffeId, token: j.token, hint: unique[i]!.entry.hint }))
  }

  /** The cache key of a JWT-SVID for an entry (or instance) and a sorted audience. */
  #key(entry: AgentEntry, audience: string[], inst?: InstanceState): string {
    return jwtKey(inst ? `${inst.instanceId}` : entry.spiffeId, audience)
  }

  /** The JWT-SVID of an entry (or instance) for a sorted audience: cached, or minted by the server. */
  #jwtFor(entry: AgentEntry, audience: string[], opts: CallOpts, inst?: InstanceState): Promise<CachedJwt> {
    const { signer, clock, cache } = this.#o
    const mint = (): Promise<MintedJwt> => {
      const callOpts: CallOpts & { instanceId?: string } = opts.signal ? { signal: opts.signal } : {}
      if (inst) callOpts.instanceId = inst.instanceId!
      return signer.newJwtSvid(entry.id, audience, callOpts).then((r) => {
        const issuedAt = r.issuedAt > 0 ? toMs(r.issuedAt) : clock.now()
        return { token: r.token, issuedAt, expiresAt: toMs(r.expiresAt) }
      })
    }
    return cache.get(this.#key(entry, audience, inst), mint, {
      spiffeId: entry.spiffeId,
      // The process is gone: nothing of it is kept.
      keep: () => !inst?.ended && !this.#o.revoked?.(inst?.spiffeId ?? entry.spiffeId, inst?.instanceId),
      onKept: (key) => inst?.jwtKeys.add(key),
    })
  }
}
