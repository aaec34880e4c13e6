/**
 * The broker as a Shared Signals (SSF 1.0) transmitter: receivers (workloads
 * with an SVID, on the `receivers` list) create event streams, and every
 * revocation the broker records becomes a CAEP event on each enabled stream
 * that asked for its type, stored until the receiver acknowledges it and
 * delivered by poll (RFC 8936) or push (RFC 8935: one loop per push stream
 * POSTs its events in order, one at a time, retrying with backoff until the
 * receiver accepts or refuses each) as a SET signed with the broker's current
 * signing key at delivery (so retransmissions carry the same `jti` and key
 * rotation never strands a queued event).
 *
 * Mapping (README, Shared Signals): `token` and `chain` revocations are
 * `session-revoked` about the token (`jwt_id`) or the actor (`uri`); `task` is
 * `session-revoked` about the task (`complex` with an `opaque` `task`);
 * `instance` and `prefix` are `credential-change` (`x509`, `revoke`) about
 * the SPIFFE ID. Each event carries `warrant_revocation` (kind, value, seq,
 * not_after) for warrant receivers.
 */
import { randomBytes } from 'node:crypto'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError } from '../errors/identity-error.js'
import { EVENT_TYPES, type SetEventType } from '../signals/event-types.js'
import { buildSet, SET_TYP } from '../signals/set.js'
import { canonicalJson } from '../audit/canonical.js'
import { checkSubject, streamSubject, subjectFor, type SubjectIdentifier } from '../signals/subject.js'
import { matchesIdList, type IdMatcher } from './config.js'
import type { BrokerService, StoredRevocation } from './contract.js'
import type { ActiveKey } from './keys.js'
import { isSsfClientId } from './ssf-clients.js'
import type { Narrowing } from './narrowings.js'
import { signJwt } from './mint.js'
import type { SsfStore, StreamRecord, StreamStatus } from './store/ssf-store.js'

export const POLL_DELIVERY = 'urn:ietf:rfc:8936'
export const PUSH_DELIVERY = 'urn:ietf:rfc:8935'
/** The event types this transmitter emits (stream events are always delivered). */
export const TRANSMITTED_EVENT_TYPES: readonly SetEventType[] = [
  EVENT_TYPES.sessionRevoked,
  EVENT_TYPES.credentialChange,
  EVENT_TYPES.credentialCompromise,
  EVENT_TYPES.tokenClaimsChange,
  EVENT_TYPES.assuranceLevelChange,
]

/** The `namespace` of warrant's `assurance-level-change` events: how a node proved itself (its attestor), or `none`. */
export const NODE_ATTESTATION_NAMESPACE = 'warrant-node-attestation'

const LAST_REVOCATION_SEQ = 'last_revocation_seq'
const MAX_DESCRIPTION = 512
const MAX_STATE = 1024
const MAX_ACKS = 1000
const MAX_EVENTS = 1000

export interface SsfTransmitterOptions {
  readonly issuer: string
  readonly store: SsfStore
  /** The broker's current signing key (`SigningKeys.active()`). */
  readonly signingKey: () => ActiveKey
  /** Who may create and read streams: SPIFFE IDs and prefixes. */
  readonly receivers: IdMatcher
  /** Registered SSF receiver clients (`ssf:<name>`, ssf-clients.ts): receivers without being on `receivers`, poll delivery only. */
  readonly clients?: { isRegistered(clientId: string): boolean }
  readonly revocations: Pick<BrokerService, 'onRevocation' | 'listRevocations'>
  readonly log: Logger
  /** Milliseconds since the epoch (default Date.now). */
  readonly now?: () => number
  readonly maxStreamsPerReceiver?: number
  readonly maxQueuedPerStream?: number
  /** Longest wait of a poll without `returnImmediately` (default 25 s). */
  readonly pollWaitMs?: number
  /** Least time between two verification requests of a stream (default 5 s). */
  readonly minVerificationIntervalSec?: number
  /** Push delivery (RFC 8935); without it only poll streams can be created. */
  readonly push?: SetPushTransport
  /** First wait after a failed push, doubled up to 60 s (default 1 s). */
  readonly pushRetryMs?: number
}

/** How a SET reaches a push receiver: one POST; the receiver is the stream owner's SPIFFE ID (its endpoint must present that SVID). */
export interface SetPushTransport {
  push(url: string, set: string, target: { receiver: string; authorization?: string }): Promise<{ status: number; body: unknown }>
}

export interface StreamConfig {
  readonly stream_id: string
  readonly iss: string
  readonly aud: string
  readonly events_supported: readonly string[]
  readonly events_requested: readonly string[]
  readonly events_delivered: readonly string[]
  readonly delivery: { readonly method: string; readonly endpoint_url: string }
  readonly min_verification_interval: number
  readonly description?: string
}

