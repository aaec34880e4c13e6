/**
 * `npm run bench -- broker`: the broker's three figures.
 *
 * token_exchange_per_s_vs_raw_crypto: full token requests per second through
 * the broker's real HTTPS token endpoint, composed as `warrant server run`
 * composes it (startBroker: the domain, the SQLite store, Fastify on
 * node:https, pino at info), signing key as in the quickstart (the pkcs11
 * KeyManager on a SoftHSM2 token when softhsm2-util is installed, else the
 * memory KeyManager; printed as `key_manager`). The client is another process
 * (bench/_broker-client.ts): mutual TLS with its X.509-SVID over keep-alive
 * connections, a fresh ES256 DPoP proof with the server nonce per request,
 * `client_credentials` for a task, CONCURRENCY requests in flight. Each
 * request is authenticated (certificate checked once per connection), its
 * proof verified (one ES256 verify, replay cache), the task and ceiling
 * decided, the token signed (one ES256 signature) and stored.
 * Baseline in the same run: raw node:crypto, one ES256 verify plus one ES256
 * sign per operation (the two signature operations a request costs the
 * broker), CONCURRENCY operations in flight on libuv's pool. The two sides
 * alternate in rounds so a load change hits both alike. Target ratio >= 0.5.
 * The 1-minute load average before and after is printed with the figure.
 *
 * token_exchange_audited_vs_unaudited: the same figure with the broker's
 * audit log on (the default: each token released once its event is durable)
 * against it off, measured one after the other in the same run. Target >= 0.8.
 *
 * token_endpoint_ceiling_vs_raw_crypto (context, no target): the same client
 * process, TLS and concurrency against an HTTPS endpoint that checks nothing
 * and answers a canned token. It is the most any token endpoint can reach on
 * this machine with this client, and shows how much of it the broker keeps.
 *
 * txn_token_issue_per_s_vs_raw_crypto: the same client, task and baseline,
 * each request a Txn-Token request with the client's access token as the
 * subject token (`-- broker --txn` runs only this figure). Target >= 0.5.
 *
 * token_verify_vs_jose and delegated_verify_depth5_vs_depth0: see
 * bench/_broker-verify.ts.
 */
