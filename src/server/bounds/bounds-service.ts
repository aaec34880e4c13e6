import { createHash } from 'node:crypto'
import { EventEmitter } from 'node:events'
import type { Clock } from '../../common/clock.js'
import { configError, type ConfigIssue } from '../../common/config/issues.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import { checkBounds, checkEffective, describeFailure, type BoundsFailure, type BoundsRequest } from '../../spiffe/bounds/authorize.js'
import { boundsError, boundsToJson, collectBounds, type BoundName, type Bounds, type BoundsIssue } from '../../spiffe/bounds/bounds.js'
import { BoundsSet, normalizePrefix, type EffectiveBounds } from '../../spiffe/bounds/bounds-set.js'
import { signBoundsDocument } from '../../spiffe/bounds/document.js'
import type { Signer } from '../../spiffe/signer.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import type { ServerAudit } from '../audit/server-audit.js'
import type { DataStore, NewEntry, Selector } from '../datastore/types.js'

/** KvStore namespace of API-set bounds: key = prefix, value = BoundsJson; plus `sequence` and `config_digest`. */
export const BOUNDS_KV_NAMESPACE = 'bounds'
const SEQUENCE_KEY = 'sequence'
const CONFIG_DIGEST_KEY = 'config_digest'

/** The trust domain's current JWT signing key (the CA's active JWT slot). */
export type JwtSignerSource = () => { signer: Signer; kid: string } | Promise<{ signer: Signer; kid: string }>

export interface BoundsServiceOptions {
  trustDomain: TrustDomain
  ds: Pick<DataStore, 'kv' | 'tx' | 'liveInstances'>
  /** Bounds declared in the server config (`[server.bounds."/prefix"]`): read-only through the API. */
  config?: BoundsSet
  clock: Clock
  log: Logger
  /** Signs the bounds document; without it `signedDocument()` throws ERR_NOT_CONFIGURED. */
  jwtSigner?: JwtSignerSource
  /** How long a signed document is reused before it is signed again (default 5 min); a change or a new key re-signs at once. */
  documentMaxAgeMs?: number
  /**
   * Each change through the API is appended (`bounds.changed`: the prefix, set or delete, the new sequence and a
   * SHA-256 of the bounds) and durable before it is answered; a lost event is logged and counted, the change stands.
   * A start whose config bounds differ from the last start's appends one too (action `config`, the trust domain as subject).
   */
  audit?: Pick<ServerAudit, 'durable'>
}

export type BoundsSource = 'config' | 'api'

export interface DeclaredBounds {
  prefix: string
  bounds: Bounds
  source: BoundsSource
}

export interface BoundsChange {
  kind: 'set' | 'delete'
  prefix: string
  sequence: number
  set: BoundsSet
}

/** An ID's effective bounds as `BoundsService.lookup` found them (`set`: the bounds they were looked up in). */
export interface BoundsLookup {
  readonly id: SpiffeId
  readonly set: BoundsSet
  readonly effective: EffectiveBounds | undefined
}

/** The entry fields bounds apply to. */
export type BoundedEntry = Pick<NewEntry, 'spiffeId' | 'x509SvidTtl' | 'jwtSvidTtl' | 'dnsNames' | 'federatesWith'>

const ENTRY_FIELD: Partial<Record<BoundName, string>> = {
  x509_svid_ttl: 'x509_svid_ttl',
  jwt_svid_ttl: 'jwt_svid_ttl',
  dns_suffixes: 'dns_names',
  federates_with: 'federates_with',
}

/** Expired live-instance records are swept every this many admissions. */
const PRUNE_EVERY = 256

interface PendingAdmission {
  id: SpiffeId
  limits: { prefix: string; max: number }[]
  key: string
  ttlMs: number
  resolve: () => void
  reject: (err: unknown) => void
}

const asId = (id: string | SpiffeId): SpiffeId => (typeof id === 'string' ? SpiffeId.fromString(id) : id)
const selectorStrings = (s: readonly Selector[]): string[] => s.map((x) => `${x.type}:${x.value}`)

