/**
 * Per-instance identities at the server, with a real server process and an
 * agent client over mutual TLS: template validation, instance registration,
 * signing only for recorded live instances, ended instances never again.
 */
import { status as Status, type ServiceError } from '@grpc/grpc-js'
import { X509Certificate } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { JwtSvid } from '../../src/spiffe/jwt-svid/jwt-svid.js'
import { ServerProcess } from '../helpers/server-process.js'
import { newP256, TestAgentClient, type AgentCredential } from '../helpers/test-agent-client.js'

const TD = 'example.org'
const TEMPLATE = `spiffe://${TD}/agents/payments/refund-bot/{instance}`
type Result = { status: { code: number; error_code: string; message: string }; entry: { id: string; spiffe_id: string } | null }

const uriOf = (der: Buffer) => new X509Certificate(der).subjectAltName ?? ''

describe('per-instance identities (server)', () => {
  let srv: ServerProcess
  let entries: ReturnType<typeof adminClient>
  let agents: ReturnType<typeof adminClient>
  let instances: ReturnType<typeof adminClient>
  const clients: TestAgentClient[] = []
  const agent = async (): Promise<{ c: TestAgentClient; cred: AgentCredential }> => {
    const c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    clients.push(c)
    const t = (await agents.call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })).token
    return { c, cred: await c.attestJoinToken(t) }
  }
  const create = (spiffeId: string, parentId: string) =>
    entries
      .call<{ results: Result[] }>('BatchCreate', { entries: [{ spiffe_id: spiffeId, parent_id: parentId, selectors: [{ type: 'unix', value: 'uid:1000' }] }] })
      .then((r) => r.results[0]!)
  const csr = () => createCsr({ privateKey: newP256().privateKey })

  beforeAll(async () => {
    srv = await ServerProcess.start({})
    entries = adminClient('Entries', srv.socketPath)
    agents = adminClient('Agents', srv.socketPath)
    instances = adminClient('Instances', srv.socketPath)
  })
  afterAll(async () => {
    for (const c of clients) c.close()
    for (const c of [entries, agents, instances]) c?.close()
    await srv?.dispose()
  })

  it.each([
    ['two placeholders', `spiffe://${TD}/agents/{instance}/{instance}`],
    ['placeholder inside a segment', `spiffe://${TD}/agents/bot-{instance}`],
    ['stray brace', `spiffe://${TD}/agents/{inst}`],
  ])('refuses a template with %s, storing nothing', async (_t, id) => {
    const { cred } = await agent()
    const before = Number((await entries.call<{ count: string }>('Count', {})).count)
    const r = await create(id, cred.agentId)
    expect(r.status.error_code).toBe('ERR_ENTRY_INVALID')
    expect(r.status.message).toContain('spiffe_id')
    expect(Number((await entries.call<{ count: string }>('Count', {})).count)).toBe(before)
  })

  it('two processes of one template get different instance IDs, SVIDs and keys', async () => {
    const { c, cred } = await agent()
    const e = (await create(TEMPLATE, cred.agentId)).entry!
    expect(e.spiffe_id).toBe(TEMPLATE)
    const a = await c.call<{ instance_id: string; spiffe_id: string }>('RegisterInstance', { entry_id: e.id, pid: 4242, start_time: '12345' })
    const b = await c.call<{ instance_id: string; spiffe_id: string }>('RegisterInstance', { entry_id: e.id, pid: 4243, start_time: '12399' })
    expect(a.instance_id).toMatch(/^i[0-9a-z]{25}$/)
    expect(a.instance_id).not.toBe(b.instance_id)
    expect(a.spiffe_id).toBe(TEMPLATE.replace('{instance}', a.instance_id))
    const [ra, rb] = await c.batchNewX509Svid([
      { entryId: e.id, csr: await csr(), instanceId: a.instance_id },
      { entryId: e.id, csr: await csr(), instanceId: b.instance_id },
    ])
    expect(ra!.status.code).toBe(0)
    expect(uriOf(ra!.svid_chain[0]!)).toBe(`URI:${a.spiffe_id}`)
    expect(uriOf(rb!.svid_chain[0]!)).toBe(`URI:${b.spiffe_id}`)
    expect(new X509Certificate(ra!.svid_chain[0]!).publicKey.export({ format: 'jwk' })).not.toEqual(
      new X509Certificate(rb!.svid_chain[0]!).publicKey.export({ format: 'jwk' }),
    )
    const jwt = await c.call<{ token: string }>('NewJWTSVID', { entry_id: e.id, audience: ['svc'], instance_id: b.instance_id })
    expect(JwtSvid.parseInsecure(jwt.token, ['svc']).id.toString()).toBe(b.spiffe_id)
    const list = await instances.call<{ instances: { instance_id: string; pid: number; ended_at: string }[] }>('List', { entry_id: e.id, live_only: true })
    expect(list.instances.map((i) => i.pid).sort()).toEqual([4242, 4243])
  })

  it('a template needs a recorded instance of this agent; an ended one is never signed again', async () => {
    const { c, cred } = await agent()
    const other = await agent()
    const e = (await create(TEMPLATE, cred.agentId)).entry!
    const noInstance = await c.batchNewX509Svid([{ entryId: e.id, csr: await csr() }])
    expect(noInstance[0]!.status.code).toBe(Status.INVALID_ARGUMENT)
    const forged = await c.batchNewX509Svid([{ entryId: e.id, csr: await csr(), instanceId: 'i0000000000000000000000001' }])
    expect(forged[0]!.status.code).toBe(Status.PERMISSION_DENIED)
    const inst = await c.call<{ instance_id: string }>('RegisterInstance', { entry_id: e.id, pid: 777, start_time: '1' })
    // Another agent cannot end or use it.
    await expect(other.c.call('EndInstance', { instance_id: inst.instance_id })).rejects.toMatchObject({ code: Status.NOT_FOUND })
    await c.call('EndInstance', { instance_id: inst.instance_id })
    const after = await c.batchNewX509Svid([{ entryId: e.id, csr: await csr(), instanceId: inst.instance_id }])
    expect(after[0]!.status.code).toBe(Status.PERMISSION_DENIED)
    const shown = await instances.call<{ ended_at: string; pid: number; agent_id: string }>('Get', { instance_id: inst.instance_id })
    expect(Number(shown.ended_at)).toBeGreaterThan(0)
    expect(shown).toMatchObject({ pid: 777, agent_id: cred.agentId })
  })

  it('EndAllInstances ends every live instance of the calling agent only', async () => {
    const { c, cred } = await agent()
    const other = await agent()
    const e = (await create(TEMPLATE, cred.agentId)).entry!
    const e2 = (await create(TEMPLATE, other.cred.agentId)).entry!
    for (const pid of [10, 11, 12]) await c.call('RegisterInstance', { entry_id: e.id, pid, start_time: '5' })
    const keep = await other.c.call<{ instance_id: string }>('RegisterInstance', { entry_id: e2.id, pid: 13, start_time: '5' })
    expect(await c.call<{ ended: number }>('EndAllInstances', {})).toEqual({ ended: 3 })
    const live = await instances.call<{ instances: { instance_id: string }[] }>('List', { live_only: true, agent_id: other.cred.agentId })
    expect(live.instances.map((i) => i.instance_id)).toContain(keep.instance_id)
    expect((await instances.call<{ instances: unknown[] }>('List', { live_only: true, agent_id: cred.agentId })).instances).toHaveLength(0)
  })

  it('refuses instance registration for a plain entry and bad process data', async () => {
    const { c, cred } = await agent()
    const plain = (await create(`spiffe://${TD}/agents/plain`, cred.agentId)).entry!
    const tpl = (await create(TEMPLATE, cred.agentId)).entry!
    await expect(c.call('RegisterInstance', { entry_id: plain.id, pid: 1, start_time: '1' })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT })
    await expect(c.call('RegisterInstance', { entry_id: tpl.id, pid: -1, start_time: '1' })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT })
    await expect(c.call('RegisterInstance', { entry_id: tpl.id, pid: 5, start_time: 'x' })).rejects.toMatchObject({ code: Status.INVALID_ARGUMENT })
    const err = await c.call('RegisterInstance', { entry_id: 'nope', pid: 5, start_time: '1' }).catch((e: ServiceError) => e)
    expect((err as ServiceError).code).toBe(Status.PERMISSION_DENIED)
  })
})
