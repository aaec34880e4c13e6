/**
 * Domain records and the small repository interfaces of the server's datastore.
 * Plain data only: IDs are strings (validated above this layer), times are epoch
 * milliseconds, TTLs are seconds. Implementations: sqlite (default), postgres
 * (several servers on one database), memory (tests).
 */

export interface Selector {
  type: string
  value: string
}

export interface RegistrationEntry {
  /** Opaque, server-generated (UUID v4). */
  id: string
  spiffeId: string
  parentId: string
  /** Sorted, unique by (type, value). */
  selectors: Selector[]
  /** 0 = the server default. */
  x509SvidTtl: number
  jwtSvidTtl: number
  dnsNames: string[]
  /** Trust domain names (`partner.example`). */
  federatesWith: string[]
  hint: string
  admin: boolean
  downstream: boolean
  /** The entry itself expires (epoch ms); null = never. */
  expiresAt: number | null
  createdAt: number
  updatedAt: number
  /** Incremented on every update; starts at 1. */
  revision: number
}

/** What a caller supplies to create an entry; the store fills id, times and revision. */
export type NewEntry = Omit<RegistrationEntry, 'id' | 'createdAt' | 'updatedAt' | 'revision'> & { id?: string }

/** Fields an update may change. */
export type EntryPatch = Partial<Omit<RegistrationEntry, 'id' | 'createdAt' | 'updatedAt' | 'revision'>>

export type SelectorMatch = 'exact' | 'subset' | 'superset' | 'any'

/** How many parents one `parentIds` filter may name. */
export const MAX_PARENT_IDS = 1000

export interface EntryFilter {
  spiffeId?: string
  parentId?: string
  /** Entries whose parent is any of these (at most MAX_PARENT_IDS; an empty list matches nothing). */
  parentIds?: readonly string[]
  /**
   * exact: the entry's selectors equal the set; subset: the entry's selectors are
   * a subset of the set (what a workload with these selectors may have);
   * superset: the entry has at least these; any: shares at least one.
   * An entry without selectors never matches `subset` (it would match everyone),
   * and an empty set matches nothing under `subset` and `any`, everything under `superset`.
   */
  selectors?: { set: Selector[]; match: SelectorMatch }
  federatesWith?: string
  hint?: string
}

/** Lists are ordered by key (entry id, agent id); '' as nextPageToken means the last page. */
export interface Page {
  /** 0 or absent = everything; negative → RangeError. */
  pageSize?: number
  /** Opaque token returned by the previous page; a malformed one → ERR_INVALID_ARGUMENT. */
  pageToken?: string
}

export interface EntryStore {
  /**
   * Throws ERR_ALREADY_EXISTS (details.entryId = the existing entry) when an entry with
   * the same spiffeId, parentId and selectors exists, or when `id` is taken.
   * Malformed input (negative TTL, non-boolean flag…) throws TypeError / RangeError.
   */
  create(entry: NewEntry): Promise<RegistrationEntry>
  /** Throws ERR_ENTRY_NOT_FOUND. */
  get(id: string): Promise<RegistrationEntry>
  /** Returns undefined instead of throwing. */
  find(id: string): Promise<RegistrationEntry | undefined>
  /**
   * Throws ERR_ENTRY_NOT_FOUND; with `expectedRevision`, ERR_INVALID_ARGUMENT when the stored
   * revision differs; ERR_ALREADY_EXISTS when the result would duplicate another entry.
   */
  update(id: string, patch: EntryPatch, opts?: { expectedRevision?: number }): Promise<RegistrationEntry>
  /** Throws ERR_ENTRY_NOT_FOUND. Returns the deleted entry. */
  delete(id: string): Promise<RegistrationEntry>
  list(filter?: EntryFilter, page?: Page): Promise<{ entries: RegistrationEntry[]; nextPageToken: string }>
  count(filter?: EntryFilter): Promise<number>
  /** Deletes entries whose expiresAt < now; returns them. */
  pruneExpired(now: number): Promise<RegistrationEntry[]>
}

export interface AttestedNode {
  /** spiffe://<td>/warrant/agent/<attestor>/<id> */
  agentId: string
  attestor: string
  selectors: Selector[]
  /** Serial number (hex) of the agent's current X.509-SVID; '' once evicted. */
  serial: string
  /** Expiry of the current agent SVID (epoch ms). */
  expiresAt: number
  /** Serial of the agent SVID before the last renewal, accepted until the new one is used. */
  previousSerial: string
  banned: boolean
  canReattest: boolean
  createdAt: number
  updatedAt: number
}

