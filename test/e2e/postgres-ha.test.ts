/**
 * Two `warrant server run` processes, A and B, of one trust domain on one PostgreSQL database (a throwaway
 * cluster: test/helpers/postgres-cluster.ts), each with its own CA key in its own disk key manager and its own
 * server_id; two `warrant agent run` processes, one attested at A (its list A then B), one at B (B then A); this
 * test process is their workload (unix uid). An entry created at A reaches the workload on B's agent in well under
 * a second (pushed: the datastore's change feed, then B's Sync stream); a revocation made at A is enforced at B;
 * `kill -9` of A in the middle of a loop of entry creations through A's admin socket loses no acknowledged entry,
 * and A's agent fails over to B keeping its workload's SVIDs; a PostgreSQL restart (stop, start) is survived: a
 * clear error while the database is down (gRPC UNAVAILABLE, ERR_DATASTORE_UNAVAILABLE), recovery after.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ServiceError } from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { revokeOnServer } from '../../src/cli/server-revocation-client.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { WorkloadApiClient } from '../../src/workload-client/index.js'
import { E2eServer, WarrantProcess, waitFor } from '../helpers/e2e-cluster.js'
import { requirePostgres, startPostgresCluster, type PostgresCluster } from '../helpers/postgres-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { newP256, TestAgentClient } from '../helpers/test-agent-client.js'

const TD = 'pgha.example'
const uid = process.getuid?.() ?? 0
const PW_ENV = 'WARRANT_E2E_PG_PASSWORD'

const certCount = (pemPath: string) => (readFileSync(pemPath, 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length

interface EntryResults {
  results: { status: { code: number; message: string }; entry: { id: string } | null }[]
}

describe.runIf(requirePostgres())('e2e: two servers on one PostgreSQL', () => {
  const tmp = tempDir('pgha-')
  let cluster: PostgresCluster
  let a: E2eServer
  let b: E2eServer
  const agents: { proc: WarrantProcess; socket: string; id: string }[] = []
  const clients: { close(): void }[] = []

  const server = (name: string, connectionString: string, password: string) =>
    E2eServer.start({
      dir: join(tmp.dir, name),
      trustDomain: TD,
      serverExtra: [`server_id = "${name}"`],
      env: { [PW_ENV]: password },
      plugins: [
        '[plugins.key_manager.disk]',
        'keys_path = "keys"',
        '[plugins.datastore.postgres]',
        `connection_string = "${connectionString}"`,
        `password_env = "${PW_ENV}"`,
        '[plugins.node_attestor.join_token]',
        '',
      ].join('\n'),
    })

  /** A `warrant agent run` process with `servers` in server_address, attested with a join token of the first. */
  const startAgent = async (name: string, servers: E2eServer[]) => {
    const dir = join(tmp.dir, name)
    mkdirSync(dir, { recursive: true })
    const socket = join(dir, 'api.sock')
    const cfg = join(dir, 'agent.toml')
    writeFileSync(
      cfg,
      [
        '[agent]',
        `trust_domain = "${TD}"`,
        `server_address = [${servers.map((s) => `"${s.address}"`).join(', ')}]`,
        `socket_path = "${socket}"`,
        `data_dir = "${join(dir, 'data')}"`,
        'log_level = "debug"',
        `trust_bundle_path = "${servers[0]!.bundlePemPath}"`,
        '[plugins.node_attestor.join_token]',
        `token = "${await servers[0]!.joinToken()}"`,
        '[plugins.workload_attestor.unix]',
        'workload_size_limit = -1',
        '',
      ].join('\n'),
      { mode: 0o600 },
    )
    const proc = new WarrantProcess(['agent', 'run', '--config', cfg])
    const id = await waitFor(
      `agent ${name} to attest`,
      () => {
        if (!proc.running) throw new Error(`agent exited:\n${proc.output().slice(-4000)}`)
        return /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*Agent started/.exec(proc.output())?.[1]
      },
      { timeoutMs: 45_000, hint: () => proc.output() },
    )
    const agent = { proc, socket, id }
    agents.push(agent)
    return agent
  }
  const workload = (socket: string) => {
    const c = new WorkloadApiClient({ socketPath: socket })
    clients.push(c)
    return c
  }
  const ids = async (c: WorkloadApiClient) => (await c.fetchX509Context({ timeoutMs: 3000 })).svids.map((s) => s.id.toString()).sort()
  const createAt = async (s: E2eServer, spiffeId: string, parentId: string) => {
    const r = await adminClient('Entries', s.socketPath).call<EntryResults>('BatchCreate', {
      entries: [{ spiffe_id: spiffeId, parent_id: parentId, selectors: [{ type: 'unix', value: `uid:${uid}` }] }],
    })
    expect(r.results[0]!.status.code, r.results[0]!.status.message).toBe(0)
    return r.results[0]!.entry!.id
  }

  beforeAll(async () => {
    cluster = await startPostgresCluster()
    const db = await cluster.createDatabase('e2e')
    a = await server('a', db.connectionString, cluster.password)
    b = await server('b', db.connectionString, cluster.password)
    // Both CAs in each bundle (each server adopts the other's at once through the change feed).
    await waitFor('both CAs in both bundles', () => [a, b].every((s) => certCount(s.bundlePemPath) === 2), { timeoutMs: 20_000, hint: () => a.output() })
  }, 120_000)

  afterAll(async () => {
    for (const c of clients) c.close()
    for (const ag of agents) await ag.proc.stop('SIGKILL')
    await a?.stop('SIGKILL')
    await b?.stop('SIGKILL')
    await cluster?.destroy()
    tmp.cleanup()
  }, 60_000)

  it('1. an entry created at A reaches the workload on the agent attached to B in under a second', async () => {
    await startAgent('aa', [a, b])
    const agB = await startAgent('ab', [b, a])
    const wl = workload(agB.socket)
    const spiffeId = `spiffe://${TD}/first`
    let seen = 0
    const ac = new AbortController()
    const watching = wl
      .watchX509Context(
        { onUpdate: (ctx) => void (ctx.svids.some((s) => s.id.toString() === spiffeId) && !seen && (seen = performance.now())) },
        { signal: ac.signal },
      )
      .catch(() => undefined)
    await new Promise((r) => setTimeout(r, 300))
    const t0 = performance.now()
    await createAt(a, spiffeId, agB.id)
    const acked = performance.now()
    await waitFor('the entry on agent B', () => seen > 0, { timeoutMs: 10_000, intervalMs: 5, hint: () => agB.proc.output() })
    ac.abort()
    await watching
    const ms = seen - t0
    console.log(`entry created at A (acknowledged after ${(acked - t0).toFixed(1)} ms) served by the agent on B after ${ms.toFixed(1)} ms`)
    expect(ms).toBeLessThan(3000)
  })

  it('2. a revocation made at A is enforced at B', async () => {
    const c = new TestAgentClient({ address: b.address, bundlePem: readFileSync(b.bundlePemPath, 'utf8'), trustDomain: TD })
    clients.push(c)
    const { agentId } = await c.attestJoinToken(await b.joinToken())
    const spiffeId = `spiffe://${TD}/revoked`
    const entryId = await createAt(a, spiffeId, agentId)
    const sign = async () => (await c.batchNewX509Svid([{ entryId, csr: await createCsr({ privateKey: newP256().privateKey }) }]))[0]!.status
    await waitFor('B to sign for the entry', async () => (await sign()).code === 0, { timeoutMs: 5000, intervalMs: 20 })
    await revokeOnServer(a.socketPath, { kind: 'instance', value: spiffeId, reason: 'e2e' })
    const t0 = performance.now()
    await waitFor('B to refuse the revoked identity', async () => (await sign()).error_code === 'ERR_REVOKED', { timeoutMs: 5000, intervalMs: 10 })
    console.log(`revocation at A enforced at B after ${(performance.now() - t0).toFixed(1)} ms`)
  })

  it("3. kill -9 of A mid-write loses no acknowledged entry; A's agent fails over to B and keeps its workload's SVIDs", async () => {
    const agA = agents[0]!
    const wl = workload(agA.socket)
    await createAt(a, `spiffe://${TD}/on-a`, agA.id)
    await waitFor('the SVID on agent A', async () => (await ids(wl)).includes(`spiffe://${TD}/on-a`), { timeoutMs: 10_000, hint: () => agA.proc.output() })
    const before = await wl.fetchX509Context()
    const admin = adminClient('Entries', a.socketPath)
    const acked: string[] = []
    let stop = false
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        try {
          const r = await admin.call<EntryResults>('BatchCreate', {
            entries: [
              { spiffe_id: `spiffe://${TD}/crash/w${i}`, parent_id: `spiffe://${TD}/warrant/server`, selectors: [{ type: 'unix', value: `uid:${i}` }] },
            ],
          })
          if (r.results[0]!.status.code === 0) acked.push(r.results[0]!.entry!.id)
        } catch {
          return
        }
      }
    })()
    await waitFor('40 acknowledged writes', () => acked.length >= 40, { timeoutMs: 30_000 })
    await a.stop('SIGKILL')
    stop = true
    await writer
    // Every acknowledged entry is in the database, read through B.
    const atB = adminClient('Entries', b.socketPath)
    for (const id of acked) expect((await atB.call<{ id: string }>('Get', { id })).id).toBe(id)
    console.log(`${acked.length} entries acknowledged by A before kill -9, all read back through B`)
    // The workload keeps its SVIDs meanwhile, and the agent moves to B.
    const during = await wl.fetchX509Context()
    expect(during.svids.map((s) => s.id.toString())).toEqual(before.svids.map((s) => s.id.toString()))
    await waitFor('agent A on B', () => new RegExp(`"address":"${b.address}"[^\\n]*Sync stream connected`).test(agA.proc.output()), {
      timeoutMs: 30_000,
      hint: () => agA.proc.output(),
    })
    await createAt(b, `spiffe://${TD}/after-failover`, agA.id)
    await waitFor('a new entry through B on agent A', async () => (await ids(wl)).includes(`spiffe://${TD}/after-failover`), { timeoutMs: 10_000 })
    expect(await ids(wl)).toEqual([`spiffe://${TD}/after-failover`, `spiffe://${TD}/on-a`])
  })

  it('4. a PostgreSQL restart: a clear error while it is down, recovery after', async () => {
    const agB = agents[1]!
    const wl = workload(agB.socket)
    const served = await ids(wl)
    await cluster.stop()
    try {
      const err = (await adminClient('Entries', b.socketPath)
        .call('Count', {})
        .catch((e: unknown) => e)) as ServiceError
      expect(err.code).toBe(14) // UNAVAILABLE
      expect(err.metadata.get('x-error-code')).toEqual(['ERR_DATASTORE_UNAVAILABLE'])
      // The workload is still served from the agent's cache.
      expect(await ids(wl)).toEqual(served)
    } finally {
      await cluster.start()
    }
    const spiffeId = `spiffe://${TD}/after-restart`
    await waitFor('B to write again', async () => await createAt(b, spiffeId, agB.id).then(() => true), { timeoutMs: 30_000, intervalMs: 250 })
    await waitFor('the entry written after the restart on agent B', async () => (await ids(wl)).includes(spiffeId), {
      timeoutMs: 15_000,
      hint: () => agB.proc.output(),
    })
  })
})