import { spawn } from 'node:child_process'
import { generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto'
import { mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import https from 'node:https'
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
import { benchKeyManager, freePort, report } from './lib.js'
import { run as runVerify } from './_broker-verify.js'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const TD = 'bench.example'
const AGENT = `spiffe://${TD}/agent/o1/t1/i1`
const RS = 'https://rs.bench.example'
const CONCURRENCY = 8

export async function run(args: string[]): Promise<void> {
  // `-- broker --txn`: only the Txn-Token figure
  if (args.includes('--txn')) {
    await tokenExchange(args, { mode: 'txn' })
    return
  }
  // `-- broker --audit-only`: only token_exchange_audited_vs_unaudited (no ceiling)
  const auditOnly = args.includes('--audit-only')
  if (!auditOnly) await tokenExchange(args)
  await auditedVsUnaudited(args)
  if (auditOnly) return
  await tokenExchange(args, { mode: 'txn' })
  await runVerify(args)
}

/** Runs the token-exchange figure (audit on) and the machine's ceiling, or with `txn` the Txn-Token figure; returns the broker's tokens per second. */
export async function tokenExchange(args: string[], opts: { mode?: 'txn' } = {}): Promise<number> {
  const txn = opts.mode === 'txn'
  const quick = args.includes('--quick')
  const rounds = quick ? 2 : 3
  const roundMs = quick ? 1000 : 2000
  const load0 = loadavg()[0]!
  let side: BrokerSide | undefined
  let ceilingChild: ReturnType<typeof spawn> | undefined
  let ceiling: https.Server | undefined
  try {
    side = await openBrokerSide({ audit: true, txn })
    // Baseline operands: an ES256 proof-sized input to verify, a token-sized input to sign.
    const { privateKey: proofKey, publicKey: proofPub } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const { privateKey: signKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const proofInput = Buffer.alloc(330, 0x61)
    const proofSig = sign('sha256', proofInput, { key: proofKey, dsaEncoding: 'ieee-p1363' })
    const tokenInput = Buffer.alloc(640, 0x62)
    const baseline = () => rawCrypto({ ms: roundMs, concurrency: CONCURRENCY, proofPub, proofInput, proofSig, signKey, tokenInput })
    await rawCrypto({ ms: 300, concurrency: CONCURRENCY, proofPub, proofInput, proofSig, signKey, tokenInput })

    let oursN = 0
    let oursMs = 0
    let baseN = 0
    let baseMs = 0
    let failed = 0
    let nonceRetries = 0
    let selfCpu = 0
    let clientCpu = 0
    for (let i = 0; i < rounds; i++) {
      const b = await baseline()
      baseN += b.n
      baseMs += b.ms
      const r = await side.round(roundMs)
      selfCpu += r.brokerCpuUs
      clientCpu += r.clientCpuUs
      if (r.failed > 0) process.stderr.write(`broker: ${r.failed} requests failed: ${r.detail}\n`)
      oursN += r.ok
      oursMs += r.ms
      failed += r.failed
      nonceRetries += r.nonceRetries
    }
    await side.stopClient()
    const oursPerS = (oursN * 1000) / oursMs
    if (txn) {
      report('txn_token_issue_per_s_vs_raw_crypto', oursPerS, (baseN * 1000) / baseMs, 'ops/s', {
        what: 'Txn-Tokens per second through the real HTTPS token endpoint: mTLS client auth, the agent access token as subject_token (one ES256 verify), a txntoken+jwt signed (one ES256 sign), audit on; baseline one ES256 verify + one ES256 sign',
        key_manager: side.keyManagerName,
        concurrency: CONCURRENCY,
        rounds,
        round_ms: roundMs,
        tokens: oursN,
        failed,
        broker_cpu_us_per_token: Math.round(selfCpu / Math.max(1, oursN)),
        load_avg_1m_before: Math.round(load0 * 100) / 100,
        load_avg_1m_after: Math.round(loadavg()[0]! * 100) / 100,
        target_ratio: 0.5,
      })
      return oursPerS
    }
    report('token_exchange_per_s_vs_raw_crypto', oursPerS, (baseN * 1000) / baseMs, 'ops/s', {
      audit: 'on (the quickstart default)',
      grant: 'client_credentials',
      client_auth: 'tls_client_auth',
      binding: 'DPoP',
      key_manager: side.keyManagerName,
      concurrency: CONCURRENCY,
      rounds,
      round_ms: roundMs,
      tokens: oursN,
      failed,
      nonce_retries: nonceRetries,
      broker_cpu_us_per_token: Math.round(selfCpu / Math.max(1, oursN)),
      client_cpu_us_per_token: Math.round(clientCpu / Math.max(1, oursN)),
      load_avg_1m_before: Math.round(load0 * 100) / 100,
      load_avg_1m_after: Math.round(loadavg()[0]! * 100) / 100,
      target_ratio: 0.5,
    })

    // The ceiling this machine sets: the same client, the same TLS (mutual, keep-alive), a DPoP proof built per request,
    // against an HTTPS endpoint that checks nothing and answers a canned token. No broker can exceed it here.
    const canned = JSON.stringify({ access_token: 'x'.repeat(600), token_type: 'DPoP', expires_in: 600 })
    ceiling = https.createServer(
      {
        cert: side.serverSvid.certPem,
        key: side.serverSvid.keyPem,
        ca: pem(side.ca.certificate),
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: 'TLSv1.2',
      },
      (req, res) => {
        req.resume()
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store', 'dpop-nonce': 'n' })
          res.end(canned)
        })
      },
    )
    const cport = await freePort()
    await new Promise<void>((r) => ceiling!.listen(cport, '127.0.0.1', () => r()))
    const cc = spawn(
      process.execPath,
      [
        ...side.clientArgs,
        '--import',
        'tsx',
        join(REPO_ROOT, 'bench', '_broker-client.ts'),
        `https://localhost:${cport}/token`,
        side.files.ca,
        side.files.cert,
        side.files.key,
        side.taskId,
      ],
      { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
    )
    ceilingChild = cc
    const clines = createInterface({ input: cc.stdout })[Symbol.asyncIterator]()
    const cread = async <T>(): Promise<T> => {
      const n = await clines.next()
      if (n.done) throw new Error('ceiling client exited')
      return JSON.parse(n.value) as T
    }
    await cread()
    cc.stdin.write(`${JSON.stringify({ round: 500, concurrency: CONCURRENCY })}\n`)
    await cread()
    let ceilN = 0
    let ceilMs = 0
    let ceilClientCpu = 0
    for (let i = 0; i < rounds; i++) {
      const c0 = cpuMicros(cc.pid)
      cc.stdin.write(`${JSON.stringify({ round: roundMs, concurrency: CONCURRENCY })}\n`)
      const r = await cread<{ ok: number; ms: number }>()
      ceilClientCpu += cpuMicros(cc.pid) - c0
      ceilN += r.ok
      ceilMs += r.ms
    }
    cc.stdin.write(`${JSON.stringify({ exit: true })}\n`)
    report('token_endpoint_ceiling_vs_raw_crypto', (ceilN * 1000) / ceilMs, (baseN * 1000) / baseMs, 'ops/s', {
      what: 'the same client and TLS against an endpoint that checks nothing and answers a canned token: the most any token endpoint reaches on this machine',
      concurrency: CONCURRENCY,
      requests: ceilN,
      client_cpu_us_per_request: Math.round(ceilClientCpu / Math.max(1, ceilN)),
      cpus: cpus().length,
      broker_share_of_ceiling: Math.round((((oursN * 1000) / oursMs) * 1000) / ((ceilN * 1000) / ceilMs)) / 1000,
    })
    return oursPerS
  } finally {
    ceilingChild?.kill('SIGKILL')
    ceiling?.close()
    await side?.close()
  }
}

interface BrokerRound {
  ok: number
  failed: number
  nonceRetries: number
  ms: number
  detail?: string
  /** CPU of this process (the broker) and of the client process during the round, in microseconds. */
  brokerCpuUs: number
  clientCpuUs: number
}

/** One broker composed as `warrant server run` composes it, its task, and its client process warmed up. */
interface BrokerSide {
  keyManagerName: string
  clientArgs: string[]
  files: { ca: string; cert: string; key: string }
  ca: Awaited<ReturnType<typeof makeCa>>
  serverSvid: Awaited<ReturnType<typeof makeSvid>>
  taskId: string
  round(ms: number): Promise<BrokerRound>
  stopClient(): Promise<void>
  close(): Promise<void>
}

async function openBrokerSide(opts: { audit: boolean; txn: boolean }): Promise<BrokerSide> {
  const dir = mkdtempSync(join(tmpdir(), 'wbench-broker-'))
  let broker: RunningBroker | undefined
  let km: Awaited<ReturnType<typeof createBrokerKeyManager>> | undefined
  let child: ReturnType<typeof spawn> | undefined
  const close = async () => {
    child?.kill('SIGKILL')
    await broker?.stop()
    await km?.close?.()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    // The signing key as the quickstart configures it.
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
        audit: { enabled: opts.audit },
      },
      dir,
      dir,
    )!
    const td = TrustDomain.fromString(TD)
    const bundles = bundlesOf([ca])
    const bounds = BoundsSet.parse(td, { '/agent': { scopes: ['tools:read', 'tools:write'], resources: [RS], max_token_ttl: 600 } })
    const nullFd = openSync('/dev/null', 'w')
    const log = createLogger({ name: 'warrant-broker-bench', level: 'info', destination: nullFd })
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
    const task = await broker.service.createTask(
      { taskId: 'bench-task', agent: AGENT, scopes: ['tools:read'], resources: [RS], ttlSeconds: 3600, maxRenewals: 0 },
      'admin',
    )

    const clientArgs = (process.env.WARRANT_CLIENT_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const c = spawn(
      process.execPath,
      [
        ...clientArgs,
        '--import',
        'tsx',
        join(REPO_ROOT, 'bench', '_broker-client.ts'),
        broker.http.endpoints.token,
        files.ca,
        files.cert,
        files.key,
        task.taskId,
        ...(opts.txn ? ['txn'] : []),
      ],
      { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
    )
    child = c
    const lines = createInterface({ input: c.stdout })[Symbol.asyncIterator]()
    const read = async <T>(): Promise<T> => {
      const n = await lines.next()
      if (n.done) throw new Error('broker client exited')
      const v = JSON.parse(n.value) as T & { error?: string }
      if (v.error !== undefined) throw new Error(`broker client: ${v.error}`)
      return v
    }
    const send = (o: unknown) => c.stdin.write(`${JSON.stringify(o)}\n`)
    await read<{ ready: boolean }>()
    send({ round: 500, concurrency: CONCURRENCY }) // warm-up: the connections, JIT, the store
    await read()
    return {
      keyManagerName,
      clientArgs,
      files,
      ca,
      serverSvid,
      taskId: task.taskId,
      round: async (ms) => {
        const s0 = process.cpuUsage()
        const c0 = cpuMicros(c.pid)
        send({ round: ms, concurrency: CONCURRENCY })
        const r = await read<{ ok: number; failed: number; nonceRetries: number; ms: number; detail?: string }>()
        const s1 = process.cpuUsage(s0)
        return { ...r, brokerCpuUs: s1.user + s1.system, clientCpuUs: cpuMicros(c.pid) - c0 }
      },
      stopClient: async () => {
        send({ exit: true })
        await Promise.race([once(c, 'exit'), new Promise((r) => setTimeout(r, 5000).unref())])
      },
      close,
    }
  } catch (e) {
    await close()
    throw e
  }
}

/**
 * token_exchange_audited_vs_unaudited: two brokers composed alike, one with the audit log on and one
 * with it off, each with its own warmed-up client process, open at once; rounds alternate between
 * them (only one side under load at a time, the side that starts alternating too), so a change in
 * the machine's load hits both alike. The figure is the ratio of the totals; each pair's ratio and
 * the broker's CPU per token on each side are printed with it.
 */
async function auditedVsUnaudited(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const pairs = quick ? 2 : 6
  const roundMs = quick ? 1000 : 2000
  const load0 = loadavg()[0]!
  let on: BrokerSide | undefined
  let off: BrokerSide | undefined
  try {
    on = await openBrokerSide({ audit: true, txn: false })
    off = await openBrokerSide({ audit: false, txn: false })
    const total = { on: { n: 0, ms: 0, cpu: 0 }, off: { n: 0, ms: 0, cpu: 0 } }
    const pairRatios: number[] = []
    let failed = 0
    for (let i = 0; i < pairs; i++) {
      const order = i % 2 === 0 ? (['on', 'off'] as const) : (['off', 'on'] as const)
      const rate: Record<'on' | 'off', number> = { on: 0, off: 0 }
      for (const which of order) {
        const r = await (which === 'on' ? on : off).round(roundMs)
        failed += r.failed
        total[which].n += r.ok
        total[which].ms += r.ms
        total[which].cpu += r.brokerCpuUs
        rate[which] = (r.ok * 1000) / r.ms
      }
      pairRatios.push(Math.round((rate.on / rate.off) * 1000) / 1000)
    }
    const sorted = [...pairRatios].sort((a, b) => a - b)
    report('token_exchange_audited_vs_unaudited', (total.on.n * 1000) / total.on.ms, (total.off.n * 1000) / total.off.ms, 'ops/s', {
      what: 'the same exchange with the broker audit log on (each token released once its event is durable) against it off, both brokers open at once, rounds alternating',
      pairs,
      round_ms: roundMs,
      pair_ratios: pairRatios,
      median_pair_ratio: (sorted[(pairs - 1) >> 1]! + sorted[pairs >> 1]!) / 2,
      broker_cpu_us_per_token_audited: Math.round(total.on.cpu / Math.max(1, total.on.n)),
      broker_cpu_us_per_token_unaudited: Math.round(total.off.cpu / Math.max(1, total.off.n)),
      failed,
      load_avg_1m_before: Math.round(load0 * 100) / 100,
      load_avg_1m_after: Math.round(loadavg()[0]! * 100) / 100,
      target_ratio: 0.8,
    })
  } finally {
    await on?.close()
    await off?.close()
  }
}

/** `concurrency` chains of (ES256 verify, ES256 sign) on libuv's pool for `ms`; operations and elapsed ms. */
async function rawCrypto(o: {
  ms: number
  concurrency: number
  proofPub: KeyObject
  proofInput: Buffer
  proofSig: Buffer
  signKey: KeyObject
  tokenInput: Buffer
}): Promise<{ n: number; ms: number }> {
  const v = () =>
    new Promise<void>((res, rej) =>
      verify('sha256', o.proofInput, { key: o.proofPub, dsaEncoding: 'ieee-p1363' }, o.proofSig, (err, ok) =>
        err ? rej(err) : ok ? res() : rej(new Error('baseline verify failed')),
      ),
    )
  const s = () =>
    new Promise<void>((res, rej) => sign('sha256', o.tokenInput, { key: o.signKey, dsaEncoding: 'ieee-p1363' }, (err) => (err ? rej(err) : res())))
  let n = 0
  const start = performance.now()
  const end = start + o.ms
  const worker = async () => {
    while (performance.now() < end) {
      await v()
      await s()
      n++
    }
  }
  await Promise.all(Array.from({ length: o.concurrency }, worker))
  return { n, ms: performance.now() - start }
}

/** User + system CPU time of a process, in microseconds; 0 when unknown. */
function cpuMicros(pid: number | undefined): number {
  if (pid === undefined) return 0
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(f[11]) + Number(f[12])) * 1e6) / 100
  } catch {
    return 0
  }
}