export interface PollRequest {
  readonly maxEvents?: number
  readonly returnImmediately?: boolean
  readonly ack?: readonly string[]
  readonly setErrs?: Readonly<Record<string, { readonly err: string; readonly description?: string }>>
}

export interface PollResponse {
  readonly sets: Record<string, string>
  readonly moreAvailable: boolean
}

function invalid(message: string): IdentityError {
  return new IdentityError('ERR_REQUEST_MALFORMED', message)
}

function notFound(): IdentityError {
  return new IdentityError('ERR_NOT_FOUND', 'stream not found')
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The event a revocation becomes. */
export function revocationEvent(e: StoredRevocation, issuer: string): { type: SetEventType; subject: SubjectIdentifier; event: Record<string, unknown> } {
  const warrant = { kind: e.kind, value: e.value, seq: e.seq, ...(e.notAfter !== undefined ? { not_after: e.notAfter } : {}) }
  const common = {
    event_timestamp: e.createdAt,
    initiating_entity: 'admin',
    ...(e.reason !== undefined && e.reason.length > 0 ? { reason_admin: { en: e.reason.slice(0, 512) } } : {}),
    warrant_revocation: warrant,
  }
  switch (e.kind) {
    case 'token':
      return { type: EVENT_TYPES.sessionRevoked, subject: subjectFor({ token: { iss: issuer, jti: e.value } }), event: common }
    case 'chain':
      return {
        type: EVENT_TYPES.sessionRevoked,
        subject: e.value.startsWith('spiffe://') ? subjectFor({ spiffeId: e.value }) : subjectFor({ token: { iss: issuer, jti: e.value } }),
        event: common,
      }
    case 'task':
      return { type: EVENT_TYPES.sessionRevoked, subject: subjectFor({ taskId: e.value }), event: common }
    case 'instance':
    case 'prefix':
      return {
        type: EVENT_TYPES.credentialChange,
        subject: subjectFor({ spiffeId: e.value }),
        event: { ...common, credential_type: 'x509', change_type: 'revoke' },
      }
  }
}

/** Events an operator may send by hand (`warrant signal send`), by short name. */
export const MANUAL_EVENTS: Readonly<Record<string, SetEventType>> = {
  'credential-change': EVENT_TYPES.credentialChange,
  'session-revoked': EVENT_TYPES.sessionRevoked,
  'credential-compromise': EVENT_TYPES.credentialCompromise,
}

/** A signal sent by hand, as the admin socket takes it (`POST /v1/signals`). */
export interface ManualSignal {
  event: string
  subject: string
  instance?: string
  reason?: string
  confidence?: number
  /** CAEP `initiating_entity`: `admin` (default: a signal sent by hand) or `policy` (the broker's own rule, e.g. an intent mismatch). Never from the wire. */
  initiatingEntity?: 'admin' | 'policy'
}

/** Checks the wire form of a signal sent by hand. */
export function manualSignalFromWire(body: unknown): ManualSignal {
  if (!isRecord(body)) throw invalid('a signal must be a JSON object')
  const { event, subject, instance, reason, confidence } = body
  if (typeof event !== 'string' || !Object.hasOwn(MANUAL_EVENTS, event)) throw invalid(`event must be one of ${Object.keys(MANUAL_EVENTS).join(', ')}`)
  if (typeof subject !== 'string' || !/^spiffe:\/\/[^/\s]+(\/\S*)?$/.test(subject) || subject.length > 2048) throw invalid('subject must be a SPIFFE ID')
  if (instance !== undefined && (typeof instance !== 'string' || instance.length === 0 || instance.length > 256))
    throw invalid('instance must be a short string')
  if (reason !== undefined && (typeof reason !== 'string' || reason.length > 512)) throw invalid('reason must be a string of at most 512 characters')
  if (confidence !== undefined && (typeof confidence !== 'number' || !(confidence >= 0 && confidence <= 1)))
    throw invalid('confidence must be a number in [0, 1]')
  return {
    event,
    subject,
    ...(instance !== undefined ? { instance } : {}),
    ...(reason !== undefined && reason.length > 0 ? { reason } : {}),
    ...(confidence !== undefined ? { confidence } : {}),
  }
}

export class SsfTransmitter {
  readonly #o: SsfTransmitterOptions
  readonly #now: () => number
  readonly #waiters = new Map<string, Set<() => void>>()
  #unsubscribe: (() => void) | undefined
  #lastSeq = 0
  readonly #closed = new AbortController()
  readonly #pushers = new Map<string, Promise<void>>()

  private constructor(o: SsfTransmitterOptions) {
    this.#o = o
    this.#now = o.now ?? Date.now
  }

  /** Starts: turns revocations recorded since the last run into events, then follows new ones. */
  static async start(o: SsfTransmitterOptions): Promise<SsfTransmitter> {
    const t = new SsfTransmitter(o)
    t.#lastSeq = o.store.getState(LAST_REVOCATION_SEQ) ?? 0
    const early: StoredRevocation[] = []
    let live = false
    t.#unsubscribe = o.revocations.onRevocation((e) => (live ? t.#onRevocation(e) : early.push(e)))
    try {
      for (const e of await o.revocations.listRevocations(t.#lastSeq, true)) t.#onRevocation(e)
      for (const e of early.splice(0)) t.#onRevocation(e)
      live = true
      for (const s of o.store.listStreams()) if (s.deliveryMethod === PUSH_DELIVERY) t.#startPusher(s.streamId)
    } catch (err) {
      t.#unsubscribe()
      throw err
    }
    return t
  }

  get #nowSec(): number {
    return Math.floor(this.#now() / 1000)
  }

  close(): void {
    this.#closed.abort()
    this.#unsubscribe?.()
    for (const ws of this.#waiters.values()) for (const w of ws) w()
    this.#waiters.clear()
  }

  /** SSF 1.0 §7.1 transmitter configuration metadata. */
  configuration(): Record<string, unknown> {
    const i = this.#o.issuer
    return {
      spec_version: '1_0',
      issuer: i,
      jwks_uri: `${i}/jwks`,
      delivery_methods_supported: this.#o.push !== undefined ? [POLL_DELIVERY, PUSH_DELIVERY] : [POLL_DELIVERY],
      configuration_endpoint: `${i}/ssf/streams`,
      status_endpoint: `${i}/ssf/status`,
      add_subject_endpoint: `${i}/ssf/subjects:add`,
      remove_subject_endpoint: `${i}/ssf/subjects:remove`,
      verification_endpoint: `${i}/ssf/verify`,
      authorization_schemes: [
        { spec_urn: 'urn:ietf:rfc:6749' },
        { spec_urn: 'urn:ietf:rfc:8705' },
        { spec_urn: 'urn:ietf:params:oauth:client-assertion-type:jwt-spiffe' },
      ],
      default_subjects: 'ALL',
    }
  }

  #authorize(receiver: string): void {
    if (isSsfClientId(receiver)) {
      if (this.#o.clients?.isRegistered(receiver) === true) return
      throw new IdentityError('ERR_CLIENT_UNAUTHORIZED', 'caller is not a signals receiver', { details: { reason: 'not a registered SSF client' } })
    }
    if (!matchesIdList(this.#o.receivers, receiver))
      throw new IdentityError('ERR_CLIENT_UNAUTHORIZED', 'caller is not a signals receiver', { details: { reason: 'not on the receivers list' } })
  }

  #own(receiver: string, streamId: unknown): StreamRecord {
    this.#authorize(receiver)
    if (typeof streamId !== 'string' || streamId.length === 0 || streamId.length > 64) throw invalid('stream_id is required')
    const s = this.#o.store.getStream(streamId)
    // another receiver's stream looks like an unknown one
    if (s === undefined || s.owner !== receiver) throw notFound()
    return s
  }

  #toConfig(s: StreamRecord): StreamConfig {
    return {
      stream_id: s.streamId,
      iss: this.#o.issuer,
      aud: s.aud,
      events_supported: TRANSMITTED_EVENT_TYPES,
      events_requested: s.eventsRequested,
      events_delivered: s.eventsDelivered,
      // the Authorization header a push receiver gave is never returned
      delivery: { method: s.deliveryMethod, endpoint_url: s.pushEndpoint ?? `${this.#o.issuer}/ssf/poll/${s.streamId}` },
      min_verification_interval: this.#o.minVerificationIntervalSec ?? 5,
      ...(s.description !== undefined ? { description: s.description } : {}),
    }
  }

  /**
   * SSF 1.0 §8.1.1.1: creates a poll or push stream for `receiver`; `aud` of
   * its SETs is the receiver's SPIFFE ID. A push `endpoint_url` must be https;
   * it will have to present the receiver's own SVID (SetPushTransport).
   */
  createStream(receiver: string, body: unknown): StreamConfig {
    this.#authorize(receiver)
    if (!isRecord(body)) throw invalid('stream configuration must be a JSON object')
    const delivery = body['delivery']
    const method = isRecord(delivery) ? delivery['method'] : POLL_DELIVERY
    // a push endpoint is checked against the receiver's SVID (SetPushTransport); an OAuth client has none
    if (method === PUSH_DELIVERY && isSsfClientId(receiver))
      throw invalid(`push delivery needs an SVID receiver (the endpoint must present the receiver's SVID); an OAuth client uses ${POLL_DELIVERY}`)
    const push = method === PUSH_DELIVERY ? pushTarget(delivery) : undefined
    if (method === PUSH_DELIVERY && this.#o.push === undefined) throw invalid(`delivery method must be ${POLL_DELIVERY}`)
    if (method !== POLL_DELIVERY && method !== PUSH_DELIVERY) throw invalid(`delivery method must be ${POLL_DELIVERY} or ${PUSH_DELIVERY}`)
    if (method === POLL_DELIVERY && isRecord(delivery) && delivery['endpoint_url'] !== undefined)
      throw invalid('endpoint_url is chosen by the transmitter for poll delivery')
    const requested = body['events_requested'] ?? []
    if (!Array.isArray(requested) || requested.length > 32 || !requested.every((t) => typeof t === 'string' && t.length <= 256))
      throw invalid('events_requested must be a list of event type URIs')
    const description = body['description']
    if (description !== undefined && (typeof description !== 'string' || description.length > MAX_DESCRIPTION))
      throw invalid('description must be a short string')
    for (const k of ['stream_id', 'iss', 'aud', 'events_supported', 'events_delivered'])
      if (body[k] !== undefined) throw invalid(`${k} is set by the transmitter`)
    const max = this.#o.maxStreamsPerReceiver ?? 4
    const s: StreamRecord = {
      streamId: randomBytes(16).toString('hex'),
      owner: receiver,
      aud: receiver,
      eventsRequested: requested as string[],
      eventsDelivered: TRANSMITTED_EVENT_TYPES.filter((t) => (requested as string[]).includes(t)),
      deliveryMethod: method,
      ...(description !== undefined ? { description } : {}),
      status: 'enabled',
      createdAt: this.#nowSec,
      ...(push !== undefined ? { pushEndpoint: push.endpoint, ...(push.authorization !== undefined ? { pushAuthorization: push.authorization } : {}) } : {}),
    }
    this.#o.store.tx(() => {
      if (this.#o.store.listStreams(receiver).length >= max)
        throw new IdentityError('ERR_RESOURCE_EXHAUSTED', 'too many streams', { details: { reason: 'max_streams', max } })
      this.#o.store.insertStream(s)
    })
    this.#o.log.info({ [F.SPIFFE_ID]: receiver, stream_id: s.streamId, events: s.eventsDelivered, delivery: method }, 'SSF stream created')
    if (push !== undefined) this.#startPusher(s.streamId)
    return this.#toConfig(s)
  }

  getStream(receiver: string, streamId: unknown): StreamConfig {
    return this.#toConfig(this.#own(receiver, streamId))
  }

  /**
   * SSF 1.0 §8.1.1.3 (PATCH, `replace` false: only the members given change)
   * and §8.1.1.4 (PUT, `replace` true: members left out take their defaults).
   * The receiver may change `events_requested` and `description`; the
   * transmitter-supplied members, when sent, must equal the stream's; the
   * delivery method and endpoint are not changed in place (delete the stream
   * and create another).
   */
  updateStream(receiver: string, body: unknown, replace: boolean): StreamConfig {
    if (!isRecord(body)) throw invalid('stream configuration must be a JSON object')
    const s = this.#own(receiver, body['stream_id'])
    const current = this.#toConfig(s)
    for (const k of ['iss', 'aud', 'events_supported', 'events_delivered', 'min_verification_interval'] as const)
      if (body[k] !== undefined && canonicalJson(body[k]) !== canonicalJson(current[k])) throw invalid(`${k} is set by the transmitter`)
    if (body['delivery'] !== undefined && canonicalJson(body['delivery']) !== canonicalJson(current.delivery))
      throw invalid('delivery cannot be changed; delete the stream and create another')
    const requested = body['events_requested'] ?? (replace ? [] : s.eventsRequested)
    if (!Array.isArray(requested) || requested.length > 32 || !requested.every((t) => typeof t === 'string' && t.length <= 256))
      throw invalid('events_requested must be a list of event type URIs')
    const description = body['description'] ?? (replace ? undefined : s.description)
    if (description !== undefined && (typeof description !== 'string' || description.length > MAX_DESCRIPTION))
      throw invalid('description must be a short string')
    const eventsDelivered = TRANSMITTED_EVENT_TYPES.filter((t) => (requested as string[]).includes(t))
    this.#o.store.updateStream(s.streamId, { eventsRequested: requested as string[], eventsDelivered, description })
    this.#o.log.info({ [F.SPIFFE_ID]: receiver, stream_id: s.streamId, events: eventsDelivered }, 'SSF stream updated')
    return this.#toConfig(this.#o.store.getStream(s.streamId)!)
  }

  /**
   * SSF 1.0 §8.1.3.2 and §8.1.3.3: with `default_subjects` ALL every subject
   * is on a stream until the receiver removes it; adding it back includes it
   * again. A removed subject's events are not queued for that stream (a
   * complex subject is left out when any of its members was removed).
   */
  setSubject(receiver: string, body: unknown, add: boolean): void {
    if (!isRecord(body)) throw invalid('subject request must be a JSON object')
    const s = this.#own(receiver, body['stream_id'])
    let subject: SubjectIdentifier
    try {
      subject = checkSubject(body['subject'])
    } catch {
      throw invalid('subject must be a subject identifier (RFC 9493)')
    }
    if (body['verified'] !== undefined && typeof body['verified'] !== 'boolean') throw invalid('verified must be a boolean')
    this.#o.store.setSubjectRemoved(s.streamId, canonicalJson(subject), !add)
    this.#o.log.info({ [F.SPIFFE_ID]: receiver, stream_id: s.streamId, format: subject.format }, add ? 'SSF subject added' : 'SSF subject removed')
  }

  listStreams(receiver: string): StreamConfig[] {
    this.#authorize(receiver)
    return this.#o.store.listStreams(receiver).map((s) => this.#toConfig(s))
  }

  deleteStream(receiver: string, streamId: unknown): void {
    const s = this.#own(receiver, streamId)
    this.#o.store.deleteStream(s.streamId)
    this.#wake(s.streamId)
    this.#o.log.info({ [F.SPIFFE_ID]: receiver, stream_id: s.streamId }, 'SSF stream deleted')
  }

  getStatus(receiver: string, streamId: unknown): { stream_id: string; status: StreamStatus; reason?: string } {
    const s = this.#own(receiver, streamId)
    return { stream_id: s.streamId, status: s.status, ...(s.statusReason !== undefined ? { reason: s.statusReason } : {}) }
  }

  setStatus(receiver: string, body: unknown): { stream_id: string; status: StreamStatus; reason?: string } {
    if (!isRecord(body)) throw invalid('status update must be a JSON object')
    const s = this.#own(receiver, body['stream_id'])
    const status = body['status']
    if (status !== 'enabled' && status !== 'paused' && status !== 'disabled') throw invalid('status must be enabled, paused or disabled')
    const reason = body['reason']
    if (reason !== undefined && (typeof reason !== 'string' || reason.length > MAX_DESCRIPTION)) throw invalid('reason must be a short string')
    this.#o.store.setStatus(s.streamId, status, reason)
    this.#wake(s.streamId)
    this.#o.log.info({ [F.SPIFFE_ID]: receiver, stream_id: s.streamId, status }, 'SSF stream status changed')
    return { stream_id: s.streamId, status, ...(reason !== undefined ? { reason } : {}) }
  }

  /** SSF 1.0 §8.1.4.2: queues a verification event echoing `state`; 429 (ERR_RESOURCE_EXHAUSTED) when asked again too soon. */
  requestVerification(receiver: string, body: unknown): void {
    if (!isRecord(body)) throw invalid('verification request must be a JSON object')
    const s = this.#own(receiver, body['stream_id'])
    const state = body['state']
    if (state !== undefined && (typeof state !== 'string' || state.length > MAX_STATE)) throw invalid('state must be a short string')
    const now = this.#nowSec
    const min = this.#o.minVerificationIntervalSec ?? 5
    if (s.verifiedAt !== undefined && now - s.verifiedAt < min)
      throw new IdentityError('ERR_RESOURCE_EXHAUSTED', 'verification requested too often', { details: { reason: 'min_verification_interval' } })
    this.#o.store.tx(() => {
      this.#o.store.setVerifiedAt(s.streamId, now)
      this.#queue(s, EVENT_TYPES.verification, streamSubject(s.streamId), state !== undefined ? { state } : {}, undefined)
    })
    this.#wake(s.streamId)
  }

  /** RFC 8936 §2.4: acknowledges, then returns the oldest unacknowledged events (none while the stream is not enabled). */
  async poll(receiver: string, streamId: unknown, body: unknown, opts: { signal?: AbortSignal } = {}): Promise<PollResponse> {
    let s = this.#own(receiver, streamId)
    if (s.deliveryMethod !== POLL_DELIVERY) throw invalid('this stream delivers by push')
    const req = parsePoll(body)
    const acks = [...(req.ack ?? []), ...Object.keys(req.setErrs ?? {})]
    if (acks.length > 0) this.#o.store.acknowledge(s.streamId, acks)
    for (const [jti, e] of Object.entries(req.setErrs ?? {}))
      this.#o.log.warn(
        { [F.SPIFFE_ID]: receiver, stream_id: s.streamId, jti, err: e.err, description: e.description?.slice(0, 256) },
        'SSF receiver refused a SET',
      )
    const max = req.maxEvents ?? 100
    if (max === 0) return { sets: {}, moreAvailable: s.status === 'enabled' && this.#o.store.queued(s.streamId) > 0 }
    if (s.status === 'enabled' && !req.returnImmediately && this.#o.store.queued(s.streamId) === 0) {
      await this.#wait(s.streamId, opts.signal)
      const again = this.#o.store.getStream(s.streamId)
      if (again === undefined) throw notFound()
      s = again
    }
    if (s.status !== 'enabled') return { sets: {}, moreAvailable: false }
    const events = this.#o.store.pending(s.streamId, max + 1)
    const { key, kid, alg } = this.#o.signingKey()
    const sets: Record<string, string> = {}
    for (const e of events.slice(0, max)) sets[e.jti] = await signJwt(JSON.parse(e.claims) as Record<string, unknown>, { signer: key, kid, alg, typ: SET_TYP })
    return { sets, moreAvailable: events.length > max }
  }

  #wait(streamId: string, signal: AbortSignal | undefined): Promise<void> {
    return new Promise((resolve) => {
      let ws = this.#waiters.get(streamId)
      if (ws === undefined) this.#waiters.set(streamId, (ws = new Set()))
      const done = () => {
        clearTimeout(timer)
        signal?.removeEventListener('abort', done)
        ws.delete(done)
        if (ws.size === 0 && this.#waiters.get(streamId) === ws) this.#waiters.delete(streamId)
        resolve()
      }
      const timer = setTimeout(done, this.#o.pollWaitMs ?? 25_000)
      timer.unref()
      signal?.addEventListener('abort', done, { once: true })
      ws.add(done)
    })
  }

  #startPusher(streamId: string): void {
    if (this.#o.push === undefined || this.#pushers.has(streamId) || this.#closed.signal.aborted) return
    const loop = this.#pushLoop(streamId, this.#o.push).finally(() => this.#pushers.delete(streamId))
    this.#pushers.set(streamId, loop)
  }

  /** Push delivery of one stream, in order: each SET until the receiver accepts (202) or refuses (400) it; anything else is retried with backoff. */
  async #pushLoop(streamId: string, transport: SetPushTransport): Promise<void> {
    const signal = this.#closed.signal
    const first = this.#o.pushRetryMs ?? 1000
    let backoff = first
    while (!signal.aborted) {
      const s = this.#o.store.getStream(streamId)
      if (s === undefined || s.pushEndpoint === undefined) return
      const [e] = s.status === 'enabled' ? this.#o.store.pending(streamId, 1) : []
      if (e === undefined) {
        await this.#wait(streamId, signal)
        continue
      }
      let outcome: 'done' | 'retry'
      try {
        const { key, kid, alg } = this.#o.signingKey()
        const set = await signJwt(JSON.parse(e.claims) as Record<string, unknown>, { signer: key, kid, alg, typ: SET_TYP })
        const r = await transport.push(s.pushEndpoint, set, {
          receiver: s.owner,
          ...(s.pushAuthorization !== undefined ? { authorization: s.pushAuthorization } : {}),
        })
        if (r.status === 202 || r.status === 200) outcome = 'done'
        else if (r.status === 400) {
          // RFC 8935 §2.3: the receiver refused this SET; it is not sent again
          const b = isRecord(r.body) ? r.body : {}
          this.#o.log.warn(
            {
              [F.SPIFFE_ID]: s.owner,
              stream_id: streamId,
              jti: e.jti,
              err: (typeof b['err'] === 'string' ? b['err'] : '').slice(0, 64),
              description: (typeof b['description'] === 'string' ? b['description'] : '').slice(0, 256),
            },
            'SSF receiver refused a pushed SET',
          )
          outcome = 'done'
        } else {
          this.#o.log.warn({ [F.SPIFFE_ID]: s.owner, stream_id: streamId, status: r.status, retry_ms: backoff }, 'SSF push not accepted; retrying')
          outcome = 'retry'
        }
      } catch (err) {
        if (signal.aborted) return
        this.#o.log.warn(
          { [F.SPIFFE_ID]: s.owner, stream_id: streamId, [F.ERR]: err instanceof Error ? err.message : String(err), retry_ms: backoff },
          'SSF push failed; retrying',
        )
        outcome = 'retry'
      }
      if (outcome === 'done') {
        this.#o.store.acknowledge(streamId, [e.jti])
        backoff = first
        continue
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoff)
        timer.unref()
        signal.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
      })
      backoff = Math.min(backoff * 2, 60_000)
    }
  }

  #wake(streamId: string): void {
    for (const w of [...(this.#waiters.get(streamId) ?? [])]) w()
  }

  /** Stores one event for a stream; logs and drops it when the stream's queue is full. */
  #queue(s: StreamRecord, type: SetEventType, subject: SubjectIdentifier, event: Record<string, unknown>, txn: string | undefined): void {
    if (type !== EVENT_TYPES.verification && type !== EVENT_TYPES.streamUpdated && removedFrom(this.#o.store.removedSubjects(s.streamId), subject)) return
    const claims = buildSet({
      issuer: this.#o.issuer,
      audience: s.aud,
      eventType: type,
      event,
      subject,
      nowSec: this.#nowSec,
      ...(txn !== undefined ? { txn } : {}),
    })
    const max = this.#o.maxQueuedPerStream ?? 10_000
    if (!this.#o.store.enqueue(s.streamId, claims.jti, JSON.stringify(claims), this.#nowSec, max))
      this.#o.log.error({ stream_id: s.streamId, [F.SPIFFE_ID]: s.owner, max }, 'SSF stream queue full; event dropped (the receiver is not polling)')
  }

  /**
   * A signal sent by hand (`warrant signal send`): one SET on every enabled
   * stream that asked for its type, stored until acknowledged like the
   * revocation events. Returns the streams it was queued on.
   */
  send(sig: ManualSignal): { event_type: SetEventType; streams: string[] } {
    const type = MANUAL_EVENTS[sig.event]!
    const subject = subjectFor({ spiffeId: sig.subject, ...(sig.instance !== undefined ? { instanceId: sig.instance } : {}) })
    const event: Record<string, unknown> = {
      event_timestamp: this.#nowSec,
      initiating_entity: sig.initiatingEntity ?? 'admin',
      ...(sig.reason !== undefined ? { reason_admin: { en: sig.reason } } : {}),
      ...(sig.confidence !== undefined ? { confidence: sig.confidence } : {}),
      ...(type === EVENT_TYPES.credentialChange ? { credential_type: 'x509', change_type: 'revoke' } : {}),
      ...(type === EVENT_TYPES.credentialCompromise ? { credential_type: 'x509' } : {}),
    }
    const streams: string[] = []
    this.#o.store.tx(() => {
      for (const s of this.#o.store.listStreams()) {
        if (s.status === 'disabled' || !s.eventsDelivered.includes(type)) continue
        this.#queue(s, type, subject, event, undefined)
        streams.push(s.streamId)
      }
    })
    this.#o.log.info({ event_type: sig.event, [F.SPIFFE_ID]: sig.subject, streams: streams.length }, 'SSF signal sent by admin')
    for (const id of streams) this.#wake(id)
    return { event_type: type, streams }
  }

  /**
   * CAEP `token-claims-change` about a prefix (`uri`, the SPIFFE ID) whose
   * ceiling narrowed: `claims.scope` is what its tokens may still carry,
   * `warrant_narrowing` the rest (`resources`, `not_after`). One SET on every
   * enabled stream that asked for it. Returns the streams it was queued on.
   */
  ceilingNarrowed(n: Omit<Narrowing, 'notAfter'> & { notAfter?: number }): string[] {
    const type = EVENT_TYPES.tokenClaimsChange
    const event: Record<string, unknown> = {
      event_timestamp: this.#nowSec,
      initiating_entity: 'policy',
      reason_admin: { en: n.reason.slice(0, 512) },
      claims: { scope: n.scopes.join(' ') },
      warrant_narrowing: {
        prefix: n.prefix,
        ...(n.notAfter !== undefined ? { not_after: n.notAfter } : {}),
        ...(n.resources !== undefined ? { resources: n.resources } : {}),
      },
    }
    const streams: string[] = []
    this.#o.store.tx(() => {
      for (const s of this.#o.store.listStreams()) {
        if (s.status === 'disabled' || !s.eventsDelivered.includes(type)) continue
        this.#queue(s, type, { format: 'uri', uri: n.prefix }, event, undefined)
        streams.push(s.streamId)
      }
    })
    for (const id of streams) this.#wake(id)
    return streams
  }

  /**
   * CAEP `assurance-level-change` about a node agent (`uri`, its SPIFFE ID):
   * in the `warrant-node-attestation` namespace, `current_level` `none` when
   * it was banned or evicted, or attesting again was refused (`previous_level`
   * its attestor). One SET on every
   * enabled stream that asked for it; returns the streams.
   */
  assuranceChanged(a: {
    subject: string
    current: string
    previous?: string
    direction?: 'increase' | 'decrease'
    reason: string
    /** CAEP `initiating_entity` (default `admin`: a ban or an eviction; `system` for a re-attestation the server refused). */
    initiatingEntity?: 'admin' | 'user' | 'policy' | 'system'
  }): string[] {
    const type = EVENT_TYPES.assuranceLevelChange
    const event: Record<string, unknown> = {
      event_timestamp: this.#nowSec,
      initiating_entity: a.initiatingEntity ?? 'admin',
      reason_admin: { en: a.reason.slice(0, 512) },
      namespace: NODE_ATTESTATION_NAMESPACE,
      current_level: a.current,
      ...(a.previous !== undefined ? { previous_level: a.previous } : {}),
      ...(a.direction !== undefined ? { change_direction: a.direction } : {}),
    }
    const streams: string[] = []
    this.#o.store.tx(() => {
      for (const s of this.#o.store.listStreams()) {
        if (s.status === 'disabled' || !s.eventsDelivered.includes(type)) continue
        this.#queue(s, type, { format: 'uri', uri: a.subject }, event, undefined)
        streams.push(s.streamId)
      }
    })
    for (const id of streams) this.#wake(id)
    this.#o.log.info({ [F.SPIFFE_ID]: a.subject, current_level: a.current, streams: streams.length }, 'SSF assurance level change sent')
    return streams
  }

  #onRevocation(e: StoredRevocation): void {
    if (e.seq <= this.#lastSeq) return
    const { type, subject, event } = revocationEvent(e, this.#o.issuer)
    const woken: string[] = []
    try {
      this.#o.store.tx(() => {
        for (const s of this.#o.store.listStreams()) {
          if (s.status === 'disabled' || !s.eventsDelivered.includes(type)) continue
          this.#queue(s, type, subject, event, `revocation-${e.seq}`)
          woken.push(s.streamId)
        }
        this.#o.store.setState(LAST_REVOCATION_SEQ, e.seq)
      })
      this.#lastSeq = e.seq
    } catch (err) {
      // not recorded as done: the next start catches up from the last seq stored
      this.#o.log.error({ seq: e.seq, [F.ERR]: err instanceof Error ? err.message : String(err) }, 'SSF events for a revocation could not be stored')
      return
    }
    for (const id of woken) this.#wake(id)
  }
}

