import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { StoredRevocation } from '../../../src/broker/contract.js'
import { manualSignalFromWire, parsePoll, revocationEvent, SsfTransmitter, type SsfTransmitterOptions } from '../../../src/broker/ssf-transmitter.js'
import { SsfStore } from '../../../src/broker/store/ssf-store.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { EVENT_TYPES } from '../../../src/signals/event-types.js'
import { MemorySetReplayCache, verifySet } from '../../../src/signals/set.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { tempDir } from '../../helpers/temp.js'

const ISSUER = 'https://broker.example.org'
const RX = 'spiffe://example.org/secops/receiver'
const OTHER = 'spiffe://example.org/secops/other'
const AGENT = 'spiffe://example.org/agents/ci/i-1'
const NOW = 1_800_000_000

/** A fake revocation source: revoke() records an entry and tells the subscribers. */
function revocationSource() {
  const entries: StoredRevocation[] = []
  const subs = new Set<(e: StoredRevocation) => void>()
  return {
    entries,
    onRevocation(fn: (e: StoredRevocation) => void) {
      subs.add(fn)
      return () => subs.delete(fn)
    },
    listRevocations(since = 0) {
      return Promise.resolve(entries.filter((e) => e.seq > since))
    },
    revoke(kind: StoredRevocation['kind'], value: string, opts: { silent?: boolean; reason?: string } = {}): StoredRevocation {
      const e: StoredRevocation = {
        seq: entries.length + 1,
        kind,
        value,
        createdAt: NOW,
        expiresAt: NOW + 3600,
        createdBy: 'admin',
        ...(opts.reason !== undefined ? { reason: opts.reason } : {}),
      }
      entries.push(e)
      if (!opts.silent) for (const f of subs) f(e)
      return e
    },
  }
}

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

