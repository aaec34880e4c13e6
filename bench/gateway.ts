/**
 * `npm run bench -- gateway [--quick] [--concurrency=N] [--profile] [--paths=floor,gateway,cached] [--broker-process]`:
 * the gateway's overhead.
 *
 * gateway_overhead_p50_vs_direct: p50 latency of a tool call through the
 * gateway against the same call made directly to the tool server, in the
 * same run. Through the gateway, per call: the agent's mutual TLS with its
 * X.509-SVID (verified once per keep-alive connection), the registry and the
 * policy (allowed agents, the ceiling from the bounds), a Txn-Token minted
 * by the broker for this call (token exchange over mutual TLS with the
 * gateway's SVID, `unsigned_json` subject, one ES256 signature, the broker's
 * audit event durable first), the gateway's `gateway.call` audit event
 * durable, then the request forwarded over TLS (keep-alive, the tool's SVID
 * checked) and the answer streamed back. Target ratio <= 2.0.
 *
 * gateway_overhead_p50_vs_direct_cached: the same with the gateway's
 * per-(agent, tool, scope) Txn-Token cache on (`txn_token_cache = true`):
 * the broker is asked once per token lifetime, not per call.
 *
 * gateway_floor_p50_vs_direct (context, no target): the same client through a
 * pass-through HTTPS proxy with the gateway's SVID that only terminates the
 * agent's mutual TLS (verified by OpenSSL against the CA) and forwards over a
 * keep-alive TLS connection to the tool: no policy, no token, no audit. What
 * any gateway hop costs on this machine; the gateway's figures are read
 * against it (each also prints `floor_p50_ms`).
 *
 * Composition: the broker as bench/broker.ts composes it (_gateway-broker.ts:
 * startBroker, a test CA, its signing key in SoftHSM2 when softhsm2-util is
 * installed, else in memory; audit on, the default; the gateway's SPIFFE ID in
 * `txn_token_requesters`); two gateways (per-call tokens, cached tokens)
 * started as `warrant gateway run` starts them once it holds its SVID
 * (startGatewayWith: the tool registry from its directory, its own audit log
 * with the default disk key manager, the Txn-Token client), from a
 * gateway.toml parsed by toGatewayConfig; a tool server that is a minimal
 * HTTPS echo (mutual TLS, its own SVID, a fixed 1 KiB answer). The broker,
 * the gateways, the floor proxy and the tool run in this process
 * (`--broker-process`: the broker in a process of its own); the client is another
 * process (bench/_gateway-client.ts) with the same TLS, keep-alive,
 * concurrency, request (256-byte POST) and answer on every path. Rounds
 * alternate direct, floor, gateway, gateway-cached so a load change hits all alike.
 * p90, p99, the calls and the 1-minute load average before and after are
 * printed with each figure.
 *
 * What a call through the gateway adds, beyond the direct call to an echo:
 * two more TLS hops on keep-alive connections (agent to gateway, gateway to
 * broker), the broker's token exchange (Fastify, the ceiling, one ES256
 * signature in SoftHSM), and two durable audit events one after the other
 * (the broker's for the Txn-Token, the gateway's `gateway.call`: each an
 * fdatasync of a SQLite WAL, group-committed per event-loop turn). The
 * process's CPU per call is printed (`server_cpu_us_per_call`, broker,
 * gateways and tool together, against the tool alone; it counts the kernel's
 * work for the fdatasyncs too) to tell CPU from waiting on the disk;
 * `TMPDIR=/dev/shm` puts both audit logs on tmpfs to show the part the disk
 * takes. `--profile` adds `phases_p50_ms`: the median of each phase of a
 * gateway call from the gateway's debug log (authentication, policy, the
 * Txn-Token from the broker, the durable audit event, the tool's answer
 * headers and body; gateway-server.ts), which costs the gateway some CPU per
 * call, so the plain run leaves it off. `--paths=` runs only some paths
 * (direct always), e.g. to profile one.
 */
