/**
 * BatchNewX509SVID of a real `warrant server run` process (CSRs verified on its
 * worker pool): a batch of many items signs every good CSR with the requested
 * key and reports bad ones per item; an entry deleted or added between two
 * batches is refused or signed at once (the server's cached authorization
 * follows every entry change).
 */
import { status as Status } from '@grpc/grpc-js'
import { X509Certificate } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { X509Bundle } from '../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { verifyX509Svid } from '../../src/spiffe/x509-svid/verify.js'
import { ServerProcess } from '../helpers/server-process.js'
import { newP256, TestAgentClient } from '../helpers/test-agent-client.js'

const TD = 'example.org'
const td = TrustDomain.fromString(TD)

interface EntryResult {
  status: { code: number; message: string }
  entry: { id: string } | null
}

describe('BatchNewX509SVID through the worker pool (process)', () => {
  let srv: ServerProcess
  let admin: ReturnType<typeof adminClient>
  let agents: ReturnType<typeof adminClient>
  let c: TestAgentClient
  let agentId: string

  beforeAll(async () => {
    srv = await ServerProcess.start({})
    admin = adminClient('Entries', srv.socketPath)
    agents = adminClient('Agents', srv.socketPath)
    c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    const tok = await agents.call<{ token: string }>('CreateJoinToken', { ttl: 600, spiffe_id: '' })
    agentId = (await c.attestJoinToken(tok.token)).agentId
  })
  afterAll(async () => {
    c?.close()
    admin?.close()
    agents?.close()
    await srv?.dispose()
  })

  const createEntries = async (n: number, prefix: string) => {
    const entries = Array.from({ length: n }, (_, i) => ({
      spiffe_id: `spiffe://${TD}/${prefix}/w${i}`,
      parent_id: agentId,
      selectors: [{ type: 'unix', value: `uid:${i}` }],
    }))
    const r = await admin.call<{ results: EntryResult[] }>('BatchCreate', { entries })
    expect(r.results.map((x) => x.status.code)).toEqual(entries.map(() => 0))
    return r.results.map((x) => x.entry!.id)
  }

  it('signs 60 items with their own keys, in order, and refuses the tampered and foreign ones per item', async () => {
    const ids = await createEntries(60, 'many')
    const keys = ids.map(() => newP256())
    const csrs = await Promise.all(keys.map((k, i) => createCsr({ privateKey: k.privateKey, ...(i === 7 ? { dnsNames: ['x.example.org'] } : {}) })))
    const tampered = csrs[5]!.slice()
    tampered[tampered.length - 3] = tampered[tampered.length - 3]! ^ 0x01
    const items = ids.map((entryId, i) => ({ entryId, csr: i === 5 ? tampered : csrs[i]! }))
    items.push({ entryId: 'no-such-entry', csr: csrs[0]! })
    const results = await c.batchNewX509Svid(items)
    const want = items.map((_, i) => (i === 5 ? Status.INVALID_ARGUMENT : i === 60 ? Status.PERMISSION_DENIED : Status.OK))
    expect(results.map((r) => r.status.code)).toEqual(want)
    expect(results[5]!.status.error_code).toBe('ERR_CSR_INVALID')
    // A refused item's status goes through the server's one error boundary: the reason stays in the server's log.
    expect(results[60]!.status).toMatchObject({ error_code: 'ERR_ID_NOT_AUTHORIZED', message: 'permission denied' })
    const bundle = X509Bundle.parsePem(td, srv.bundlePem())
    for (const i of [0, 7, 31, 59]) {
      const r = results[i]!
      expect(r.entry_id).toBe(ids[i])
      const v = await verifyX509Svid(
        r.svid_chain.map((b) => new Uint8Array(b)),
        bundle,
      )
      expect(v.id.toString()).toBe(`spiffe://${TD}/many/w${i}`)
      expect(new X509Certificate(r.svid_chain[0]!).publicKey.equals(keys[i]!.publicKey)).toBe(true)
    }
  })

  it('follows entry deletions and creations between batches', async () => {
    const [a] = await createEntries(1, 'fresh-a')
    const csr = await createCsr({ privateKey: newP256().privateKey })
    expect((await c.batchNewX509Svid([{ entryId: a!, csr }]))[0]!.status.code).toBe(Status.OK)
    await admin.call('BatchDelete', { ids: [a!] })
    expect((await c.batchNewX509Svid([{ entryId: a!, csr }]))[0]!.status.code).toBe(Status.PERMISSION_DENIED)
    const [b] = await createEntries(1, 'fresh-b')
    expect((await c.batchNewX509Svid([{ entryId: b!, csr }]))[0]!.status.code).toBe(Status.OK)
  })
})