async function setup(o: Partial<SsfTransmitterOptions> & { path?: string } = {}) {
  const key = await new MemoryKeyManager().generateKey('ssf-test', 'ec-p256')
  const jwks = { keys: [{ ...key.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' }] }
  const src = o.revocations ?? revocationSource()
  const start = async (store: SsfStore, extra: Partial<SsfTransmitterOptions> = {}) => {
    const t = await SsfTransmitter.start({
      issuer: ISSUER,
      store,
      signingKey: () => ({ key, kid: 'k1', alg: 'ES256' }),
      receivers: { ids: [RX, OTHER], prefixes: [] },
      revocations: src,
      log: captureLogger(),
      now: () => NOW * 1000,
      pollWaitMs: 2_000,
      ...o,
      ...extra,
    })
    cleanups.push(() => t.close())
    return t
  }
  const store = SsfStore.open(o.path ?? ':memory:')
  const t = await start(store)
  const verify = (set: string, replay = new MemorySetReplayCache({ nowSec: () => NOW })) =>
    verifySet(set, { issuer: ISSUER, audience: RX, keys: new JwksCache({ fetchJwks: async () => jwks, nowSec: () => NOW }), replay, nowSec: NOW })
  return { t, store, src: src as ReturnType<typeof revocationSource>, verify, start }
}

const ALL = { events_requested: [EVENT_TYPES.sessionRevoked, EVENT_TYPES.credentialChange, 'https://example.com/unknown'] }

describe('SsfTransmitter', () => {
  it('creates a poll stream for an allowed receiver, with aud = its SPIFFE ID and the events it asked for that the broker emits', async () => {
    const { t } = await setup()
    const c = t.createStream(RX, { ...ALL, description: 'secops', delivery: { method: 'urn:ietf:rfc:8936' } })
    expect(c).toMatchObject({
      iss: ISSUER,
      aud: RX,
      events_delivered: [EVENT_TYPES.sessionRevoked, EVENT_TYPES.credentialChange],
      delivery: { method: 'urn:ietf:rfc:8936', endpoint_url: `${ISSUER}/ssf/poll/${c.stream_id}` },
      description: 'secops',
    })
    expect(c.stream_id).toMatch(/^[0-9a-f]{32}$/)
    expect(t.getStream(RX, c.stream_id)).toEqual(c)
    expect(t.listStreams(RX)).toEqual([c])
    expect(t.configuration()).toMatchObject({
      spec_version: '1_0',
      issuer: ISSUER,
      jwks_uri: `${ISSUER}/jwks`,
      delivery_methods_supported: ['urn:ietf:rfc:8936'],
    })
  })

  it('refuses receivers not on the list, push delivery, transmitter-set fields, and too many streams', async () => {
    const { t } = await setup({ maxStreamsPerReceiver: 1 })
    expect(() => t.createStream('spiffe://example.org/agents/x', ALL)).toThrow(expect.objectContaining({ code: 'ERR_CLIENT_UNAUTHORIZED' }))
    expect(() => t.createStream(RX, { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://x' } })).toThrow(
      expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }),
    )
    expect(() => t.createStream(RX, { delivery: { method: 'urn:ietf:rfc:8935' } })).toThrow(expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }))
    expect(() => t.createStream(RX, { aud: 'https://evil' })).toThrow(expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }))
    expect(() => t.createStream(RX, { events_requested: 'all' })).toThrow(expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }))
    t.createStream(RX, ALL)
    expect(() => t.createStream(RX, ALL)).toThrow(expect.objectContaining({ code: 'ERR_RESOURCE_EXHAUSTED' }))
  })

  it('hides a stream from every receiver but its own (404), for read, status, verify, poll and delete', async () => {
    const { t } = await setup()
    const id = t.createStream(RX, ALL).stream_id
    const nf = expect.objectContaining({ code: 'ERR_NOT_FOUND' })
    expect(() => t.getStream(OTHER, id)).toThrow(nf)
    expect(() => t.getStatus(OTHER, id)).toThrow(nf)
    expect(() => t.setStatus(OTHER, { stream_id: id, status: 'disabled' })).toThrow(nf)
    expect(() => t.requestVerification(OTHER, { stream_id: id })).toThrow(nf)
    await expect(t.poll(OTHER, id, { returnImmediately: true })).rejects.toThrow(nf)
    expect(() => t.deleteStream(OTHER, id)).toThrow(nf)
    expect(t.listStreams(OTHER)).toEqual([])
    expect(t.getStatus(RX, id)).toEqual({ stream_id: id, status: 'enabled' })
  })

  it('turns a revocation into a signed CAEP SET that a receiver verifies, redelivers it until acknowledged, in order', async () => {
    const { t, src, verify } = await setup()
    const id = t.createStream(RX, ALL).stream_id
    src.revoke('instance', AGENT, { reason: 'compromised' })
    src.revoke('task', 'task-9')
    const first = await t.poll(RX, id, { returnImmediately: true })
    const jtis = Object.keys(first.sets)
    expect(jtis).toHaveLength(2)
    const a = await verify(first.sets[jtis[0]!]!)
    expect(a.eventType).toBe(EVENT_TYPES.credentialChange)
    expect(a.agent).toEqual({ spiffeId: AGENT })
    expect(a.event).toMatchObject({
      credential_type: 'x509',
      change_type: 'revoke',
      reason_admin: { en: 'compromised' },
      warrant_revocation: { kind: 'instance', value: AGENT, seq: 1 },
    })
    expect(a.claims.txn).toBe('revocation-1')
    const b = await verify(first.sets[jtis[1]!]!)
    expect([b.eventType, b.agent]).toEqual([EVENT_TYPES.sessionRevoked, { taskId: 'task-9' }])
    // not acknowledged: delivered again, same jtis; maxEvents caps and says more are there
    const again = await t.poll(RX, id, { returnImmediately: true, maxEvents: 1 })
    expect([Object.keys(again.sets), again.moreAvailable]).toEqual([[jtis[0]], true])
    // acknowledging one (and reporting the other as refused) empties the queue
    const after = await t.poll(RX, id, { returnImmediately: true, ack: [jtis[0]!], setErrs: { [jtis[1]!]: { err: 'invalid_request', description: 'x' } } })
    expect(after).toEqual({ sets: {}, moreAvailable: false })
  })

  it('sends a signal by hand on every enabled stream that asked for its type, as a verifiable SET', async () => {
    const { t, verify } = await setup()
    const all = t.createStream(RX, { events_requested: [EVENT_TYPES.credentialCompromise, EVENT_TYPES.credentialChange] }).stream_id
    const sessions = t.createStream(RX, { events_requested: [EVENT_TYPES.sessionRevoked] }).stream_id
    const off = t.createStream(OTHER, { events_requested: [EVENT_TYPES.credentialCompromise] }).stream_id
    t.setStatus(OTHER, { stream_id: off, status: 'disabled' })
    const sent = t.send(manualSignalFromWire({ event: 'credential-compromise', subject: AGENT, instance: 'i-77', reason: 'edr alert', confidence: 0.95 }))
    expect(sent).toEqual({ event_type: EVENT_TYPES.credentialCompromise, streams: [all] })
    const got = await t.poll(RX, all, { returnImmediately: true })
    const sets = Object.values(got.sets)
    expect(sets).toHaveLength(1)
    const v = await verify(sets[0]!)
    expect(v.eventType).toBe(EVENT_TYPES.credentialCompromise)
    expect(v.agent).toEqual({ spiffeId: AGENT, instanceId: 'i-77' })
    expect(v.event).toMatchObject({ credential_type: 'x509', reason_admin: { en: 'edr alert' }, confidence: 0.95, initiating_entity: 'admin' })
    expect((await t.poll(RX, sessions, { returnImmediately: true })).sets).toEqual({})
    expect(t.send(manualSignalFromWire({ event: 'session-revoked', subject: AGENT })).streams).toEqual([sessions])
    const cc = t.send(manualSignalFromWire({ event: 'credential-change', subject: AGENT }))
    expect(cc.streams).toEqual([all])
    const second = Object.values((await t.poll(RX, all, { returnImmediately: true, ack: Object.keys(got.sets) })).sets)
    expect((await verify(second[0]!)).event).toMatchObject({ credential_type: 'x509', change_type: 'revoke', initiating_entity: 'admin' })
    // the broker's own rule (an intent mismatch) says policy; the wire cannot ask for it
    t.send({ event: 'session-revoked', subject: AGENT, reason: 'intent mismatch', confidence: 1, initiatingEntity: 'policy' })
    const third = Object.values((await t.poll(RX, sessions, { returnImmediately: true })).sets)
    expect(third).toHaveLength(2)
    expect((await verify(third[1]!)).event).toMatchObject({ initiating_entity: 'policy', reason_admin: { en: 'intent mismatch' } })
    expect(manualSignalFromWire({ event: 'session-revoked', subject: AGENT, initiatingEntity: 'policy' }).initiatingEntity).toBeUndefined()
  })

  it('refuses a malformed signal sent by hand', () => {
    for (const bad of [
      null,
      { event: 'nope', subject: AGENT },
      { event: 'credential-change', subject: 'https://x' },
      { event: 'credential-change', subject: AGENT, instance: '' },
      { event: 'credential-change', subject: AGENT, confidence: 2 },
      { event: 'credential-change', subject: AGENT, reason: 'x'.repeat(513) },
    ])
      expect(() => manualSignalFromWire(bad)).toThrow(expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }))
  })

  it('delivers only what a stream asked for, nothing while paused (kept), nothing queued while disabled', async () => {
    const { t, src } = await setup()
    const onlySessions = t.createStream(RX, { events_requested: [EVENT_TYPES.sessionRevoked] }).stream_id
    src.revoke('instance', AGENT)
    expect((await t.poll(RX, onlySessions, { returnImmediately: true })).sets).toEqual({})
    src.revoke('token', 'jti-1')
    t.setStatus(RX, { stream_id: onlySessions, status: 'paused', reason: 'maintenance' })
    expect(t.getStatus(RX, onlySessions)).toEqual({ stream_id: onlySessions, status: 'paused', reason: 'maintenance' })
    src.revoke('chain', AGENT)
    expect(await t.poll(RX, onlySessions, { returnImmediately: true })).toEqual({ sets: {}, moreAvailable: false })
    t.setStatus(RX, { stream_id: onlySessions, status: 'enabled' })
    expect(Object.keys((await t.poll(RX, onlySessions, { returnImmediately: true })).sets)).toHaveLength(2)
    t.setStatus(RX, { stream_id: onlySessions, status: 'disabled' })
    src.revoke('token', 'jti-2')
    t.setStatus(RX, { stream_id: onlySessions, status: 'enabled' })
    expect(Object.keys((await t.poll(RX, onlySessions, { returnImmediately: true })).sets)).toHaveLength(2)
    expect(() => t.setStatus(RX, { stream_id: onlySessions, status: 'gone' })).toThrow(expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }))
  })

  it('sends a verification event echoing state, at most once per interval', async () => {
    const { t, verify } = await setup()
    const id = t.createStream(RX, {}).stream_id
    t.requestVerification(RX, { stream_id: id, state: 'st-1' })
    expect(() => t.requestVerification(RX, { stream_id: id })).toThrow(expect.objectContaining({ code: 'ERR_RESOURCE_EXHAUSTED' }))
    const { sets } = await t.poll(RX, id, { returnImmediately: true })
    const v = await verify(Object.values(sets)[0]!)
    expect([v.eventType, v.event.state, v.agent]).toEqual([EVENT_TYPES.verification, 'st-1', { streamId: id }])
  })

  it('a long poll waits for the next event, and ends empty at its deadline or when the caller leaves', async () => {
    const { t, src } = await setup({ pollWaitMs: 200 })
    const id = t.createStream(RX, ALL).stream_id
    const waiting = t.poll(RX, id, {})
    setTimeout(() => src.revoke('instance', AGENT), 20)
    expect(Object.keys((await waiting).sets)).toHaveLength(1)
    const t0 = Date.now()
    const other = t.createStream(OTHER, ALL).stream_id
    expect(await t.poll(OTHER, other, { ack: [] })).toMatchObject({ moreAvailable: false })
    // the acked stream of RX is not the one OTHER waited on
    expect(Date.now() - t0).toBeGreaterThanOrEqual(150)
    const ac = new AbortController()
    const left = t.poll(RX, id, { ack: Object.keys((await t.poll(RX, id, { returnImmediately: true })).sets) }, { signal: ac.signal })
    ac.abort()
    expect(await left).toEqual({ sets: {}, moreAvailable: false })
  })

  it('keeps unacknowledged events across a restart and catches up on revocations recorded while it was down', async () => {
    const tmp = tempDir('wssf-')
    cleanups.push(tmp.cleanup)
    const path = join(tmp.dir, 'ssf.sqlite3')
    const { t, src, store, start, verify } = await setup({ path })
    const id = t.createStream(RX, ALL).stream_id
    src.revoke('instance', AGENT)
    t.close()
    store.close()
    src.revoke('task', 'task-2', { silent: true })
    const store2 = SsfStore.open(path)
    cleanups.push(() => store2.close())
    const t2 = await start(store2)
    const { sets } = await t2.poll(RX, id, { returnImmediately: true })
    const got = await Promise.all(Object.values(sets).map((s) => verify(s)))
    expect(got.map((g) => g.event['warrant_revocation'])).toEqual([
      { kind: 'instance', value: AGENT, seq: 1 },
      { kind: 'task', value: 'task-2', seq: 2 },
    ])
    // a third start does not emit them again
    t2.close()
    const t3 = await start(store2)
    expect(Object.keys((await t3.poll(RX, id, { returnImmediately: true })).sets)).toHaveLength(2)
  })

  it('emits a revocation once when it arrives both live and in the catch-up list at start', async () => {
    const tmp = tempDir('wssf-')
    cleanups.push(tmp.cleanup)
    const path = join(tmp.dir, 'ssf.sqlite3')
    const { t, store, src, start } = await setup({ path })
    const id = t.createStream(RX, ALL).stream_id
    t.close()
    // recorded while the transmitter starts: it is told live and also finds it in the list
    const racing = {
      ...src,
      onRevocation: src.onRevocation.bind(src),
      listRevocations: (since?: number) => {
        src.revoke('instance', AGENT)
        return src.listRevocations(since)
      },
    }
    const t2 = await start(store, { revocations: racing })
    expect(Object.keys((await t2.poll(RX, id, { returnImmediately: true })).sets)).toHaveLength(1)
  })

  it('drops events beyond a full queue and says so in the log', async () => {
    const log = captureLogger()
    const { t, src } = await setup({ maxQueuedPerStream: 1, log })
    const id = t.createStream(RX, ALL).stream_id
    src.revoke('instance', AGENT)
    src.revoke('instance', `${AGENT}-2`)
    expect(Object.keys((await t.poll(RX, id, { returnImmediately: true })).sets)).toHaveLength(1)
    expect(log.lines.some((l) => l.level === 'error' && l.msg.includes('queue full'))).toBe(true)
  })
})

