import { parseAuditEvent, type AuditEventInput } from '../../../src/audit/event.js'
import { randomUUID } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { RevocationRequest, StoredRevocation } from '../../../src/broker/contract.js'
import { configurationUrl, SsfReceiver, type SsfTransport } from '../../../src/broker/ssf-receiver.js'
import { SsfTransmitter } from '../../../src/broker/ssf-transmitter.js'
import { SsfStore } from '../../../src/broker/store/ssf-store.js'
import { signJwt } from '../../../src/broker/mint.js'
import { isIdentityError } from '../../../src/errors/identity-error.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { EVENT_TYPES } from '../../../src/signals/event-types.js'
import { parseSignalPolicy, type SignalPolicy } from '../../../src/signals/policy.js'
import type { StepUpRequest } from '../../../src/broker/step-ups.js'
import { buildSet, SET_TYP } from '../../../src/signals/set.js'
import { captureLogger } from '../../helpers/capture-logger.js'

const TX = 'https://tx-broker.example.org'
const ME = 'spiffe://example.org/warrant/broker'
const MY_ISSUER = 'https://rx-broker.example.org'
const AGENT = 'spiffe://example.org/agents/ci/i-1'
const OTHER_AGENT = 'spiffe://example.org/agents/ci/i-2'
const NOW = 1_800_000_000

const POLICY = parseSignalPolicy([
  { event: ['credential-change', 'credential-compromise'], match: { prefix: 'spiffe://example.org/agents/' }, action: 'revoke', level: 'instance' },
  { event: 'session-revoked', match: { task: 'task-q' }, action: 'quarantine', prefix: 'spiffe://example.org/agents/ci', duration: '1h' },
])

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function setup(
  o: { audience?: string; revoke?: (r: RevocationRequest) => Promise<unknown>; policy?: SignalPolicy; stepUp?: (s: StepUpRequest) => Promise<void> } = {},
) {
  const key = await new MemoryKeyManager().generateKey('tx', 'ec-p256')
  const jwks = { keys: [{ ...key.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'ES256' }] }
  const entries: StoredRevocation[] = []
  const subs = new Set<(e: StoredRevocation) => void>()
  const source = {
    onRevocation: (fn: (e: StoredRevocation) => void) => (subs.add(fn), () => subs.delete(fn)),
    listRevocations: (since = 0) => Promise.resolve(entries.filter((e) => e.seq > since)),
  }
  const txRevoke = (kind: StoredRevocation['kind'], value: string) => {
    const e: StoredRevocation = { seq: entries.length + 1, kind, value, createdAt: NOW, expiresAt: NOW + 3600, createdBy: 'admin' }
    entries.push(e)
    for (const f of subs) f(e)
  }
  const txStore = SsfStore.open(':memory:')
  const tx = await SsfTransmitter.start({
    issuer: TX,
    store: txStore,
    signingKey: () => ({ key, kid: 'k1', alg: 'ES256' }),
    receivers: { ids: [ME], prefixes: [] },
    revocations: source,
    log: captureLogger(),
    now: () => NOW * 1000,
    pollWaitMs: 50,
  })
  cleanups.push(() => tx.close())
  /** Injected into each poll's answer: extra SETs (forged, replayed...). */
  const inject: Record<string, string>[] = []
  const calls: string[] = []
  const transport: SsfTransport = {
    getJson: async (url) => {
      calls.push(`GET ${url}`)
      if (url === configurationUrl(TX)) return tx.configuration()
      if (url === `${TX}/jwks`) return jwks
      throw new Error(`unexpected GET ${url}`)
    },
    getJsonStatus: async (url) => {
      throw new Error(`unexpected GET ${url}`)
    },
    postJson: async (url, body) => {
      calls.push(`POST ${url}`)
      try {
        if (url === `${TX}/ssf/streams`) return { status: 201, body: tx.createStream(ME, body) }
        const m = /\/ssf\/poll\/([0-9a-f]+)$/.exec(url)
        if (m) {
          const r = await tx.poll(ME, m[1], body)
          return { status: 200, body: { ...r, sets: { ...r.sets, ...inject.shift() } } }
        }
      } catch (err) {
        if (isIdentityError(err, 'ERR_NOT_FOUND')) return { status: 404, body: { error: 'not_found' } }
        throw err
      }
      throw new Error(`unexpected POST ${url}`)
    },
  }
  const revoked: RevocationRequest[] = []
  const audits: AuditEventInput[] = []
  const rxStore = SsfStore.open(':memory:')
  const rx = new SsfReceiver({
    transmitters: [{ issuer: TX }],
    audience: o.audience ?? ME,
    tokenIssuer: MY_ISSUER,
    policy: o.policy ?? POLICY,
    revoke: o.revoke ?? (async (r) => void revoked.push(r)),
    ...(o.stepUp ? { stepUp: o.stepUp } : {}),
    store: rxStore,
    transport,
    log: captureLogger(),
    now: () => NOW * 1000,
    audit: (e) => void audits.push(e),
  })
  cleanups.push(() => rx.close())
  const sign = async (claims: Record<string, unknown>, signer = key) => signJwt(claims, { signer, kid: 'k1', alg: 'ES256', typ: SET_TYP })
  return { tx, txStore, rx, rxStore, txRevoke, revoked, inject, transport, calls, sign, audits }
}

