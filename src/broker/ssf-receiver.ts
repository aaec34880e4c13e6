/**
 * The broker as a Shared Signals receiver: for each configured transmitter it
 * reads the transmitter's configuration (SSF 1.0 §7; `issuer` must be the one
 * configured), keeps one poll stream there (created once, remembered in the
 * SSF store), and polls it (RFC 8936). Each SET is verified (`src/signals`:
 * signature against the transmitter's JWKS, `iss`, `aud` = this broker's
 * SPIFFE ID, `iat`, `jti` replay, `typ`), the response policy decides, and
 * the decision is applied through the broker's revocations (or its narrowings
 * and step-ups) with a reason that names the signal. Then the SET is acknowledged; a refused SET goes back in
 * `setErrs` with its RFC 8935 `err`; a SET that could not be applied for a
 * reason that may pass (keys unavailable, store busy) is neither, so it comes
 * again. Every signal is recorded once with what was done
 * (`SsfStore.listReceived`). I/O goes through an injected transport.
 *
 * A transmitter configured with `delivery = "push"` gets a push stream
 * instead (RFC 8935): its endpoint is `<our issuer>/ssf/push/<random path>`
 * and it must send `Authorization: Bearer <random secret>` (only its SHA-256
 * is stored). Each pushed SET goes through the same verification and policy;
 * the answer is 202 (applied, recorded or a replay), 400 with the RFC 8935
 * `err` (refused: not sent again), or 503 when it may pass later.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { isSpiffeId, type AuditEventInput } from '../audit/event.js'
import { F, type Logger } from '../common/log/logger.js'
import { IdentityError, isIdentityError } from '../errors/identity-error.js'
import { setDeliveryError } from '../errors/oauth.js'
import { EVENT_TYPES, STREAM_EVENT_TYPES, SUPPORTED_EVENT_TYPES } from '../signals/event-types.js'
import { decide, signalOf, type PolicyDecision, type SignalPolicy } from '../signals/policy.js'
import { MemorySetReplayCache, setReplayKey, verifySet, type VerifiedSet } from '../signals/set.js'
import { JwksCache } from '../tokens/jwks-cache.js'
import type { RevocationRequest } from './contract.js'
import type { Narrowing } from './narrowings.js'
import type { StepUpRequest } from './step-ups.js'
import { POLL_DELIVERY, PUSH_DELIVERY } from './ssf-transmitter.js'
import type { SsfStore } from './store/ssf-store.js'

export interface SsfTransport {
  /** GET → the JSON body; non-2xx or network failures throw. */
  getJson(url: string, opts?: { signal?: AbortSignal }): Promise<unknown>
  /** POST JSON → status and JSON body (undefined when empty). */
  postJson(url: string, body: unknown, opts?: { signal?: AbortSignal }): Promise<{ status: number; body: unknown }>
  /** GET → status and JSON body, whatever the status; network failures throw. */
  getJsonStatus(url: string, opts?: { signal?: AbortSignal }): Promise<{ status: number; body: unknown }>
}

export interface ReceiverTransmitter {
  /** The transmitter's issuer (its configuration lives under `/.well-known/ssf-configuration`). */
  readonly issuer: string
  /** Confidence of its events that carry none (0..1); absent: rules with min_confidence never match them. */
  readonly defaultConfidence?: number
  /** How its events reach us (default poll). */
  readonly delivery?: 'poll' | 'push'
}

/** The answer to one pushed SET (RFC 8935 §2.2 and §2.3). */
export interface PushAnswer {
  readonly status: 202 | 400 | 401 | 404 | 503
  readonly body?: { err: string; description: string }
}

