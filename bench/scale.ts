/**
 * One agent with many entries (issue 25): a server in this process (SQLite
 * datastore, memory key manager, audit off), and the agent's side in a child
 * process (bench/_scale-agent.ts, --expose-gc) over real gRPC and TLS.
 *
 *  - `entries_per_agent_sync_ms`: a full Sync of N entries (default 20,000)
 *    to one agent, from opening the stream to the whole set decoded by the
 *    agent's client (every page), median of the rounds. Baseline: the same N
 *    entries read straight from the datastore (`entries.list` by parent ID),
 *    encoded as SyncResponse protobuf, decoded and converted as the agent's
 *    client does: the work a Sync cannot avoid, without the stream, TLS, the
 *    agent's authentication, authorization and namespace bounds. The ratio is
 *    what the Sync path adds on top. Target: ≤ 2,000 ms.
 *  - `agent_bytes_per_synced_entry`: heap of an AgentManager holding the N
 *    entries, per entry (baseline: an entry's protobuf bytes).
 *  - `agent_bytes_per_cached_x509_svid`: heap the X.509-SVID cache adds per
 *    SVID, with real SVIDs the server signed (baseline: the DER chain and the
 *    PKCS#8 key of one, as bytes). Target: ≤ 3 KiB.
 *
 * Then the figures of several servers on PostgreSQL (bench/_scale-postgres.ts: entry_change_to_agent_p99_ms,
 * entry_writes_per_s_postgres_vs_raw_insert, server_steady_state_queries_per_agent_per_s).
 *
 * `npm run bench -- scale [entries] [--rounds=N] [--svids=N] [--skip-postgres | --only-postgres] [PostgreSQL flags]`.
 */
import * as grpc from '@grpc/grpc-js'
import { fork } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { hashToken } from '../attestors/node/join-token/server.js'
import { syncFromMsg } from '../src/agent/server-client.js'
import { serverPlugins } from '../src/cli/plugins.js'
import { loadProto } from '../src/common/grpc/proto.js'
import { nullLogger } from '../src/common/log/logger.js'
import type { SyncResponse__Output } from '../src/gen/warrant/agent/v1/SyncResponse.js'
import { entryToMsg } from '../src/server/api/convert.js'
import { toServerConfig } from '../src/server/config.js'
import { startServer } from '../src/server/server.js'
import { percentile, report } from './lib.js'
import { runScalePostgres } from './_scale-postgres.js'

const here = dirname(fileURLToPath(import.meta.url))
const TD = 'scale.example'

function flag(args: string[], name: string, dflt: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.slice(name.length + 3)) : dflt
}

export async function run(args: string[]): Promise<void> {
  if (!args.includes('--only-postgres')) await runSingleAgent(args)
  if (!args.includes('--skip-postgres')) await runScalePostgres(args)
}

async function runSingleAgent(args: string[]): Promise<void> {
  const n = Number(args.find((a) => /^\d+$/.test(a)) ?? 20_000)
  const rounds = flag(args, 'rounds', 5)
  const svids = flag(args, 'svids', Math.min(n, 5_000))
  const dir = mkdtempSync(join(tmpdir(), 'wbs-'))
  const cfg = toServerConfig(
    {
      server: { trust_domain: TD, bind_address: '127.0.0.1:0', data_dir: join(dir, 'data'), socket_path: join(dir, 'admin.sock'), log_level: 'warn' },
      audit: { enabled: false },
      plugins: { key_manager: { memory: {} }, datastore: { sqlite: {} }, node_attestor: { join_token: {} } },
    },
    dir,
    serverPlugins,
  )
  const server = await startServer(cfg, { log: nullLogger, readText: (p) => readFileSync(p, 'utf8') })
  const child = fork(join(here, '_scale-agent.ts'), [], { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const next = <T>() =>
    new Promise<T>((resolve, reject) => {
      child.once('message', (m) => resolve(m as T))
      child.once('exit', (code) => reject(new Error(`agent exited with ${code}`)))
    })
  try {
    const token = randomBytes(16).toString('hex')
    await server.ds.joinTokens.create({ tokenHash: hashToken(token), expiresAt: Date.now() + 600_000, spiffeId: '' })
    const attested = next<{ agentId: string }>()
    child.send({ address: `${server.address.host}:${server.address.port}`, trustDomain: TD, bundlePem: server.ca.bundle().x509Bundle().toPem(), token })
    const { agentId } = await attested

    // N entries under the agent, two selectors each (as a Kubernetes namespace and service account would), one transaction.
    await server.ds.tx(async (ds) => {
      for (let i = 0; i < n; i++) {
        await ds.entries.create({
          spiffeId: `spiffe://${TD}/ns/team-${i % 50}/sa/workload-${i}`,
          parentId: agentId,
          selectors: [
            { type: 'unix', value: `gid:${100_000 + (i % 50)}` },
            { type: 'unix', value: `uid:${100_000 + i}` },
          ],
          x509SvidTtl: 0,
          jwtSvidTtl: 0,
          dnsNames: [],
          federatesWith: [],
          hint: '',
          admin: false,
          downstream: false,
          expiresAt: null,
        })
      }
    })

    // Baseline: the same entries, datastore → protobuf → the agent's SyncMessage, no stream.
    const pkg = loadProto('warrant/agent/v1/node.proto') as unknown as {
      warrant: { agent: { v1: { Node: { service: Record<string, grpc.MethodDefinition<unknown, SyncResponse__Output>> } } } }
    }
    const sync = pkg.warrant.agent.v1.Node.service.Sync!
    let wireBytes = 0
    const baseTimes: number[] = []
    for (let r = 0; r < rounds; r++) {
      const t0 = performance.now()
      const { entries } = await server.ds.entries.list({ parentId: agentId })
      const bytes = sync.responseSerialize({ full: true, entries: entries.map(entryToMsg) } as never)
      const msg = syncFromMsg(sync.responseDeserialize(bytes))
      baseTimes.push(performance.now() - t0)
      if (msg.entries.length !== n) throw new Error(`baseline read ${msg.entries.length} entries, expected ${n}`)
      wireBytes = bytes.byteLength
    }

    const result = next<{
      times: number[]
      synced: number
      perEntry: number
      perSvid: number
      cached: number
      mintMs: number
      rawBytes: number
    }>()
    child.send({ entries: n, rounds, svids })
    const r = await result
    if (r.synced !== n) throw new Error(`the agent got ${r.synced} entries, expected ${n}`)
    const median = (xs: number[]) => percentile(xs, 50)
    report('entries_per_agent_sync_ms', median(r.times), median(baseTimes), 'ms', {
      entries: n,
      rounds,
      target: 2000,
      full_set_protobuf_bytes: wireBytes,
      times_ms: r.times.map((t) => Math.round(t)),
    })
    report('agent_bytes_per_synced_entry', r.perEntry, wireBytes / n, 'bytes', { entries: n })
    report('agent_bytes_per_cached_x509_svid', r.perSvid, r.rawBytes, 'bytes', { cached: r.cached, mint_ms: Math.round(r.mintMs), target: 3072 })
  } finally {
    child.kill('SIGKILL')
    await server.stop(1000)
    rmSync(dir, { recursive: true, force: true })
  }
}
