import { AsyncLocalStorage } from 'node:async_hooks'
import { IdentityError } from '../../../errors/index.js'
import type {
  AttestedNodeStore,
  BundleStore,
  CaJournalStore,
  DataStore,
  EntryStore,
  JoinTokenStore,
  KvStore,
  LiveInstanceStore,
  RevocationStore,
} from '../types.js'

/** The synchronous twin of a store interface: what an implementation writes. */
export type Sync<T> = {
  [K in keyof T]: T[K] extends (...args: infer A) => Promise<infer R> ? (...args: A) => R : never
}

/**
 * Synchronous operations of one implementation. Each operation must be atomic
 * on its own: it either completes or throws with nothing changed.
 */
export interface SyncStores {
  entries: Sync<EntryStore>
  nodes: Sync<AttestedNodeStore>
  joinTokens: Sync<JoinTokenStore>
  bundles: Sync<BundleStore>
  journal: Sync<CaJournalStore>
  kv: Sync<KvStore>
  liveInstances: Sync<LiveInstanceStore>
  revocations: Sync<RevocationStore>
}

/** How an implementation opens, commits and rolls back (nested) transactions. depth 0 = outermost. */
export interface TxDriver {
  begin(depth: number): void
  commit(depth: number): void
  rollback(depth: number): void
  close(): void
}

const STORE_NAMES = ['entries', 'nodes', 'joinTokens', 'bundles', 'journal', 'kv', 'liveInstances', 'revocations'] as const

/** A FIFO async lock. */
class Mutex {
  #held = false
  readonly #waiters: (() => void)[] = []

  get idle(): boolean {
    return !this.#held && this.#waiters.length === 0
  }

  acquire(): Promise<() => void> {
    return new Promise((resolve) => {
      const grant = (): void => {
        this.#held = true
        let released = false
        resolve(() => {
          if (released) return
          released = true
          this.#held = false
          const next = this.#waiters.shift()
          if (next !== undefined) next()
        })
      }
      if (this.idle) grant()
      else this.#waiters.push(grant)
    })
  }
}

/**
 * One level of transaction nesting: the root (no transaction), an open
 * transaction, or a savepoint inside it. Operations of a level wait for its
 * lock, which a child transaction holds until it commits or rolls back.
 */
interface Level {
  readonly depth: number
  readonly parent: Level | undefined
  readonly lock: Mutex
  active: boolean
}

function alive(level: Level): boolean {
  for (let l: Level | undefined = level; l !== undefined; l = l.parent) if (!l.active) return false
  return true
}

function isAncestor(level: Level, of: Level | undefined): boolean {
  for (let l = of?.parent; l !== undefined; l = l.parent) if (l === level) return true
  return false
}

/**
 * Turns synchronous, individually atomic operations into the async DataStore:
 * every call waits for the store's lock, and `tx` holds that lock from BEGIN
 * to COMMIT, so no outside write ever joins an open transaction.
 */
export function createLockedDataStore(sync: SyncStores, driver: TxDriver): DataStore {
  // Tells which transaction (if any) a call comes from, to refuse an outer store used inside tx(). It is enabled only
  // while a transaction is open: an enabled AsyncLocalStorage hooks every promise of the process, which costs the hot
  // paths (which never open one) for nothing.
  const als = new AsyncLocalStorage<Level>()
  let openTx = 0
  let closed = false

  const closedError = (): IdentityError => new IdentityError('ERR_DATASTORE', 'datastore is closed')

  function guard(level: Level): void {
    if (closed) throw closedError()
    if (!alive(level)) throw new TypeError('datastore: this transaction has already finished')
    const current = als.getStore()
    if (current !== undefined && current.active && isAncestor(level, current)) {
      throw new TypeError('datastore: called from inside tx() on an outer store; use the DataStore passed to the tx callback')
    }
  }

  function run<R>(level: Level, fn: () => R): Promise<R> {
    try {
      guard(level)
      if (level.lock.idle) return Promise.resolve(fn())
    } catch (err) {
      return Promise.reject(err)
    }
    return level.lock.acquire().then((release) => {
      try {
        guard(level)
        return fn()
      } finally {
        release()
      }
    })
  }

  async function tx<T>(level: Level, fn: (ds: DataStore) => Promise<T>): Promise<T> {
    if (typeof fn !== 'function') throw new TypeError('tx needs a function')
    guard(level)
    const release = await level.lock.acquire()
    try {
      guard(level)
      const child: Level = { depth: level.depth + 1, parent: level, lock: new Mutex(), active: true }
      driver.begin(child.depth - 1)
      let result: T
      openTx++
      try {
        result = await als.run(child, () => fn(view(child)))
      } catch (err) {
        child.active = false
        if (alive(level)) driver.rollback(child.depth - 1)
        throw err
      } finally {
        if (--openTx === 0) als.disable()
      }
      child.active = false
      // Wait for a nested transaction the callback started but did not await.
      const drain = await child.lock.acquire()
      drain()
      if (!alive(level)) throw new TypeError('datastore: the enclosing transaction finished before this one')
      driver.commit(child.depth - 1)
      return result
    } finally {
      release()
    }
  }

  function view(level: Level): DataStore {
    const ds: Record<string, unknown> = {}
    for (const name of STORE_NAMES) {
      const store = sync[name] as unknown as Record<string, (...args: unknown[]) => unknown>
      const wrapped: Record<string, unknown> = {}
      for (const method of Object.keys(store)) {
        const f = store[method] as (...args: unknown[]) => unknown
        wrapped[method] = (...args: unknown[]) => run(level, () => f.apply(store, args))
      }
      ds[name] = Object.freeze(wrapped)
    }
    ds.tx = <T>(fn: (ds: DataStore) => Promise<T>): Promise<T> => tx(level, fn)
    ds.close =
      level.depth === 0
        ? async (): Promise<void> => {
            if (closed) return
            const current = als.getStore()
            if (current !== undefined && current.active) throw new TypeError('datastore: close() called inside tx()')
            const release = await level.lock.acquire()
            try {
              if (closed) return
              closed = true
              driver.close()
            } finally {
              release()
            }
          }
        : (): Promise<void> => Promise.reject(new TypeError('datastore: close() called on a transaction'))
    return Object.freeze(ds) as unknown as DataStore
  }

  return view({ depth: 0, parent: undefined, lock: new Mutex(), active: true })
}
