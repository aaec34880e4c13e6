import { generateKeyPairSync } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FederatedBundles } from '../../../../src/server/bundle/federated.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { startBundleEndpoint, type BundleEndpoint, type ServerCredentials } from '../../../../src/server/federation/endpoint.js'
import { FederationRefresher, INITIAL_BACKOFF_MS, type FederationRefresherOptions } from '../../../../src/server/federation/refresher.js'
import { RelationshipStore, type RelationshipInput } from '../../../../src/server/federation/relationships.js'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { FakeTimers } from './fake-timers.js'
import { json, startTestServer, type Route } from './hostile-server.js'
import { bundleOf, makeRoot, pem, svidCredentials, webCredentials, type TestCa } from './pki.js'

const LOCAL = TrustDomain.fromString('local.test')
const PARTNER = 'partner.test'
const ENDPOINT_ID = 'spiffe://partner.test/warrant/server'

function env(extra: Partial<FederationRefresherOptions> = {}) {
  const clock = new FakeClock(Date.now())
  const timers = new FakeTimers(clock)
  const log = captureLogger()
  const ds = createMemoryDataStore({ clock })
  const federated = new FederatedBundles({ ds, localTrustDomain: LOCAL, log })
  const relationships = new RelationshipStore({ kv: ds.kv, localTrustDomain: LOCAL, clock })
  const registry = new Registry()
  const readText = (path: string) => {
    try {
      return readFileSync(path, 'utf8')
    } catch (cause) {
      throw new IdentityError('ERR_CONFIG_INVALID', `cannot read ${path}`, { cause })
    }
  }
  const refresher = new FederationRefresher({ relationships, federated, clock, log, registry, timers, random: () => 0, readText, ...extra })
  let changes = 0
  federated.onChange(() => changes++)
  return {
    clock,
    timers,
    log,
    ds,
    federated,
    relationships,
    registry,
    refresher,
    changes: () => changes,
    stored: async (td = PARTNER) => SpiffeBundle.parse(TrustDomain.fromString(td), (await federated.get(td)).document),
    metric: async (name: string, labels: Record<string, string>) => {
      const m = (await registry.getMetricsAsJSON()).find((x) => x.name === name)
      return m?.values.filter((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val)).reduce((s, v) => s + v.value, 0) ?? 0
    },
  }
}

