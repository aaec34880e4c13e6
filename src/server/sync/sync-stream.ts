import { F, type Logger } from '../../common/log/logger.js'
import type { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import type { BoundsService } from '../bounds/bounds-service.js'
import type { FederatedBundles } from '../bundle/federated.js'
import type { CaManager } from '../ca/manager.js'
import type { AttestedNode, BundleRecord, RegistrationEntry, Revocation } from '../datastore/types.js'
import type { RegistrationService } from '../registration/service.js'
import type { RevocationService } from '../revocation/revocation-service.js'
import { boundsSpiffeId } from '../registration/validate.js'

/** How often an open stream re-authenticates its agent (evicted or banned agents lose it; selectors may change). */
const RECHECK_MS = 30_000

/**
 * Entries of one Sync message, by their estimated encoded size: 1 MiB, a
 * quarter of gRPC's usual 4 MB message limit (an entry's encoding is at most
 * a few hundred bytes more than the estimate, and at most 2,000 entries of a
 * page could each add that). 20,000 typical entries make 5 pages.
 */
export const SYNC_PAGE_BYTES = 1024 * 1024

/** One update of an agent's Sync stream: what changed since the previous one (everything in the first, `full`). */
export interface SyncUpdate {
  full: boolean
  /** Entries new or changed (all of them when `full`); undefined when the entries were not looked at. */
  entries?: RegistrationEntry[]
  deletedEntryIds?: string[]
  /** The local trust domain's bundle, when it changed. */
  bundle?: SpiffeBundle
  /** The federated bundles the agent gets, when that set or any of them changed. */
  federatedBundles?: BundleRecord[]
  /** The revocations in force, full set, when they changed (always in the first update when revocations are served). */
  revocations?: Revocation[]
  /** This is a page of a larger update: the next message continues it (see pageSyncUpdate). */
  more?: boolean
}

/** An entry's protobuf size, give or take the varints and tags (a few bytes per field). */
export function estimatedEntryBytes(e: RegistrationEntry): number {
  let n = 64 + e.id.length + e.spiffeId.length + e.parentId.length + e.hint.length
  for (const s of e.selectors) n += 8 + s.type.length + s.value.length
  for (const d of e.dnsNames) n += 4 + d.length
  for (const t of e.federatesWith) n += 4 + t.length
  return n
}

/**
 * Splits an update whose entries exceed `pageBytes` into pages: the first
 * carries `full`, the deletions, the bundles and the revocations and as many
 * entries as fit; the next ones only entries; all but the last have `more`.
 * An update that fits is returned as it is. An agent applies the pages as one
 * update (an agent that does not know `more` applies them one by one: the first
 * full page, then the rest as additions, and ends with the same set).
 */
export function pageSyncUpdate(u: SyncUpdate, pageBytes = SYNC_PAGE_BYTES): SyncUpdate[] {
  const entries = u.entries ?? []
  let total = 0
  for (const e of entries) total += estimatedEntryBytes(e)
  if (total <= pageBytes) return [u]
  const pages: SyncUpdate[] = []
  let page: RegistrationEntry[] = []
  let size = 0
  const flush = () => {
    const p: SyncUpdate = pages.length === 0 ? { ...u, entries: page } : { full: false, entries: page }
    p.more = true
    pages.push(p)
    page = []
    size = 0
  }
  for (const e of entries) {
    const b = estimatedEntryBytes(e)
    if (page.length > 0 && size + b > pageBytes) flush()
    page.push(e)
    size += b
  }
  flush()
  delete pages[pages.length - 1]!.more
  return pages
}

export interface SyncStreamsDeps {
  registration: Pick<RegistrationService, 'authorizedEntries' | 'onChange'>
  bounds: Pick<BoundsService, 'allowsNode' | 'federationFor' | 'onChange'>
  ca: Pick<CaManager, 'bundle' | 'onBundleChange'>
  federated: Pick<FederatedBundles, 'listFor' | 'onChange'>
  /** Revoked instances and quarantined prefixes, pushed to every agent as they change; absent, none are sent. */
  revocations?: Pick<RevocationService, 'active' | 'onChange'>
  log: Logger
  /** Node records changed (ban, eviction; any server's, with a change feed): the agent's stream re-authenticates at once. */
  nodes?: { onNodeChange(fn: (agentId: string) => void): () => void }
  /** How often an open stream re-authenticates its agent (default 30 s). */
  recheckMs?: number
  /** Entries per message, by estimated size (default SYNC_PAGE_BYTES). */
  pageBytes?: number
}

export interface SyncStreamOptions {
  /** Sends one update to the agent. */
  send(update: SyncUpdate): void
  /** The agent, authenticated again by its current SVID (rejects when it was evicted or banned). */
  reauthenticate(): Promise<AttestedNode>
  /**
   * When the SVID the agent's connection authenticated with expires (epoch ms): the stream re-authenticates then,
   * which fails for an expired SVID and ends the stream, instead of at the next periodic recheck.
   */
  credentialExpiresAt?: number
  /** Aborted when the agent goes away: the stream then ends normally. */
  signal: AbortSignal
}

/**
 * The Sync stream of each agent: its authorized entries (those whose
 * namespace bounds its node meets), the local bundle and the federated
 * bundles its entries may use, first in full, then as changes: every entry
 * write, bundle rotation, federated refresh or bounds change pushes what it
 * changed. An update with more entries than fit in a page is sent as pages
 * (pageSyncUpdate), so no message nears gRPC's 4 MB limit however many
 * entries an agent has. Pushes are serialised; a failing push or
 * re-authentication ends the stream with its error.
 */
export class SyncStreams {
  readonly #d: SyncStreamsDeps

  constructor(deps: SyncStreamsDeps) {
    this.#d = deps
  }

  /** Serves `node`'s stream until `opts.signal` aborts (resolves) or a push or re-authentication fails (rejects). */
  async serve(node: AttestedNode, opts: SyncStreamOptions): Promise<void> {
    const d = this.#d
    const log = d.log.child({ [F.AGENT_ID]: node.agentId })
    let sent = new Map<string, number>() // entry id → revision
    let first = true
    let pending: Promise<void> = Promise.resolve()
    let dirtyEntries = true
    let dirtyBundle = true
    let dirtyFederated = true
    let dirtyRevocations = d.revocations !== undefined
    // Trust domains whose bundles this agent gets: those its entries federate with, within the current bounds.
    let federatesWith = new Set<string>()

    const push = async () => {
      const u: SyncUpdate = { full: first }
      if (dirtyEntries) {
        dirtyEntries = false
        // Entries whose namespace bounds the node does not meet are not served to it.
        const entries = (await d.registration.authorizedEntries(node)).filter((e) => d.bounds.allowsNode(boundsSpiffeId(e.spiffeId), node.selectors))
        const next = new Map(entries.map((e) => [e.id, e.revision]))
        u.entries = first ? entries : entries.filter((e) => sent.get(e.id) !== e.revision)
        u.deletedEntryIds = first ? [] : [...sent.keys()].filter((id) => !next.has(id))
        sent = next
        const tds = d.bounds.federationFor(entries, boundsSpiffeId)
        if (tds.size !== federatesWith.size || [...tds].some((t) => !federatesWith.has(t))) dirtyFederated = true
        federatesWith = tds
      }
      if (dirtyBundle) {
        dirtyBundle = false
        u.bundle = d.ca.bundle()
      }
      if (dirtyFederated) {
        dirtyFederated = false
        u.federatedBundles = await d.federated.listFor(federatesWith)
      }
      if (dirtyRevocations && d.revocations) {
        dirtyRevocations = false
        u.revocations = d.revocations.active()
      }
      const empty = !first && !u.bundle && !u.federatedBundles && !u.revocations && (u.entries?.length ?? 0) === 0 && (u.deletedEntryIds?.length ?? 0) === 0
      first = false
      if (!empty) for (const page of pageSyncUpdate(u, d.pageBytes)) opts.send(page)
    }

    await new Promise<void>((resolve, reject) => {
      const unsubs: (() => void)[] = []
      let finished = false
      const done = (err?: unknown) => {
        if (finished) return
        finished = true
        for (const u of unsubs) u()
        clearInterval(timer)
        clearTimeout(expiry)
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- err is the stream's own error, passed on
        if (err) reject(err)
        else resolve()
      }
      const schedule = () => {
        pending = pending.then(() => (finished ? undefined : push())).catch((err: unknown) => done(err))
      }
      unsubs.push(
        d.registration.onChange(() => {
          dirtyEntries = true
          schedule()
        }),
      )
      unsubs.push(
        d.ca.onBundleChange(() => {
          dirtyBundle = true
          schedule()
        }),
      )
      unsubs.push(
        d.federated.onChange(() => {
          dirtyFederated = true
          schedule()
        }),
      )
      // A revocation reaches every connected agent at once (push, not poll).
      if (d.revocations)
        unsubs.push(
          d.revocations.onChange(() => {
            dirtyRevocations = true
            schedule()
          }),
        )
      // Changed bounds can withdraw entries and federated bundles (or give them back).
      unsubs.push(
        d.bounds.onChange(() => {
          dirtyEntries = true
          schedule()
        }),
      )
      // An evicted or banned agent loses its stream; node selectors may also change on re-attestation.
      const recheck = () => {
        opts
          .reauthenticate()
          .then((n) => {
            if (JSON.stringify(n.selectors) !== JSON.stringify(node.selectors)) {
              node = n
              dirtyEntries = true
              schedule()
            }
          })
          .catch((err: unknown) => done(err))
      }
      const timer = setInterval(recheck, d.recheckMs ?? RECHECK_MS)
      // the connection's SVID expiring ends the stream then (a 1 ms margin past notAfter; timers cap at 2^31 - 1 ms)
      const expiry =
        opts.credentialExpiresAt === undefined ? undefined : setTimeout(recheck, Math.min(2 ** 31 - 1, Math.max(0, opts.credentialExpiresAt - Date.now() + 1)))
      expiry?.unref()
      if (d.nodes)
        unsubs.push(
          d.nodes.onNodeChange((id) => {
            if (id === node.agentId) recheck()
          }),
        )
      timer.unref()
      opts.signal.addEventListener('abort', () => done())
      log.debug({}, 'Sync stream opened')
      schedule()
    })
  }
}
