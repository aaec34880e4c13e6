/**
 * `npm run bench -- revocation`: revocation_propagation_p99_ms.
 *
 * The broker as `warrant server run` composes it (startBroker: SQLite store,
 * Fastify on node:https, its admin socket), 1,000 verifiers subscribed to its
 * revocation feed (RevocationFeed, each its own mutual-TLS connection with an
 * X.509-SVID) in 4 processes. Each revocation is made through the admin
 * socket (as `warrant revoke` does: recorded with synchronous=FULL before the
 * answer); the figure is the time from the admin call being made to each
 * verifier holding the entry (from which the request verifier refuses the
 * token), p99 over every (revocation, verifier) pair: a bound on the time from
 * the call returning, which is printed too (0 when the entry arrived before
 * the answer did). Target p99 <= 1000 ms.
 *
 * Baseline in the same run, same processes and connections: a plain HTTPS
 * server that writes the same SSE event to the same 1,000 subscriptions the
 * moment it is told to (no store, no admin socket): the fan-out alone.
 *
 * The agents' side in the same samples: a server (`startServer`: SQLite,
 * memory key manager, its admin socket) with 100 node agents (20 with
 * `--quick`) in another process, each attested with its own join token and
 * holding its Sync stream over gRPC and TLS. Each revocation is made at both
 * the broker and the server, as `warrant revoke instance --server-socket`
 * does; the figure is p99 over every verifier and every agent holding it,
 * and `agents_p99_ms` / `verifiers_p99_ms` are printed beside it. The
 * baseline fans out to the verifiers only (no plain server-side counterpart
 * of the Sync stream is measured).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import https from 'node:https'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { createLogger } from '../src/cli/logging.js'
import { brokerAdminCall } from '../src/cli/broker-admin-client.js'
import { createBrokerKeyManager, startBroker, type RunningBroker } from '../src/cli/broker-composition.js'
import { toEmbeddedBrokerConfig } from '../src/broker/config.js'
import { BoundsSet } from '../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { revocationEntryToWire } from '../src/tokens/revocation.js'
import { bundlesOf, makeCa, makeSvid, pem } from '../test/helpers/broker-http-fixtures.js'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { hashToken } from '../attestors/node/join-token/server.js'
import { revokeOnServer } from '../src/cli/server-revocation-client.js'
import { serverPlugins } from '../src/cli/plugins.js'
import { nullLogger } from '../src/common/log/logger.js'
import { toServerConfig } from '../src/server/config.js'
import { startServer } from '../src/server/server.js'
import { freePort, report } from './lib.js'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const TD = 'bench.example'

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!

interface Group {
  child: ChildProcess
  lines: AsyncIterator<string>
}

async function subscribers(url: string, files: { ca: string; cert: string; key: string }, procs: number, perProc: number): Promise<Group[]> {
  const groups: Group[] = []
  for (let i = 0; i < procs; i++) {
    const child = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'bench', '_revocation-subscribers.ts'), url, files.ca, files.cert, files.key, String(perProc)],
      {
        cwd: REPO_ROOT,
        stdio: ['pipe', 'pipe', 'inherit'],
      },
    )
    groups.push({ child, lines: createInterface({ input: child.stdout })[Symbol.asyncIterator]() })
  }
  for (const g of groups) {
    const l = await g.lines.next()
    if (l.done) throw new Error('a subscriber process exited before it was ready')
  }
  return groups
}

/** N agents on their Sync streams to `server`, in one child process; resolves once every stream has its first full update. */
async function syncAgents(server: Awaited<ReturnType<typeof startServer>>, n: number, bundleFile: string, td: string): Promise<Group> {
  const tokens: string[] = []
  for (let i = 0; i < n; i++) {
    const token = randomBytes(16).toString('hex')
    await server.ds.joinTokens.create({ tokenHash: hashToken(token), expiresAt: Date.now() + 600_000, spiffeId: '' })
    tokens.push(token)
  }
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(REPO_ROOT, 'bench', '_revocation-agents.ts'), `${server.address.host}:${server.address.port}`, td, bundleFile, ...tokens],
    { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
  )
  const g = { child, lines: createInterface({ input: child.stdout })[Symbol.asyncIterator]() }
  const l = await g.lines.next()
  if (l.done) throw new Error('the agents process exited before it was ready')
  return g
}

