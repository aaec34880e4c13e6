import { EventEmitter } from 'node:events'
import { IdentityError } from '../../errors/identity-error.js'
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { fits, type ServerAudit, type ServerAuditEvent } from '../audit/server-audit.js'
import {
  MAX_PARENT_IDS,
  type AttestedNode,
  type DataStore,
  type EntryFilter,
  type EntryPatch,
  type NewEntry,
  type Page,
  type RegistrationEntry,
} from '../datastore/types.js'
import { formatSelector } from './selectors.js'
import { INSTANCE_SAMPLE, instanceSpiffeId, isAgentId, isTemplateId, serverIdOf, validateEntry, type EntryLimits } from './validate.js'

/** Namespace bounds check on entry writes (BoundsService); throws ERR_ENTRY_INVALID naming the bound. */
export interface EntryBoundsCheck {
  checkEntry(entry: NewEntry): void
}

export interface EntryChange {
  upserted: RegistrationEntry[]
  deleted: RegistrationEntry[]
  /** Entries deleted through another server sharing the datastore (only their ids are known). */
  deletedIds?: string[]
}

/** How many of its own writes a server remembers so that the change feed's echo of them is not emitted twice. */
const OWN_WRITES_MAX = 10_000

export type ItemResult<T> = { ok: true; value: T } | { ok: false; error: IdentityError }

const MAX_BATCH = 500

/**
 * Registration entries: validation on write, batches, the change feed that
 * agents' Sync streams follow, and the set of entries each agent may serve.
 */
/**
 * How many parents `authorizedSet` follows at most. Each one past the agent and its aliases is an entry already
 * found, so the walk ends anyway; the bound only caps the work of a pathological graph. (It was 10,000 while each
 * parent cost a query, which left the nested entries under an agent's 10,001st workload out.)
 */
const MAX_PARENTS_FOLLOWED = 1_000_000

export class RegistrationService {
  readonly #ds: DataStore
  readonly #limits: EntryLimits
  readonly #log: Logger
  readonly #clock: Clock
  readonly #events = new EventEmitter()
  readonly #serverId: string
  readonly #bounds: EntryBoundsCheck | undefined
  readonly #audit: Pick<ServerAudit, 'durable'> | undefined
  /** Entries this server wrote, by id: the revision written, or null for a deletion (the feed's echo is skipped). */
  readonly #ownWrites = new Map<string, number | null>()

  /**
   * `audit`: each entry written (`entry.created`, `entry.updated`, `entry.deleted`) is appended, and a batch is
   * answered once its events are durable; a lost event is logged and counted, the write stands.
   */
  constructor(opts: { ds: DataStore; limits: EntryLimits; log: Logger; clock: Clock; bounds?: EntryBoundsCheck; audit?: Pick<ServerAudit, 'durable'> }) {
    this.#bounds = opts.bounds
    this.#audit = opts.audit
    this.#ds = opts.ds
    this.#limits = opts.limits
    this.#log = opts.log.child({ [F.SUBSYSTEM]: 'registration' })
    this.#clock = opts.clock
    this.#serverId = serverIdOf(opts.limits.trustDomain).toString()
    this.#events.setMaxListeners(0)
  }

  /** Subscribes to entry changes; returns the unsubscribe function. */
  onChange(fn: (c: EntryChange) => void): () => void {
    this.#events.on('change', fn)
    return () => this.#events.off('change', fn)
  }

