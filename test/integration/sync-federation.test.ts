/**
 * Sync sends an agent only the federated bundles its authorized entries
 * federate with, within the namespace bounds as they are now: a server process
 * and agents over real gRPC (join-token attestation, mTLS Sync streams), then a
 * server and a real agent process, seen from a workload.
 */
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { E2eAgent, E2eServer, fetchX509Until } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { ServerProcess } from '../helpers/server-process.js'
import { TestAgentClient, type SyncMsg, type SyncStream } from '../helpers/test-agent-client.js'
import { bundleOf, makeRoot } from '../unit/server/federation/pki.js'

const TD = 'example.org'
const [A, B, C] = ['a.example', 'b.example', 'c.example']

describe('federated bundles in Sync follow entries and the current bounds', () => {
  let srv: ServerProcess
  let entries: ReturnType<typeof adminClient>
  let agents: ReturnType<typeof adminClient>
  let bounds: ReturnType<typeof adminClient>
  let bundles: ReturnType<typeof adminClient>
  const clients: TestAgentClient[] = []
  const streams: SyncStream[] = []

  beforeAll(async () => {
    srv = await ServerProcess.start()
    entries = adminClient('Entries', srv.socketPath)
    agents = adminClient('Agents', srv.socketPath)
    bounds = adminClient('Bounds', srv.socketPath)
    bundles = adminClient('Bundles', srv.socketPath)
    for (const td of [A, B, C]) {
      await bundles.call('Set', { trust_domain: td, format: 'spiffe', data: bundleOf(td, [await makeRoot(td)], { sequence: 1 }).marshal() })
    }
    await setFederation([A, B])
  })
  afterAll(async () => {
    for (const s of streams) s.cancel()
    for (const c of clients) c.close()
    for (const c of [entries, agents, bounds, bundles]) c?.close()
    await srv?.dispose()
  })

  const setFederation = (tds: string[]) => bounds.call('Set', { prefix: '/agents/pay', bounds: { federates_with: { values: tds } } })
  const agent = async () => {
    const c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    clients.push(c)
    const t = (await agents.call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })).token
    return { c, cred: await c.attestJoinToken(t) }
  }
  const create = async (spiffeId: string, parentId: string, federatesWith: string[]) => {
    const r = await entries.call<{ results: { status: { code: number; message: string }; entry: { id: string } | null }[] }>('BatchCreate', {
      entries: [{ spiffe_id: spiffeId, parent_id: parentId, selectors: [{ type: 'unix', value: 'uid:1000' }], federates_with: federatesWith }],
    })
    expect(r.results[0]!.status.code, r.results[0]!.status.message).toBe(0)
    return r.results[0]!.entry!
  }
  const tds = (m: SyncMsg) => m.federated_bundles.map((b) => b.trust_domain).sort()
  /** Reads the stream until a message changes the federated bundles; returns their trust domains. */
  const nextFederated = async (s: SyncStream): Promise<string[]> => {
    for (;;) {
      const m = await s.next(30_000)
      if (m.federated_bundles_changed) return tds(m)
    }
  }
  const open = (c: TestAgentClient) => {
    const s = c.sync()
    streams.push(s)
    return s
  }

  it('each agent gets the bundles of its own entries, no others', async () => {
    const pay = await agent()
    await create(`spiffe://${TD}/agents/pay/bot`, pay.cred.agentId, [A, B])
    const other = await agent()
    await create(`spiffe://${TD}/other/svc`, other.cred.agentId, [C])
    const none = await agent()
    await create(`spiffe://${TD}/plain/svc`, none.cred.agentId, [])

    expect(await nextFederated(open(pay.c))).toEqual([A, B])
    expect(await nextFederated(open(other.c))).toEqual([C])
    const first = await open(none.c).next(30_000)
    expect(first.full).toBe(true)
    expect(first.federated_bundles).toEqual([])
  })

  it('tightening the bounds withdraws a bundle from the open stream; widening gives it back', async () => {
    const pay = await agent()
    await create(`spiffe://${TD}/agents/pay/job`, pay.cred.agentId, [A, B])
    const s = open(pay.c)
    expect(await nextFederated(s)).toEqual([A, B])

    await setFederation([A])
    expect(await nextFederated(s)).toEqual([A])
    // A stream opened now starts with the tightened set as well.
    expect(await nextFederated(open(pay.c))).toEqual([A])

    await setFederation([A, B])
    expect(await nextFederated(s)).toEqual([A, B])
  })
})

describe('a real agent: what a workload sees follows the current bounds', () => {
  const tmp = tempDir('wsfa-')
  let server: E2eServer | undefined
  let agent: E2eAgent | undefined
  afterAll(async () => {
    await agent?.stop()
    await server?.stop()
    tmp.cleanup()
  })

  it('the workload gets the bundles its entry federates with; tightening the bounds withdraws one from the agent', async () => {
    server = await E2eServer.start({ dir: join(tmp.dir, 's'), trustDomain: TD })
    const ok = async (args: string[]) => {
      const r = await server!.cli(args)
      expect(r.code, r.stderr + r.stdout).toBe(0)
    }
    for (const td of [A, B, C]) {
      const file = join(tmp.dir, `${td}.json`)
      writeFileSync(file, bundleOf(td, [await makeRoot(td)], { sequence: 1 }).marshal())
      await ok(['bundle', 'set', '--trust-domain', td, '--format', 'spiffe', '--path', file])
    }
    await ok(['bounds', 'set', '--prefix', '/agents/pay', '--federates-with', A, '--federates-with', B])
    const token = await server.joinToken()
    agent = E2eAgent.start({ dir: join(tmp.dir, 'a'), server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${token}"` })
    const agentId = await agent.attested()
    const workloadId = `spiffe://${TD}/agents/pay/workload`
    await ok([
      'entry',
      'create',
      '--spiffe-id',
      workloadId,
      '--parent-id',
      agentId,
      '--selector',
      `unix:uid:${process.getuid!()}`,
      '--federates-with',
      A,
      '--federates-with',
      B,
    ])
    const fed = (j: { federated_bundles: { trust_domain: string }[] }) =>
      j.federated_bundles
        .map((b) => b.trust_domain.replace(/^spiffe:\/\//, ''))
        .sort()
        .join(',')
    expect(fed(await fetchX509Until(agent, workloadId, { accept: (j) => fed(j) === `${A},${B}` }))).toBe(`${A},${B}`)

    await ok(['bounds', 'set', '--prefix', '/agents/pay', '--federates-with', A])
    expect(fed(await fetchX509Until(agent, workloadId, { accept: (j) => fed(j) === A }))).toBe(A)
  }, 150_000)
})