export interface SsfReceiverOptions {
  readonly transmitters: readonly ReceiverTransmitter[]
  /** This broker's SPIFFE ID: the `aud` its streams' SETs must carry. */
  readonly audience: string
  /** This broker's issuer: `jwt_id` subjects name our tokens only with it. */
  readonly tokenIssuer: string
  readonly policy: SignalPolicy
  /** Records a revocation (the broker's `revokeAt(req, 'admin')`). */
  readonly revoke: (req: RevocationRequest) => Promise<unknown>
  /** Records a ceiling narrowing (src/broker/narrowings.ts); without it a `narrow` decision fails. */
  readonly narrow?: (n: Narrowing) => Promise<void>
  /** Records a step-up (src/broker/step-ups.ts); without it a `step_up` decision fails. */
  readonly stepUp?: (s: StepUpRequest) => Promise<void>
  readonly store: SsfStore
  readonly transport: SsfTransport
  readonly log: Logger
  /** Milliseconds since the epoch (default Date.now). */
  readonly now?: () => number
  /** Wait after a failed poll, doubled up to 60 s (default 1 s). */
  readonly retryMs?: number
  /** Audit sink: one `signal` event for each SET applied, recorded or refused (never blocks). */
  readonly audit?: (e: AuditEventInput) => void
}

/** A transmitter we hold a stream at. */
export interface Subscription {
  readonly issuer: string
  readonly streamId: string
  /** Poll delivery; empty for push. */
  readonly pollUrl: string
  /** Push delivery: our endpoint's path segment and the SHA-256 of the bearer secret. */
  readonly push?: { readonly path: string; readonly secretHash: string }
  readonly keys: JwksCache
  readonly defaultConfidence?: number
}

export interface DeliveryOutcome {
  readonly ack: string[]
  readonly setErrs: Record<string, { err: string; description: string }>
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

function unavailable(message: string, details: Record<string, unknown> = {}): IdentityError {
  return new IdentityError('ERR_UNAVAILABLE', message, { details })
}

/** `https://h/p` → `https://h/.well-known/ssf-configuration/p` (SSF 1.0 §7.2.1). */
export function configurationUrl(issuer: string): string {
  const u = new URL(issuer)
  return `${u.origin}/.well-known/ssf-configuration${u.pathname.replace(/\/+$/, '')}`
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}

/** The `jti` of a compact JWS, read before it is verified (verification checks it again). */
function unverifiedJti(token: string): string | undefined {
  const parts = token.split('.')
  if (parts.length !== 3 || parts[1]!.length > 64 * 1024) return undefined
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as unknown
    const jti = isRecord(claims) ? claims['jti'] : undefined
    return typeof jti === 'string' ? jti : undefined
  } catch {
    return undefined
  }
}

function shortType(t: string): string {
  return t.slice(t.lastIndexOf('/') + 1)
}

export class SsfReceiver {
  readonly #o: SsfReceiverOptions
  readonly #now: () => number
  readonly #replay: MemorySetReplayCache
  readonly #abort = new AbortController()
  readonly #loops: Promise<void>[] = []
  /** Push subscriptions in force, by endpoint path. */
  readonly #pushed = new Map<string, Subscription>()

  constructor(o: SsfReceiverOptions) {
    this.#o = o
    this.#now = o.now ?? Date.now
    this.#replay = new MemorySetReplayCache({ nowSec: () => Math.floor(this.#now() / 1000) })
  }

