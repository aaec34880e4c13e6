/**
 * A bundle endpoint that serves an older spiffe_sequence than the stored bundle
 * (a replayed or stale document) is refused: the stored bundle stays, the
 * refusal is counted and logged. `warrant bundle set` over the admin socket
 * still replaces the bundle with an older one (the operator's override).
 */
import * as grpc from '@grpc/grpc-js'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { run as bundleCli } from '../../src/cli/commands/bundle.js'
import { systemClock } from '../../src/common/clock.js'
import { loadProto } from '../../src/common/grpc/proto.js'
import { adminServices, type AdminDeps } from '../../src/server/api/admin-service.js'
import { FederatedBundles } from '../../src/server/bundle/federated.js'
import { createMemoryDataStore } from '../../src/server/datastore/memory/index.js'
import { startBundleEndpoint, type BundleEndpoint } from '../../src/server/federation/endpoint.js'
import { FederationRefresher } from '../../src/server/federation/refresher.js'
import { RelationshipStore } from '../../src/server/federation/relationships.js'
import { createServerMetrics } from '../../src/server/metrics.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { tempDir } from '../helpers/temp.js'
import { bundleOf, makeRoot, pem, svidCredentials, type TestCa } from '../unit/server/federation/pki.js'

const LOCAL = TrustDomain.fromString('local.test')
const PARTNER = 'partner.test'
const ENDPOINT_ID = 'spiffe://partner.test/warrant/server'
const ROLLBACKS = 'warrant_server_federation_bundle_rollbacks_refused_total'

async function cli(args: string[]): Promise<{ code: number; out: string }> {
  let out = ''
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString()
    return true
  })
  try {
    return { code: await bundleCli(args), out }
  } finally {
    spy.mockRestore()
  }
}

describe('federated bundle rollback', () => {
  const tmp = tempDir('w-frb-')
  const socket = join(tmp.dir, 'admin.sock')
  const log = captureLogger()
  const ds = createMemoryDataStore()
  const federated = new FederatedBundles({ ds, localTrustDomain: LOCAL, log })
  const relationships = new RelationshipStore({ kv: ds.kv, localTrustDomain: LOCAL, clock: systemClock })
  const metrics = createServerMetrics()
  const refresher = new FederationRefresher({
    relationships,
    federated,
    clock: systemClock,
    log,
    registry: metrics.registry,
    readText: (path) => readFileSync(path, 'utf8'),
  })
  const server = new grpc.Server()
  let ep: BundleEndpoint
  let ca: TestCa
  let old: TestCa
  let served: SpiffeBundle

  const stored = async () => SpiffeBundle.parse(TrustDomain.fromString(PARTNER), (await federated.get(PARTNER)).document)
  const rollbacks = async () => (await metrics.registry.getSingleMetric(ROLLBACKS)!.get()).values.find((v) => v.labels.relationship === PARTNER)?.value ?? 0

  beforeAll(async () => {
    ;[ca, old] = await Promise.all([makeRoot(PARTNER), makeRoot(PARTNER)])
    const creds = await svidCredentials(ca, ENDPOINT_ID)
    served = bundleOf(PARTNER, [ca], { sequence: 5, hint: 300 })
    ep = await startBundleEndpoint({ address: '127.0.0.1:0', profile: { kind: 'https_spiffe', getServerSvid: () => creds }, getBundle: () => served, log })
    const def = (loadProto('warrant/admin/v1/admin.proto') as unknown as { warrant: { admin: { v1: Record<string, grpc.ServiceClientConstructor> } } }).warrant
      .admin.v1
    // Only the Bundles service is served here: it needs the federated store, the logger and the metrics.
    const admin = adminServices({ federated, log, metrics } as unknown as AdminDeps)
    server.addService(def.Bundles!.service, admin.bundles)
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    )
    await federated.set(PARTNER, 'pem', pem(ca.certificate)) // bootstrap
    await relationships.create({
      trustDomain: PARTNER,
      bundleEndpointUrl: `https://127.0.0.1:${ep.port}/`,
      profile: 'https_spiffe',
      endpointSpiffeId: ENDPOINT_ID,
    })
  })
  afterAll(async () => {
    await refresher.stop()
    server.forceShutdown()
    await ep.close()
    tmp.cleanup()
  })

  it('an older spiffe_sequence is refused, counted and logged; warrant bundle set can still go back', async () => {
    await refresher.refresh(PARTNER)
    expect((await stored()).sequenceNumber).toBe(5)
    expect(await rollbacks()).toBe(0)

    // The endpoint now serves an older document, with a CA the partner has retired.
    served = bundleOf(PARTNER, [ca, old], { sequence: 3, hint: 300 })
    let changes = 0
    const off = federated.onChange(() => changes++)
    const err = await refresher.refresh(PARTNER).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_BUNDLE_INVALID' })
    expect((await stored()).sequenceNumber).toBe(5)
    expect((await stored()).x509Authorities).toEqual([ca.certificate])
    expect(changes).toBe(0)
    expect(await rollbacks()).toBe(1)
    expect(refresher.status(PARTNER)).toMatchObject({ lastErrorCode: 'ERR_BUNDLE_INVALID', lastSequence: 5 })
    const warned = log.lines.find((l) => l.level === 'warn' && l.msg.includes('older spiffe_sequence'))
    expect(warned?.fields).toMatchObject({ relationship: PARTNER, sequence: 3, stored_sequence: 5 })

    // The operator sets the older bundle through the admin socket: no sequence check on that path.
    const file = join(tmp.dir, 'older.json')
    writeFileSync(file, bundleOf(PARTNER, [ca, old], { sequence: 3 }).marshal())
    const set = await cli(['set', '--socket', socket, '--trust-domain', PARTNER, '--format', 'spiffe', '--path', file, '--output', 'json'])
    expect(set.code).toBe(0)
    expect(JSON.parse(set.out)).toMatchObject({ trust_domain: PARTNER, sequence: 3 })
    expect((await stored()).sequenceNumber).toBe(3)
    expect((await stored()).x509Authorities).toEqual([ca.certificate, old.certificate])
    expect(changes).toBe(1)
    off()

    // From there the endpoint's sequence 3 is the same bundle again (no refusal), and a newer one is taken.
    await refresher.refresh(PARTNER)
    expect(await rollbacks()).toBe(1)
    served = bundleOf(PARTNER, [ca], { sequence: 6, hint: 300 })
    await refresher.refresh(PARTNER)
    expect((await stored()).sequenceNumber).toBe(6)
    expect(await rollbacks()).toBe(1)
  })
})
