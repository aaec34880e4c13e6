import { type Clock, systemClock } from '../../../common/clock.js'
import { createLockedDataStore, type SyncStores, type TxDriver } from '../internal/locked-store.js'
import type { DataStore } from '../types.js'
import { emptyState, memoryContext, type MemoryState } from './context.js'
import { bundlesStore } from './stores/bundles.js'
import { entriesStore } from './stores/entries.js'
import { journalStore } from './stores/journal.js'
import { joinTokensStore } from './stores/join-tokens.js'
import { kvStore } from './stores/kv.js'
import { liveInstancesStore } from './stores/live-instances.js'
import { nodesStore } from './stores/nodes.js'
import { revocationsStore } from './stores/revocations.js'

/*
 * The memory datastore, in the SQLite datastore's shape: the state and the
 * transaction driver (snapshots) here; the shared copy, list, count and take
 * operations in context.ts; one module per store under stores/.
 */

export interface MemoryDataStoreOptions {
  /** Source of createdAt / updatedAt; defaults to the system clock. */
  clock?: Clock
}

/**
 * An in-memory DataStore with the same semantics as the SQLite one (the shared
 * conformance suite checks both), for unit tests of other components.
 * Transactions snapshot the state and restore it on rollback.
 */
export function createMemoryDataStore(opts: MemoryDataStoreOptions = {}): DataStore {
  let state = emptyState()
  const snapshots: MemoryState[] = []
  const driver: TxDriver = {
    begin() {
      snapshots.push(structuredClone(state))
    },
    commit() {
      snapshots.pop()
    },
    rollback() {
      const s = snapshots.pop()
      if (s !== undefined) state = s
    },
    close() {
      state = emptyState()
      snapshots.length = 0
    },
  }
  return createLockedDataStore(
    memoryStores(opts.clock ?? systemClock, () => state),
    driver,
  )
}

function memoryStores(clock: Clock, current: () => MemoryState): SyncStores {
  const ctx = memoryContext(clock, current)
  return {
    entries: entriesStore(ctx),
    nodes: nodesStore(ctx),
    joinTokens: joinTokensStore(ctx),
    bundles: bundlesStore(ctx),
    journal: journalStore(ctx),
    kv: kvStore(ctx),
    liveInstances: liveInstancesStore(ctx),
    revocations: revocationsStore(ctx),
  }
}
