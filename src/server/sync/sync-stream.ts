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
}

export interface SyncStreamsDeps {
  registration: Pick<RegistrationService, 'authorizedEntries' | 'onChange'>
  bounds: Pick<BoundsService, 'allowsNode' | 'federationFor' | 'onChange'>
  ca: Pick<CaManager, 'bundle' | 'onBundleChange'>
  federated: Pick<FederatedBundles, 'listFor' | 'onChange'>
  /** Revoked instances and quarantined prefixes, pushed to every agent as they change; absent, none are sent. */
  revocations?: Pick<RevocationService, 'active' | 'onChange'>
  log: Logger
  /** How often an open stream re-authenticates its agent (default 30 s). */
  recheckMs?: number
}

export interface SyncStreamOptions {
  /** Sends one update to the agent. */
  send(update: SyncUpdate): void
  /** The agent, authenticated again by its current SVID (rejects when it was evicted or banned). */
  reauthenticate(): Promise<AttestedNode>
  /** Aborted when the agent goes away: the stream then ends normally. */
  signal: AbortSignal
}

/**
 * The Sync stream of each agent: its authorized entries (those whose
 * namespace bounds its node meets), the local bundle and the federated
 * bundles its entries may use, first in full, then as changes: every entry
 * write, bundle rotation, federated refresh or bounds change pushes what it
 * changed. Pushes are serialised; a failing push or re-authentication ends
 * the stream with its error.
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
      if (!empty) opts.send(u)
    }

    await new Promise<void>((resolve, reject) => {
      const unsubs: (() => void)[] = []
      let finished = false
      const done = (err?: unknown) => {
        if (finished) return
        finished = true
        for (const u of unsubs) u()
        clearInterval(timer)
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
      const timer = setInterval(() => {
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
      }, d.recheckMs ?? RECHECK_MS)
      timer.unref()
      opts.signal.addEventListener('abort', () => done())
      log.debug({}, 'Sync stream opened')
      schedule()
    })
  }
}