/**
 * Namespace operating bounds on the server: loads them from the config and
 * the KvStore, changes them (each change checked against ancestors and
 * descendants, persisted with a new sequence, then announced), and answers
 * the checks registration and issuance make. All checks are synchronous and
 * served from an immutable, cached BoundsSet.
 */
export class BoundsService {
  readonly #o: BoundsServiceOptions
  readonly #log: Logger
  readonly #events = new EventEmitter()
  readonly #config: BoundsSet
  #api = new Map<string, Bounds>()
  #set: BoundsSet
  #sequence = 0
  #busy: Promise<unknown> = Promise.resolve()
  #doc: { sequence: number; kid: string; at: number; token: string } | undefined
  /** Admissions written since the last sweep of expired live instances (one every PRUNE_EVERY). */
  #admissions = 0
  /** Admissions waiting for the next round (see #admit). */
  #pending: PendingAdmission[] = []
  #writing = false

  constructor(opts: BoundsServiceOptions) {
    this.#o = opts
    this.#log = opts.log.child({ [F.SUBSYSTEM]: 'bounds' })
    this.#config = opts.config ?? BoundsSet.empty(opts.trustDomain)
    if (!this.#config.trustDomain.equals(opts.trustDomain)) throw new TypeError('config bounds are for another trust domain')
    this.#set = this.#config
    this.#events.setMaxListeners(0)
  }

  /**
   * Loads API-set bounds from the KvStore and merges them with the config.
   * Stored bounds that clash with the config (same prefix, or wider than a
   * config ancestor) stop the start with ERR_CONFIG_INVALID naming each.
   */
  async init(): Promise<void> {
    const rows = await this.#o.ds.kv.list(BOUNDS_KV_NAMESPACE)
    const issues: BoundsIssue[] = []
    const api = new Map<string, Bounds>()
    let storedSeq = 0
    let storedDigest = ''
    for (const { key, value } of rows) {
      if (key === SEQUENCE_KEY) storedSeq = Number(value) || 0
      else if (key === CONFIG_DIGEST_KEY) storedDigest = value
      else if (key.startsWith('/')) {
        let raw: unknown
        try {
          raw = JSON.parse(value)
        } catch {
          issues.push({ path: key, message: 'stored bounds are not JSON' })
          continue
        }
        if (this.#config.has(key)) issues.push({ path: key, message: 'is declared in the server configuration and was also set through the API; delete one' })
        else api.set(key, collectBounds(raw, key, issues))
      }
    }
    let set: BoundsSet | undefined
    if (issues.length === 0) {
      try {
        set = BoundsSet.from(this.#o.trustDomain, [...this.#config.entries(), ...api])
      } catch (err) {
        if (err instanceof IdentityError && err.code === 'ERR_BOUNDS_INVALID') issues.push(...((err.details?.issues as BoundsIssue[]) ?? []))
        else throw err
      }
    }
    if (issues.length > 0 || !set) {
      throw configError(
        issues.map((i): ConfigIssue => ({ path: `bounds.${i.path}`, message: i.message })),
        'namespace bounds (config together with the bounds stored through the API)',
      )
    }
    this.#api = api
    this.#set = set
    this.#sequence = storedSeq
    const digest = createHash('sha256').update(JSON.stringify(this.#config.toJSON())).digest('hex')
    if (digest !== storedDigest) {
      // The config's bounds changed since the last start: publish under a new sequence.
      this.#sequence++
      await this.#o.ds.tx(async (t) => {
        await t.kv.put(BOUNDS_KV_NAMESPACE, SEQUENCE_KEY, String(this.#sequence))
        await t.kv.put(BOUNDS_KV_NAMESPACE, CONFIG_DIGEST_KEY, digest)
      })
      // The config's bounds as a whole: the trust domain as subject, the digest stored beside them.
      await this.#o.audit?.durable({
        type: 'bounds.changed',
        outcome: 'success',
        subject: this.#o.trustDomain.idString(),
        attributes: { via: 'config', action: 'config', sequence: this.#sequence, bounds_sha256: digest, prefixes: this.#config.size },
      })
    }
    this.#log.info({ prefixes: set.size, sequence: this.#sequence }, 'Namespace bounds loaded')
  }

  /**
   * Reads the API-set bounds again (another server sharing the datastore set or deleted some: its change feed)
   * and adopts them when the stored sequence moved past this server's, telling the listeners as a local change
   * does. Stored bounds that no longer fit with the config are logged and the current ones kept. Returns true
   * when the bounds changed.
   */
  reload(): Promise<boolean> {
    return this.#serial(async () => {
      const rows = await this.#o.ds.kv.list(BOUNDS_KV_NAMESPACE)
      let storedSeq = 0
      const issues: BoundsIssue[] = []
      const api = new Map<string, Bounds>()
      for (const { key, value } of rows) {
        if (key === SEQUENCE_KEY) storedSeq = Number(value) || 0
        else if (key.startsWith('/') && !this.#config.has(key)) {
          try {
            api.set(key, collectBounds(JSON.parse(value), key, issues))
          } catch {
            issues.push({ path: key, message: 'stored bounds are not JSON' })
          }
        }
      }
      if (storedSeq <= this.#sequence) return false
      let set: BoundsSet
      try {
        if (issues.length > 0) throw boundsError(issues)
        set = BoundsSet.from(this.#o.trustDomain, [...this.#config.entries(), ...api])
      } catch (err) {
        this.#log.error({ [F.ERR]: String(err), sequence: storedSeq }, 'Namespace bounds changed by another server not adopted')
        return false
      }
      const changed = [...new Set([...api.keys(), ...this.#api.keys()])].filter(
        (p) => JSON.stringify(api.has(p) ? boundsToJson(api.get(p)!) : null) !== JSON.stringify(this.#api.has(p) ? boundsToJson(this.#api.get(p)!) : null),
      )
      this.#api = api
      const prefix = changed[0] ?? '/'
      this.#commit(set, storedSeq, api.has(prefix) ? 'set' : 'delete', prefix)
      return true
    })
  }

  /** The current bounds (config and API together). */
  current(): BoundsSet {
    return this.#set
  }

  /** Increases with every change; the signed document carries it. */
  get sequence(): number {
    return this.#sequence
  }

  onChange(fn: (c: BoundsChange) => void): () => void {
    this.#events.on('change', fn)
    return () => this.#events.off('change', fn)
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#busy.then(fn, fn)
    this.#busy = run.catch(() => undefined)
    return run
  }

  #prefix(raw: string): string {
    const n = normalizePrefix(this.#o.trustDomain, raw)
    if ('problem' in n) throw boundsError([{ path: String(raw).slice(0, 200), message: n.problem }])
    return n.prefix
  }

  /**
   * Declares (or replaces) the bounds of a prefix. Refused with
   * ERR_BOUNDS_INVALID, nothing stored, when the prefix is invalid or
   * declared in the config, when the bounds widen an ancestor, or when an
   * existing descendant would be wider than them.
   */
  set(prefix: string, bounds: Bounds): Promise<DeclaredBounds> {
    return this.#serial(async () => {
      const p = this.#prefix(prefix)
      if (this.#config.has(p)) throw boundsError([{ path: p, message: 'is declared in the server configuration; change it there' }])
      const next = this.#set.with(p, bounds)
      const seq = this.#sequence + 1
      await this.#o.ds.tx(async (t) => {
        await t.kv.put(BOUNDS_KV_NAMESPACE, p, JSON.stringify(boundsToJson(bounds)))
        await t.kv.put(BOUNDS_KV_NAMESPACE, SEQUENCE_KEY, String(seq))
      })
      this.#api.set(p, bounds)
      this.#commit(next, seq, 'set', p)
      await this.#audited('set', p, seq, bounds)
      return { prefix: p, bounds: next.get(p)!, source: 'api' as const }
    })
  }

  /** Removes API-set bounds. ERR_NOT_FOUND when none are set there; ERR_BOUNDS_INVALID for config-declared ones. */
  delete(prefix: string): Promise<DeclaredBounds> {
    return this.#serial(async () => {
      const p = this.#prefix(prefix)
      if (this.#config.has(p)) throw boundsError([{ path: p, message: 'is declared in the server configuration; change it there' }])
      const old = this.#api.get(p)
      if (!old) throw new IdentityError('ERR_NOT_FOUND', `no bounds are set for "${p}"`)
      const seq = this.#sequence + 1
      await this.#o.ds.tx(async (t) => {
        await t.kv.delete(BOUNDS_KV_NAMESPACE, p)
        await t.kv.put(BOUNDS_KV_NAMESPACE, SEQUENCE_KEY, String(seq))
      })
      this.#api.delete(p)
      this.#commit(this.#set.without(p), seq, 'delete', p)
      await this.#audited('delete', p, seq, old)
      return { prefix: p, bounds: old, source: 'api' as const }
    })
  }

  async #audited(action: BoundsChange['kind'], prefix: string, sequence: number, bounds: Bounds): Promise<void> {
    if (!this.#o.audit) return
    const digest = createHash('sha256')
      .update(JSON.stringify(boundsToJson(bounds)))
      .digest('hex')
    await this.#o.audit.durable({
      type: 'bounds.changed',
      outcome: 'success',
      subject: prefix === '/' ? this.#o.trustDomain.idString() : `${this.#o.trustDomain.idString()}${prefix}`,
      attributes: { via: 'admin', action, sequence, bounds_sha256: digest },
    })
  }

  #commit(set: BoundsSet, seq: number, kind: BoundsChange['kind'], prefix: string): void {
    this.#set = set
    this.#sequence = seq
    this.#doc = undefined
    this.#log.info({ [F.PATH]: prefix, sequence: seq }, kind === 'set' ? 'Namespace bounds set' : 'Namespace bounds deleted')
    this.#events.emit('change', { kind, prefix, sequence: seq, set } satisfies BoundsChange)
  }

  /** Bounds declared at exactly `prefix`, or undefined. */
  get(prefix: string): DeclaredBounds | undefined {
    const p = this.#prefix(prefix)
    const b = this.#set.get(p)
    return b ? { prefix: p, bounds: b, source: this.#config.has(p) ? 'config' : 'api' } : undefined
  }

  list(): DeclaredBounds[] {
    return this.#set.entries().map(([prefix, bounds]) => ({ prefix, bounds, source: this.#config.has(prefix) ? 'config' : 'api' }))
  }

  /** The effective bounds of an ID (undefined: nothing limits it). */
  effective(id: string | SpiffeId): EffectiveBounds | undefined {
    return this.#set.boundsFor(asId(id))
  }

  /**
   * The effective bounds of an ID, looked up once for one issuance: a caller
   * that must know whether an ID is bounded before admitting it passes the
   * lookup on to `admitX509`, which then does not look again (unless the
   * bounds changed in between).
   */
  lookup(id: SpiffeId): BoundsLookup {
    return { id, set: this.#set, effective: this.#set.boundsFor(id) }
  }

  /** `lookup.effective` while the bounds it was made under are current, else a fresh lookup. */
  #effectiveOf(id: SpiffeId, lookup: BoundsLookup | undefined): EffectiveBounds | undefined {
    return lookup !== undefined && lookup.set === this.#set && lookup.id.equals(id) ? lookup.effective : this.#set.boundsFor(id)
  }

  /** Effective bounds of a prefix itself (as for an ID at exactly that path). */
  effectiveForPrefix(prefix: string): EffectiveBounds | undefined {
    const p = this.#prefix(prefix)
    return this.#set.boundsFor(SpiffeId.fromPath(this.#o.trustDomain, p === '/' ? '' : p))
  }

  // ---------------------------------------------------------------- hooks for registration

  /**
   * Registration hook: an entry may not ask for more than its bounds allow
   * (explicit TTLs, DNS names, federation; a TTL of 0 means the server
   * default and is clamped at issuance). Throws ERR_ENTRY_INVALID naming the
   * bound and the prefix.
   */
  checkEntry(entry: BoundedEntry): void {
    let id: SpiffeId
    try {
      id = asId(entry.spiffeId)
    } catch {
      return // validateEntry reports a bad ID
    }
    const req: BoundsRequest = { dnsNames: entry.dnsNames, federatesWith: entry.federatesWith }
    if (entry.x509SvidTtl > 0) req.x509SvidTtlSeconds = entry.x509SvidTtl
    if (entry.jwtSvidTtl > 0) req.jwtSvidTtlSeconds = entry.jwtSvidTtl
    const f = checkBounds(this.#set, id, req)
    if (f) {
      const path = ENTRY_FIELD[f.bound] ?? 'spiffe_id'
      throw new IdentityError('ERR_ENTRY_INVALID', `invalid entry: ${path}: ${describeFailure(f)}`, {
        details: { issues: [{ path, message: describeFailure(f) }], bound: f.bound, prefix: f.prefix },
      })
    }
  }

  // ---------------------------------------------------------------- hooks for issuance

  /** The X.509-SVID TTL to use: `ttlMs` clamped to the effective `x509_svid_ttl`. */
  clampX509TtlMs(id: string | SpiffeId, ttlMs: number): number {
    const b = this.#set.boundsFor(asId(id))?.bounds.x509SvidTtlSeconds
    return b === undefined ? ttlMs : Math.min(ttlMs, b * 1000)
  }

  /** The JWT-SVID TTL to use: `ttlMs` clamped to the effective `jwt_svid_ttl`. */
  clampJwtTtlMs(id: string | SpiffeId, ttlMs: number): number {
    const b = this.#set.boundsFor(asId(id))?.bounds.jwtSvidTtlSeconds
    return b === undefined ? ttlMs : Math.min(ttlMs, b * 1000)
  }

  /** Does the node meet `require_node_selectors` for this ID? (For filtering what Sync sends.) */
  allowsNode(id: string | SpiffeId, nodeSelectors: readonly Selector[]): boolean {
    return checkBounds(this.#set, asId(id), { nodeSelectors: selectorStrings(nodeSelectors) }) === undefined
  }

  /** Throws ERR_ID_NOT_AUTHORIZED when the node lacks a required selector. */
  checkNode(id: string | SpiffeId, nodeSelectors: readonly Selector[]): void {
    this.#deny(id, checkBounds(this.#set, asId(id), { nodeSelectors: selectorStrings(nodeSelectors) }))
  }

  /** Throws ERR_ID_NOT_AUTHORIZED when any audience is outside `jwt_audiences`. */
  checkAudience(id: string | SpiffeId, audience: readonly string[]): void {
    this.#deny(id, checkBounds(this.#set, asId(id), { audience }))
  }

  /** The trust domains an ID may receive bundles for (the entry's `federatesWith` within the bounds). */
  allowedFederation(id: string | SpiffeId, federatesWith: readonly string[]): string[] {
    const allowed = this.#set.boundsFor(asId(id))?.bounds.federatesWith
    return allowed === undefined ? [...federatesWith] : federatesWith.filter((t) => allowed.includes(t))
  }

  /**
   * The trust domains whose bundles an agent serving `entries` is sent: each
   * entry's `federatesWith` within that entry's current bounds. `boundsIdOf`
   * gives the ID an entry's bounds are evaluated for (a template's sample instance).
   */
  federationFor(entries: readonly { spiffeId: string; federatesWith: readonly string[] }[], boundsIdOf: (spiffeId: string) => string = (s) => s): Set<string> {
    const out = new Set<string>()
    for (const e of entries) {
      if (e.federatesWith.length === 0) continue
      for (const td of this.allowedFederation(boundsIdOf(e.spiffeId), e.federatesWith)) out.add(td)
    }
    return out
  }

  #deny(id: string | SpiffeId, f: BoundsFailure | undefined): void {
    if (f) throw this.#denial(id, f)
  }

  #denial(id: string | SpiffeId, f: BoundsFailure): IdentityError {
    return new IdentityError('ERR_ID_NOT_AUTHORIZED', `${String(id)} ${describeFailure(f)}`, { details: { bound: f.bound, prefix: f.prefix } })
  }

  /**
   * Everything X.509-SVID issuance needs in one call: checks the node's
   * selectors, admits the instance under every `max_instances` prefix (a
   * renewal by the same `instanceKey` is the same instance), clamps the TTL
   * and drops DNS names the bounds no longer allow. Throws ERR_ID_NOT_AUTHORIZED.
   * The admission is stored before this resolves, so a restart keeps it.
   */
  async admitX509(a: {
    spiffeId: string | SpiffeId
    ttlMs: number
    dnsNames: readonly string[]
    nodeSelectors: readonly Selector[]
    instanceKey: string
    lookup?: BoundsLookup
  }): Promise<{ ttlMs: number; dnsNames: string[] }> {
    const id = asId(a.spiffeId)
    // The effective bounds are looked up once (or taken from `a.lookup`) and every check below uses them.
    const eff = this.#effectiveOf(id, a.lookup)
    // No prefix bounds this ID (the common case): nothing to check, clamp or count.
    if (!eff) return { ttlMs: a.ttlMs, dnsNames: [...a.dnsNames] }
    this.#deny(id, checkEffective(this.#set, eff, { nodeSelectors: selectorStrings(a.nodeSelectors) }))
    const bound = eff.bounds.x509SvidTtlSeconds
    const ttlMs = bound === undefined ? a.ttlMs : Math.min(a.ttlMs, bound * 1000)
    const dnsNames = a.dnsNames.filter((d) => checkEffective(this.#set, eff, { dnsNames: [d] }) === undefined)
    if (dnsNames.length !== a.dnsNames.length) this.#log.warn({ [F.SPIFFE_ID]: id.toString() }, 'DNS names outside the namespace bounds left out of the SVID')
    await this.#admit(id, eff, a.instanceKey, ttlMs)
    return { ttlMs, dnsNames }
  }

  /** JWT-SVID issuance in one call: node selectors, audiences, instance limit, clamped TTL. Throws ERR_ID_NOT_AUTHORIZED. */
  async admitJwt(a: {
    spiffeId: string | SpiffeId
    ttlMs: number
    audience: readonly string[]
    nodeSelectors: readonly Selector[]
    instanceKey: string
  }): Promise<{ ttlMs: number }> {
    const id = asId(a.spiffeId)
    const eff = this.#set.boundsFor(id)
    if (!eff) return { ttlMs: a.ttlMs }
    this.#deny(id, checkEffective(this.#set, eff, { nodeSelectors: selectorStrings(a.nodeSelectors) }))
    this.#deny(id, checkEffective(this.#set, eff, { audience: a.audience }))
    const bound = eff.bounds.jwtSvidTtlSeconds
    const ttlMs = bound === undefined ? a.ttlMs : Math.min(a.ttlMs, bound * 1000)
    await this.#admit(id, eff, a.instanceKey, ttlMs)
    return { ttlMs }
  }

  /**
   * Counts the instance under every `max_instances` prefix of `eff`. The store,
   * not memory, holds the counts, so a restart keeps them. Admissions are
   * queued in call order and written in one datastore transaction per round
   * (group commit: those that arrive while a round commits share the next):
   * each is checked against the live instances the store holds plus those
   * admitted before it in the round, and recorded (or its expiry extended)
   * only if every limit leaves room. The promise settles once its round has
   * committed; a refusal records nothing (ERR_ID_NOT_AUTHORIZED).
   */
  #admit(id: SpiffeId, eff: EffectiveBounds, key: string, ttlMs: number): Promise<void> {
    const limits: { prefix: string; max: number }[] = []
    for (const p of eff.prefixes) {
      const max = this.#set.get(p)!.maxInstances
      if (max !== undefined) limits.push({ prefix: p, max })
    }
    if (limits.length === 0) return Promise.resolve()
    return new Promise<void>((resolve, reject) => {
      this.#pending.push({ id, limits, key, ttlMs, resolve, reject })
      if (!this.#writing) void this.#writeRounds()
    })
  }

  async #writeRounds(): Promise<void> {
    this.#writing = true
    try {
      while (this.#pending.length > 0) {
        let round: PendingAdmission[] = []
        const refused = new Map<PendingAdmission, IdentityError>()
        try {
          await this.#o.ds.tx(async (t) => {
            round = this.#pending.splice(0) // taken once the transaction is open: the later arrivals join this round
            refused.clear()
            const now = this.#o.clock.now()
            const live = new Map<string, Map<string, number>>()
            for (const a of round) {
              for (const { prefix } of a.limits) {
                if (!live.has(prefix)) live.set(prefix, new Map((await t.liveInstances.list(prefix, now)).map((l) => [l.instanceKey, l.expiresAt])))
              }
            }
            for (const a of round) {
              const full = a.limits.find(({ prefix, max }) => {
                const l = live.get(prefix)!
                return l.size - (l.has(a.key) ? 1 : 0) >= max
              })
              if (full) {
                const others = live.get(full.prefix)!.size - (live.get(full.prefix)!.has(a.key) ? 1 : 0)
                refused.set(
                  a,
                  this.#denial(a.id, { prefix: full.prefix, bound: 'max_instances', message: `${others} live instances already (limit ${full.max})` }),
                )
                continue
              }
              for (const { prefix } of a.limits) {
                const stored = await t.liveInstances.put({ prefix, instanceKey: a.key, expiresAt: now + a.ttlMs })
                live.get(prefix)!.set(a.key, stored.expiresAt)
              }
            }
            this.#admissions += round.length
            if (this.#admissions >= PRUNE_EVERY) {
              this.#admissions = 0
              await t.liveInstances.pruneExpired(now)
            }
          })
        } catch (err) {
          if (round.length === 0) round = this.#pending.splice(0) // the transaction did not open
          for (const a of round) a.reject(err)
          continue
        }
        for (const a of round) {
          const e = refused.get(a)
          if (e) a.reject(e)
          else a.resolve()
        }
      }
    } finally {
      this.#writing = false
    }
  }

  /**
   * Frees an instance's place under every `max_instances` limit (its process
   * ended). InstanceService.end already does this in the transaction that ends
   * the instance; this is for callers outside it and never throws (a failure is logged).
   */
  releaseInstance(key: string): void {
    this.#o.ds.liveInstances.release(key).catch((err: unknown) => {
      this.#log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Live instance could not be released')
    })
  }

  /** Live instances (unexpired SVIDs by distinct instance key) counted under a `max_instances` prefix. */
  async instances(prefix: string): Promise<number> {
    return (await this.#o.ds.liveInstances.list(this.#prefix(prefix), this.#o.clock.now())).length
  }

  // ---------------------------------------------------------------- relying parties

  /**
   * The bounds as a signed JWS (`typ: warrant-bounds+jwt`) with the trust
   * domain's current JWT key; reused until the bounds or the key change or
   * `documentMaxAgeMs` passes.
   */
  async signedDocument(): Promise<string> {
    const src = this.#o.jwtSigner
    if (!src) throw new IdentityError('ERR_NOT_CONFIGURED', 'no JWT signer for the bounds document')
    const { signer, kid } = await src()
    const now = this.#o.clock.now()
    const maxAge = this.#o.documentMaxAgeMs ?? 300_000
    const d = this.#doc
    if (d && d.sequence === this.#sequence && d.kid === kid && now - d.at < maxAge) return d.token
    const sequence = this.#sequence
    const token = await signBoundsDocument({ set: this.#set, sequence, issuedAt: new Date(now), signer, kid })
    if (sequence === this.#sequence) this.#doc = { sequence, kid, at: now, token }
    return token
  }
}
