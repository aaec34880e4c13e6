/**
 * Several servers on one PostgreSQL (issue 25): a throwaway cluster (test/helpers/postgres-cluster.ts: initdb and
 * pg_ctl, as the `postgres` user when root, fsync off), two servers A and B in this process on one database (memory
 * key managers, audit off, each its own CA and server_id), agents as raw agent-API clients over real TLS.
 *
 *  - `entry_change_to_agent_p99_ms`: an entry created through A's admin API (Unix socket) until it is on the Sync
 *    stream of an agent connected to B (the change feed: LISTEN/NOTIFY, then B's Sync push), p99 over the rounds.
 *    Baseline: the same BatchCreate carries a second entry, for an agent connected to A itself. Target ≤ 1,000 ms.
 *  - `entry_writes_per_s_postgres_vs_raw_insert`: entries created one per BatchCreate through A's admin API (C calls
 *    in flight) against a raw `pg` loop inserting the same rows (the entry and its selector rows, one transaction
 *    each, C connections) into the same tables, rounds alternating. Target ≥ 0.3. Also reported: the same calls
 *    with an entry the server refuses before any datastore work (`admin_api_calls_per_s_without_write`), the
 *    ceiling the admin API's gRPC round trip alone puts on the figure.
 *  - `server_steady_state_queries_per_agent_per_s`: N agents (half on A, half on B) with their Sync streams open
 *    and E entries among them, then a quiet window: the queries both servers send to PostgreSQL (counted at the
 *    `pg` driver in this process), less those of a window with no agent, per agent per second. Target: 0 (no per-agent polling; SPIRE:
 *    about 47,000 queries/s for 3,500 agents, 13 per agent per second, spiffe/spire#1351).
 *
 * Run by `npm run bench -- scale` after the single-agent figures (skipped when PostgreSQL is not installed; alone
 * with `--only-postgres`, left out with `--skip-postgres`); flags `--agents=N` (300; 1,000 with
 * `--entries=100000` takes about 2.5 min here), `--entries=N` (30,000), `--changes=N` (100), `--quiet-s=N` (5), `--write-s=N` (2 s per round), `--concurrency=N` (8).
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { adminClient } from '../src/cli/admin-client.js'
import { serverPlugins } from '../src/cli/plugins.js'
import { nullLogger } from '../src/common/log/logger.js'
import { toServerConfig } from '../src/server/config.js'
import { startServer, type RunningServer } from '../src/server/server.js'
import { postgresBinDir, startPostgresCluster } from '../test/helpers/postgres-cluster.js'
import { TestAgentClient, type SyncMsg } from '../test/helpers/test-agent-client.js'
import { percentile, report } from './lib.js'

const TD = 'scale.example'
const PW_ENV = 'WARRANT_BENCH_PG_PASSWORD'

function flag(args: string[], name: string, dflt: number): number {
  const a = args.find((x) => x.startsWith(`--${name}=`))
  return a ? Number(a.slice(name.length + 3)) : dflt
}

interface EntryResults {
  results: { status: { code: number; message: string }; entry: { id: string } | null }[]
}

/** Reads every message of an agent's Sync stream in the background, calling `onMsg` with each. */
function follow(client: TestAgentClient, onMsg: (m: SyncMsg) => void): { first: Promise<void>; cancel(): void } {
  const stream = client.sync()
  let stopped = false
  const first = stream.next(120_000).then((m) => {
    onMsg(m)
    void (async () => {
      while (!stopped) onMsg(await stream.next(3_600_000))
    })().catch(() => undefined)
  })
  return {
    first,
    cancel: () => {
      stopped = true
      stream.cancel()
    },
  }
}

async function pool<T>(items: T[], concurrency: number, fn: (t: T, i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const i = next++
        await fn(items[i]!, i)
      }
    }),
  )
}

let queryCount = 0

/** Counts every query any `pg` client of this process sends (the servers' datastores, the raw loop); returns the undo. */
function countQueries(): () => void {
  const proto = pg.Client.prototype as unknown as { query: (...a: unknown[]) => unknown }
  const orig = proto.query
  proto.query = function (this: unknown, ...a: unknown[]) {
    queryCount++
    return orig.apply(this, a)
  }
  return () => {
    proto.query = orig
  }
}