import { spawn } from 'node:child_process'
import { mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import https from 'node:https'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { once } from 'node:events'
import { createLogger } from '../src/cli/logging.js'
import { startGatewayWith, type RunningGateway } from '../src/cli/commands/gateway.js'
import { toGatewayConfig } from '../src/gateway/config.js'
import { BoundsSet } from '../src/spiffe/bounds/bounds-set.js'
import { ceilingFor } from '../src/spiffe/bounds/ceiling.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { X509Svid } from '../src/spiffe/x509-svid/x509-svid.js'
import { bundlesOf, makeCa, makeSvid, pem } from '../test/helpers/broker-http-fixtures.js'
import { benchKeyManager, freePort, percentile, report } from './lib.js'
import { composeGatewayBenchBroker, type BrokerParams } from './_gateway-broker.js'

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..')
const TD = 'bench.example'
const AGENT = `spiffe://${TD}/agents/bench/a1`
const GATEWAY = `spiffe://${TD}/svc/gateway`
const TOOL = `spiffe://${TD}/svc/search`
const TOOL_AUDIENCE = 'https://search.bench.example/'
const REQUEST_BYTES = 256
const ANSWER = JSON.stringify({ results: 'r'.repeat(1024 - 14) })

type Path = 'direct' | 'floor' | 'gateway' | 'cached'

/** The median of each phase of the gateway's calls, from its debug log lines (`phases`, gateway-server.ts). */
function phaseMedians(file: string): Record<string, number> {
  const byPhase = new Map<string, number[]>()
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes('"phases"')) continue
    const phases = (JSON.parse(line) as { phases?: Record<string, number> }).phases ?? {}
    for (const [k, v] of Object.entries(phases)) byPhase.set(k, [...(byPhase.get(k) ?? []), v])
  }
  return Object.fromEntries([...byPhase].map(([k, v]) => [k, Math.round(percentile(v, 50) * 1000) / 1000]))
}

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const profile = args.includes('--profile')
  const cflag = args.find((a) => a.startsWith('--concurrency='))
  const concurrency = cflag !== undefined ? Math.max(1, Number(cflag.slice('--concurrency='.length)) || 1) : 4
  const rounds = quick ? 3 : 6
  const roundMs = quick ? 1000 : 2500
  const dir = mkdtempSync(join(tmpdir(), 'wbench-gateway-'))
  const load0 = loadavg()[0]!
  const brokerInProcess = !args.includes('--broker-process')
  let broker: { stop(): Promise<void> } | undefined
  let brokerChild: ReturnType<typeof spawn> | undefined
  const gateways: RunningGateway[] = []
  let tool: https.Server | undefined
  let floor: https.Server | undefined
  let floorAgent: https.Agent | undefined
  let child: ReturnType<typeof spawn> | undefined
  try {
    // the broker, as bench/broker.ts composes it
    const { keyManager, keyManagerName } = await benchKeyManager(dir)
    const ca = await makeCa(TD)
    const caPem = pem(ca.certificate)
    const brokerSvid = await makeSvid(ca, `spiffe://${TD}/warrant/broker`, { dnsNames: ['localhost'] })
    const gatewaySvid = await makeSvid(ca, GATEWAY, { dnsNames: ['localhost'] })
    const toolSvid = await makeSvid(ca, TOOL, { dnsNames: ['localhost'] })
    const agent = await makeSvid(ca, AGENT)
    const files = { ca: join(dir, 'ca.pem'), cert: join(dir, 'agent.pem'), key: join(dir, 'agent-key.pem') }
    writeFileSync(files.ca, caPem)
    writeFileSync(files.cert, agent.certPem)
    writeFileSync(files.key, agent.keyPem, { mode: 0o600 })
    const brokerPort = await freePort()
    const issuer = `https://localhost:${brokerPort}`
    const td = TrustDomain.fromString(TD)
    const bundles = bundlesOf([ca])
    const boundsRaw = { '/agents': { scopes: ['search:read'], resources: [TOOL_AUDIENCE], max_token_ttl: 600 } }
    const bounds = BoundsSet.parse(td, boundsRaw)
    const log = createLogger({ name: 'warrant-gateway-bench', level: 'info', destination: openSync('/dev/null', 'w') })
    const brokerParams: BrokerParams = {
      dir: join(dir, 'broker'),
      trustDomain: TD,
      caDerB64: Buffer.from(ca.certificate).toString('base64'),
      jwtKid: ca.jwt.kid,
      jwk: ca.jwt.jwk,
      cert: brokerSvid.certPem,
      key: brokerSvid.keyPem,
      port: brokerPort,
      issuer,
      keyManager,
      gateway: GATEWAY,
      bounds: boundsRaw,
    }
    mkdirSync(brokerParams.dir)
    if (brokerInProcess) broker = await composeGatewayBenchBroker(brokerParams)
    else {
      // as deployed: the broker in a process of its own (the server's), with its own event loop
      const b = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'bench', '_gateway-broker.ts'), JSON.stringify(brokerParams)], {
        cwd: REPO_ROOT,
        stdio: ['pipe', 'pipe', 'inherit'],
      })
      brokerChild = b
      const first = await createInterface({ input: b.stdout })[Symbol.asyncIterator]().next()
      if (first.done || !String(first.value).includes('"ready":true')) throw new Error('the bench broker did not start')
    }

    // the tool: a minimal HTTPS echo, mutual TLS, the same answer to every caller
    tool = https.createServer(
      { cert: toolSvid.certPem, key: toolSvid.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' },
      (req, res) => {
        req.resume()
        req.on('end', () => {
          res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(ANSWER) })
          res.end(ANSWER)
        })
      },
    )
    const toolPort = await freePort()
    await new Promise<void>((r) => tool!.listen(toolPort, '127.0.0.1', () => r()))
    const toolsDir = join(dir, 'tools')
    mkdirSync(toolsDir)
    writeFileSync(
      join(toolsDir, 'search.json'),
      JSON.stringify({
        client_id: 'https://tools.bench.example/search',
        client_name: 'Search',
        warrant_tool: {
          name: 'search',
          endpoint: `https://localhost:${toolPort}`,
          audience: TOOL_AUDIENCE,
          scopes: ['search:read'],
          allowed_agents: [`spiffe://${TD}/agents/`],
        },
      }),
    )

    // two gateways as `warrant gateway run` starts them: Txn-Tokens per call, and cached
    const svid = X509Svid.parse(gatewaySvid.certPem, gatewaySvid.keyPem)
    const source = { getX509Svid: () => svid, getBundles: () => bundles, on: () => undefined }
    // the floor: a pass-through HTTPS proxy with the gateway's SVID that only terminates the agent's mutual TLS
    // (verified by OpenSSL against the CA) and forwards over a keep-alive TLS connection to the tool: no policy, no
    // token, no audit. What any gateway hop costs on this machine.
    floorAgent = new https.Agent({ keepAlive: true, ca: caPem, cert: gatewaySvid.certPem, key: gatewaySvid.keyPem, minVersion: 'TLSv1.2' })
    const fa = floorAgent
    floor = https.createServer(
      { cert: gatewaySvid.certPem, key: gatewaySvid.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.2' },
      (req, res) => {
        const up = https.request(
          {
            host: '127.0.0.1',
            port: toolPort,
            servername: 'localhost',
            method: req.method,
            path: req.url,
            headers: { ...req.headers, host: `localhost:${toolPort}` },
            agent: fa,
          },
          (answer) => {
            res.writeHead(answer.statusCode ?? 502, answer.headers)
            answer.pipe(res)
          },
        )
        up.on('error', () => res.destroy())
        req.pipe(up)
      },
    )
    const floorPort = await freePort()
    await new Promise<void>((r) => floor!.listen(floorPort, '127.0.0.1', () => r()))
    const urls: Record<Path, string> = {
      direct: `https://localhost:${toolPort}/search`,
      floor: `https://localhost:${floorPort}/search`,
      gateway: '',
      cached: '',
    }
    const gatewayLogs: Partial<Record<Path, string>> = {}
    for (const cached of [false, true]) {
      const port = await freePort()
      const gdir = join(dir, cached ? 'gateway-cached' : 'gateway')
      mkdirSync(gdir)
      const cfg = toGatewayConfig(
        {
          gateway: {
            bind_address: `127.0.0.1:${port}`,
            url: `https://localhost:${port}`,
            broker: { issuer },
            bounds_document_path: 'bounds.jws', // the ceilings come from `bounds` here
            tools_dir: toolsDir,
            txn_token_cache: cached,
            audit: { path: 'gateway-audit.sqlite3' },
          },
          workload_api: { socket_path: 'unused.sock' },
        },
        gdir,
      )
      // --profile: each call's phases from the gateway's debug log (costs some CPU per call, so not in the plain run)
      const logFile = join(dir, `${cached ? 'cached' : 'gateway'}-debug.log`)
      if (profile) gatewayLogs[cached ? 'cached' : 'gateway'] = logFile
      const gwLog = profile ? createLogger({ name: 'warrant-gateway-bench', level: 'debug', destination: openSync(logFile, 'w') }) : log
      const gw = await startGatewayWith({ cfg, source, ceilingFor: (id) => ceilingFor(bounds, id), log: gwLog })
      gateways.push(gw)
      urls[cached ? 'cached' : 'gateway'] = `https://localhost:${gw.port}/tools/search/search`
    }

    // the client, another process
    const clientArgs = (process.env.WARRANT_CLIENT_NODE_ARGS ?? '').split(' ').filter(Boolean)
    const c = spawn(
      process.execPath,
      [...clientArgs, '--import', 'tsx', join(REPO_ROOT, 'bench', '_gateway-client.ts'), files.ca, files.cert, files.key, String(REQUEST_BYTES)],
      { cwd: REPO_ROOT, stdio: ['pipe', 'pipe', 'inherit'] },
    )
    child = c
    const lines = createInterface({ input: c.stdout })[Symbol.asyncIterator]()
    const read = async <T>(): Promise<T> => {
      const n = await lines.next()
      if (n.done) throw new Error('gateway client exited')
      return JSON.parse(n.value) as T
    }
    interface Round {
      ok: number
      failed: number
      ms: number
      bytes: number
      lat: number[]
      detail?: string
    }
    const round = async (path: Path, ms: number): Promise<Round> => {
      c.stdin.write(`${JSON.stringify({ round: ms, concurrency, url: urls[path] })}\n`)
      const r = await read<Round>()
      if (r.failed > 0) process.stderr.write(`gateway bench: ${path}: ${r.failed} calls failed: ${r.detail}\n`)
      return r
    }
    await read<{ ready: boolean }>()
    // --paths=direct,gateway: only those rounds (direct always; for profiling one path)
    const only = args
      .find((a) => a.startsWith('--paths='))
      ?.slice('--paths='.length)
      .split(',')
    const order = (['direct', 'floor', 'gateway', 'cached'] as const).filter((p) => p === 'direct' || only === undefined || only.includes(p))
    for (const p of order) await round(p, 500) // warm-up: connections, JIT, the stores

    const lat: Record<Path, number[]> = { direct: [], floor: [], gateway: [], cached: [] }
    const cpu: Record<Path, number> = { direct: 0, floor: 0, gateway: 0, cached: 0 }
    const failed: Record<Path, number> = { direct: 0, floor: 0, gateway: 0, cached: 0 }
    const bytes: Record<Path, number> = { direct: 0, floor: 0, gateway: 0, cached: 0 }
    for (let i = 0; i < rounds; i++) {
      for (const p of i % 2 === 0 ? order : [...order].reverse()) {
        const c0 = process.cpuUsage()
        const r = await round(p, roundMs)
        const c1 = process.cpuUsage(c0)
        cpu[p] += c1.user + c1.system
        lat[p].push(...r.lat)
        failed[p] += r.failed
        bytes[p] = r.bytes
      }
    }
    c.stdin.write(`${JSON.stringify({ exit: true })}\n`)
    await Promise.race([once(c, 'exit'), new Promise((r) => setTimeout(r, 5000).unref())])
    const load1 = loadavg()[0]!
    const ms = (n: number) => Math.round(n * 1000) / 1000
    const direct = { p50: percentile(lat.direct, 50), p90: percentile(lat.direct, 90), p99: percentile(lat.direct, 99) }
    const names: Record<Exclude<Path, 'direct'>, string> = {
      floor: 'gateway_floor_p50_vs_direct',
      gateway: 'gateway_overhead_p50_vs_direct',
      cached: 'gateway_overhead_p50_vs_direct_cached',
    }
    for (const p of ['floor', 'gateway', 'cached'] as const) {
      if (!order.includes(p)) continue
      const s = lat[p]
      const phases = gatewayLogs[p] !== undefined ? phaseMedians(gatewayLogs[p]) : undefined
      report(names[p], percentile(s, 50), direct.p50, 'ms', {
        what:
          p === 'floor'
            ? 'context, no target: the same client through a pass-through HTTPS proxy that only terminates mutual TLS and forwards over keep-alive TLS (no policy, no token, no audit): the floor of any gateway hop on this machine'
            : p === 'gateway'
              ? 'p50 of a tool call through the gateway (agent mTLS, policy, a Txn-Token minted per call by the broker, audit, TLS to the tool) against the same call made directly to the tool'
              : 'the same with the gateway Txn-Token cache per (agent, tool, scope) on',
        ...(p === 'floor' ? {} : { txn_token: p === 'gateway' ? 'minted per call' : 'cached per (agent, tool, scope)' }),
        key_manager: keyManagerName,
        audit: p === 'floor' ? 'none' : 'on (broker and gateway)',
        broker: brokerInProcess ? 'in the bench process' : 'a process of its own (--broker-process)',
        ...(phases ? { phases_p50_ms: phases } : {}),
        concurrency,
        rounds,
        round_ms: roundMs,
        calls: s.length,
        direct_calls: lat.direct.length,
        failed: failed[p],
        p90_ms: ms(percentile(s, 90)),
        p99_ms: ms(percentile(s, 99)),
        direct_p90_ms: ms(direct.p90),
        direct_p99_ms: ms(direct.p99),
        added_p50_ms: ms(percentile(s, 50) - direct.p50),
        // CPU of this process (broker, gateways and tool) per call, and per direct call (the tool alone)
        server_cpu_us_per_call: Math.round(cpu[p] / Math.max(1, s.length)),
        direct_server_cpu_us_per_call: Math.round(cpu.direct / Math.max(1, lat.direct.length)),
        request_bytes: REQUEST_BYTES,
        answer_bytes: bytes[p],
        direct_answer_bytes: bytes.direct,
        load_avg_1m_before: Math.round(load0 * 100) / 100,
        load_avg_1m_after: Math.round(load1 * 100) / 100,
        target_ratio: p === 'gateway' ? 2.0 : undefined,
        ...(p !== 'floor' ? { floor_p50_ms: ms(percentile(lat.floor, 50)) } : {}),
      })
    }
  } finally {
    child?.kill('SIGKILL')
    for (const g of gateways) await g.stop()
    floorAgent?.destroy()
    floor?.closeAllConnections()
    await new Promise<void>((r) => (floor ? floor.close(() => r()) : r()))
    tool?.closeAllConnections()
    await new Promise<void>((r) => (tool ? tool.close(() => r()) : r()))
    await broker?.stop()
    if (brokerChild) {
      brokerChild.stdin?.end()
      await Promise.race([once(brokerChild, 'exit'), new Promise((r) => setTimeout(r, 5000).unref())])
      brokerChild.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
  }
}