/** Whether a subject, or (for a complex one) any of its members, is among the removed (canonical JSON). */
function removedFrom(removed: ReadonlySet<string>, subject: SubjectIdentifier): boolean {
  if (removed.size === 0) return false
  if (removed.has(canonicalJson(subject))) return true
  if (subject.format !== 'complex') return false
  return Object.entries(subject).some(([k, m]) => k !== 'format' && typeof m === 'object' && removed.has(canonicalJson(m)))
}

/** The push delivery of a stream request: an https `endpoint_url` and an optional `authorization_header` (SSF 1.0 §8.1.1). */
function pushTarget(delivery: unknown): { endpoint: string; authorization?: string } {
  if (!isRecord(delivery)) throw invalid('delivery is required for push')
  const url = delivery['endpoint_url']
  if (typeof url !== 'string' || url.length > 2048) throw invalid('push delivery needs an endpoint_url')
  let u: URL
  try {
    u = new URL(url)
  } catch {
    throw invalid('endpoint_url must be an https URL')
  }
  if (u.protocol !== 'https:' || u.username !== '' || u.password !== '' || u.hash !== '')
    throw invalid('endpoint_url must be an https URL without credentials or fragment')
  const auth = delivery['authorization_header']
  if (auth !== undefined && (typeof auth !== 'string' || auth.length === 0 || auth.length > 1024 || /[\r\n]/.test(auth)))
    throw invalid('authorization_header must be one short header value')
  return { endpoint: url, ...(typeof auth === 'string' ? { authorization: auth } : {}) }
}