/** Waits until the agents report `value`; their arrival times. */
async function agentArrivals(g: Group, value: string): Promise<number[]> {
  for (;;) {
    const l = await g.lines.next()
    if (l.done) throw new Error('the agents process exited')
    const m = JSON.parse(l.value) as { value: string; arrivals: number[] }
    if (m.value === value) return m.arrivals
  }
}

/** Waits until every group reports `seq`; the arrival times of all its subscribers. */
async function arrivalsOf(groups: Group[], seq: number): Promise<number[]> {
  const all: number[] = []
  for (const g of groups) {
    for (;;) {
      const l = await g.lines.next()
      if (l.done) throw new Error('a subscriber process exited')
      const m = JSON.parse(l.value) as { seq: number; arrivals: number[] }
      if (m.seq === seq) {
        all.push(...m.arrivals)
        break
      }
    }
  }
  return all
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const procs = 4
  const perProc = quick ? 50 : 250
  const revocations = quick ? 5 : 20
  const dir = mkdtempSync(join(tmpdir(), 'wbench-rev-'))
  const load0 = loadavg()[0]!
  let broker: RunningBroker | undefined
  let km: Awaited<ReturnType<typeof createBrokerKeyManager>> | undefined
  let groups: Group[] = []
  let raw: https.Server | undefined
  let server: Awaited<ReturnType<typeof startServer>> | undefined
  let agents: Group | undefined
  const nAgents = quick ? 20 : 100
  try {
    // the server and its agents on Sync (the SVID side)
    const scfg = toServerConfig(
      {
        server: {
          trust_domain: TD,
          bind_address: '127.0.0.1:0',
          data_dir: join(dir, 'server'),
          socket_path: join(dir, 'server-admin.sock'),
          log_level: 'warn',
        },
        audit: { enabled: false },
        plugins: { key_manager: { memory: {} }, datastore: { sqlite: {} }, node_attestor: { join_token: {} } },
      },
      dir,
      serverPlugins,
    )
    server = await startServer(scfg, { log: nullLogger, readText: (p) => readFileSync(p, 'utf8') })
    const serverBundle = join(dir, 'server-bundle.pem')
    writeFileSync(serverBundle, server.ca.bundle().x509Bundle().toPem())
    agents = await syncAgents(server, nAgents, serverBundle, TD)

    const ca = await makeCa(TD)
    const serverSvid = await makeSvid(ca, `spiffe://${TD}/warrant/broker`, { dnsNames: ['localhost'] })
    const rs = await makeSvid(ca, `spiffe://${TD}/rs/verifier`)
    const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'rs.pem'), key: join(dir, 'rs-key.pem') }
    writeFileSync(files.ca, pem(ca.certificate))
    writeFileSync(files.cert, rs.certPem)
    writeFileSync(files.key, rs.keyPem, { mode: 0o600 })
    const port = await freePort()
    const adminSocket = join(dir, 'admin.sock')
    const config = toEmbeddedBrokerConfig(
      {
        issuer: `https://localhost:${port}`,
        bind_address: `127.0.0.1:${port}`,
        key_manager: { memory: {} },
        admin_socket_path: adminSocket,
        limits: { max_connections_per_address: 4 * perProc + 64 },
      },
      dir,
      dir,
    )!
    const td = TrustDomain.fromString(TD)
    const bundles = bundlesOf([ca])
    const log = createLogger({ name: 'warrant-revocation-bench', level: 'info', destination: openSync('/dev/null', 'w') })
    km = await createBrokerKeyManager(config.keyManager!, { log, trustDomain: td, dataDir: dir })
    broker = await startBroker({
      config,
      keyManager: km,
      trust: { localTrustDomain: () => td, bundles: () => bundles, version: () => bundles },
      jwtBundles: bundles,
      identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
      bounds: () => BoundsSet.parse(td, { '/agent': { scopes: ['read'], resources: ['https://rs.bench.example'] } }),
      log,
    })

    // ours: the broker's feed
    groups = await subscribers(broker.http.endpoints.revocationFeed, files, procs, perProc)
    const ours: number[] = []
    const afterReturn: number[] = []
    const verifiers: number[] = []
    const onSync: number[] = []
    for (let i = 0; i < revocations; i++) {
      const value = `spiffe://${TD}/agent/i${i}`
      const called = Date.now()
      // both sides, as `warrant revoke instance --server-socket` records them
      const [r] = await Promise.all([
        brokerAdminCall<{ seq: number }>(adminSocket, 'POST', '/v1/revocations', { kind: 'instance', value }),
        revokeOnServer(scfg.socketPath, { kind: 'instance', value, reason: 'bench' }),
      ])
      const returned = Date.now()
      for (const t of await arrivalsOf(groups, r.seq)) {
        ours.push(t - called)
        verifiers.push(t - called)
        afterReturn.push(Math.max(0, t - returned))
      }
      for (const t of await agentArrivals(agents, value)) {
        ours.push(t - called)
        onSync.push(t - called)
        afterReturn.push(Math.max(0, t - returned))
      }
      await new Promise((res) => setTimeout(res, 50))
    }
    for (const g of groups) g.child.stdin!.end()
    groups = []

    // baseline: the same subscriptions to a server that only fans the same event out
    const rawPort = await freePort()
    const conns = new Set<import('node:http').ServerResponse>()
    raw = https.createServer(
      { cert: serverSvid.certPem, key: serverSvid.keyPem, ca: pem(ca.certificate), requestCert: true, rejectUnauthorized: true },
      (req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store' })
        res.write(`event: synced\ndata: {"seq":0}\n\n`)
        conns.add(res)
        req.on('close', () => conns.delete(res))
      },
    )
    raw.maxConnections = 4 * perProc + 64
    await new Promise<void>((r) => raw!.listen(rawPort, '127.0.0.1', () => r()))
    groups = await subscribers(`https://localhost:${rawPort}/feed`, files, procs, perProc)
    const base: number[] = []
    for (let i = 0; i < revocations; i++) {
      const seq = 1000 + i
      const e = { seq, kind: 'instance' as const, value: `spiffe://${TD}/agent/i${i}`, createdAt: Math.floor(Date.now() / 1000), expiresAt: 2 ** 31 }
      const bytes = `id: ${seq}\nevent: revocation\ndata: ${JSON.stringify(revocationEntryToWire(e))}\n\n`
      const returned = Date.now()
      for (const c of conns) c.write(bytes)
      for (const t of await arrivalsOf(groups, seq)) base.push(t - returned)
      await new Promise((res) => setTimeout(res, 50))
    }
    ours.sort((a, b) => a - b)
    base.sort((a, b) => a - b)
    verifiers.sort((a, b) => a - b)
    onSync.sort((a, b) => a - b)
    afterReturn.sort((a, b) => a - b)
    report('revocation_propagation_p99_ms', Math.max(1, pct(ours, 99)), Math.max(1, pct(base, 99)), 'ms', {
      subscribers: procs * perProc,
      agents_on_sync: nAgents,
      verifiers_p99_ms: pct(verifiers, 99),
      agents_p99_ms: pct(onSync, 99),
      processes: procs,
      revocations,
      samples: ours.length,
      p50_ms: pct(ours, 50),
      p99_after_call_returned_ms: pct(afterReturn, 99),
      max_ms: ours.at(-1),
      baseline_p50_ms: pct(base, 50),
      what_baseline:
        'the same verifier subscriptions fed the same SSE event by a server that only writes it (no store, no admin call; the agents are not in the baseline)',
      load_avg_1m_before: Math.round(load0 * 100) / 100,
      load_avg_1m_after: Math.round(loadavg()[0]! * 100) / 100,
      target_ms: 1000,
    })
  } finally {
    for (const g of groups) g.child.kill('SIGKILL')
    agents?.child.kill('SIGKILL')
    await server?.stop(1000)
    raw?.close()
    raw?.closeAllConnections()
    await broker?.stop()
    await km?.close?.()
    rmSync(dir, { recursive: true, force: true })
  }
}