export interface AttestedNodeFilter {
  attestor?: string
  banned?: boolean
  /** Nodes whose selectors include all of these. */
  selectors?: Selector[]
  expiresBefore?: number
}

export interface AttestedNodeStore {
  /** Inserts, or replaces an existing record with the same agentId (re-attestation). */
  upsert(node: Omit<AttestedNode, 'createdAt' | 'updatedAt'>): Promise<AttestedNode>
  find(agentId: string): Promise<AttestedNode | undefined>
  /** Throws ERR_NOT_FOUND. */
  get(agentId: string): Promise<AttestedNode>
  /** Throws ERR_NOT_FOUND. */
  update(agentId: string, patch: Partial<Pick<AttestedNode, 'serial' | 'previousSerial' | 'expiresAt' | 'banned' | 'selectors'>>): Promise<AttestedNode>
  /** Throws ERR_NOT_FOUND. */
  delete(agentId: string): Promise<AttestedNode>
  list(filter?: AttestedNodeFilter, page?: Page): Promise<{ nodes: AttestedNode[]; nextPageToken: string }>
  count(filter?: AttestedNodeFilter): Promise<number>
}

export interface JoinToken {
  /** SHA-256 hex of the token: the token itself is never stored. */
  tokenHash: string
  expiresAt: number
  /** Optional SPIFFE ID alias the operator asked for (`token generate -spiffeID`). */
  spiffeId: string
  createdAt: number
}

export interface JoinTokenStore {
  /** Throws ERR_ALREADY_EXISTS for a tokenHash already stored. */
  create(token: Omit<JoinToken, 'createdAt'>): Promise<JoinToken>
  /**
   * Atomically deletes and returns the token (one use). Returns undefined when
   * it does not exist (never issued, or already used). Expiry is the caller's check.
   */
  consume(tokenHash: string): Promise<JoinToken | undefined>
  pruneExpired(now: number): Promise<number>
  count(): Promise<number>
}

export interface BundleRecord {
  /** Trust domain name (`corp.example`). */
  trustDomain: string
  /** The SPIFFE bundle document (JSON text). */
  document: string
  sequence: number
  updatedAt: number
}

export interface BundleStore {
  /** Replaces the stored bundle for that trust domain. */
  put(record: Omit<BundleRecord, 'updatedAt'>): Promise<BundleRecord>
  get(trustDomain: string): Promise<BundleRecord | undefined>
  list(): Promise<BundleRecord[]>
  /** Throws ERR_NOT_FOUND. */
  delete(trustDomain: string): Promise<void>
}

/** The CA's rotation journal: opaque JSON kept under a name (one per CA kind). */
export interface CaJournalStore {
  get(name: string): Promise<string | undefined>
  put(name: string, json: string): Promise<void>
}

/** Generic key/value for small server state (federation relationships, bounds…). */
export interface KvStore {
  get(namespace: string, key: string): Promise<string | undefined>
  put(namespace: string, key: string, value: string): Promise<void>
  delete(namespace: string, key: string): Promise<boolean>
  list(namespace: string): Promise<{ key: string; value: string }[]>
}

/**
 * One live instance counted under a namespace bound's `max_instances`: the
 * instance key (`<agent id>|<entry or instance id>`) holds a place under the
 * prefix until its last SVID expires or its process ends.
 */
export interface LiveInstance {
  prefix: string
  instanceKey: string
  /** Expiry of the instance's latest SVID (epoch ms). */
  expiresAt: number
}

/** Live instances under `max_instances` limits; kept so a restart keeps every limit. */
export interface LiveInstanceStore {
  /** Records the instance under its prefix; an existing record keeps the later of the two expiries. Returns the stored record. */
  put(instance: LiveInstance): Promise<LiveInstance>
  /** The instances under `prefix` whose expiresAt is after `now`, ordered by instance key. */
  list(prefix: string, now: number): Promise<LiveInstance[]>
  /** Removes the instance under every prefix; returns how many records were removed. */
  release(instanceKey: string): Promise<number>
  /** Removes the records whose expiresAt is at or before `now`; returns how many. */
  pruneExpired(now: number): Promise<number>
}

/** What a revocation covers: one per-instance identity (its instance ID or SPIFFE ID), or every SPIFFE ID under a path prefix. */
export type RevocationKind = 'instance' | 'prefix'

/**
 * A revoked instance or a quarantined SPIFFE ID prefix: no SVID is issued or
 * served for what it covers while it is active (expiresAt null or after now).
 */
