/**
 * The Shared Signals transmitter's store: its own SQLite file (WAL,
 * synchronous=FULL, 0600) beside the broker's, so a stream's unacknowledged
 * events survive a restart. Streams belong to the receiver (SPIFFE ID) that
 * created them; events are kept per stream in order (`seq`) until that
 * receiver acknowledges them; `last_revocation_seq` is how far the broker's
 * revocations have been turned into events, so a crash between a revocation
 * and its events loses nothing (the transmitter catches up at start).
 */
import { chmodSync, closeSync, constants, mkdirSync, openSync } from 'node:fs'
import { dirname, resolve } from 'node:path'
import Database from 'better-sqlite3'
import { IdentityError } from '../../errors/identity-error.js'
import type { Narrowing } from '../narrowings.js'
import type { StepUp, StepUpRequest, StepUpStore } from '../step-ups.js'

type Db = Database.Database

const SCHEMA = `
CREATE TABLE IF NOT EXISTS ssf_streams (
  stream_id TEXT PRIMARY KEY NOT NULL,
  owner TEXT NOT NULL,
  aud TEXT NOT NULL,
  events_requested TEXT NOT NULL,
  events_delivered TEXT NOT NULL,
  delivery_method TEXT NOT NULL,
  description TEXT,
  status TEXT NOT NULL CHECK (status IN ('enabled', 'paused', 'disabled')),
  status_reason TEXT,
  created_at INTEGER NOT NULL,
  verified_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ssf_streams_owner ON ssf_streams (owner);
CREATE TABLE IF NOT EXISTS ssf_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  stream_id TEXT NOT NULL REFERENCES ssf_streams (stream_id) ON DELETE CASCADE,
  jti TEXT NOT NULL,
  claims TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  UNIQUE (stream_id, jti)
) STRICT;
-- Receiver side: our stream at each transmitter, and every signal received with what was done.
CREATE TABLE IF NOT EXISTS ssf_subscriptions (
  issuer TEXT PRIMARY KEY NOT NULL,
  stream_id TEXT NOT NULL,
  poll_url TEXT NOT NULL,
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ssf_received (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  issuer TEXT NOT NULL,
  jti TEXT NOT NULL,
  event_type TEXT NOT NULL,
  subject TEXT NOT NULL,
  decision TEXT NOT NULL,
  outcome TEXT NOT NULL,
  received_at INTEGER NOT NULL,
  UNIQUE (issuer, jti)
) STRICT;
-- Subjects a receiver removed from its stream (SSF 1.0 §8.1.3; default_subjects is ALL): canonical JSON.
CREATE TABLE IF NOT EXISTS ssf_removed_subjects (
  stream_id TEXT NOT NULL REFERENCES ssf_streams (stream_id) ON DELETE CASCADE,
  subject TEXT NOT NULL,
  PRIMARY KEY (stream_id, subject)
) STRICT, WITHOUT ROWID;
-- Ceiling narrowings a signal's policy made (src/broker/narrowings.ts), kept until they end.
CREATE TABLE IF NOT EXISTS ssf_narrowings (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  prefix TEXT NOT NULL,
  scopes TEXT NOT NULL,
  resources TEXT,
  not_after INTEGER NOT NULL,
  reason TEXT NOT NULL
) STRICT;
-- Step-ups a signal's policy made (src/broker/step-ups.ts): the next intent of an agent (or of each agent under a prefix)
-- goes to a human; kept until they end, are cleared by an operator, or (per agent) are satisfied by a human's approval.
CREATE TABLE IF NOT EXISTS ssf_step_ups (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  target TEXT NOT NULL CHECK (target IN ('instance', 'prefix')),
  value TEXT NOT NULL,
  clear_on_approval INTEGER NOT NULL CHECK (clear_on_approval IN (0, 1)),
  not_after INTEGER,
  issuer TEXT NOT NULL,
  jti TEXT NOT NULL,
  event_type TEXT NOT NULL,
  reason TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  cleared_at INTEGER,
  cleared_by TEXT,
  clear_reason TEXT
) STRICT;
CREATE TABLE IF NOT EXISTS ssf_step_up_satisfied (
  step_up_id INTEGER NOT NULL REFERENCES ssf_step_ups (id) ON DELETE CASCADE,
  agent TEXT NOT NULL,
  intent_id TEXT NOT NULL,
  approver TEXT NOT NULL,
  at INTEGER NOT NULL,
  PRIMARY KEY (step_up_id, agent)
) STRICT, WITHOUT ROWID;
-- SSF receivers that are not SPIFFE workloads (a SIEM, an IdP): OAuth clients the broker registered
-- (src/broker/ssf-clients.ts); only the SHA-256 of each secret is kept.
CREATE TABLE IF NOT EXISTS ssf_clients (
  client_id TEXT PRIMARY KEY NOT NULL,
  secret_sha256 BLOB NOT NULL CHECK (length(secret_sha256) = 32),
  created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ssf_state (
  name TEXT PRIMARY KEY NOT NULL,
  value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
`