  /** Starts one poll loop per transmitter (until close). */
  start(): void {
    for (const t of this.#o.transmitters) this.#loops.push(this.#loop(t))
  }

  async close(): Promise<void> {
    this.#abort.abort()
    await Promise.allSettled(this.#loops)
  }

  /** Discovery and our stream at `t` (created when we have none or it is gone). */
  async subscribe(t: ReceiverTransmitter, opts: { signal?: AbortSignal } = {}): Promise<Subscription> {
    const cfg = await this.#o.transport.getJson(configurationUrl(t.issuer), opts)
    if (!isRecord(cfg) || cfg['issuer'] !== t.issuer) throw unavailable('transmitter configuration names another issuer', { issuer: t.issuer })
    const jwksUri = cfg['jwks_uri']
    const configEndpoint = cfg['configuration_endpoint']
    if (typeof jwksUri !== 'string' || !jwksUri.startsWith('https://') || typeof configEndpoint !== 'string' || !configEndpoint.startsWith('https://'))
      throw unavailable('transmitter configuration lacks https jwks_uri or configuration_endpoint', { issuer: t.issuer })
    const push = t.delivery === 'push'
    const method = push ? PUSH_DELIVERY : POLL_DELIVERY
    const methods = cfg['delivery_methods_supported']
    if (!Array.isArray(methods) || !methods.includes(method))
      throw unavailable(`transmitter does not offer ${push ? 'push' : 'poll'} delivery`, { issuer: t.issuer })
    const keys = new JwksCache({
      fetchJwks: () => this.#o.transport.getJson(jwksUri, { signal: this.#abort.signal }),
      nowSec: () => Math.floor(this.#now() / 1000),
    })
    const known = this.#o.store.getSubscription(t.issuer)
    if (push) return this.#subscribePush(t, known, configEndpoint, keys, opts)
    if (known !== undefined && known.pushPath === undefined) {
      const r = await this.#o.transport.postJson(known.pollUrl, { maxEvents: 0, returnImmediately: true }, opts)
      if (r.status === 200) return { issuer: t.issuer, streamId: known.streamId, pollUrl: known.pollUrl, keys, ...dc(t) }
      if (r.status !== 404) throw unavailable('transmitter poll endpoint failed', { issuer: t.issuer, status: r.status })
      this.#o.log.warn({ issuer: t.issuer, stream_id: known.streamId }, 'SSF stream gone at the transmitter; creating another')
    }
    const requested = SUPPORTED_EVENT_TYPES.filter((e) => !STREAM_EVENT_TYPES.includes(e))
    const r = await this.#o.transport.postJson(configEndpoint, { delivery: { method: POLL_DELIVERY }, events_requested: requested }, opts)
    const s = r.body
    if (r.status !== 201 && r.status !== 200) throw unavailable('transmitter refused the stream', { issuer: t.issuer, status: r.status })
    if (!isRecord(s) || typeof s['stream_id'] !== 'string' || s['iss'] !== t.issuer)
      throw unavailable('transmitter stream configuration is invalid', { issuer: t.issuer })
    const aud = s['aud']
    if (!(aud === this.#o.audience || (Array.isArray(aud) && aud.includes(this.#o.audience))))
      throw unavailable('transmitter stream is for another audience', { issuer: t.issuer })
    const delivery = s['delivery']
    const pollUrl = isRecord(delivery) && delivery['method'] === POLL_DELIVERY ? delivery['endpoint_url'] : undefined
    if (typeof pollUrl !== 'string' || !pollUrl.startsWith('https://')) throw unavailable('transmitter stream has no https poll endpoint', { issuer: t.issuer })
    this.#o.store.setSubscription(t.issuer, s['stream_id'], pollUrl, Math.floor(this.#now() / 1000))
    this.#o.log.info({ issuer: t.issuer, stream_id: s['stream_id'], events: s['events_delivered'] }, 'SSF stream created at transmitter')
    return { issuer: t.issuer, streamId: s['stream_id'], pollUrl, keys, ...dc(t) }
  }

  /** Our push stream at `t`: the one we hold when the transmitter still has it, else a new one with a fresh path and secret. */
  async #subscribePush(
    t: ReceiverTransmitter,
    known: ReturnType<SsfStore['getSubscription']>,
    configEndpoint: string,
    keys: JwksCache,
    opts: { signal?: AbortSignal },
  ): Promise<Subscription> {
    if (known?.pushPath !== undefined && known.pushSecretHash !== undefined) {
      const r = await this.#o.transport.getJsonStatus(`${configEndpoint}?stream_id=${encodeURIComponent(known.streamId)}`, opts)
      if (r.status === 200 && isRecord(r.body) && isRecord(r.body['delivery']) && r.body['delivery']['method'] === PUSH_DELIVERY)
        return { issuer: t.issuer, streamId: known.streamId, pollUrl: '', push: { path: known.pushPath, secretHash: known.pushSecretHash }, keys, ...dc(t) }
      if (r.status !== 404 && r.status !== 200) throw unavailable('transmitter stream lookup failed', { issuer: t.issuer, status: r.status })
      this.#o.log.warn({ issuer: t.issuer, stream_id: known.streamId }, 'SSF push stream gone at the transmitter; creating another')
    }
    const path = randomBytes(16).toString('hex')
    const secret = randomBytes(32).toString('base64url')
    const endpoint = `${this.#o.tokenIssuer.replace(/\/+$/, '')}/ssf/push/${path}`
    const requested = SUPPORTED_EVENT_TYPES.filter((e) => !STREAM_EVENT_TYPES.includes(e))
    const r = await this.#o.transport.postJson(
      configEndpoint,
      { delivery: { method: PUSH_DELIVERY, endpoint_url: endpoint, authorization_header: `Bearer ${secret}` }, events_requested: requested },
      opts,
    )
    const s = r.body
    if (r.status !== 201 && r.status !== 200) throw unavailable('transmitter refused the stream', { issuer: t.issuer, status: r.status })
    if (!isRecord(s) || typeof s['stream_id'] !== 'string' || s['iss'] !== t.issuer)
      throw unavailable('transmitter stream configuration is invalid', { issuer: t.issuer })
    const aud = s['aud']
    if (!(aud === this.#o.audience || (Array.isArray(aud) && aud.includes(this.#o.audience))))
      throw unavailable('transmitter stream is for another audience', { issuer: t.issuer })
    const delivery = s['delivery']
    if (!isRecord(delivery) || delivery['method'] !== PUSH_DELIVERY || delivery['endpoint_url'] !== endpoint)
      throw unavailable('transmitter stream does not push to our endpoint', { issuer: t.issuer })
    const secretHash = sha256(`Bearer ${secret}`).toString('base64url')
    this.#o.store.setSubscription(t.issuer, s['stream_id'], '', Math.floor(this.#now() / 1000), { path, secretHash })
    this.#o.log.info({ issuer: t.issuer, stream_id: s['stream_id'], events: s['events_delivered'], delivery: 'push' }, 'SSF stream created at transmitter')
    return { issuer: t.issuer, streamId: s['stream_id'], pollUrl: '', push: { path, secretHash }, keys, ...dc(t) }
  }

  /**
   * One pushed SET (RFC 8935) at `<issuer>/ssf/push/<path>`: the path names the
   * subscription, the Authorization header must carry its secret, then the SET
   * is handled like a polled one.
   */
  async receivePush(path: string, authorization: string | undefined, token: string): Promise<PushAnswer> {
    const sub = this.#pushed.get(path)
    if (sub?.push === undefined) return { status: 404 }
    const expected = Buffer.from(sub.push.secretHash, 'base64url')
    const given = sha256(authorization ?? '')
    if (authorization === undefined || !timingSafeEqual(expected, given)) {
      this.#o.log.warn({ issuer: sub.issuer }, 'SSF push refused: wrong or missing authorization')
      return { status: 401 }
    }
    const jti = unverifiedJti(token)
    if (jti === undefined) return { status: 400, body: { err: 'invalid_request', description: 'not a security event token' } }
    const out = await this.handle(sub, { [jti]: token })
    const refused = out.setErrs[jti]
    if (refused !== undefined) return { status: 400, body: refused }
    if (out.ack.includes(jti)) return { status: 202 }
    return { status: 503 }
  }

  /** One poll: sends the previous outcome, handles what comes. Returns the outcome to send next and whether more is waiting. */
  async pollOnce(
    sub: Subscription,
    prev: DeliveryOutcome,
    opts: { returnImmediately?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ next: DeliveryOutcome; more: boolean }> {
    const body = { maxEvents: 100, returnImmediately: opts.returnImmediately ?? false, ack: prev.ack, setErrs: prev.setErrs }
    const r = await this.#o.transport.postJson(sub.pollUrl, body, opts.signal ? { signal: opts.signal } : {})
    if (r.status !== 200 || !isRecord(r.body) || !isRecord(r.body['sets']))
      throw unavailable('transmitter poll failed', { issuer: sub.issuer, status: r.status })
    const sets: Record<string, string> = {}
    for (const [jti, set] of Object.entries(r.body['sets'])) if (typeof set === 'string') sets[jti] = set
    return { next: await this.handle(sub, sets), more: r.body['moreAvailable'] === true }
  }

  /** Verifies, decides and applies one delivery, in order; returns what to acknowledge and what was refused. */
  async handle(sub: Subscription, sets: Readonly<Record<string, string>>): Promise<DeliveryOutcome> {
    const out: DeliveryOutcome = { ack: [], setErrs: {} }
    const nowSec = Math.floor(this.#now() / 1000)
    for (const [jti, token] of Object.entries(sets)) {
      if (jti.length === 0 || jti.length > 256) {
        // not a jti any valid SET has: neither recorded nor answered
        this.#o.log.warn({ issuer: sub.issuer, length: jti.length }, 'SSF delivery with an impossible jti ignored')
        continue
      }
      let v: VerifiedSet
      try {
        v = await verifySet(token, {
          issuer: sub.issuer,
          audience: this.#o.audience,
          keys: sub.keys,
          replay: this.#replay,
          nowSec,
        })
        if (v.claims.jti !== jti) {
          this.#replay.forget(setReplayKey(v.claims))
          throw new IdentityError('ERR_SET_INVALID', 'invalid security event token', { details: { reason: 'jti_key_mismatch' } })
        }
      } catch (err) {
        const code = isIdentityError(err) ? err.code : undefined
        if (code === 'ERR_SET_REPLAYED') {
          out.ack.push(jti)
          continue
        }
        if (code === 'ERR_UNAVAILABLE' || code === 'ERR_RESOURCE_EXHAUSTED') {
          this.#o.log.warn({ issuer: sub.issuer, jti, [F.ERROR_CODE]: code }, 'SSF event not verified yet; will retry')
          continue
        }
        const reason = isIdentityError(err) ? err.details?.['reason'] : undefined
        this.#o.log.warn({ issuer: sub.issuer, jti, [F.ERROR_CODE]: code ?? 'internal', reason }, 'SSF event refused')
        out.setErrs[jti] = { err: setDeliveryError(code), description: typeof reason === 'string' ? reason : 'refused' }
        this.#audit({
          type: 'signal',
          outcome: 'refused',
          reason: code ?? 'internal',
          attributes: { issuer: sub.issuer.slice(0, 256), jti: jti.slice(0, 256) },
        })
        this.#o.store.recordReceived({
          issuer: sub.issuer,
          jti,
          eventType: 'unknown',
          subject: null,
          decision: null,
          outcome: `refused: ${code ?? 'internal'}`,
          receivedAt: nowSec,
        })
        continue
      }
      if (this.#o.store.isReceived(sub.issuer, jti)) {
        out.ack.push(jti)
        continue
      }
      if (v.eventType === EVENT_TYPES.streamUpdated)
        this.#o.log.warn({ issuer: sub.issuer, status: v.event['status'], reason: v.event['reason'] }, 'SSF stream status changed by the transmitter')
      const decision = decide(this.#o.policy, signalOf(v, sub.defaultConfidence), { nowSec, tokenIssuer: this.#o.tokenIssuer })
      let outcome: string
      try {
        outcome = await this.#apply(decision, v, sub)
      } catch (err) {
        const code = isIdentityError(err) ? err.code : undefined
        if (code !== 'ERR_REVOCATION_INVALID') {
          // may pass: not acknowledged, so it comes again
          this.#replay.forget(setReplayKey(v.claims))
          this.#o.log.error(
            { issuer: sub.issuer, jti, [F.ERROR_CODE]: code ?? 'internal', [F.ERR]: err instanceof Error ? err.message : String(err) },
            'SSF signal not applied; will retry',
          )
          continue
        }
        outcome = `failed: ${code}`
      }
      this.#o.store.recordReceived({ issuer: sub.issuer, jti, eventType: v.eventType, subject: v.subject, decision, outcome, receivedAt: nowSec })
      this.#auditApplied(sub.issuer, v, decision, outcome)
      this.#o.log.info({ issuer: sub.issuer, jti, event_type: shortType(v.eventType), action: decision.action, outcome }, 'SSF signal received')
      out.ack.push(jti)
    }
    return out
  }

  #audit(e: AuditEventInput): void {
    try {
      this.#o.audit?.(e)
    } catch (err) {
      this.#o.log.error({ [F.ERR]: err instanceof Error ? err.message : String(err) }, 'Audit event for a signal lost')
    }
  }

  /** The audit event of a signal acted on: what it was (issuer, jti, event type), what the policy decided, and how it went. */
  #auditApplied(issuer: string, v: VerifiedSet, d: PolicyDecision, outcome: string): void {
    const dec = d as { action: string; level?: string; target?: string; value?: string; prefix?: string; rule?: number; notAfter?: number }
    const failed = outcome.startsWith('failed')
    const spiffeId = v.agent?.spiffeId
    this.#audit({
      type: 'signal',
      outcome: failed ? 'error' : 'success',
      ...(failed ? { reason: outcome.slice('failed: '.length) || 'failed' } : {}),
      ...(spiffeId !== undefined && isSpiffeId(spiffeId) ? { subject: spiffeId } : {}),
      attributes: {
        issuer: issuer.slice(0, 256),
        jti: v.claims.jti.slice(0, 256),
        event_type: shortType(v.eventType).slice(0, 256),
        action: dec.action,
        outcome: outcome.slice(0, 256),
        ...(dec.level !== undefined ? { level: dec.level } : {}),
        ...(dec.target !== undefined ? { target: dec.target } : {}),
        ...(dec.action === 'step_up' && dec.notAfter !== undefined ? { not_after: dec.notAfter } : {}),
        ...(dec.value !== undefined ? { value: dec.value.slice(0, 256) } : {}),
        ...(dec.prefix !== undefined ? { prefix: dec.prefix.slice(0, 256) } : {}),
        ...(dec.rule !== undefined ? { rule: dec.rule } : {}),
      },
    })
  }

  async #apply(d: PolicyDecision, v: VerifiedSet, sub: Subscription): Promise<string> {
    const reason = `signal ${shortType(v.eventType)} ${v.claims.jti.slice(0, 128)} from ${sub.issuer.slice(0, 256)}${d.rule !== undefined ? ` (rule ${d.rule})` : ''}`
    switch (d.action) {
      case 'record':
        return 'recorded'
      case 'revoke':
        await this.#o.revoke({ kind: d.level, value: d.value, reason })
        return 'applied'
      case 'quarantine':
        await this.#o.revoke({ kind: 'prefix', value: d.prefix, reason, ...(d.notAfter !== undefined ? { notAfter: d.notAfter } : {}) })
        return 'applied'
      case 'narrow':
        if (this.#o.narrow === undefined) throw new IdentityError('ERR_REVOCATION_INVALID', 'narrowing is not available here')
        await this.#o.narrow({
          prefix: d.prefix,
          scopes: d.scopes,
          ...(d.resources !== undefined ? { resources: d.resources } : {}),
          notAfter: d.notAfter,
          reason,
        })
        return 'applied'
      case 'step_up':
        if (this.#o.stepUp === undefined) throw new IdentityError('ERR_REVOCATION_INVALID', 'step-up is not available here')
        await this.#o.stepUp({
          target: d.target,
          value: d.value,
          clearOnApproval: d.clearOnApproval,
          ...(d.notAfter !== undefined ? { notAfter: d.notAfter } : {}),
          signal: { issuer: sub.issuer, jti: v.claims.jti, eventType: shortType(v.eventType) },
          reason,
        })
        return 'applied'
    }
  }

  async #loop(t: ReceiverTransmitter): Promise<void> {
    const signal = this.#abort.signal
    let backoff = this.#o.retryMs ?? 1000
    let sub: Subscription | undefined
    let prev: DeliveryOutcome = { ack: [], setErrs: {} }
    while (!signal.aborted) {
      try {
        sub ??= await this.subscribe(t, { signal })
        if (sub.push !== undefined) {
          // push: events come to receivePush; nothing to do here until we close
          this.#pushed.set(sub.push.path, sub)
          await new Promise<void>((r) => signal.addEventListener('abort', () => r(), { once: true }))
          return
        }
        const r = await this.pollOnce(sub, prev, { signal })
        prev = r.next
        backoff = this.#o.retryMs ?? 1000
      } catch (err) {
        if (signal.aborted) return
        this.#o.log.warn({ issuer: t.issuer, [F.ERR]: err instanceof Error ? err.message : String(err) }, 'SSF poll failed; retrying')
        sub = undefined
        await new Promise<void>((r) => {
          const timer = setTimeout(r, backoff)
          timer.unref()
          signal.addEventListener('abort', () => (clearTimeout(timer), r()), { once: true })
        })
        backoff = Math.min(backoff * 2, 60_000)
      }
    }
  }
}

function dc(t: ReceiverTransmitter): { defaultConfidence?: number } {
  return t.defaultConfidence !== undefined ? { defaultConfidence: t.defaultConfidence } : {}
}