describe('revocationEvent', () => {
  const e = (kind: StoredRevocation['kind'], value: string): StoredRevocation => ({
    seq: 3,
    kind,
    value,
    createdAt: NOW,
    expiresAt: NOW + 1,
    createdBy: 'admin',
  })
  it.each([
    ['token', 'jti-1', EVENT_TYPES.sessionRevoked, { format: 'jwt_id', iss: ISSUER, jti: 'jti-1' }],
    ['chain', 'jti-1', EVENT_TYPES.sessionRevoked, { format: 'jwt_id', iss: ISSUER, jti: 'jti-1' }],
    ['chain', AGENT, EVENT_TYPES.sessionRevoked, { format: 'uri', uri: AGENT }],
    ['task', 'task-1', EVENT_TYPES.sessionRevoked, { format: 'complex', task: { format: 'opaque', id: 'task-1' } }],
    ['instance', AGENT, EVENT_TYPES.credentialChange, { format: 'uri', uri: AGENT }],
    ['prefix', 'spiffe://example.org/agents', EVENT_TYPES.credentialChange, { format: 'uri', uri: 'spiffe://example.org/agents' }],
  ] as const)('%s %s', (kind, value, type, subject) => {
    const r = revocationEvent(e(kind, value), ISSUER)
    expect([r.type, r.subject]).toEqual([type, subject])
  })
})

describe('parsePoll', () => {
  it('accepts RFC 8936 requests and refuses malformed ones', () => {
    expect(parsePoll(undefined)).toEqual({})
    expect(parsePoll({ maxEvents: 0, returnImmediately: true, ack: ['a'], setErrs: { b: { err: 'invalid_key', description: 'd' } } })).toEqual({
      maxEvents: 0,
      returnImmediately: true,
      ack: ['a'],
      setErrs: { b: { err: 'invalid_key', description: 'd' } },
    })
    for (const bad of [
      [],
      { maxEvents: -1 },
      { maxEvents: 1.5 },
      { maxEvents: 5000 },
      { returnImmediately: 'yes' },
      { ack: 'a' },
      { ack: [''] },
      { setErrs: { a: 'x' } },
      { setErrs: [] },
    ])
      expect(() => parsePoll(bad), JSON.stringify(bad)).toThrow(expect.objectContaining({ code: 'ERR_REQUEST_MALFORMED' }))
  })
})