describe('FederationRefresher with a real https_spiffe endpoint', () => {
  let ca1: TestCa
  let ca2: TestCa
  let rogue: TestCa
  let creds: ServerCredentials
  let served: SpiffeBundle
  let hits = 0
  let ep: BundleEndpoint

  beforeAll(async () => {
    ;[ca1, ca2, rogue] = await Promise.all([makeRoot(PARTNER), makeRoot(PARTNER), makeRoot(PARTNER)])
    creds = await svidCredentials(ca1, ENDPOINT_ID)
    served = bundleOf(PARTNER, [ca1], { sequence: 1, hint: 60 })
    ep = await startBundleEndpoint({
      address: '127.0.0.1:0',
      profile: { kind: 'https_spiffe', getServerSvid: () => creds },
      getBundle: () => {
        hits++
        return served
      },
      log: captureLogger(),
    })
  })
  afterAll(() => ep.close())

  it('polls at the refresh hint, follows CA rotation (validating against the last stored bundle), keeps the bundle on failure', async () => {
    const e = env()
    await e.federated.set(PARTNER, 'pem', pem(ca1.certificate)) // bootstrap bundle
    await e.relationships.create({
      trustDomain: PARTNER,
      bundleEndpointUrl: `https://127.0.0.1:${ep.port}/`,
      profile: 'https_spiffe',
      endpointSpiffeId: ENDPOINT_ID,
    })
    await e.refresher.start()
    expect(e.timers.advance(0)).toBe(1)
    await e.refresher.idle()
    expect((await e.stored()).sequenceNumber).toBe(1)
    let st = e.refresher.status(PARTNER)!
    expect(st.lastErrorCode).toBe('')
    expect(st.nextAttemptAt - e.clock.now()).toBe(60_000)

    // The partner publishes a second CA (sequence 2).
    served = bundleOf(PARTNER, [ca1, ca2], { sequence: 2, hint: 60 })
    const before = hits
    expect(e.timers.advance(59_999)).toBe(0)
    expect(hits).toBe(before)
    expect(e.timers.advance(1)).toBe(1)
    await e.refresher.idle()
    expect((await e.stored()).x509Authorities).toEqual([ca1.certificate, ca2.certificate])

    // It switches its endpoint SVID to the new CA and drops the old one: trusted through the stored bundle.
    creds = await svidCredentials(ca2, ENDPOINT_ID)
    served = bundleOf(PARTNER, [ca2], { sequence: 3, hint: 60 })
    e.timers.advance(60_000)
    await e.refresher.idle()
    expect((await e.stored()).sequenceNumber).toBe(3)

    // An unchanged bundle is not stored again.
    const changes = e.changes()
    e.timers.advance(60_000)
    await e.refresher.idle()
    expect(e.changes()).toBe(changes)
    expect(await e.metric('warrant_server_federation_refresh_successes_total', { relationship: PARTNER })).toBe(4)

    // A rogue CA's SVID is rejected; the stored bundle stays and the retry backs off.
    creds = await svidCredentials(rogue, ENDPOINT_ID)
    served = bundleOf(PARTNER, [rogue], { sequence: 4, hint: 60 })
    e.timers.advance(60_000)
    await e.refresher.idle()
    expect((await e.stored()).sequenceNumber).toBe(3)
    st = e.refresher.status(PARTNER)!
    expect(st.lastErrorCode).toBe('ERR_X509_SVID_UNTRUSTED')
    expect(st.consecutiveFailures).toBe(1)
    expect(st.nextAttemptAt - e.clock.now()).toBe(INITIAL_BACKOFF_MS * 0.8)
    expect(await e.metric('warrant_server_federation_refresh_failures_total', { relationship: PARTNER })).toBe(1)
    expect(e.log.lines.some((l) => l.level === 'warn' && l.fields.relationship === PARTNER && l.fields.error_code === 'ERR_X509_SVID_UNTRUSTED')).toBe(true)

    await e.refresher.stop()
    expect(e.timers.pending).toBe(0)
    creds = await svidCredentials(ca1, ENDPOINT_ID)
  })

  it('https_spiffe without a bootstrap bundle fails with ERR_NOT_CONFIGURED', async () => {
    const e = env()
    await e.relationships.create({
      trustDomain: PARTNER,
      bundleEndpointUrl: `https://127.0.0.1:${ep.port}/`,
      profile: 'https_spiffe',
      endpointSpiffeId: ENDPOINT_ID,
    })
    await expect(e.refresher.refresh(PARTNER)).rejects.toMatchObject({ code: 'ERR_NOT_CONFIGURED' })
    await expect(e.federated.get(PARTNER)).rejects.toMatchObject({ code: 'ERR_BUNDLE_NOT_FOUND' })
  })

  it('manual refresh returns the status; unknown relationship is ERR_NOT_FOUND', async () => {
    const e = env()
    await e.federated.set(PARTNER, 'spiffe', bundleOf(PARTNER, [ca1]).marshal())
    await e.relationships.create({
      trustDomain: PARTNER,
      bundleEndpointUrl: `https://127.0.0.1:${ep.port}/`,
      profile: 'https_spiffe',
      endpointSpiffeId: ENDPOINT_ID,
    })
    served = bundleOf(PARTNER, [ca1], { sequence: 10, hint: 60 })
    const st = await e.refresher.refresh(PARTNER)
    expect(st.lastSequence).toBe(10)
    expect(st.lastSuccessAt).toBe(e.clock.now())
    await expect(e.refresher.refresh('nobody.test')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
  })
})

describe('FederationRefresher scheduling (fake fetch)', () => {
  let ca: TestCa
  beforeAll(async () => {
    ca = await makeRoot(PARTNER)
  })
  const rel = (o: Partial<RelationshipInput> = {}): RelationshipInput => ({
    trustDomain: PARTNER,
    bundleEndpointUrl: 'https://bundle.partner.test/',
    profile: 'https_web',
    ...o,
  })

  it('backs off exponentially with jitter, capped at the refresh interval, then returns to the interval', async () => {
    let fail = true
    let calls = 0
    const e = env({
      fetchBundle: async () => {
        calls++
        if (fail) throw new IdentityError('ERR_UNAVAILABLE', 'down')
        return bundleOf(PARTNER, [ca], { sequence: 1 })
      },
    })
    await e.relationships.create(rel({ refreshHintSeconds: 60 }))
    await e.refresher.start()
    const delays: number[] = []
    for (let i = 0; i < 6; i++) {
      e.timers.advance(e.timers.next! - e.clock.now())
      await e.refresher.idle()
      delays.push(e.refresher.status(PARTNER)!.nextAttemptAt - e.clock.now())
    }
    expect(delays).toEqual([4_000, 8_000, 16_000, 32_000, 48_000, 48_000])
    expect(calls).toBe(6)
    fail = false
    e.timers.advance(48_000)
    await e.refresher.idle()
    expect(e.refresher.status(PARTNER)!.nextAttemptAt - e.clock.now()).toBe(60_000) // the override, not the bundle's absent hint
    expect(e.refresher.status(PARTNER)!.consecutiveFailures).toBe(0)
    expect(await e.metric('warrant_server_federation_refresh_failures_total', { relationship: PARTNER })).toBe(6)
    await e.refresher.stop()
  })

  it.each([
    [undefined, 300_000],
    [1, 5_000],
    [120, 120_000],
  ])('bundle hint %s s polls every %i ms', async (hint, want) => {
    const e = env({ fetchBundle: async () => bundleOf(PARTNER, [ca], hint === undefined ? {} : { hint }) })
    await e.relationships.create(rel())
    await e.refresher.start()
    e.timers.advance(0)
    await e.refresher.idle()
    expect(e.refresher.status(PARTNER)!.nextAttemptAt - e.clock.now()).toBe(want)
    await e.refresher.stop()
  })

  it('follows relationship changes: new ones poll at once, deleted ones stop', async () => {
    let calls = 0
    const e = env({ fetchBundle: async (o) => (calls++, bundleOf(o.trustDomain.name, [ca])) })
    await e.refresher.start()
    expect(e.timers.pending).toBe(0)
    await e.relationships.create(rel())
    await e.refresher.idle()
    expect(e.timers.pending).toBe(1)
    e.timers.advance(0)
    await e.refresher.idle()
    expect(calls).toBe(1)
    await e.relationships.update(PARTNER, { refreshHintSeconds: 30 })
    await e.refresher.idle()
    expect(e.refresher.status(PARTNER)!.nextAttemptAt).toBe(e.clock.now())
    await e.relationships.delete(PARTNER)
    await e.refresher.idle()
    expect(e.timers.pending).toBe(0)
    expect(e.refresher.status(PARTNER)).toBeUndefined()
    await e.refresher.stop()
  })
})

describe('hostile bundle endpoints change nothing', () => {
  let dir: string
  let webCa: TestCa
  let tdCa: TestCa
  let caFile: string
  let srv: Awaited<ReturnType<typeof startTestServer>>
  let wrongName: Awaited<ReturnType<typeof startTestServer>>
  let good: SpiffeBundle

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'w-fedh-'))
    webCa = await makeRoot('web-ca.test')
    tdCa = await makeRoot(PARTNER)
    caFile = join(dir, 'ca.pem')
    writeFileSync(caFile, pem(webCa.certificate))
    good = bundleOf(PARTNER, [tdCa], { sequence: 1 })
    const x509Key = JSON.parse(good.marshal()).keys[0] as Record<string, unknown>
    const { use: _use, ...noUse } = x509Key
    const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' })
    const jwtKey = { use: 'jwt-svid', kid: 'k1', ...jwk }
    const otherTd = bundleOf('other.test', [await makeRoot('other.test')], { sequence: 2 })
    const hang: Route = () => {}
    const routes: Record<string, Route> = {
      '/malformed': json('{"keys": [{"use":'),
      '/not-object': json('[1,2,3]'),
      '/duplicate-kid': json(JSON.stringify({ keys: [x509Key, jwtKey, { ...jwtKey }], spiffe_sequence: 2 })),
      '/no-use': json(JSON.stringify({ keys: [noUse], spiffe_sequence: 2 })),
      '/empty': json(JSON.stringify({ keys: [], spiffe_sequence: 2 })),
      '/other-td': json(otherTd.marshal()),
      '/wrong-content-type': json(bundleOf(PARTNER, [tdCa], { sequence: 2 }).marshal(), 'text/html'),
      '/no-content-type': (_q, r) => {
        r.removeHeader('Content-Type')
        r.writeHead(200).end(bundleOf(PARTNER, [tdCa], { sequence: 2 }).marshal())
      },
      '/latin1': json(bundleOf(PARTNER, [tdCa], { sequence: 2 }).marshal(), 'application/json; charset=iso-8859-1'),
      '/not-utf8': (_q, r) => r.writeHead(200, { 'Content-Type': 'application/json' }).end(Buffer.from([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d])),
      '/oversized': (_q, r) => {
        r.writeHead(200, { 'Content-Type': 'application/json' })
        r.write('{"keys": [], "pad": "')
        const chunk = 'x'.repeat(16 * 1024)
        const pump = () => {
          while (r.write(chunk)) if (r.destroyed) return
          r.once('drain', pump)
        }
        r.on('close', () => r.removeAllListeners('drain'))
        pump()
      },
      '/oversized-declared': (_q, r) => {
        r.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': String(10 * 1024 * 1024) })
        r.write('{')
      },
      '/slow': hang,
      '/slow-body': (_q, r) => {
        r.writeHead(200, { 'Content-Type': 'application/json' })
        r.write('{"keys": [')
      },
      '/redirect-loop': (_q, r) => r.writeHead(302, { Location: '/redirect-loop' }).end(),
      '/server-error': (_q, r) => r.writeHead(500).end(),
      '/good': json(bundleOf(PARTNER, [tdCa], { sequence: 2 }).marshal()),
    }
    const webCreds = await webCredentials(webCa)
    const otherNameCreds = await webCredentials(webCa, { dns: ['elsewhere.example'] })
    srv = await startTestServer(() => webCreds, routes)
    wrongName = await startTestServer(() => otherNameCreds, { '/good': routes['/good']! })
  }, 30_000)
  afterAll(async () => {
    await Promise.all([srv.close(), wrongName.close()])
    rmSync(dir, { recursive: true, force: true })
  })

  it.each([
    ['/malformed', 'ERR_BUNDLE_INVALID'],
    ['/not-object', 'ERR_BUNDLE_INVALID'],
    ['/duplicate-kid', 'ERR_BUNDLE_INVALID'],
    ['/no-use', 'ERR_BUNDLE_INVALID'],
    ['/empty', 'ERR_BUNDLE_INVALID'],
    ['/other-td', 'ERR_BUNDLE_INVALID'],
    ['/wrong-content-type', 'ERR_BUNDLE_INVALID'],
    ['/no-content-type', 'ERR_BUNDLE_INVALID'],
    ['/latin1', 'ERR_BUNDLE_INVALID'],
    ['/not-utf8', 'ERR_BUNDLE_INVALID'],
    ['/oversized', 'ERR_BUNDLE_INVALID'],
    ['/oversized-declared', 'ERR_BUNDLE_INVALID'],
    ['/slow', 'ERR_UNAVAILABLE'],
    ['/slow-body', 'ERR_UNAVAILABLE'],
    ['/redirect-loop', 'ERR_UNAVAILABLE'],
    ['/server-error', 'ERR_UNAVAILABLE'],
    ['wrong-name:/good', 'ERR_X509_SVID_UNTRUSTED'],
  ])('%s → %s', async (path, code) => {
    const e = env({ fetchTimeoutMs: 400, maxBundleBytes: 64 * 1024 })
    await e.federated.put(good)
    const url = path.startsWith('wrong-name:') ? `https://127.0.0.1:${wrongName.port}${path.slice(11)}` : `https://127.0.0.1:${srv.port}${path}`
    await e.relationships.create({ trustDomain: PARTNER, bundleEndpointUrl: url, profile: 'https_web', webCaFile: caFile })
    const changes = e.changes()
    await expect(e.refresher.refresh(PARTNER)).rejects.toMatchObject({ code })
    expect((await e.stored()).equals(good)).toBe(true)
    expect(e.changes()).toBe(changes)
    expect(await e.metric('warrant_server_federation_refresh_failures_total', { relationship: PARTNER, error_code: code })).toBe(1)
    const line = e.log.lines.find((l) => l.msg.startsWith('Federated bundle refresh failed'))
    expect(line?.fields.relationship).toBe(PARTNER)
    expect(e.refresher.status(PARTNER)!.lastErrorCode).toBe(code)
  })

  it("reads the relationship's web CA through readText on every fetch; an unreadable one fails the fetch and changes nothing", async () => {
    const read: string[] = []
    let readable = true
    const e = env({
      fetchTimeoutMs: 2_000,
      readText: (path) => {
        read.push(path)
        if (!readable) throw new IdentityError('ERR_CONFIG_INVALID', `cannot read ${path}`)
        return readFileSync(path, 'utf8')
      },
    })
    await e.federated.put(good)
    await e.relationships.create({ trustDomain: PARTNER, bundleEndpointUrl: `https://127.0.0.1:${srv.port}/good`, profile: 'https_web', webCaFile: caFile })
    await e.refresher.refresh(PARTNER)
    expect((await e.stored()).sequenceNumber).toBe(2)
    expect(read).toEqual([caFile])
    readable = false
    const changes = e.changes()
    await expect(e.refresher.refresh(PARTNER)).rejects.toMatchObject({ code: 'ERR_CONFIG_INVALID' })
    expect(read).toEqual([caFile, caFile])
    expect((await e.stored()).sequenceNumber).toBe(2)
    expect(e.changes()).toBe(changes)
    expect(e.refresher.status(PARTNER)!.lastErrorCode).toBe('ERR_CONFIG_INVALID')
  })

  it('the same server with a good document is accepted (control)', async () => {
    const e = env({ fetchTimeoutMs: 2_000 })
    await e.federated.put(good)
    await e.relationships.create({ trustDomain: PARTNER, bundleEndpointUrl: `https://127.0.0.1:${srv.port}/good`, profile: 'https_web', webCaFile: caFile })
    await e.refresher.refresh(PARTNER)
    expect((await e.stored()).sequenceNumber).toBe(2)
  })
})
