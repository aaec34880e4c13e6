import net from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startBrokerHttpServer, type BrokerHttpServer } from '../../src/broker/http/broker-http-server.js'
import { boundsCeilingSource } from '../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl } from '../../src/broker/service.js'
import { SsfTransmitter } from '../../src/broker/ssf-transmitter.js'
import { SsfReceiver } from '../../src/broker/ssf-receiver.js'
import { httpsSsfTransport } from '../../src/broker/http/ssf-client.js'
import { parseSignalPolicy } from '../../src/signals/policy.js'
import { SsfStore } from '../../src/broker/store/ssf-store.js'
import { MemoryKeyManager } from '../../src/keymanager/memory/index.js'
import { EVENT_TYPES } from '../../src/signals/event-types.js'
import { MemorySetReplayCache, verifySet } from '../../src/signals/set.js'
import { BoundsSet } from '../../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { bundlesOf, httpConfig, makeCa, makeSvid, pem, request, type Ca, type Svid } from '../helpers/broker-http-fixtures.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { tempDir } from '../helpers/temp.js'

/**
 * The broker's SSF transmitter over real HTTPS and mutual TLS: discovery,
 * stream management by an allowed receiver only, a revocation delivered by
 * RFC 8936 poll as a SET the receiver verifies against the broker's JWKS,
 * acknowledgement, and isolation between receivers.
 */

const TD = TrustDomain.fromString('example.org')
const RX = 'spiffe://example.org/secops/receiver'
const RX2 = 'spiffe://example.org/secops/other'
const AGENT = 'spiffe://example.org/agents/a'
const STRANGER = 'spiffe://example.org/agents/b'

let ca: Ca
let caPem: string
let issuer: string
let svc: BrokerServiceImpl
let broker: BrokerHttpServer
let ssf: SsfTransmitter
let store: SsfStore
const svids: Record<string, Svid> = {}
const tmp = tempDir('wssfw-')

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

beforeAll(async () => {
  ca = await makeCa('example.org')
  caPem = pem(ca.certificate)
  const bundles = bundlesOf([ca])
  for (const id of [RX, RX2, STRANGER]) svids[id] = await makeSvid(ca, id)
  const serverSvid = await makeSvid(ca, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
  const port = await freePort()
  issuer = `https://localhost:${port}`
  svc = await createBrokerService(
    { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => BoundsSet.parse(TD, {})), jwtBundles: bundles, log: captureLogger() },
    { issuer, storePath: join(tmp.dir, 'broker.db') },
  )
  store = SsfStore.open(join(tmp.dir, 'ssf.db'))
  ssf = await SsfTransmitter.start({
    issuer,
    store,
    signingKey: () => svc.keys.active(),
    receivers: { ids: [RX], prefixes: ['spiffe://example.org/secops/'] },
    revocations: svc,
    log: captureLogger(),
    pollWaitMs: 500,
  })
  broker = await startBrokerHttpServer({
    service: svc,
    config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port } }),
    trust: { localTrustDomain: () => TD, bundles: () => bundles, version: () => bundles },
    identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
    log: captureLogger(),
    ssf,
  })
}, 30_000)

afterAll(async () => {
  ssf?.close()
  await broker?.close()
  await svc?.close()
  store?.close()
  tmp.cleanup()
})

const JSON_CT = { 'content-type': 'application/json' }
const call = (method: string, path: string, as: string | undefined, body?: unknown) =>
  request(`${issuer}${path}`, {
    method,
    ca: caPem,
    headers: body === undefined ? {} : JSON_CT,
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    ...(as !== undefined ? { client: svids[as]! } : {}),
  })

