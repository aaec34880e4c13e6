/**
 * Two servers of one trust domain in this process, on one real PostgreSQL database (a throwaway cluster), each
 * with its own CA in its own disk key manager: what is written through server A reaches server B's services at
 * once through the datastore's change feed. An agent attested at B sees on its Sync stream at B an entry created
 * at A (and its deletion); a revocation made at A is enforced at B; an agent banned at A loses its open Sync
 * stream at B at once (not at the stream's periodic re-authentication, 30 s) and is refused there.
 */
import { join } from 'node:path'
import { readFileSync } from 'node:fs'
import type { ServiceError } from '@grpc/grpc-js'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { serverPlugins } from '../../src/cli/plugins.js'
import { revokeOnServer } from '../../src/cli/server-revocation-client.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { toServerConfig } from '../../src/server/config.js'
import { startServer, type RunningServer } from '../../src/server/server.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { newEntry } from '../helpers/entries.js'
import { requirePostgres, startPostgresCluster, type PostgresCluster } from '../helpers/postgres-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { newP256, TestAgentClient, type SyncStream, type SyncMsg } from '../helpers/test-agent-client.js'

const TD = 'pgha.example'
const PW_ENV = 'WARRANT_TEST_PG_PASSWORD'

/** The next Sync message `pred` accepts (earlier ones skipped), and how long it took. */
async function until(stream: SyncStream, pred: (m: SyncMsg) => boolean, timeoutMs = 5000): Promise<{ msg: SyncMsg; ms: number }> {
  const t0 = performance.now()
  for (;;) {
    const left = timeoutMs - (performance.now() - t0)
    if (left <= 0) throw new Error('no matching Sync message in time')
    const msg = await stream.next(left)
    if (pred(msg)) return { msg, ms: performance.now() - t0 }
  }
}

describe.runIf(requirePostgres())('two servers on one PostgreSQL: the change feed reaches every service', () => {
  const tmp = tempDir('w-pgha-')
  let cluster: PostgresCluster
  let a: RunningServer
  let b: RunningServer
  const clients: TestAgentClient[] = []

  const start = async (name: string, connectionString: string): Promise<RunningServer> => {
    const dir = join(tmp.dir, name)
    const cfg = toServerConfig(
      {
        server: {
          trust_domain: TD,
          bind_address: '127.0.0.1:0',
          data_dir: join(dir, 'data'),
          socket_path: join(dir, 'admin', 'api.sock'),
          server_id: name,
        },
        plugins: {
          key_manager: { disk: { keys_path: 'keys' } },
          datastore: { postgres: { connection_string: connectionString, password_env: PW_ENV } },
          node_attestor: { join_token: {} },
        },
      },
      dir,
      serverPlugins,
    )
    return startServer(cfg, { log: nullLogger, readText: (p) => readFileSync(p, 'utf8') })
  }
  /** An agent attested at `s` with a join token of `s`. */
  const agentAt = async (s: RunningServer) => {
    const c = new TestAgentClient({
      address: `${s.address.host}:${s.address.port}`,
      bundlePem: readFileSync(join(tmp.dir, s.serverId, 'data', 'bundle.pem'), 'utf8'),
      trustDomain: TD,
    })
    clients.push(c)
    const cred = await c.attestJoinToken((await s.attestation.createJoinToken({})).token)
    return { c, agentId: cred.agentId }
  }

  beforeAll(async () => {
    cluster = await startPostgresCluster()
    process.env[PW_ENV] = cluster.password
    const db = await cluster.createDatabase('ha')
    a = await start('a', db.connectionString)
    b = await start('b', db.connectionString)
  }, 120_000)
  afterAll(async () => {
    for (const c of clients) c.close()
    await b?.stop()
    await a?.stop()
    await cluster?.destroy()
    delete process.env[PW_ENV]
    tmp.cleanup()
  }, 60_000)

  it("an entry created at A reaches an agent's Sync stream at B at once, and so does its deletion", async () => {
    const { c, agentId } = await agentAt(b)
    const stream = c.sync()
    await stream.next()
    const [r] = await a.registration.createEntries([newEntry({ spiffeId: `spiffe://${TD}/web`, parentId: agentId })])
    const created = r!.ok ? r!.value : expect.fail(String(r!.ok || r!.error))
    const got = await until(stream, (m) => m.entries.some((e) => e.id === created.id))
    console.log(`entry created at A seen on the Sync stream at B after ${got.ms.toFixed(1)} ms`)
    expect(got.ms).toBeLessThan(3000)
    await a.registration.deleteEntries([created.id])
    await until(stream, (m) => m.deleted_entry_ids.includes(created.id))
    stream.cancel()
  })

  it('a revocation made at A is enforced at B', async () => {
    const { c, agentId } = await agentAt(b)
    const spiffeId = `spiffe://${TD}/db`
    const [r] = await a.registration.createEntries([newEntry({ spiffeId, parentId: agentId })])
    const entryId = r!.ok ? r!.value.id : expect.fail('entry not created')
    const sign = async () => (await c.batchNewX509Svid([{ entryId, csr: await createCsr({ privateKey: newP256().privateKey }) }]))[0]!
    await expect.poll(async () => (await sign()).status.code, { timeout: 3000 }).toBe(0) // B has the entry
    await revokeOnServer(a.socketPath, { kind: 'instance', value: spiffeId, reason: 'test' })
    const t0 = performance.now()
    await expect.poll(async () => (await sign()).status.error_code, { timeout: 3000, interval: 20 }).toBe('ERR_REVOKED')
    console.log(`revocation at A enforced at B after ${(performance.now() - t0).toFixed(1)} ms`)
  })

  it('an agent banned at A loses its open Sync stream at B at once and is refused there', async () => {
    const { c, agentId } = await agentAt(b)
    const stream = c.sync()
    await stream.next()
    const t0 = performance.now()
    await a.attestation.ban(agentId)
    const err = (await until(stream, () => false, 5000).catch((e: unknown) => e)) as ServiceError
    expect(err.code).toBe(7)
    expect(err.metadata.get('x-error-code')).toEqual(['ERR_AGENT_BANNED'])
    expect(performance.now() - t0).toBeLessThan(3000)
    const again = (await c.renewAgent(await createCsr({ privateKey: newP256().privateKey })).catch((e: unknown) => e)) as ServiceError
    expect(again.metadata.get('x-error-code')).toEqual(['ERR_AGENT_BANNED'])
  })
})
