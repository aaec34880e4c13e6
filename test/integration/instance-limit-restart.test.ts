/**
 * `max_instances` counts live in the server's SQLite datastore: a server
 * process restarted on the same data directory (the same SQLite file) still
 * refuses the instance over the limit, and still renews the counted one.
 */
import { status as Status } from '@grpc/grpc-js'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { ServerProcess } from '../helpers/server-process.js'
import { newP256, TestAgentClient, type AgentCredential } from '../helpers/test-agent-client.js'

const TD = 'example.org'
const BOUNDS = ['[server.bounds."/agents/solo"]', 'max_instances = 1', '[server.bounds."/agents/pair"]', 'max_instances = 2'].join('\n')

describe('max_instances across a server restart', () => {
  let srv: ServerProcess
  const clients: TestAgentClient[] = []
  const admins: ReturnType<typeof adminClient>[] = []

  beforeAll(async () => {
    srv = await ServerProcess.start({ extra: BOUNDS })
  })
  afterAll(async () => {
    for (const c of clients) c.close()
    for (const a of admins) a.close()
    await srv?.dispose()
  })

  const admin = (service: Parameters<typeof adminClient>[0]) => {
    const c = adminClient(service, srv.socketPath)
    admins.push(c)
    return c
  }
  const client = () => {
    const c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    clients.push(c)
    return c
  }
  const agent = async () => {
    const c = client()
    const t = (await admin('Agents').call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })).token
    return { c, cred: await c.attestJoinToken(t) }
  }
  const entry = async (spiffeId: string, parentId: string) => {
    const r = await admin('Entries').call<{ results: { status: { code: number; message: string }; entry: { id: string } | null }[] }>('BatchCreate', {
      entries: [{ spiffe_id: spiffeId, parent_id: parentId, selectors: [{ type: 'unix', value: 'uid:1000' }] }],
    })
    expect(r.results[0]!.status.code, r.results[0]!.status.message).toBe(0)
    return r.results[0]!.entry!.id
  }
  const sign = async (c: TestAgentClient, entryId: string) => {
    const [r] = await c.batchNewX509Svid([{ entryId, csr: await createCsr({ privateKey: newP256().privateKey }) }])
    return r!.status.code
  }

  it('one batch: its items are admitted in item order, those over the limit are refused', async () => {
    const { c, cred } = await agent()
    const ids = []
    for (const n of ['a', 'b', 'c', 'd']) ids.push(await entry(`spiffe://${TD}/agents/pair/${n}`, cred.agentId))
    const csr = await createCsr({ privateKey: newP256().privateKey })
    const results = await c.batchNewX509Svid(ids.map((entryId) => ({ entryId, csr })))
    expect(results.map((r) => r.status.code)).toEqual([Status.OK, Status.OK, Status.PERMISSION_DENIED, Status.PERMISSION_DENIED])
    // Renewing the admitted two in one batch passes; the refused ones stay refused.
    const again = await c.batchNewX509Svid([ids[3]!, ids[1]!, ids[0]!].map((entryId) => ({ entryId, csr })))
    expect(again.map((r) => r.status.code)).toEqual([Status.PERMISSION_DENIED, Status.OK, Status.OK])
  })

  it('the limit holds after the restart; the counted instance still renews', async () => {
    const first = await agent()
    const e1 = await entry(`spiffe://${TD}/agents/solo/a`, first.cred.agentId)
    expect(await sign(first.c, e1)).toBe(Status.OK)
    const second = await agent()
    const e2 = await entry(`spiffe://${TD}/agents/solo/b`, second.cred.agentId)
    expect(await sign(second.c, e2)).toBe(Status.PERMISSION_DENIED) // before the restart

    expect(existsSync(join(srv.dataDir, 'datastore.sqlite3'))).toBe(true)
    for (const c of [...clients, ...admins]) c.close() // open connections would hold the graceful stop
    expect((await srv.stop()).code).toBe(0)
    await srv.spawn()

    // A third agent, attested after the restart, asks for a second instance under /agents/solo.
    const third = await agent()
    const e3 = await entry(`spiffe://${TD}/agents/solo/c`, third.cred.agentId)
    expect(await sign(third.c, e3)).toBe(Status.PERMISSION_DENIED)
    // The agents from before the restart reconnect with their SVIDs: the counted instance renews, the other is still refused.
    const again = (cred: AgentCredential) => {
      const c = client()
      c.useCredential(cred)
      return c
    }
    expect(await sign(again(second.cred), e2)).toBe(Status.PERMISSION_DENIED)
    expect(await sign(again(first.cred), e1)).toBe(Status.OK)
  })
})