/** Checks an RFC 8936 poll request body. */
export function parsePoll(body: unknown): PollRequest {
  if (body === undefined || body === null || body === '') return {}
  if (!isRecord(body)) throw invalid('poll request must be a JSON object')
  const out: { maxEvents?: number; returnImmediately?: boolean; ack?: string[]; setErrs?: Record<string, { err: string; description?: string }> } = {}
  const m = body['maxEvents']
  if (m !== undefined) {
    if (typeof m !== 'number' || !Number.isInteger(m) || m < 0 || m > MAX_EVENTS) throw invalid(`maxEvents must be an integer from 0 to ${MAX_EVENTS}`)
    out.maxEvents = m
  }
  const r = body['returnImmediately']
  if (r !== undefined) {
    if (typeof r !== 'boolean') throw invalid('returnImmediately must be a boolean')
    out.returnImmediately = r
  }
  const ack = body['ack']
  if (ack !== undefined) {
    if (!Array.isArray(ack) || ack.length > MAX_ACKS || !ack.every((j) => typeof j === 'string' && j.length > 0 && j.length <= 256))
      throw invalid('ack must be a list of jti values')
    out.ack = ack as string[]
  }
  const errs = body['setErrs']
  if (errs !== undefined) {
    if (!isRecord(errs) || Object.keys(errs).length > MAX_ACKS) throw invalid('setErrs must be an object of jti → {err, description}')
    const e: Record<string, { err: string; description?: string }> = {}
    for (const [jti, v] of Object.entries(errs)) {
      if (
        jti.length === 0 ||
        jti.length > 256 ||
        !isRecord(v) ||
        typeof v['err'] !== 'string' ||
        (v['description'] !== undefined && typeof v['description'] !== 'string')
      )
        throw invalid('setErrs must be an object of jti → {err, description}')
      e[jti] = { err: v['err'], ...(typeof v['description'] === 'string' ? { description: v['description'] } : {}) }
    }
    out.setErrs = e
  }
  return out
}
