/**
 * The datastore's change feed (PostgreSQL: every change committed by any server sharing the database, pushed)
 * applied to this server's services, from one subscription: an entry changed elsewhere reaches the agents' Sync
 * streams here, a revocation or ban made at another server is enforced here at once. Each service reads the
 * record again (the feed names records, not values), so re-applying this server's own changes is harmless.
 */
import { F, type Logger } from '../../common/log/logger.js'
import type { ChangeFeedEvent, DataStore, DataStoreChange } from '../datastore/types.js'

/** What the follower calls; each is a small method of the service that owns the state. */
export interface ChangeTargets {
  /** RegistrationService: entries changed (read again, or deleted) → emitted as local writes are. */
  registration: { applyRemoteEntryChanges(ids: readonly string[]): Promise<void>; reloadAll(): void }
  /** RevocationService: the records in force read again. */
  revocations: { reload(): Promise<unknown> }
  /** BoundsService: the API-set bounds read again. */
  bounds: { reload(): Promise<unknown> }
  /** FederatedBundles: a foreign trust domain's bundle changed. */
  federated: { applyRemoteChange(trustDomain: string): void }
  /** NodeAttestationService: node records changed (bans, evictions): open Sync streams re-authenticate. */
  nodes: { applyNodeChanges(agentIds: Iterable<string>): void }
  /** Federation relationships changed (FederationRefresher.sync). */
  federation?: { sync(): Promise<void> }
  /**
   * The local trust domain's bundle record changed (another server's CA authorities): the CA adopts the union again
   * (CaManager.refreshBundle). One subscription for the whole server, so each commit wakes one listener here.
   */
  localBundle?: { trustDomain: string; refresh(): Promise<unknown> }
}

export interface ChangeFollower {
  /** The last sequence number applied. */
  readonly seq: number
  close(): Promise<void>
}

/**
 * Subscribes once to `ds.changes` and dispatches each batch to the services. Resolves undefined when the
 * datastore has no change feed (SQLite, memory: one server per datastore, nothing to follow).
 */
export async function followChanges(ds: Pick<DataStore, 'changes'>, targets: ChangeTargets, log: Logger): Promise<ChangeFollower | undefined> {
  if (!ds.changes) return undefined
  const flog = log.child({ [F.SUBSYSTEM]: 'changes' })
  let applied = 0
  const feed = await ds.changes({}, async (ev) => {
    await applyChangeEvent(ev, targets, flog)
    applied = ev.seq
  })
  // The services loaded their state before this subscription: what was committed in between is read now (a change
  // after the subscription is delivered, and reading it twice is harmless).
  for (const [what, svc] of [
    ['revocation', targets.revocations],
    ['bounds', targets.bounds],
  ] as const)
    await svc.reload().catch((err: unknown) => flog.warn({ [F.ERR]: String(err), kind: what }, 'Datastore change not applied'))
  await targets.localBundle?.refresh().catch((err: unknown) => flog.warn({ [F.ERR]: String(err), kind: 'bundle' }, 'Datastore change not applied'))
  return {
    get seq() {
      return Math.max(applied, feed.seq)
    },
    close: () => feed.close(),
  }
}

/** Applies one feed event: a `reset` reloads everything; a batch calls each service once for its kinds. */
export async function applyChangeEvent(ev: ChangeFeedEvent, t: ChangeTargets, log: Logger): Promise<void> {
  const step = async (what: string, fn: () => Promise<unknown> | void) => {
    try {
      await fn()
    } catch (err) {
      log.warn({ [F.ERR]: String(err), kind: what }, 'Datastore change not applied')
    }
  }
  if (ev.type === 'reset') {
    log.info({ seq: ev.seq }, 'Change feed reset: reloading')
    await step('revocation', () => t.revocations.reload())
    await step('bounds', () => t.bounds.reload())
    await step('entry', () => t.registration.reloadAll())
    await step('federation', () => t.federation?.sync())
    await step('bundle', () => t.federated.applyRemoteChange(''))
    await step('bundle', () => t.localBundle?.refresh())
    return
  }
  const by = groupByKind(ev.changes)
  // Revocations first: the security-relevant state is enforced before anything else is pushed.
  if (by.revocation) await step('revocation', () => t.revocations.reload())
  if (by.node) await step('node', () => t.nodes.applyNodeChanges(by.node!.map((c) => c.key)))
  if (by.bounds) await step('bounds', () => t.bounds.reload())
  if (by.entry) await step('entry', () => t.registration.applyRemoteEntryChanges(by.entry!.map((c) => c.key)))
  if (by.bundle)
    for (const td of new Set(by.bundle.map((c) => c.key)))
      await step('bundle', () => (td === t.localBundle?.trustDomain ? t.localBundle.refresh() : t.federated.applyRemoteChange(td)))
  if (by.federation) await step('federation', () => t.federation?.sync())
}

function groupByKind(changes: readonly DataStoreChange[]): Partial<Record<DataStoreChange['kind'], DataStoreChange[]>> {
  const out: Partial<Record<DataStoreChange['kind'], DataStoreChange[]>> = {}
  for (const c of changes) (out[c.kind] ??= []).push(c)
  return out
}