describe('SSF transmitter on the broker', () => {
  it('publishes its configuration at the well-known path, without authentication', async () => {
    const r = await call('GET', '/.well-known/ssf-configuration', undefined)
    expect(r.status).toBe(200)
    expect(r.json()).toMatchObject({ spec_version: '1_0', issuer, jwks_uri: `${issuer}/jwks`, configuration_endpoint: `${issuer}/ssf/streams` })
  })

  it('refuses callers without an SVID (401) and SVIDs not on the receivers list (403)', async () => {
    expect((await call('POST', '/ssf/streams', undefined, {})).status).toBe(401)
    const r = await call('POST', '/ssf/streams', STRANGER, {})
    expect([r.status, r.json().error]).toEqual([403, 'access_denied'])
    const bad = await request(`${issuer}/ssf/streams`, { method: 'POST', ca: caPem, client: svids[RX]!, headers: { 'content-type': 'text/plain' }, body: '{}' })
    expect([bad.status, bad.json().error]).toEqual([400, 'invalid_request'])
  })

  it('delivers a revocation by poll as a SET the receiver verifies with the JWKS, until acknowledged; other receivers see nothing', async () => {
    const created = await call('POST', '/ssf/streams', RX, { events_requested: [EVENT_TYPES.credentialChange, EVENT_TYPES.sessionRevoked] })
    expect(created.status).toBe(201)
    const stream = created.json() as { stream_id: string; aud: string; delivery: { endpoint_url: string } }
    expect(stream.aud).toBe(RX)
    await svc.revokeAt({ kind: 'instance', value: AGENT, reason: 'signal test' }, 'admin')
    const pollPath = new URL(stream.delivery.endpoint_url).pathname
    const polled = await call('POST', pollPath, RX, { returnImmediately: true })
    expect(polled.status).toBe(200)
    const { sets, moreAvailable } = polled.json() as { sets: Record<string, string>; moreAvailable: boolean }
    expect(moreAvailable).toBe(false)
    const [jti, set] = Object.entries(sets)[0]!
    const keys = new JwksCache({ fetchJwks: async () => (await call('GET', '/jwks', undefined)).json() })
    const v = await verifySet(set, { issuer, audience: RX, keys, replay: new MemorySetReplayCache(), nowSec: Math.floor(Date.now() / 1000) })
    expect([v.eventType, v.agent, v.claims.jti]).toEqual([EVENT_TYPES.credentialChange, { spiffeId: AGENT }, jti])

    expect((await call('POST', pollPath, RX2, { returnImmediately: true })).status).toBe(404)
    expect((await call('GET', `/ssf/streams?stream_id=${stream.stream_id}`, RX2)).status).toBe(404)

    const acked = await call('POST', pollPath, RX, { ack: [jti], returnImmediately: true })
    expect(acked.json()).toEqual({ sets: {}, moreAvailable: false })
  })

  it('updates a stream (PATCH keeps what is left out, PUT resets it) and refuses changing what the transmitter sets', async () => {
    const id = (
      (await call('POST', '/ssf/streams', RX2, { events_requested: [EVENT_TYPES.credentialChange], description: 'first' })).json() as { stream_id: string }
    ).stream_id
    const patched = await call('PATCH', '/ssf/streams', RX2, { stream_id: id, events_requested: [EVENT_TYPES.sessionRevoked] })
    expect(patched.status).toBe(200)
    expect(patched.json()).toMatchObject({
      stream_id: id,
      events_requested: [EVENT_TYPES.sessionRevoked],
      events_delivered: [EVENT_TYPES.sessionRevoked],
      description: 'first',
    })
    const put = await call('PUT', '/ssf/streams', RX2, { stream_id: id, events_requested: [EVENT_TYPES.credentialChange] })
    expect(put.status).toBe(200)
    expect(put.json()).toMatchObject({ events_delivered: [EVENT_TYPES.credentialChange] })
    expect((put.json() as { description?: string }).description).toBeUndefined()
    for (const bad of [
      { aud: 'spiffe://example.org/else' },
      { iss: 'https://evil.example' },
      { delivery: { method: 'urn:ietf:rfc:8935', endpoint_url: 'https://evil.example/x' } },
    ]) {
      const r = await call('PATCH', '/ssf/streams', RX2, { stream_id: id, ...bad })
      expect([r.status, r.json().error]).toEqual([400, 'invalid_request'])
    }
    // another receiver's stream is not found
    expect((await call('PATCH', '/ssf/streams', RX, { stream_id: id, description: 'mine now' })).status).toBe(404)
    expect((await call('GET', `/ssf/streams?stream_id=${id}`, RX2)).json()).toMatchObject({ events_delivered: [EVENT_TYPES.credentialChange] })
    await call('DELETE', `/ssf/streams?stream_id=${id}`, RX2)
  })

  it('removing a subject leaves its events out of that stream, adding it back includes them again; the configuration names both endpoints', async () => {
    const cfg = (await call('GET', '/.well-known/ssf-configuration', undefined)).json() as Record<string, string>
    expect(new URL(cfg['remove_subject_endpoint']!).pathname).toBe('/ssf/subjects:remove')
    expect(new URL(cfg['add_subject_endpoint']!).pathname).toBe('/ssf/subjects:add')
    const stream = (await call('POST', '/ssf/streams', RX2, { events_requested: [EVENT_TYPES.credentialChange] })).json() as {
      stream_id: string
      delivery: { endpoint_url: string }
    }
    const quiet = 'spiffe://example.org/agents/quiet'
    const loud = 'spiffe://example.org/agents/loud'
    const rm = await call('POST', '/ssf/subjects:remove', RX2, { stream_id: stream.stream_id, subject: { format: 'uri', uri: quiet } })
    expect(rm.status).toBe(204)
    const bad = await call('POST', '/ssf/subjects:remove', RX2, { stream_id: stream.stream_id, subject: { format: 'uri' } })
    expect([bad.status, bad.json().error]).toEqual([400, 'invalid_request'])
    await svc.revokeAt({ kind: 'instance', value: quiet, reason: 'left out' }, 'admin')
    await svc.revokeAt({ kind: 'instance', value: loud, reason: 'delivered' }, 'admin')
    const pollPath = new URL(stream.delivery.endpoint_url).pathname
    const first = (await call('POST', pollPath, RX2, { returnImmediately: true })).json() as { sets: Record<string, string> }
    const about = (set: string) => (JSON.parse(Buffer.from(set.split('.')[1]!, 'base64url').toString()) as { sub_id: { uri: string } }).sub_id.uri
    expect(Object.values(first.sets).map(about)).toEqual([loud])
    expect((await call('POST', '/ssf/subjects:add', RX2, { stream_id: stream.stream_id, subject: { format: 'uri', uri: quiet }, verified: true })).status).toBe(
      200,
    )
    ssf.send({ event: 'credential-change', subject: quiet })
    const second = (await call('POST', pollPath, RX2, { ack: Object.keys(first.sets), returnImmediately: true })).json() as { sets: Record<string, string> }
    expect(Object.values(second.sets).map(about)).toEqual([quiet])
    await call('DELETE', `/ssf/streams?stream_id=${stream.stream_id}`, RX2)
  })

  it('manages status, verification and deletion', async () => {
    const id = ((await call('POST', '/ssf/streams', RX2, {})).json() as { stream_id: string }).stream_id
    expect((await call('GET', `/ssf/status?stream_id=${id}`, RX2)).json()).toEqual({ stream_id: id, status: 'enabled' })
    expect((await call('POST', '/ssf/status', RX2, { stream_id: id, status: 'paused' })).json()).toEqual({ stream_id: id, status: 'paused' })
    expect((await call('POST', '/ssf/verify', RX2, { stream_id: id, state: 's1' })).status).toBe(204)
    expect((await call('POST', '/ssf/verify', RX2, { stream_id: id })).status).toBe(429)
    expect((await call('DELETE', `/ssf/streams?stream_id=${id}`, RX2)).status).toBe(204)
    expect((await call('GET', `/ssf/streams?stream_id=${id}`, RX2)).status).toBe(404)
  })

  it("a second broker's receiver, over HTTPS with its SVID, revokes only the instance the transmitter revoked", async () => {
    const other = 'spiffe://example.org/agents/other'
    const svcB = await createBrokerService(
      { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => BoundsSet.parse(TD, {})), jwtBundles: bundlesOf([ca]), log: captureLogger() },
      { issuer: 'https://broker-b.example.org', storePath: join(tmp.dir, 'broker-b.db') },
    )
    const storeB = SsfStore.open(join(tmp.dir, 'ssf-b.db'))
    const rx = new SsfReceiver({
      transmitters: [{ issuer }],
      audience: RX,
      tokenIssuer: 'https://broker-b.example.org',
      policy: parseSignalPolicy([{ event: 'credential-change', match: { prefix: 'spiffe://example.org/agents/' }, action: 'revoke', level: 'instance' }]),
      revoke: (r) => svcB.revokeAt(r, 'admin'),
      store: storeB,
      transport: httpsSsfTransport({ identity: () => ({ certChainPem: svids[RX]!.certPem, keyPem: svids[RX]!.keyPem }), caPem, timeoutMs: 5_000 }),
      log: captureLogger(),
    })
    try {
      const sub = await rx.subscribe({ issuer })
      await svc.revokeAt({ kind: 'instance', value: 'spiffe://example.org/agents/compromised' }, 'admin')
      const r = await rx.pollOnce(sub, { ack: [], setErrs: {} }, { returnImmediately: true })
      expect(r.next.ack).toHaveLength(1)
      const got = await svcB.listRevocations()
      expect(got.map((e) => [e.kind, e.value])).toEqual([['instance', 'spiffe://example.org/agents/compromised']])
      expect(got[0]!.reason).toMatch(/^signal credential-change /)
      expect(got.some((e) => e.value === other)).toBe(false)
      // acknowledged at the transmitter
      expect((await rx.pollOnce(sub, r.next, { returnImmediately: true })).next).toEqual({ ack: [], setErrs: {} })
    } finally {
      await rx.close()
      await svcB.close()
      storeB.close()
    }
  })
})