  #emit(c: EntryChange, own = true): void {
    if (own) {
      for (const e of c.upserted) this.#remember(e.id, e.revision)
      for (const e of c.deleted) this.#remember(e.id, null)
    }
    if (c.upserted.length + c.deleted.length + (c.deletedIds?.length ?? 0) > 0) this.#events.emit('change', c)
  }

  #remember(id: string, revision: number | null): void {
    this.#ownWrites.delete(id)
    this.#ownWrites.set(id, revision)
    if (this.#ownWrites.size > OWN_WRITES_MAX) this.#ownWrites.delete(this.#ownWrites.keys().next().value!)
  }

  /**
   * Entries changed in the datastore, possibly by another server sharing it (its change feed): each is read
   * again (or learnt deleted) and emitted as a local write is, so agents' Sync streams and the authorized-entries
   * cache follow. The echo of this server's own writes (same revision, or a deletion it made) is not emitted again.
   */
  async applyRemoteEntryChanges(ids: readonly string[]): Promise<void> {
    const upserted: RegistrationEntry[] = []
    const deletedIds: string[] = []
    for (const id of new Set(ids)) {
      const e = await this.#ds.entries.find(id)
      const own = this.#ownWrites.get(id)
      if (own !== undefined && (e ? own === e.revision : own === null)) {
        this.#ownWrites.delete(id)
        continue
      }
      this.#ownWrites.delete(id)
      if (e) upserted.push(e)
      else deletedIds.push(id)
    }
    if (upserted.length + deletedIds.length > 0) this.#log.debug({ [F.COUNT]: upserted.length + deletedIds.length }, 'Entries changed by another server')
    this.#emit({ upserted, deleted: [], deletedIds }, false)
  }

  /** Everything may have changed (the change feed was reset): every listener recomputes. */
  reloadAll(): void {
    this.#ownWrites.clear()
    this.#events.emit('change', { upserted: [], deleted: [], deletedIds: [] } satisfies EntryChange)
  }

  /** Appends one event per entry and waits until they are durable (one group commit for the batch). */
  async #auditEntries(type: 'entry.created' | 'entry.updated' | 'entry.deleted', entries: readonly RegistrationEntry[], via: string): Promise<void> {
    if (!this.#audit || entries.length === 0) return
    await Promise.all(entries.map((e) => this.#audit!.durable(entryEvent(type, e, via))))
  }

  /** Whether `e`'s parent must be looked up (it is neither this server nor an agent ID). */
  #parentIsEntry(e: NewEntry): boolean {
    return e.parentId !== this.#serverId && !isAgentId(SpiffeId.fromString(e.parentId))
  }

  async #checkParent(ds: DataStore, e: NewEntry): Promise<void> {
    if (!this.#parentIsEntry(e)) return
    const { entries } = await ds.entries.list({ spiffeId: e.parentId }, { pageSize: 1 })
    if (entries.length === 0) {
      throw new IdentityError(
        'ERR_ENTRY_INVALID',
        `invalid entry: parent_id: "${e.parentId}" is neither the server, an agent ID nor the SPIFFE ID of an existing entry`,
        {
          details: { issues: [{ path: 'parent_id', message: 'parent does not exist' }] },
        },
      )
    }
  }

  async createEntries(batch: NewEntry[]): Promise<ItemResult<RegistrationEntry>[]> {
    checkBatch(batch.length)
    const out: ItemResult<RegistrationEntry>[] = []
    const created: RegistrationEntry[] = []
    for (const raw of batch) {
      try {
        const e = validateEntry(raw, this.#limits)
        this.#bounds?.checkEntry(boundsView(e))
        // The parent check and the insert are one transaction; an entry under the server or an agent needs no check, and
        // its insert alone is atomic (on PostgreSQL it then runs beside other writes instead of after them).
        const entry = this.#parentIsEntry(e)
          ? await this.#ds.tx(async (ds) => {
              await this.#checkParent(ds, e)
              return ds.entries.create(e)
            })
          : await this.#ds.entries.create(e)
        created.push(entry)
        out.push({ ok: true, value: entry })
        this.#log.info({ [F.ENTRY_ID]: entry.id, [F.SPIFFE_ID]: entry.spiffeId }, 'Entry created')
      } catch (err) {
        out.push({ ok: false, error: asIdentityError(err) })
      }
    }
    this.#emit({ upserted: created, deleted: [] })
    await this.#auditEntries('entry.created', created, 'admin')
    return out
  }

  async updateEntries(batch: (EntryPatch & { id: string })[]): Promise<ItemResult<RegistrationEntry>[]> {
    checkBatch(batch.length)
    const out: ItemResult<RegistrationEntry>[] = []
    const changed: RegistrationEntry[] = []
    for (const patch of batch) {
      try {
        const entry = await this.#ds.tx(async (ds) => {
          const current = await ds.entries.get(patch.id)
          const { id: _id, ...rest } = patch
          const merged = validateEntry({ ...stripMeta(current), ...definedOnly(rest) }, this.#limits)
          this.#bounds?.checkEntry(boundsView(merged))
          if (merged.parentId !== current.parentId) await this.#checkParent(ds, merged)
          return ds.entries.update(patch.id, stripMeta({ ...current, ...merged }))
        })
        changed.push(entry)
        out.push({ ok: true, value: entry })
        this.#log.info({ [F.ENTRY_ID]: entry.id, [F.SPIFFE_ID]: entry.spiffeId }, 'Entry updated')
      } catch (err) {
        out.push({ ok: false, error: asIdentityError(err) })
      }
    }
    this.#emit({ upserted: changed, deleted: [] })
    await this.#auditEntries('entry.updated', changed, 'admin')
    return out
  }

  async deleteEntries(ids: string[]): Promise<ItemResult<RegistrationEntry>[]> {
    checkBatch(ids.length)
    const out: ItemResult<RegistrationEntry>[] = []
    const deleted: RegistrationEntry[] = []
    for (const id of ids) {
      try {
        const e = await this.#ds.entries.delete(id)
        deleted.push(e)
        out.push({ ok: true, value: e })
        this.#log.info({ [F.ENTRY_ID]: e.id, [F.SPIFFE_ID]: e.spiffeId }, 'Entry deleted')
      } catch (err) {
        out.push({ ok: false, error: asIdentityError(err) })
      }
    }
    this.#emit({ deleted, upserted: [] })
    await this.#auditEntries('entry.deleted', deleted, 'admin')
    return out
  }

  get(id: string): Promise<RegistrationEntry> {
    return this.#ds.entries.get(id)
  }

  list(filter: EntryFilter, page: Page): Promise<{ entries: RegistrationEntry[]; nextPageToken: string }> {
    return this.#ds.entries.list(filter, page)
  }

  count(filter: EntryFilter): Promise<number> {
    return this.#ds.entries.count(filter)
  }

  /** Creates an entry without the admin parent check (server-internal, e.g. join-token aliases). */
  async createInternal(e: NewEntry): Promise<RegistrationEntry> {
    const v = validateEntry(e, this.#limits)
    this.#bounds?.checkEntry(boundsView(v))
    const entry = await this.#ds.entries.create(v)
    this.#emit({ upserted: [entry], deleted: [] })
    await this.#auditEntries('entry.created', [entry], 'server')
    return entry
  }

  /**
   * Entries an agent may serve: those whose parent is the agent, plus those whose
   * parent is a node alias the agent matches (alias entries have the server as
   * parent and selectors that are a subset of the agent's node selectors),
   * following downstream parents transitively. Expired entries are left out.
   */
  async authorizedEntries(node: Pick<AttestedNode, 'agentId' | 'selectors'>): Promise<RegistrationEntry[]> {
    return (await this.authorizedSet(node)).entries
  }

  /**
   * `authorizedEntries`, and until when that answer holds if no entry is
   * written: the earliest expiry among the entries and the node aliases that
   * led to them (null when none of them expires).
   */
  async authorizedSet(node: Pick<AttestedNode, 'agentId' | 'selectors'>): Promise<{ entries: RegistrationEntry[]; validUntil: number | null }> {
    const now = this.#clock.now()
    let validUntil: number | null = null
    const consider = (expiresAt: number | null) => {
      if (expiresAt !== null && (validUntil === null || expiresAt < validUntil)) validUntil = expiresAt
    }
    const parents: string[] = [node.agentId]
    if (node.selectors.length > 0) {
      const { entries: aliases } = await this.#ds.entries.list({ parentId: this.#serverId, selectors: { set: node.selectors, match: 'subset' } })
      for (const a of aliases) {
        if (a.expiresAt !== null && a.expiresAt <= now) continue
        parents.push(a.spiffeId)
        consider(a.expiresAt)
      }
    }
    // Breadth first, one query per MAX_PARENT_IDS parents of a level (not one per parent: 20,000 workload
    // entries under one agent are 20,000 parents to look under, nearly all childless).
    const seenParents = new Set<string>()
    const out = new Map<string, RegistrationEntry>()
    let level = parents
    while (level.length > 0 && seenParents.size < MAX_PARENTS_FOLLOWED) {
      const fresh: string[] = []
      for (const p of level) {
        if (seenParents.has(p) || seenParents.size >= MAX_PARENTS_FOLLOWED) continue
        seenParents.add(p)
        fresh.push(p)
      }
      const next: string[] = []
      for (let i = 0; i < fresh.length; i += MAX_PARENT_IDS) {
        const { entries } = await this.#ds.entries.list({ parentIds: fresh.slice(i, i + MAX_PARENT_IDS) })
        for (const e of entries) {
          if (e.expiresAt !== null && e.expiresAt <= now) continue
          if (!out.has(e.id)) {
            out.set(e.id, e)
            next.push(e.spiffeId)
            consider(e.expiresAt)
          }
        }
      }
      level = next
    }
    return { entries: [...out.values()], validUntil }
  }

  /** Is entry `entryId` one this agent may serve? Returns it, or throws ERR_ID_NOT_AUTHORIZED. */
  async authorizedEntry(node: Pick<AttestedNode, 'agentId' | 'selectors'>, entryId: string): Promise<RegistrationEntry> {
    const entries = await this.authorizedEntries(node)
    const e = entries.find((x) => x.id === entryId)
    if (!e) {
      throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `entry ${entryId.slice(0, 64)} is not authorized for agent ${node.agentId}`)
    }
    return e
  }

  static selectorKey = formatSelector
}

