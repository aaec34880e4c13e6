/**
 * An agent's Sync stream ends when the SVID its connection authenticated with
 * expires, not at the server's next periodic re-authentication (30 s; 5 min
 * with a change feed): a real `warrant server run` process with a 4 s agent
 * SVID, a raw agent-API client over mutual TLS that never renews.
 */
import { status as Status, type ServiceError } from '@grpc/grpc-js'
import { X509Certificate } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { ServerProcess } from '../helpers/server-process.js'
import { TestAgentClient } from '../helpers/test-agent-client.js'

const TD = 'example.org'

describe('Sync stream and the agent SVID expiry (server process)', () => {
  let srv: ServerProcess
  let agents: ReturnType<typeof adminClient>
  let c: TestAgentClient | undefined

  beforeAll(async () => {
    srv = await ServerProcess.start({ serverExtra: 'agent_ttl = "4s"' })
    agents = adminClient('Agents', srv.socketPath)
  })
  afterAll(async () => {
    c?.close()
    agents?.close()
    await srv?.dispose()
  })

  it('ends the stream at the expiry of the connection SVID, and the expired SVID cannot open another', async () => {
    c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    const { token } = await agents.call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })
    const cred = await c.attestJoinToken(token)
    const notAfter = Date.parse(new X509Certificate(cred.chain[0]!).validTo)
    expect(notAfter - Date.now()).toBeLessThan(5_000)
    const s = c.sync()
    expect((await s.next()).full).toBe(true)
    // no message comes after the full set; the stream must end at the expiry, long before a periodic recheck
    const ended = await s.next(notAfter - Date.now() + 6_000).then(
      () => 'a message',
      (err: unknown) => err,
    )
    const endedAt = Date.now()
    expect((ended as ServiceError).code, String(ended)).toBe(Status.UNAUTHENTICATED)
    expect(endedAt).toBeGreaterThanOrEqual(notAfter)
    const again = await c
      .sync()
      .next(5_000)
      .then(
        () => 'a message',
        (err: unknown) => err,
      )
    expect((again as ServiceError).code, String(again)).toBe(Status.UNAUTHENTICATED)
  }, 30_000)
})