export interface Revocation {
  /** The sequence number: assigned in increasing order, never reused (not even after a delete or sweep). */
  id: number
  kind: RevocationKind
  /** An instance ID or a SPIFFE ID (kind instance), or a SPIFFE ID path prefix (kind prefix). */
  value: string
  /** '' when none was given. */
  reason: string
  createdAt: number
  /** Optional end of a prefix quarantine (epoch ms); null = none. */
  notAfter: number | null
  /** When the record stops applying and may be dropped (epoch ms); null = never. */
  expiresAt: number | null
}

export type NewRevocation = Omit<Revocation, 'id' | 'createdAt'>

export interface RevocationStore {
  /**
   * Stores a revocation. When one with the same kind and value is stored and has
   * not expired (by the store's clock), returns it unchanged with `created`
   * false (an expired one is replaced). Malformed input throws TypeError / RangeError.
   */
  create(r: NewRevocation): Promise<{ revocation: Revocation; created: boolean }>
  find(id: number): Promise<Revocation | undefined>
  /** Ordered by id; with `now`, only those still active at `now` (expiresAt null or after it). */
  list(opts?: { now?: number }): Promise<Revocation[]>
  /** Throws ERR_NOT_FOUND. Returns the deleted record. */
  delete(id: number): Promise<Revocation>
  /** Deletes the records whose expiresAt is at or before `now`; returns them. */
  pruneExpired(now: number): Promise<Revocation[]>
}

/** What a change-feed record is about. */
export type DataStoreChangeKind = 'entry' | 'node' | 'bundle' | 'revocation' | 'bounds' | 'federation' | 'authority' | 'task'

/**
 * One committed change: which record changed, not its new value (read it, or
 * learn it is gone). Node changes are bans, selector changes, attestations and
 * deletions (not SVID renewals); bounds, federation, authority and task changes
 * are those of the kv namespaces `bounds`, `federation`, `ca_authorities` and `tasks`.
 */
export interface DataStoreChange {
  /** Increases with every change, in commit order, across every server of the database. */
  seq: number
  kind: DataStoreChangeKind
  /** Entry id, agent id, trust domain, revocation id (decimal), or the kv key (bounds prefix, federation trust domain, server ID, task id). */
  key: string
  op: 'put' | 'delete'
  /** When it was committed (epoch ms, the writing server's clock). */
  at: number
}

export type ChangeFeedEvent =
  /** Changes after the previous event's seq, in seq order; `seq` is the last one's. */
  | { type: 'changes'; changes: DataStoreChange[]; seq: number }
  /**
   * The feed cannot say what changed since `fromSeq` (those records were pruned):
   * reload everything, then carry on; changes after `seq` follow.
   */
  | { type: 'reset'; seq: number }

export interface ChangeFeed {
  /** The sequence number the subscriber has been given everything up to. */
  readonly seq: number
  /** Stops listening; idempotent. */
  close(): Promise<void>
}

export interface DataStore {
  entries: EntryStore
  nodes: AttestedNodeStore
  joinTokens: JoinTokenStore
  bundles: BundleStore
  journal: CaJournalStore
  kv: KvStore
  liveInstances: LiveInstanceStore
  revocations: RevocationStore
  /**
   * Runs `fn` in one transaction: all of its writes happen, or none (a throw rolls
   * back and rethrows the same error). Transactions run one at a time and other
   * callers wait until it ends. Inside `fn` use only the store passed to it: the
   * outer store throws TypeError there (instead of deadlocking), and the passed
   * store throws TypeError once the transaction is over. `tx` on the passed store
   * nests (a savepoint: its throw undoes only its own writes).
   */
  tx<T>(fn: (ds: DataStore) => Promise<T>): Promise<T>
  /** Waits for the running transaction, then closes; idempotent. Later calls reject with ERR_DATASTORE. */
  close(): Promise<void>
  /**
   * Optional (postgres): follows every change committed to the database by any
   * server, pushed (LISTEN/NOTIFY), with no polling. Resolves once listening,
   * with `seq` the sequence number the feed starts after: `fromSeq` when given
   * (the changes since then are delivered first, caught up from the change log),
   * else the current head (subscribe, then load the state: a change that lands in
   * between is delivered, and applying a change twice is harmless since it
   * only names the record). Events come one at a time, in order (an async
   * `onEvent` is awaited; a throw is logged and the feed moves on). A lost
   * connection is re-established with backoff and the feed resumes from the
   * last seq it delivered: nothing is missed, nothing is reloaded in full,
   * unless the log was pruned past that point (a `reset` event). Only on the
   * root store; the feed ends with `close()` of the feed or of the store.
   */
  changes?(opts: { fromSeq?: number }, onEvent: (event: ChangeFeedEvent) => void | Promise<void>): Promise<ChangeFeed>
}