export async function runScalePostgres(args: string[]): Promise<void> {
  if (!postgresBinDir()) {
    process.stderr.write('scale-postgres: PostgreSQL is not installed (scripts/install-system-deps.sh); skipped\n')
    return
  }
  const agentsN = flag(args, 'agents', 300)
  const entriesN = flag(args, 'entries', 30_000)
  const changes = flag(args, 'changes', 100)
  const quietS = flag(args, 'quiet-s', 5)
  const writeS = flag(args, 'write-s', 2)
  const concurrency = flag(args, 'concurrency', 8)
  const t00 = performance.now()
  const uncount = countQueries()
  const cluster = await startPostgresCluster()
  const dir = mkdtempSync(join(tmpdir(), 'wbp-'))
  process.env[PW_ENV] = cluster.password
  const servers: RunningServer[] = []
  const clients: TestAgentClient[] = []
  const streams: { cancel(): void }[] = []
  try {
    const db = await cluster.createDatabase('bench')
    const start = async (name: string) => {
      const cfg = toServerConfig(
        {
          server: {
            trust_domain: TD,
            bind_address: '127.0.0.1:0',
            data_dir: join(dir, name, 'data'),
            socket_path: join(dir, name, 'admin.sock'),
            server_id: name,
            log_level: 'warn',
            connection_limits: { max_per_peer: 100_000 },
          },
          audit: { enabled: false },
          plugins: {
            key_manager: { memory: {} },
            datastore: { postgres: { connection_string: db.connectionString, password_env: PW_ENV } },
            node_attestor: { join_token: {} },
          },
        },
        join(dir, name),
        serverPlugins,
      )
      const s = await startServer(cfg, { log: nullLogger, readText: (p) => readFileSync(p, 'utf8') })
      servers.push(s)
      return s
    }
    const a = await start('a')
    const b = await start('b')
    // Both CAs in both bundles (each adopts the other's through the change feed).
    for (let i = 0; i < 200 && (a.ca.bundle().x509Authorities.length < 2 || b.ca.bundle().x509Authorities.length < 2); i++)
      await new Promise((r) => setTimeout(r, 50))
    // 3. Steady state: every query the two servers send to PostgreSQL, counted at the driver (pg.Client#query, this
    // process), in a quiet window with no agent (now, before any other load), then in one with N agents' Sync streams open over E entries.
    const quietWindow = async (): Promise<{ queries: number; seconds: number }> => {
      await new Promise((r) => setTimeout(r, 1000))
      const q0 = queryCount
      const w0 = performance.now()
      await new Promise((r) => setTimeout(r, quietS * 1000))
      return { queries: queryCount - q0, seconds: (performance.now() - w0) / 1000 }
    }
    const idle = await quietWindow()
    const agentAt = async (s: RunningServer) => {
      const c = new TestAgentClient({ address: `${s.address.host}:${s.address.port}`, bundlePem: s.ca.bundle().x509Bundle().toPem(), trustDomain: TD })
      clients.push(c)
      const cred = await c.attestJoinToken((await s.attestation.createJoinToken({})).token)
      return { c, agentId: cred.agentId }
    }

    // 1. Entry change → agent, across servers (B) and on the writing server (A).
    const onA = await agentAt(a)
    const onB = await agentAt(b)
    const arrived = new Map<string, number>()
    const seen = (m: SyncMsg) => {
      const now = performance.now()
      for (const e of m.entries) if (!arrived.has(e.id)) arrived.set(e.id, now)
    }
    for (const ag of [onA, onB]) {
      const f = follow(ag.c, seen)
      streams.push(f)
      await f.first
    }
    const adminA = adminClient('Entries', a.socketPath)
    const cross: number[] = []
    const local: number[] = []
    for (let i = 0; i < changes; i++) {
      const t0 = performance.now()
      const r = await adminA.call<EntryResults>('BatchCreate', {
        entries: [onB, onA].map((ag, k) => ({
          spiffe_id: `spiffe://${TD}/change/${i}/${k}`,
          parent_id: ag.agentId,
          selectors: [{ type: 'unix', value: `uid:${i}` }],
        })),
      })
      const [idB, idA] = r.results.map((x) => x.entry!.id)
      const deadline = t0 + 10_000
      while (!(arrived.has(idB!) && arrived.has(idA!)) && performance.now() < deadline) await new Promise((res) => setTimeout(res, 1))
      if (!arrived.has(idB!) || !arrived.has(idA!)) throw new Error(`entry change ${i} not seen by both agents within 10 s`)
      cross.push(arrived.get(idB!)! - t0)
      local.push(arrived.get(idA!)! - t0)
      await new Promise((res) => setTimeout(res, 5))
    }
    report('entry_change_to_agent_p99_ms', percentile(cross, 99), percentile(local, 99), 'ms', {
      changes,
      target: 1000,
      p50_ms: Math.round(percentile(cross, 50) * 10) / 10,
      baseline_p50_ms: Math.round(percentile(local, 50) * 10) / 10,
      max_ms: Math.round(Math.max(...cross) * 10) / 10,
    })
    for (const f of streams.splice(0)) f.cancel()

    // 2. Entry writes through the admin API against raw INSERTs of the same rows.
    const url = new URL(db.connectionString)
    const rawPool = new pg.Pool({
      host: url.hostname,
      port: Number(url.port),
      user: decodeURIComponent(url.username),
      database: url.pathname.slice(1),
      password: cluster.password,
      max: concurrency,
    })
    const SERVER = `spiffe://${TD}/warrant/server`
    let seq = 0
    const apiRound = async (): Promise<number> => {
      let n = 0
      const end = performance.now() + writeS * 1000
      const t0 = performance.now()
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < end) {
            const i = seq++
            const r = await adminA.call<EntryResults>('BatchCreate', {
              entries: [{ spiffe_id: `spiffe://${TD}/api/w${i}`, parent_id: SERVER, selectors: [{ type: 'unix', value: `uid:${i}` }] }],
            })
            if (r.results[0]!.status.code !== 0) throw new Error(r.results[0]!.status.message)
            n++
          }
        }),
      )
      return n / ((performance.now() - t0) / 1000)
    }
    const rawRound = async (): Promise<number> => {
      let n = 0
      const end = performance.now() + writeS * 1000
      const t0 = performance.now()
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          const c = await rawPool.connect()
          try {
            while (performance.now() < end) {
              const i = seq++
              const id = randomUUID()
              const now = Date.now()
              await c.query('BEGIN')
              await c.query(
                `INSERT INTO entries (id, spiffe_id, parent_id, x509_ttl, jwt_ttl, hint, admin, downstream, expires_at, created_at, updated_at, revision,
                   selectors, selector_count, dns_names, federates_with, unique_key)
                 VALUES ($1, $2, $3, 0, 0, '', false, false, NULL, $4, $4, 0, $5, 1, '{}', '{}', $6)`,
                [id, `spiffe://${TD}/raw/w${i}`, SERVER, now, JSON.stringify([['unix', `uid:${i}`]]), randomBytes(32).toString('hex')],
              )
              await c.query('INSERT INTO entry_selectors (entry_id, type, value) VALUES ($1, $2, $3)', [id, 'unix', `uid:${i}`])
              await c.query('COMMIT')
              n++
            }
          } finally {
            c.release()
          }
        }),
      )
      return n / ((performance.now() - t0) / 1000)
    }
    // The ceiling of the admin API itself: calls refused at validation (an invalid SPIFFE ID), nothing written.
    const refusedRound = async (): Promise<number> => {
      let n = 0
      const end = performance.now() + writeS * 1000
      const t0 = performance.now()
      await Promise.all(
        Array.from({ length: concurrency }, async () => {
          while (performance.now() < end) {
            const r = await adminA.call<EntryResults>('BatchCreate', {
              entries: [{ spiffe_id: 'not-a-spiffe-id', parent_id: SERVER, selectors: [{ type: 'unix', value: 'uid:1' }] }],
            })
            if (r.results[0]!.status.code === 0) throw new Error('an invalid entry was accepted')
            n++
          }
        }),
      )
      return n / ((performance.now() - t0) / 1000)
    }
    const refusedRate = await refusedRound()
    const apiRates: number[] = []
    const rawRates: number[] = []
    for (let r = 0; r < 2; r++) {
      apiRates.push(await apiRound())
      rawRates.push(await rawRound())
    }
    const mean = (xs: number[]) => xs.reduce((s, x) => s + x, 0) / xs.length
    const api = mean(apiRates)
    const raw = mean(rawRates)
    report('entry_writes_per_s_postgres_vs_raw_insert', api / raw, 1, 'ratio', {
      target: 0.3,
      api_entries_per_s: Math.round(api),
      raw_insert_rows_per_s: Math.round(raw),
      admin_api_calls_per_s_without_write: Math.round(refusedRate),
      concurrency,
      rounds_s: writeS,
    })
    adminA.close()

    // 3. Steady state (the baseline window, with no agent, was taken at the start).
    const t1 = performance.now()
    const agents: { c: TestAgentClient; agentId: string }[] = []
    await pool(
      Array.from({ length: agentsN }, (_, i) => i),
      16,
      async (i) => {
        agents.push(await agentAt(i % 2 === 0 ? a : b))
      },
    )
    const attestS = (performance.now() - t1) / 1000
    const ids = agents.map((x) => x.agentId)
    const setup = await rawPool.connect()
    try {
      await setup.query('BEGIN')
      await setup.query(
        `INSERT INTO entries (id, spiffe_id, parent_id, x509_ttl, jwt_ttl, hint, admin, downstream, expires_at, created_at, updated_at, revision,
           selectors, selector_count, dns_names, federates_with, unique_key)
         SELECT 'bench-' || g, 'spiffe://${TD}/steady/w' || g, ($1::text[])[1 + g % $2], 0, 0, '', false, false, NULL, $3, $3, 0,
           jsonb_build_array(jsonb_build_array('unix', 'uid:' || g)), 1, '{}', '{}', md5('steady' || g) || md5('w' || g)
         FROM generate_series(0, $4 - 1) AS g`,
        [ids, ids.length, Date.now(), entriesN],
      )
      await setup.query(`INSERT INTO entry_selectors (entry_id, type, value) SELECT 'bench-' || g, 'unix', 'uid:' || g FROM generate_series(0, $1 - 1) AS g`, [
        entriesN,
      ])
      await setup.query('COMMIT')
    } finally {
      setup.release()
    }
    let full = 0
    await pool(agents, 32, async (ag) => {
      const f = follow(ag.c, (m) => {
        if (m.full) full++
      })
      streams.push(f)
      await f.first
    })
    const setupS = (performance.now() - t1) / 1000
    const busy = await quietWindow()
    const perAgent = Math.max(0, busy.queries / busy.seconds - idle.queries / idle.seconds) / agentsN
    report('server_steady_state_queries_per_agent_per_s', perAgent, null, 'queries/agent/s', {
      agents: agentsN,
      entries: entriesN,
      servers: 2,
      streams_with_full_set: full,
      quiet_window_s: Math.round(busy.seconds * 10) / 10,
      queries_in_window: busy.queries,
      idle_servers_queries_per_s: Math.round((idle.queries / idle.seconds) * 100) / 100,
      // Not in the window: each open stream's backstop re-authentication (one read every 300 s with a change feed).
      backstop_reauthentication_per_agent_per_s: Math.round((1 / 300) * 10_000) / 10_000,
      attest_s: Math.round(attestS),
      setup_s: Math.round(setupS),
      target: 0,
      spire_reference_queries_per_agent_per_s: Math.round((47_000 / 3_500) * 10) / 10,
    })
    await rawPool.end()
  } finally {
    for (const f of streams) f.cancel()
    for (const c of clients) c.close()
    for (const s of servers.reverse()) await s.stop(1000).catch(() => undefined)
    await cluster.destroy()
    uncount()
    delete process.env[PW_ENV]
    rmSync(dir, { recursive: true, force: true })
    process.stderr.write(`scale-postgres: ${Math.round((performance.now() - t00) / 1000)} s\n`)
  }
}