/** Columns added after the first schema (push delivery, RFC 8935), added to older files at open. */
const ADDED_COLUMNS: readonly { table: string; column: string; ddl: string }[] = [
  { table: 'ssf_streams', column: 'push_endpoint', ddl: 'ALTER TABLE ssf_streams ADD COLUMN push_endpoint TEXT' },
  { table: 'ssf_streams', column: 'push_authorization', ddl: 'ALTER TABLE ssf_streams ADD COLUMN push_authorization TEXT' },
  { table: 'ssf_subscriptions', column: 'push_path', ddl: 'ALTER TABLE ssf_subscriptions ADD COLUMN push_path TEXT' },
  { table: 'ssf_subscriptions', column: 'push_secret_hash', ddl: 'ALTER TABLE ssf_subscriptions ADD COLUMN push_secret_hash TEXT' },
]

function addColumns(db: Db): void {
  for (const c of ADDED_COLUMNS) {
    const cols = db.prepare(`PRAGMA table_info(${c.table})`).all() as { name: string }[]
    if (!cols.some((x) => x.name === c.column)) db.exec(c.ddl)
  }
}

/** Our stream at a transmitter: polled at `pollUrl`, or pushed to us at `<issuer>/ssf/push/<pushPath>` with a bearer secret (its SHA-256 kept). */
export interface SubscriptionRecord {
  readonly issuer: string
  readonly streamId: string
  /** Poll delivery: the transmitter's poll endpoint; push delivery: empty. */
  readonly pollUrl: string
  readonly pushPath?: string
  /** base64url SHA-256 of the bearer secret the transmitter must send. */
  readonly pushSecretHash?: string
}

export type StreamStatus = 'enabled' | 'paused' | 'disabled'

export interface StreamRecord {
  readonly streamId: string
  readonly owner: string
  readonly aud: string
  readonly eventsRequested: readonly string[]
  readonly eventsDelivered: readonly string[]
  readonly deliveryMethod: string
  readonly description?: string
  readonly status: StreamStatus
  readonly statusReason?: string
  /** Epoch seconds. */
  readonly createdAt: number
  readonly verifiedAt?: number
  /** Push delivery (RFC 8935): the receiver's endpoint and the Authorization header value it asked for. */
  readonly pushEndpoint?: string
  readonly pushAuthorization?: string
}

export interface QueuedEvent {
  readonly seq: number
  readonly jti: string
  /** The SET claims (JSON), signed when delivered. */
  readonly claims: string
}

/** A signal this broker received as a receiver, and what it did. */
export interface ReceivedSignal {
  readonly id: number
  readonly issuer: string
  readonly jti: string
  readonly eventType: string
  readonly subject: unknown
  /** The policy's decision (src/signals/policy.ts). */
  readonly decision: unknown
  /** `applied`, `recorded` (no action), or `failed: <code>`. */
  readonly outcome: string
  /** Epoch seconds. */
  readonly receivedAt: number
}

interface StreamRow {
  stream_id: string
  owner: string
  aud: string
  events_requested: string
  events_delivered: string
  delivery_method: string
  description: string | null
  status: StreamStatus
  status_reason: string | null
  created_at: number
  verified_at: number | null
  push_endpoint: string | null
  push_authorization: string | null
}

interface SubscriptionRow {
  issuer: string
  stream_id: string
  poll_url: string
  push_path: string | null
  push_secret_hash: string | null
}

function toSubscription(r: SubscriptionRow): SubscriptionRecord {
  return {
    issuer: r.issuer,
    streamId: r.stream_id,
    pollUrl: r.poll_url,
    ...(r.push_path !== null ? { pushPath: r.push_path } : {}),
    ...(r.push_secret_hash !== null ? { pushSecretHash: r.push_secret_hash } : {}),
  }
}

