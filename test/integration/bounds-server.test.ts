/** Namespace bounds enforced by a running server process: entry writes, issuance, node selectors, the signed document. */
import { status as Status, type ServiceError } from '@grpc/grpc-js'
import { X509Certificate } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { verifyBoundsDocument } from '../../src/spiffe/bounds/index.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { ServerProcess } from '../helpers/server-process.js'
import { newP256, TestAgentClient } from '../helpers/test-agent-client.js'

const TD = 'example.org'
const td = TrustDomain.fromString(TD)
const WEB = 'https://payments.example.org'
const BOUNDS = [
  '[server.bounds."/agents/payments"]',
  'x509_svid_ttl = "15m"',
  'jwt_svid_ttl = "5m"',
  `jwt_audiences = ["${WEB}"]`,
  'dns_suffixes = []',
  'max_instances = 1',
  '[server.bounds."/agents/prod"]',
  'require_node_selectors = ["tpm:pcr_policy:prod"]',
].join('\n')

describe('namespace bounds in a running server', () => {
  let srv: ServerProcess
  let entries: ReturnType<typeof adminClient>
  let agents: ReturnType<typeof adminClient>
  let bounds: ReturnType<typeof adminClient>
  const clients: TestAgentClient[] = []
  beforeAll(async () => {
    srv = await ServerProcess.start({ extra: BOUNDS }) // [server.bounds.*] tables may follow the plugin blocks in TOML
    entries = adminClient('Entries', srv.socketPath)
    agents = adminClient('Agents', srv.socketPath)
    bounds = adminClient('Bounds', srv.socketPath)
  })
  afterAll(async () => {
    for (const c of clients) c.close()
    for (const c of [entries, agents, bounds]) c?.close()
    await srv?.dispose()
  })
  const agent = async () => {
    const c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    clients.push(c)
    const t = (await agents.call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })).token
    return { c, cred: await c.attestJoinToken(t) }
  }
  const create = (spiffeId: string, parentId: string, extra: Record<string, unknown> = {}) =>
    entries
      .call<{ results: { status: { code: number; error_code: string; message: string }; entry: { id: string } | null }[] }>('BatchCreate', {
        entries: [{ spiffe_id: spiffeId, parent_id: parentId, selectors: [{ type: 'unix', value: 'uid:1000' }], ...extra }],
      })
      .then((r) => r.results[0]!)

  it('refuses entries that exceed their bounds, naming bound and prefix', async () => {
    const { cred } = await agent()
    const r = await create(`spiffe://${TD}/agents/payments/big`, cred.agentId, { x509_svid_ttl: 3600 })
    expect(r.status).toMatchObject({ code: Status.INVALID_ARGUMENT, error_code: 'ERR_ENTRY_INVALID' })
    expect(r.status.message).toContain('x509_svid_ttl of "/agents/payments"')
    expect((await create(`spiffe://${TD}/agents/payments/dns`, cred.agentId, { dns_names: ['a.example.org'] })).status.error_code).toBe('ERR_ENTRY_INVALID')
  })

  it('clamps TTLs, denies foreign audiences, and holds the instance limit', async () => {
    const { c, cred } = await agent()
    const e = (await create(`spiffe://${TD}/agents/payments/bot`, cred.agentId)).entry!
    const csr = await createCsr({ privateKey: newP256().privateKey })
    const [x] = await c.batchNewX509Svid([{ entryId: e.id, csr }])
    const cert = new X509Certificate(x!.svid_chain[0]!)
    expect(Date.parse(cert.validTo) - Date.now()).toBeLessThanOrEqual(15 * 60_000 + 1000)
    const j = await c.newJwtSvid(e.id, [WEB])
    expect(Number(j.expires_at) - Number(j.issued_at)).toBeLessThanOrEqual(300_000)
    const denied = await c.newJwtSvid(e.id, ['https://evil.example']).catch((err: ServiceError) => err)
    expect((denied as ServiceError).code).toBe(Status.PERMISSION_DENIED)
    // max_instances = 1: a second agent serving the same namespace gets nothing
    const other = await agent()
    const e2 = (await create(`spiffe://${TD}/agents/payments/bot2`, other.cred.agentId)).entry!
    const [y] = await other.c.batchNewX509Svid([{ entryId: e2.id, csr }])
    expect(y!.status.code).toBe(Status.PERMISSION_DENIED)
  })

  it('a node without the required selector gets nothing for that entry', async () => {
    const { c, cred } = await agent()
    const e = (await create(`spiffe://${TD}/agents/prod/x`, cred.agentId)).entry!
    const csr = await createCsr({ privateKey: newP256().privateKey })
    expect((await c.batchNewX509Svid([{ entryId: e.id, csr }]))[0]!.status.code).toBe(Status.PERMISSION_DENIED)
  })

  it('serves a signed bounds document that verifies with the bundle', async () => {
    const s = await bounds.call<{ document: string; sequence: string }>('GetSigned', {})
    const bundles = adminClient('Bundles', srv.socketPath)
    const bundle = SpiffeBundle.parse(td, (await bundles.call<{ document: string }>('Get', { trust_domain: '' })).document)
    bundles.close()
    const doc = await verifyBoundsDocument(s.document, bundle, { trustDomain: td })
    expect(doc.set.prefixes()).toEqual(['/agents/payments', '/agents/prod'])
  })
})