/**
 * An entry's event: its SPIFFE ID (a template, which is no SPIFFE ID, as the `template` attribute), id, revision, parent
 * and TTLs; selectors and DNS names only counted (a selector value may name a person), no hint (free text).
 */
function entryEvent(type: 'entry.created' | 'entry.updated' | 'entry.deleted', e: RegistrationEntry, via: string): ServerAuditEvent {
  const template = isTemplateId(e.spiffeId)
  const parent = fits(e.parentId)
  const tpl = template ? fits(e.spiffeId) : undefined
  return {
    type,
    outcome: 'success',
    ...(template ? {} : { subject: e.spiffeId }),
    attributes: {
      via,
      entry_id: e.id,
      revision: e.revision,
      ...(tpl !== undefined ? { template: tpl } : {}),
      ...(parent !== undefined ? { parent_id: parent } : {}),
      selectors: e.selectors.length,
      dns_names: e.dnsNames.length,
      x509_svid_ttl: e.x509SvidTtl,
      jwt_svid_ttl: e.jwtSvidTtl,
      admin: e.admin,
      downstream: e.downstream,
    },
  }
}

/** Bounds apply to a template as to any instance it can produce. */
function boundsView(e: NewEntry): NewEntry {
  return isTemplateId(e.spiffeId) ? { ...e, spiffeId: instanceSpiffeId(e.spiffeId, INSTANCE_SAMPLE) } : e
}

function checkBatch(n: number): void {
  if (n === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'batch is empty')
  if (n > MAX_BATCH) throw new IdentityError('ERR_INVALID_ARGUMENT', `batch exceeds ${MAX_BATCH} items`)
}

function stripMeta(e: RegistrationEntry | NewEntry): NewEntry {
  const { createdAt: _c, updatedAt: _u, revision: _r, id: _i, ...rest } = e as RegistrationEntry
  return rest
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

export function asIdentityError(err: unknown): IdentityError {
  if (err instanceof IdentityError) return err
  return new IdentityError('ERR_INTERNAL', 'internal error', { cause: err })
}
