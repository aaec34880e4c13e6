import * as grpc from '@grpc/grpc-js'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Registry } from 'prom-client'
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest'
import { run } from '../../src/cli/commands/federation.js'
import { systemClock } from '../../src/common/clock.js'
import { loadProto } from '../../src/common/grpc/proto.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { FederatedBundles } from '../../src/server/bundle/federated.js'
import { createMemoryDataStore } from '../../src/server/datastore/memory/index.js'
import { federationAdminService } from '../../src/server/federation/admin-service.js'
import { startBundleEndpoint, type BundleEndpoint } from '../../src/server/federation/endpoint.js'
import { FederationRefresher } from '../../src/server/federation/refresher.js'
import { RelationshipStore } from '../../src/server/federation/relationships.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { tempDir } from '../helpers/temp.js'
import { bundleOf, makeRoot, pem, svidCredentials } from '../unit/server/federation/pki.js'

const LOCAL = TrustDomain.fromString('local.test')
const PARTNER = 'partner.test'
const ENDPOINT_ID = 'spiffe://partner.test/warrant/server'

/** Runs the CLI command and returns its exit code and stdout. */
async function cli(args: string[]): Promise<{ code: number; out: string }> {
  let out = ''
  const spy = vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString()
    return true
  })
  try {
    return { code: await run(args), out }
  } finally {
    spy.mockRestore()
  }
}

describe('warrant federation CLI over the admin socket', () => {
  const tmp = tempDir('w-fadm-')
  const socket = join(tmp.dir, 'admin.sock')
  const ds = createMemoryDataStore()
  const federated = new FederatedBundles({ ds, localTrustDomain: LOCAL, log: nullLogger })
  const relationships = new RelationshipStore({ kv: ds.kv, localTrustDomain: LOCAL, clock: systemClock })
  const refresher = new FederationRefresher({
    relationships,
    federated,
    clock: systemClock,
    log: nullLogger,
    registry: new Registry(),
    readText: (path) => readFileSync(path, 'utf8'),
  })
  const server = new grpc.Server()
  let ep: BundleEndpoint
  let bootstrapFile: string

  beforeAll(async () => {
    const ca = await makeRoot(PARTNER)
    const creds = await svidCredentials(ca, ENDPOINT_ID)
    ep = await startBundleEndpoint({
      address: '127.0.0.1:0',
      profile: { kind: 'https_spiffe', getServerSvid: () => creds },
      getBundle: () => bundleOf(PARTNER, [ca], { sequence: 42, hint: 120 }),
      log: nullLogger,
    })
    bootstrapFile = join(tmp.dir, 'bootstrap.pem')
    writeFileSync(bootstrapFile, pem(ca.certificate))
    const def = (loadProto('warrant/admin/v1/federation.proto') as unknown as { warrant: { admin: { v1: { Federation: grpc.ServiceClientConstructor } } } })
      .warrant.admin.v1.Federation
    server.addService(def.service, federationAdminService({ relationships, refresher, federated, log: nullLogger }))
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? reject(e) : resolve())),
    )
  })
  afterAll(async () => {
    await refresher.stop()
    server.forceShutdown()
    await ep.close()
    tmp.cleanup()
  })

  it('create → list → refresh → show → update → delete', async () => {
    const url = `https://127.0.0.1:${ep.port}/`
    const created = await cli([
      'create',
      '--socket',
      socket,
      '--trust-domain',
      PARTNER,
      '--url',
      url,
      '--profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      ENDPOINT_ID,
      '--bootstrap-bundle',
      bootstrapFile,
      '--output',
      'json',
    ])
    expect(created.code).toBe(0)
    expect(JSON.parse(created.out)).toMatchObject({
      trust_domain: PARTNER,
      profile: 'https_spiffe',
      endpoint_spiffe_id: ENDPOINT_ID,
      bundle_endpoint_url: url,
      last_sequence: null,
    })
    // The bootstrap bundle is stored (PEM: no sequence yet).
    expect(SpiffeBundle.parse(TrustDomain.fromString(PARTNER), (await federated.get(PARTNER)).document).x509Authorities).toHaveLength(1)

    const list = await cli(['list', '--socket', socket, '--output', 'json'])
    expect((JSON.parse(list.out) as unknown[]).length).toBe(1)

    const refreshed = await cli(['refresh', '--socket', socket, '--trust-domain', PARTNER, '--output', 'json'])
    expect(JSON.parse(refreshed.out)).toMatchObject({ last_sequence: 42, last_error: '' })
    expect((await federated.get(PARTNER)).sequence).toBe(42)

    const shown = await cli(['show', '--socket', socket, '--trust-domain', PARTNER])
    expect(shown.out).toContain('Bundle endpoint profile   : https_spiffe')
    expect(shown.out).toContain('sequence 42')

    const updated = await cli(['update', '--socket', socket, '--trust-domain', PARTNER, '--refresh-hint', '30', '--output', 'json'])
    expect(JSON.parse(updated.out)).toMatchObject({ refresh_hint_seconds: 30, endpoint_spiffe_id: ENDPOINT_ID })

    expect((await cli(['delete', '--socket', socket, '--trust-domain', PARTNER])).code).toBe(0)
    expect(await relationships.list()).toEqual([])
    // The bundle stays after the relationship is deleted.
    expect((await federated.get(PARTNER)).sequence).toBe(42)
  })

  it.each([
    [['show', '--trust-domain', 'nobody.test'], 'ERR_NOT_FOUND'],
    [['create', '--trust-domain', 'x.test', '--url', 'http://x.test/', '--profile', 'https_web'], 'ERR_INVALID_ARGUMENT'],
    [['create', '--trust-domain', 'local.test', '--url', 'https://x.test/', '--profile', 'https_web'], 'ERR_INVALID_ARGUMENT'],
    [['create', '--trust-domain', 'x.test', '--url', 'https://x.test/', '--profile', 'https_spiffe'], 'ERR_INVALID_ARGUMENT'],
    [
      ['create', '--trust-domain', 'x.test', '--url', 'https://x.test/', '--profile', 'https_web', '--endpoint-spiffe-id', 'spiffe://x.test/s'],
      'ERR_INVALID_ARGUMENT',
    ],
  ])('%j fails with %s and stores nothing', async (args, code) => {
    const err = await run([...args, '--socket', socket]).catch((e: unknown) => e)
    expect((err as grpc.ServiceError).metadata?.get('x-error-code')).toEqual([code])
    expect(await relationships.list()).toEqual([])
  })

  it('a refresh failure reaches the CLI with its code; the relationship records it', async () => {
    await relationships.create({ trustDomain: 'down.test', bundleEndpointUrl: 'https://127.0.0.1:1/', profile: 'https_web' })
    const err = await run(['refresh', '--socket', socket, '--trust-domain', 'down.test']).catch((e: unknown) => e)
    expect((err as grpc.ServiceError).metadata?.get('x-error-code')).toEqual(['ERR_UNAVAILABLE'])
    const shown = await cli(['show', '--socket', socket, '--trust-domain', 'down.test', '--output', 'json'])
    expect(JSON.parse(shown.out)).toMatchObject({ last_error_code: 'ERR_UNAVAILABLE', consecutive_failures: 1 })
    await relationships.delete('down.test')
  })

  it('usage errors exit 2; unknown flags are ERR_INVALID_ARGUMENT', async () => {
    const spy = vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    try {
      expect(await run(['frobnicate'])).toBe(2)
    } finally {
      spy.mockRestore()
    }
    await expect(run(['list', '--bogus'])).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    await expect(run(['update', '--trust-domain', PARTNER, '--socket', socket])).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
  })
})