const empty = { ack: [], setErrs: {} }

describe('SsfReceiver', () => {
  it('subscribes once, and a compromised instance at the transmitter revokes only that instance here, with a reason naming the signal', async () => {
    const { rx, rxStore, txRevoke, revoked } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    expect(rxStore.getSubscription(TX)).toEqual({ issuer: TX, streamId: sub.streamId, pollUrl: `${TX}/ssf/poll/${sub.streamId}` })
    txRevoke('instance', AGENT)
    const first = await rx.pollOnce(sub, empty, { returnImmediately: true })
    expect(revoked).toEqual([
      { kind: 'instance', value: AGENT, reason: expect.stringMatching(/^signal credential-change \S+ from https:\/\/tx-broker\.example\.org \(rule 0\)$/) },
    ])
    expect(first.next.ack).toHaveLength(1)
    // acknowledged: nothing comes again
    const second = await rx.pollOnce(sub, first.next, { returnImmediately: true })
    expect(second.next).toEqual(empty)
    expect(revoked).toHaveLength(1)
    expect(rxStore.listReceived().map((r) => [r.eventType, r.outcome])).toEqual([[EVENT_TYPES.credentialChange, 'applied']])
    // the same subscription is found again (a restart polls the stream it has)
    expect((await rx.subscribe({ issuer: TX })).streamId).toBe(sub.streamId)
  })

  it('audits each signal it applies, records or refuses, naming it (issuer, jti, event type) and the decision', async () => {
    const { rx, txRevoke, inject, audits } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    txRevoke('instance', AGENT)
    inject.push({ 'not-a-set': 'garbage' })
    await rx.pollOnce(sub, empty, { returnImmediately: true })
    const events = audits.map((e) => parseAuditEvent({ ...e, v: 1, time: new Date(NOW * 1000).toISOString() }))
    expect(events).toEqual(
      expect.arrayContaining([
        expect.objectContaining({
          type: 'signal',
          outcome: 'success',
          subject: AGENT,
          attributes: expect.objectContaining({
            issuer: TX,
            jti: expect.any(String),
            event_type: 'credential-change',
            action: 'revoke',
            level: 'instance',
            value: AGENT,
            rule: 0,
            outcome: 'applied',
          }),
        }),
        expect.objectContaining({ type: 'signal', outcome: 'refused', reason: 'ERR_SET_INVALID', attributes: { issuer: TX, jti: 'not-a-set' } }),
      ]),
    )
    expect(events).toHaveLength(2)
  })

  it('quarantines by the policy and only records what no rule covers', async () => {
    const { rx, txRevoke, revoked, rxStore } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    txRevoke('task', 'task-q')
    txRevoke('task', 'task-other')
    await rx.pollOnce(sub, empty, { returnImmediately: true })
    expect(revoked).toEqual([
      { kind: 'prefix', value: 'spiffe://example.org/agents/ci', notAfter: NOW + 3600, reason: expect.stringContaining('session-revoked') },
    ])
    expect(rxStore.listReceived().map((r) => r.outcome)).toEqual(['applied', 'recorded'])
  })

  it('steps up the agent by the policy, naming the signal (recorded and audited); without step-ups here the signal is recorded as failed', async () => {
    const policy = parseSignalPolicy([
      { event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/' }, action: 'step_up', target: 'instance', duration: '2h' },
    ])
    const steps: StepUpRequest[] = []
    const { rx, txRevoke, revoked, rxStore, audits } = await setup({ policy, stepUp: async (s) => void steps.push(s) })
    const sub = await rx.subscribe({ issuer: TX })
    txRevoke('instance', AGENT)
    await rx.pollOnce(sub, empty, { returnImmediately: true })
    const [got] = rxStore.listReceived()
    expect(steps).toEqual([
      {
        target: 'instance',
        value: AGENT,
        clearOnApproval: true,
        notAfter: NOW + 7200,
        signal: { issuer: TX, jti: got!.jti, eventType: 'credential-change' },
        reason: `signal credential-change ${got!.jti} from ${TX} (rule 0)`,
      },
    ])
    expect(revoked).toEqual([])
    expect(got).toMatchObject({ outcome: 'applied', decision: { action: 'step_up', target: 'instance', value: AGENT } })
    const e = parseAuditEvent({ ...audits[0]!, v: 1, time: new Date(NOW * 1000).toISOString() })
    expect(e).toMatchObject({
      type: 'signal',
      outcome: 'success',
      subject: AGENT,
      attributes: { action: 'step_up', target: 'instance', value: AGENT, not_after: NOW + 7200, jti: got!.jti, rule: 0, outcome: 'applied' },
    })

    const bare = await setup({ policy })
    const s2 = await bare.rx.subscribe({ issuer: TX })
    bare.txRevoke('instance', AGENT)
    const r = await bare.rx.pollOnce(s2, empty, { returnImmediately: true })
    expect(r.next.ack).toHaveLength(1)
    expect(bare.rxStore.listReceived().map((x) => x.outcome)).toEqual(['failed: ERR_REVOCATION_INVALID'])
  })

  it('refuses forged, wrong-audience, unsigned and malformed SETs with their RFC 8935 err, and changes nothing', async () => {
    const { rx, inject, revoked, sign, rxStore } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    const forger = await new MemoryKeyManager().generateKey('evil', 'ec-p256')
    const claims = (aud = ME) =>
      buildSet({
        issuer: TX,
        audience: aud,
        eventType: EVENT_TYPES.credentialCompromise,
        event: { credential_type: 'x509' },
        subject: { format: 'uri', uri: OTHER_AGENT },
        nowSec: NOW,
      })
    const forged = claims()
    const wrongAud = claims('spiffe://example.org/someone-else')
    const unsigned = claims()
    const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
    inject.push({
      [forged.jti]: await sign(forged, forger),
      [wrongAud.jti]: await sign(wrongAud),
      [unsigned.jti]: `${b64({ alg: 'none', typ: SET_TYP })}.${b64(unsigned)}.`,
      'not-a-set': 'garbage',
    })
    const r = await rx.pollOnce(sub, empty, { returnImmediately: true })
    expect(revoked).toEqual([])
    expect(r.next.ack).toEqual([])
    expect(Object.fromEntries(Object.entries(r.next.setErrs).map(([k, v]) => [k, v.err]))).toEqual({
      [forged.jti]: 'invalid_key',
      [wrongAud.jti]: 'invalid_audience',
      [unsigned.jti]: 'invalid_request',
      'not-a-set': 'invalid_request',
    })
    expect(rxStore.listReceived().every((s) => s.outcome.startsWith('refused'))).toBe(true)
    // a key no SET can have is neither recorded nor answered
    const before = rxStore.listReceived().length
    inject.push({ ['x'.repeat(300)]: 'garbage' })
    expect((await rx.pollOnce(sub, empty, { returnImmediately: true })).next).toEqual(empty)
    expect(rxStore.listReceived()).toHaveLength(before)
  })

  it('acts once on a replayed SET (acknowledged, nothing done) and refuses a SET filed under another jti', async () => {
    const { rx, inject, revoked, sign } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    const c = buildSet({
      issuer: TX,
      audience: ME,
      eventType: EVENT_TYPES.credentialCompromise,
      event: { credential_type: 'x509' },
      subject: { format: 'uri', uri: AGENT },
      nowSec: NOW,
    })
    const set = await sign(c)
    inject.push({ [c.jti]: set })
    expect((await rx.pollOnce(sub, empty, { returnImmediately: true })).next.ack).toEqual([c.jti])
    inject.push({ [c.jti]: set })
    expect((await rx.pollOnce(sub, empty, { returnImmediately: true })).next.ack).toEqual([c.jti])
    expect(revoked).toHaveLength(1)
    const d = buildSet({
      issuer: TX,
      audience: ME,
      eventType: EVENT_TYPES.credentialCompromise,
      event: { credential_type: 'x509' },
      subject: { format: 'uri', uri: OTHER_AGENT },
      nowSec: NOW,
    })
    const other = randomUUID()
    inject.push({ [other]: await sign(d) })
    const r = await rx.pollOnce(sub, empty, { returnImmediately: true })
    expect(r.next.setErrs[other]?.err).toBe('invalid_request')
    expect(revoked).toHaveLength(1)
    // the SET under its own jti is still fresh
    inject.push({ [d.jti]: await sign(d) })
    await rx.pollOnce(sub, empty, { returnImmediately: true })
    expect(revoked.map((x) => x.value)).toEqual([AGENT, OTHER_AGENT])
  })

  it('after a restart, a signal already recorded is acknowledged and not acted on again (the store remembers, not only the cache)', async () => {
    const { rx, inject, revoked, sign, rxStore, transport } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    const c = buildSet({
      issuer: TX,
      audience: ME,
      eventType: EVENT_TYPES.credentialCompromise,
      event: { credential_type: 'x509' },
      subject: { format: 'uri', uri: AGENT },
      nowSec: NOW,
    })
    const set = await sign(c)
    inject.push({ [c.jti]: set })
    await rx.pollOnce(sub, empty, { returnImmediately: true })
    const restarted = new SsfReceiver({
      transmitters: [],
      audience: ME,
      tokenIssuer: MY_ISSUER,
      policy: POLICY,
      revoke: async (r) => void revoked.push(r),
      store: rxStore,
      transport,
      log: captureLogger(),
      now: () => NOW * 1000,
    })
    const sub2 = await restarted.subscribe({ issuer: TX })
    inject.push({ [c.jti]: set })
    expect((await restarted.pollOnce(sub2, empty, { returnImmediately: true })).next.ack).toEqual([c.jti])
    expect(revoked).toHaveLength(1)
  })

  it('does not acknowledge a signal it could not apply, and applies it when it comes again', async () => {
    let fail = true
    const done: RevocationRequest[] = []
    const { rx, txRevoke } = await setup({
      revoke: async (r) => {
        if (fail) throw new Error('store busy')
        done.push(r)
      },
    })
    const sub = await rx.subscribe({ issuer: TX })
    txRevoke('instance', AGENT)
    const r1 = await rx.pollOnce(sub, empty, { returnImmediately: true })
    expect(r1.next).toEqual(empty)
    fail = false
    const r2 = await rx.pollOnce(sub, r1.next, { returnImmediately: true })
    expect(r2.next.ack).toHaveLength(1)
    expect(done.map((d) => d.value)).toEqual([AGENT])
  })

  it('refuses a transmitter whose configuration names another issuer, or whose stream is for another audience', async () => {
    const { rx, transport } = await setup({ audience: 'spiffe://example.org/not-me' })
    await expect(rx.subscribe({ issuer: TX })).rejects.toThrow(/another audience/)
    const liar = new SsfReceiver({
      transmitters: [],
      audience: ME,
      tokenIssuer: MY_ISSUER,
      policy: POLICY,
      revoke: async () => undefined,
      store: SsfStore.open(':memory:'),
      transport: {
        ...transport,
        getJson: async () => ({
          issuer: 'https://evil.example',
          jwks_uri: `${TX}/jwks`,
          configuration_endpoint: `${TX}/ssf/streams`,
          delivery_methods_supported: ['urn:ietf:rfc:8936'],
        }),
      },
      log: captureLogger(),
    })
    await expect(liar.subscribe({ issuer: TX })).rejects.toThrow(/another issuer/)
  })

  it('creates a new stream when the remembered one is gone', async () => {
    const { rx, tx, rxStore } = await setup()
    const sub = await rx.subscribe({ issuer: TX })
    tx.deleteStream(ME, sub.streamId)
    const again = await rx.subscribe({ issuer: TX })
    expect(again.streamId).not.toBe(sub.streamId)
    expect(rxStore.getSubscription(TX)!.streamId).toBe(again.streamId)
  })

  it('runs a poll loop per transmitter until closed', async () => {
    const { rx, txRevoke, revoked, rxStore } = await setup()
    rx.start()
    // events go to streams that exist: wait for the receiver's
    for (let i = 0; i < 200 && rxStore.getSubscription(TX) === undefined; i++) await new Promise((r) => setTimeout(r, 10))
    txRevoke('instance', AGENT)
    for (let i = 0; i < 200 && revoked.length === 0; i++) await new Promise((r) => setTimeout(r, 10))
    expect(revoked.map((r) => r.value)).toEqual([AGENT])
    await rx.close()
  })
})
