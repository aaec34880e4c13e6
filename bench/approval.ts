/**
 * `npm run bench -- approval`: intent_auto_decision_p50_vs_token_exchange.
 *
 * The broker composed as `warrant server run` composes it (startBroker: the
 * domain, the SQLite store, Fastify on node:https, the audit log on, the
 * signing key in SoftHSM2 when softhsm2-util is installed, else in memory)
 * with `[broker.intents]` on. A client process (bench/_approval-client.ts:
 * mutual TLS with its X.509-SVID, a fresh DPoP proof per request) times each
 * request from send to answer, CONCURRENCY in flight, in rounds alternating
 * the two sides so a load change hits both alike:
 *
 * - value: an intent declared at the token endpoint (client_credentials with
 *   a `warrant_intent` authorization detail) that the risk rules approve by
 *   themselves, answered with its action-bound token: the intent assessed
 *   (task, ceiling, history, rules), its decision event made durable in the
 *   audit log, the intent row and the token stored in one transaction synced
 *   to disk (a one-time token, like a used grant), the token signed;
 * - baseline: a plain client_credentials token exchange for the same task.
 *
 * Figure: p50 of the first over p50 of the second. Target ≤ 1.5. `--quick`
 * for shorter rounds. Bounded: about 20 s (SoftHSM provisioning included).
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { once } from 'node:events'
import { createLogger } from '../src/cli/logging.js'
import { createBrokerKeyManager, startBroker, type RunningBroker } from '../src/cli/broker-composition.js'
import { toEmbeddedBrokerConfig } from '../src/broker/config.js'
import { BoundsSet } from '../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { bundlesOf, makeCa, makeSvid, pem } from '../test/helpers/broker-http-fixtures.js'
import { benchKeyManager, freePort, percentile, report } from './lib.js'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const TD = 'bench.example'
const AGENT = `spiffe://${TD}/agent/o1/t1/i1`
const RS = 'https://rs.bench.example'
const CONCURRENCY = 8

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const rounds = quick ? 2 : 3
  const roundMs = quick ? 1000 : 2000
  const dir = mkdtempSync(join(tmpdir(), 'wbench-approval-'))
  const load0 = loadavg()[0]!
  let broker: RunningBroker | undefined
  let km: Awaited<ReturnType<typeof createBrokerKeyManager>> | undefined
  let child: ReturnType<typeof spawn> | undefined
  try {
    const { keyManager, keyManagerName } = await benchKeyManager(dir)
    const ca = await makeCa(TD)
    const serverSvid = await makeSvid(ca, `spiffe://${TD}/warrant/broker`, { dnsNames: ['localhost'] })
    const agent = await makeSvid(ca, AGENT)
    const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'agent.pem'), key: join(dir, 'agent-key.pem') }
    writeFileSync(files.ca, pem(ca.certificate))
    writeFileSync(files.cert, agent.certPem)
    writeFileSync(files.key, agent.keyPem, { mode: 0o600 })
    const port = await freePort()
    const config = toEmbeddedBrokerConfig(
      {
        issuer: `https://localhost:${port}`,
        bind_address: `127.0.0.1:${port}`,
        key_manager: keyManager,
        admin_socket_path: join(dir, 'admin.sock'),
        intents: { max_autonomous_risk: 0.5, actions: [{ match: 'tools:read', weight: 0 }] },
      },
      dir,
      dir,
    )!
    const td = TrustDomain.fromString(TD)
    const bundles = bundlesOf([ca])
    const bounds = BoundsSet.parse(td, { '/agent': { scopes: ['tools:read'], resources: [RS], max_token_ttl: 600 } })
    const log = createLogger({ name: 'warrant-approval-bench', level: 'info', destination: openSync('/dev/null', 'w') })
    km = await createBrokerKeyManager(config.keyManager!, { log, trustDomain: td, dataDir: dir })
    broker = await startBroker({
      config,
      keyManager: km,
      trust: { localTrustDomain: () => td, bundles: () => bundles, version: () => bundles },
      jwtBundles: bundles,
      identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
      bounds: () => bounds,
      log,
    })
    if (!broker.intents) throw new Error('intents are not on')
    const task = await broker.service.createTask(
      { taskId: 'bench-task', agent: AGENT, scopes: ['tools:read'], resources: [RS], ttlSeconds: 3600, maxRenewals: 0 },
      'admin',
    )
    const c = spawn(
      process.execPath,
      ['--import', 'tsx', join(REPO_ROOT, 'bench', '_approval-client.ts'), broker.http.endpoints.token, files.ca, files.cert, files.key, task.taskId, RS],
      { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
    )
    child = c
    const lines = createInterface({ input: c.stdout })[Symbol.asyncIterator]()
    const read = async <T>(): Promise<T> => {
      const n = await lines.next()
      if (n.done) throw new Error('approval client exited')
      const v = JSON.parse(n.value) as T & { error?: string }
      if (v.error !== undefined) throw new Error(`approval client: ${v.error}`)
      return v
    }
    const send = (o: unknown) => c.stdin.write(`${JSON.stringify(o)}\n`)
    await read<{ ready: boolean }>()
    type Round = { ok: number; failed: number; ms: number; samples: number[]; detail?: string }
    for (const mode of ['plain', 'intent']) {
      send({ round: 500, concurrency: CONCURRENCY, mode }) // warm-up: connections, JIT, the stores
      await read<Round>()
    }
    const samples: Record<'plain' | 'intent', number[]> = { plain: [], intent: [] }
    let failed = 0
    const cpu = { plain: 0, intent: 0 }
    for (let i = 0; i < rounds; i++) {
      for (const mode of i % 2 === 0 ? (['plain', 'intent'] as const) : (['intent', 'plain'] as const)) {
        const c0 = process.cpuUsage()
        send({ round: roundMs, concurrency: CONCURRENCY, mode })
        const r = await read<Round>()
        const c1 = process.cpuUsage(c0)
        cpu[mode] += c1.user + c1.system
        if (r.failed > 0) process.stderr.write(`approval bench: ${r.failed} ${mode} requests failed: ${r.detail}\n`)
        failed += r.failed
        samples[mode].push(...r.samples)
      }
    }
    send({ exit: true })
    await Promise.race([once(c, 'exit'), new Promise((r) => setTimeout(r, 5000).unref())])
    const p50 = { plain: percentile(samples.plain, 50), intent: percentile(samples.intent, 50) }
    const approved = (await broker.intents.list({ status: 'approved', limit: 1 })).length
    report('intent_auto_decision_p50_vs_token_exchange', p50.intent, p50.plain, 'ms', {
      what: 'p50 of declaring an intent approved by rule and receiving its action-bound token (one request at the token endpoint) against p50 of a plain client_credentials token exchange, same client, TLS, DPoP and concurrency',
      key_manager: keyManagerName,
      audit: 'on',
      concurrency: CONCURRENCY,
      rounds,
      round_ms: roundMs,
      intents: samples.intent.length,
      tokens: samples.plain.length,
      intent_p99_ms: Math.round(percentile(samples.intent, 99) * 100) / 100,
      exchange_p99_ms: Math.round(percentile(samples.plain, 99) * 100) / 100,
      failed,
      broker_cpu_us_per_intent: Math.round(cpu.intent / Math.max(1, samples.intent.length)),
      broker_cpu_us_per_exchange: Math.round(cpu.plain / Math.max(1, samples.plain.length)),
      approved_listed: approved,
      load_avg_1m_before: Math.round(load0 * 100) / 100,
      load_avg_1m_after: Math.round(loadavg()[0]! * 100) / 100,
      target_ratio: 1.5,
    })
  } finally {
    child?.kill('SIGKILL')
    await broker?.stop()
    await km?.close?.()
    rmSync(dir, { recursive: true, force: true })
  }
}