function toStream(r: StreamRow): StreamRecord {
  return Object.freeze({
    streamId: r.stream_id,
    owner: r.owner,
    aud: r.aud,
    eventsRequested: JSON.parse(r.events_requested) as string[],
    eventsDelivered: JSON.parse(r.events_delivered) as string[],
    deliveryMethod: r.delivery_method,
    ...(r.description !== null ? { description: r.description } : {}),
    status: r.status,
    ...(r.status_reason !== null ? { statusReason: r.status_reason } : {}),
    createdAt: r.created_at,
    ...(r.verified_at !== null ? { verifiedAt: r.verified_at } : {}),
    ...(r.push_endpoint !== null ? { pushEndpoint: r.push_endpoint } : {}),
    ...(r.push_authorization !== null ? { pushAuthorization: r.push_authorization } : {}),
  })
}

/** An SSF receiver client the broker registered: only the SHA-256 of its secret. */
export interface SsfClientRecord {
  readonly clientId: string
  readonly secretSha256: Uint8Array
  /** Epoch seconds. */
  readonly createdAt: number
}

interface ClientRow {
  client_id: string
  secret_sha256: Buffer
  created_at: number
}

interface StepUpRow {
  id: number
  target: 'instance' | 'prefix'
  value: string
  clear_on_approval: number
  not_after: number | null
  issuer: string
  jti: string
  event_type: string
  reason: string
  created_at: number
  cleared_at: number | null
  cleared_by: string | null
  clear_reason: string | null
}

/** Step-ups that ended (cleared, or past their end) this long ago are dropped when a new one is recorded. */
const STEP_UP_KEEP_SECONDS = 30 * 86_400

export class SsfStore implements StepUpStore {
  readonly #db: Db

  private constructor(db: Db) {
    this.#db = db
  }

  /** Opens (creating 0600, directory 0700) the store at `path`; ':memory:' for a throwaway one. */
  static open(path: string): SsfStore {
    const inMemory = path === ':memory:'
    const file = inMemory ? path : resolve(path)
    let db: Db | undefined
    try {
      if (!inMemory) {
        mkdirSync(dirname(file), { recursive: true, mode: 0o700 })
        closeSync(openSync(file, constants.O_CREAT | constants.O_RDWR, 0o600))
        chmodSync(file, 0o600)
      }
      db = new Database(file)
      db.pragma('busy_timeout = 5000')
      if (!inMemory && db.pragma('journal_mode = WAL', { simple: true }) !== 'wal') throw new Error('journal_mode WAL was not applied')
      db.pragma('synchronous = FULL')
      db.pragma('foreign_keys = ON')
      db.exec(SCHEMA)
      addColumns(db)
    } catch (err) {
      db?.close()
      throw new IdentityError('ERR_DATASTORE', 'cannot open the shared signals store', { cause: err, details: { path: file } })
    }
    return new SsfStore(db)
  }

  close(): void {
    this.#db.close()
  }

  tx<T>(fn: () => T): T {
    return this.#db.transaction(fn).immediate()
  }

  insertStream(s: StreamRecord): void {
    this.#db
      .prepare(
        'INSERT INTO ssf_streams (stream_id, owner, aud, events_requested, events_delivered, delivery_method, description, status, status_reason, created_at, verified_at, push_endpoint, push_authorization) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)',
      )
      .run(
        s.streamId,
        s.owner,
        s.aud,
        JSON.stringify(s.eventsRequested),
        JSON.stringify(s.eventsDelivered),
        s.deliveryMethod,
        s.description ?? null,
        s.status,
        s.statusReason ?? null,
        s.createdAt,
        s.pushEndpoint ?? null,
        s.pushAuthorization ?? null,
      )
  }

  getStream(streamId: string): StreamRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM ssf_streams WHERE stream_id = ?').get(streamId) as StreamRow | undefined
    return r ? toStream(r) : undefined
  }

  listStreams(owner?: string): StreamRecord[] {
    const rows = (
      owner === undefined
        ? this.#db.prepare('SELECT * FROM ssf_streams ORDER BY created_at, stream_id').all()
        : this.#db.prepare('SELECT * FROM ssf_streams WHERE owner = ? ORDER BY created_at, stream_id').all(owner)
    ) as StreamRow[]
    return rows.map(toStream)
  }

  deleteStream(streamId: string): boolean {
    return this.#db.prepare('DELETE FROM ssf_streams WHERE stream_id = ?').run(streamId).changes > 0
  }

  setStatus(streamId: string, status: StreamStatus, reason: string | undefined): void {
    this.#db.prepare('UPDATE ssf_streams SET status = ?, status_reason = ? WHERE stream_id = ?').run(status, reason ?? null, streamId)
  }

  /** Replaces what a receiver may change of its stream (SSF 1.0 §8.1.1.3 and §8.1.1.4). */
  updateStream(streamId: string, u: { eventsRequested: readonly string[]; eventsDelivered: readonly string[]; description: string | undefined }): void {
    this.#db
      .prepare('UPDATE ssf_streams SET events_requested = ?, events_delivered = ?, description = ? WHERE stream_id = ?')
      .run(JSON.stringify(u.eventsRequested), JSON.stringify(u.eventsDelivered), u.description ?? null, streamId)
  }

  /** Marks a subject (canonical JSON) removed from a stream, or included again; returns whether anything changed. */
  setSubjectRemoved(streamId: string, subject: string, removed: boolean): boolean {
    const st = removed
      ? this.#db.prepare('INSERT INTO ssf_removed_subjects (stream_id, subject) VALUES (?, ?) ON CONFLICT DO NOTHING')
      : this.#db.prepare('DELETE FROM ssf_removed_subjects WHERE stream_id = ? AND subject = ?')
    return st.run(streamId, subject).changes > 0
  }

  /** The subjects (canonical JSON) removed from a stream. */
  removedSubjects(streamId: string): Set<string> {
    const rows = this.#db.prepare('SELECT subject FROM ssf_removed_subjects WHERE stream_id = ?').all(streamId) as { subject: string }[]
    return new Set(rows.map((r) => r.subject))
  }

  setVerifiedAt(streamId: string, at: number): void {
    this.#db.prepare('UPDATE ssf_streams SET verified_at = ? WHERE stream_id = ?').run(at, streamId)
  }

  /** Queues an event; false when the stream already holds `maxQueued` events (the event is not stored). */
  enqueue(streamId: string, jti: string, claims: string, at: number, maxQueued: number): boolean {
    if (this.queued(streamId) >= maxQueued) return false
    this.#db.prepare('INSERT INTO ssf_events (stream_id, jti, claims, created_at) VALUES (?, ?, ?, ?)').run(streamId, jti, claims, at)
    return true
  }

  queued(streamId: string): number {
    return (this.#db.prepare('SELECT COUNT(*) AS n FROM ssf_events WHERE stream_id = ?').get(streamId) as { n: number }).n
  }

  /** The oldest `limit` unacknowledged events of a stream, in order. */
  pending(streamId: string, limit: number): QueuedEvent[] {
    return this.#db.prepare('SELECT seq, jti, claims FROM ssf_events WHERE stream_id = ? ORDER BY seq LIMIT ?').all(streamId, limit) as QueuedEvent[]
  }

  /** Drops acknowledged (or refused) events of a stream; returns how many were held. */
  acknowledge(streamId: string, jtis: readonly string[]): number {
    const del = this.#db.prepare('DELETE FROM ssf_events WHERE stream_id = ? AND jti = ?')
    let n = 0
    for (const j of jtis) n += del.run(streamId, j).changes
    return n
  }

  getSubscription(issuer: string): SubscriptionRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM ssf_subscriptions WHERE issuer = ?').get(issuer) as SubscriptionRow | undefined
    return r ? toSubscription(r) : undefined
  }

  /** The push subscription whose endpoint path is `pushPath`. */
  subscriptionByPushPath(pushPath: string): SubscriptionRecord | undefined {
    const r = this.#db.prepare('SELECT * FROM ssf_subscriptions WHERE push_path = ?').get(pushPath) as SubscriptionRow | undefined
    return r ? toSubscription(r) : undefined
  }

  setSubscription(issuer: string, streamId: string, pollUrl: string, at: number, push?: { path: string; secretHash: string }): void {
    this.#db
      .prepare(
        'INSERT INTO ssf_subscriptions (issuer, stream_id, poll_url, created_at, push_path, push_secret_hash) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (issuer) DO UPDATE SET stream_id = excluded.stream_id, poll_url = excluded.poll_url, created_at = excluded.created_at, push_path = excluded.push_path, push_secret_hash = excluded.push_secret_hash',
      )
      .run(issuer, streamId, pollUrl, at, push?.path ?? null, push?.secretHash ?? null)
  }

  deleteSubscription(issuer: string): void {
    this.#db.prepare('DELETE FROM ssf_subscriptions WHERE issuer = ?').run(issuer)
  }

  /** Records a received signal once (by issuer and jti); false when it was already recorded. */
  recordReceived(r: Omit<ReceivedSignal, 'id'>): boolean {
    return (
      this.#db
        .prepare(
          'INSERT INTO ssf_received (issuer, jti, event_type, subject, decision, outcome, received_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (issuer, jti) DO NOTHING',
        )
        .run(r.issuer, r.jti, r.eventType, JSON.stringify(r.subject), JSON.stringify(r.decision), r.outcome, r.receivedAt).changes > 0
    )
  }

  isReceived(issuer: string, jti: string): boolean {
    return this.#db.prepare('SELECT 1 FROM ssf_received WHERE issuer = ? AND jti = ?').get(issuer, jti) !== undefined
  }

  /** Received signals after `sinceId`, oldest first. */
  listReceived(sinceId = 0, limit = 1000): ReceivedSignal[] {
    const rows = this.#db.prepare('SELECT * FROM ssf_received WHERE id > ? ORDER BY id LIMIT ?').all(sinceId, limit) as {
      id: number
      issuer: string
      jti: string
      event_type: string
      subject: string
      decision: string
      outcome: string
      received_at: number
    }[]
    return rows.map((r) => ({
      id: r.id,
      issuer: r.issuer,
      jti: r.jti,
      eventType: r.event_type,
      subject: JSON.parse(r.subject) as unknown,
      decision: JSON.parse(r.decision) as unknown,
      outcome: r.outcome,
      receivedAt: r.received_at,
    }))
  }

  /** Records a narrowing; those ended before `nowSec` are dropped at the same time. */
  addNarrowing(n: Narrowing, nowSec: number): void {
    this.tx(() => {
      this.#db.prepare('DELETE FROM ssf_narrowings WHERE not_after <= ?').run(nowSec)
      this.#db
        .prepare('INSERT INTO ssf_narrowings (prefix, scopes, resources, not_after, reason) VALUES (?, ?, ?, ?, ?)')
        .run(n.prefix, JSON.stringify(n.scopes), n.resources === undefined ? null : JSON.stringify(n.resources), n.notAfter, n.reason)
    })
  }

  /** The narrowings still in force at `nowSec`, oldest first. */
  listNarrowings(nowSec: number): Narrowing[] {
    const rows = this.#db.prepare('SELECT * FROM ssf_narrowings WHERE not_after > ? ORDER BY id').all(nowSec) as {
      prefix: string
      scopes: string
      resources: string | null
      not_after: number
      reason: string
    }[]
    return rows.map((r) => ({
      prefix: r.prefix,
      scopes: JSON.parse(r.scopes) as string[],
      ...(r.resources !== null ? { resources: JSON.parse(r.resources) as string[] } : {}),
      notAfter: r.not_after,
      reason: r.reason,
    }))
  }

  /** Records a step-up; those that ended more than 30 days before `nowSec` are dropped at the same time. */
  addStepUp(r: StepUpRequest, nowSec: number): StepUp {
    return this.tx(() => {
      const old = nowSec - STEP_UP_KEEP_SECONDS
      this.#db
        .prepare('DELETE FROM ssf_step_ups WHERE (cleared_at IS NOT NULL AND cleared_at <= ?) OR (not_after IS NOT NULL AND not_after <= ?)')
        .run(old, old)
      const id = this.#db
        .prepare(
          'INSERT INTO ssf_step_ups (target, value, clear_on_approval, not_after, issuer, jti, event_type, reason, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
        )
        .run(
          r.target,
          r.value,
          r.clearOnApproval ? 1 : 0,
          r.notAfter ?? null,
          r.signal.issuer,
          r.signal.jti,
          r.signal.eventType,
          r.reason,
          nowSec,
        ).lastInsertRowid
      return this.#stepUp(Number(id))!
    })
  }

  /** The step-ups not cleared and not ended at `nowSec` (every one kept with `includeEnded`), oldest first, with who satisfied them. */
  listStepUps(nowSec: number, includeEnded = false): StepUp[] {
    const rows = (
      includeEnded
        ? this.#db.prepare('SELECT * FROM ssf_step_ups ORDER BY id').all()
        : this.#db.prepare('SELECT * FROM ssf_step_ups WHERE cleared_at IS NULL AND (not_after IS NULL OR not_after > ?) ORDER BY id').all(nowSec)
    ) as StepUpRow[]
    return rows.map((r) => this.#toStepUp(r))
  }

  getStepUp(id: number): StepUp | undefined {
    return this.#stepUp(id)
  }

  /** Records that a human's approval of `intentId` satisfied step-up `id` for `agent`; false when it already was. */
  satisfyStepUp(id: number, s: { agent: string; intentId: string; approver: string }, at: number): boolean {
    return (
      this.#db
        .prepare('INSERT INTO ssf_step_up_satisfied (step_up_id, agent, intent_id, approver, at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING')
        .run(id, s.agent, s.intentId, s.approver, at).changes > 0
    )
  }

  /** Clears a step-up (an operator); false when it is unknown or already cleared. */
  clearStepUp(id: number, c: { by: string; reason?: string }, at: number): boolean {
    return (
      this.#db
        .prepare('UPDATE ssf_step_ups SET cleared_at = ?, cleared_by = ?, clear_reason = ? WHERE id = ? AND cleared_at IS NULL')
        .run(at, c.by, c.reason ?? null, id).changes > 0
    )
  }

  #stepUp(id: number): StepUp | undefined {
    const r = this.#db.prepare('SELECT * FROM ssf_step_ups WHERE id = ?').get(id) as StepUpRow | undefined
    return r ? this.#toStepUp(r) : undefined
  }

  #toStepUp(r: StepUpRow): StepUp {
    const satisfied = this.#db
      .prepare('SELECT agent, intent_id, approver, at FROM ssf_step_up_satisfied WHERE step_up_id = ? ORDER BY at, agent')
      .all(r.id) as {
      agent: string
      intent_id: string
      approver: string
      at: number
    }[]
    return {
      id: r.id,
      target: r.target,
      value: r.value,
      clearOnApproval: r.clear_on_approval === 1,
      ...(r.not_after !== null ? { notAfter: r.not_after } : {}),
      signal: { issuer: r.issuer, jti: r.jti, eventType: r.event_type },
      reason: r.reason,
      createdAt: r.created_at,
      ...(r.cleared_at !== null
        ? { cleared: { at: r.cleared_at, by: r.cleared_by ?? '', ...(r.clear_reason !== null ? { reason: r.clear_reason } : {}) } }
        : {}),
      satisfied: satisfied.map((x) => ({ agent: x.agent, intentId: x.intent_id, approver: x.approver, at: x.at })),
    }
  }

  /** Registers an SSF receiver client; false when `clientId` is taken. */
  insertClient(c: SsfClientRecord): boolean {
    return (
      this.#db
        .prepare('INSERT INTO ssf_clients (client_id, secret_sha256, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING')
        .run(c.clientId, c.secretSha256, c.createdAt).changes === 1
    )
  }

  getClient(clientId: string): SsfClientRecord | undefined {
    const r = this.#db.prepare('SELECT client_id, secret_sha256, created_at FROM ssf_clients WHERE client_id = ?').get(clientId) as ClientRow | undefined
    return r === undefined ? undefined : { clientId: r.client_id, secretSha256: new Uint8Array(r.secret_sha256), createdAt: r.created_at }
  }

  listClients(): { clientId: string; createdAt: number }[] {
    return (this.#db.prepare('SELECT client_id, created_at FROM ssf_clients ORDER BY client_id').all() as Omit<ClientRow, 'secret_sha256'>[]).map((r) => ({
      clientId: r.client_id,
      createdAt: r.created_at,
    }))
  }

  deleteClient(clientId: string): boolean {
    return this.#db.prepare('DELETE FROM ssf_clients WHERE client_id = ?').run(clientId).changes === 1
  }

  getState(name: string): number | undefined {
    return (this.#db.prepare('SELECT value FROM ssf_state WHERE name = ?').get(name) as { value: number } | undefined)?.value
  }

  setState(name: string, value: number): void {
    this.#db.prepare('INSERT INTO ssf_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET value = excluded.value').run(name, value)
  }
}
