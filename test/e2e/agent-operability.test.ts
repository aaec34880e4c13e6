/**
 * The agent's operability surface with real processes: `[agent.health_checks]`
 * (/live, /ready) and `[agent.metrics]` (Prometheus) over real HTTP against a
 * `warrant agent run` process, and relative paths in server and agent
 * configs resolved against each config file's directory while both processes
 * run from another working directory (the repository root).
 */
import { execFileSync } from 'node:child_process'
import { X509Certificate, generateKeyPairSync } from 'node:crypto'
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { createServer, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2E_REPO, E2eServer, WarrantProcess, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'ops.example'
const uid = process.getuid?.() ?? 0

/** A CA and a node certificate it issued (openssl), written as `pki/ca.pem`, `pki/node.pem`, `pki/node.key` under `dir`. */
function makePki(dir: string): void {
  mkdirSync(join(dir, 'pki'), { recursive: true })
  const o = (args: string[]) => execFileSync('openssl', args, { cwd: join(dir, 'pki'), stdio: ['ignore', 'pipe', 'pipe'] })
  writeFileSync(join(dir, 'pki', 'leaf.ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n')
  o([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-subj',
    '/CN=ops test node CA',
    '-days',
    '2',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  o(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/CN=ops-node'])
  o(['x509', '-req', '-in', 'node.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'node.pem', '-days', '1', '-extfile', 'leaf.ext'])
}

/** The `host:port` an agent logged for `event` ("Health endpoint listening" / "Metrics endpoint listening"). */
function loggedAddress(p: WarrantProcess, event: string): Promise<string> {
  return waitFor(
    event,
    () => {
      if (!p.running) throw new Error(`agent exited:\n${p.output().slice(-4000)}`)
      return new RegExp(`"address":"([^"]+)"[^\\n]*${event}`).exec(p.output())?.[1]
    },
    { timeoutMs: 30_000, hint: () => p.output() },
  )
}

async function get(url: string): Promise<{ status: number; text: string }> {
  const r = await fetch(url, { signal: AbortSignal.timeout(10_000) })
  return { status: r.status, text: await r.text() }
}

/** The value of one sample line of a Prometheus text exposition (`name{labels}` exactly), or undefined. */
function sample(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return undefined
}

function agentToml(o: { serverAddress: string; dir: string; nodeAttestor: string; trustBundlePath: string; extra?: string }): string {
  return [
    '[agent]',
    `trust_domain = "${TD}"`,
    `server_address = "${o.serverAddress}"`,
    `socket_path = "${join(o.dir, 'api.sock')}"`,
    `data_dir = "${join(o.dir, 'data')}"`,
    'log_level = "debug"',
    `trust_bundle_path = "${o.trustBundlePath}"`,
    o.extra ?? '',
    '',
    o.nodeAttestor,
    '[plugins.workload_attestor.unix]',
    '',
  ].join('\n')
}

const ENDPOINTS = '[agent.health_checks]\nbind_address = "127.0.0.1:0"\n[agent.metrics]\nbind_address = "127.0.0.1:0"\n'

describe.runIf(requireTools('openssl'))('agent operability (server and agent processes)', () => {
  const tmp = tempDir('wops-')
  let server: E2eServer
  const procs: WarrantProcess[] = []
  const holds: Socket[] = []
  let blackhole: Server | undefined

  beforeAll(async () => {
    // The server's x509pop CA bundle is a relative path: it must resolve against server.toml's directory,
    // while the process runs in the repository root.
    makePki(join(tmp.dir, 's'))
    server = await E2eServer.start({
      dir: join(tmp.dir, 's'),
      trustDomain: TD,
      plugins:
        '[plugins.key_manager.disk]\nkeys_path = "keys"\n[plugins.node_attestor.join_token]\n[plugins.node_attestor.x509pop]\nca_bundle_path = "pki/ca.pem"\n',
    })
  })

  afterAll(async () => {
    for (const p of procs) await p.stop()
    await server?.stop()
    for (const s of holds) s.destroy()
    await new Promise<void>((r) => (blackhole ? blackhole.close(() => r()) : r()))
    tmp.cleanup()
  })

  it('while the node attests: /live is 200, /ready is 500 with attested false', async () => {
    // A server address that accepts TCP and never answers: the agent stays in node attestation.
    blackhole = createServer((s) => {
      holds.push(s)
      s.on('error', () => {})
    })
    await new Promise<void>((r) => blackhole!.listen(0, '127.0.0.1', () => r()))
    const port = (blackhole.address() as { port: number }).port
    const dir = join(tmp.dir, 'a0')
    mkdirSync(dir, { recursive: true })
    writeFileSync(
      join(dir, 'agent.toml'),
      agentToml({
        serverAddress: `127.0.0.1:${port}`,
        dir,
        nodeAttestor: '[plugins.node_attestor.join_token]\ntoken = "never-used"',
        trustBundlePath: server.bundlePemPath,
        extra: ENDPOINTS,
      }),
    )
    const p = new WarrantProcess(['agent', 'run', '--config', join(dir, 'agent.toml')])
    procs.push(p)
    const health = await loggedAddress(p, 'Health endpoint listening')
    expect((await get(`http://${health}/live`)).status).toBe(200)
    const ready = await get(`http://${health}/ready`)
    expect(ready.status).toBe(500)
    expect(JSON.parse(ready.text)).toEqual({ ready: false, checks: { attested: false, bundle: false, synced: false, workload_api: false } })
    expect((await get(`http://${health}/nope`)).status).toBe(404)
    expect(p.running).toBe(true)
    await p.stop()
  })

  it('attested and synced: /ready is 200; /metrics counts Workload API calls by method and status, cache, connections and sync', async () => {
    const dir = join(tmp.dir, 'a1')
    mkdirSync(dir, { recursive: true })
    const token = await server.joinToken()
    writeFileSync(
      join(dir, 'agent.toml'),
      agentToml({
        serverAddress: server.address,
        dir,
        nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${token}"`,
        trustBundlePath: server.bundlePemPath,
        extra: ENDPOINTS,
      }),
    )
    const p = new WarrantProcess(['agent', 'run', '--config', join(dir, 'agent.toml')])
    procs.push(p)
    const health = await loggedAddress(p, 'Health endpoint listening')
    const metrics = await loggedAddress(p, 'Metrics endpoint listening')
    const agentId = await waitFor('Agent started', () => /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*Agent started/.exec(p.output())?.[1], {
      timeoutMs: 45_000,
      hint: () => p.output(),
    })
    const ready = await waitFor(
      '/ready 200',
      async () => {
        const r = await get(`http://${health}/ready`)
        return r.status === 200 ? r : undefined
      },
      { timeoutMs: 30_000, hint: () => p.output() },
    )
    expect(JSON.parse(ready.text)).toEqual({ ready: true, checks: { attested: true, bundle: true, synced: true, workload_api: true } })

    const created = await server.cli(['entry', 'create', '--spiffe-id', `spiffe://${TD}/ops/workload`, '--parent-id', agentId, '--selector', `unix:uid:${uid}`])
    expect(created.code, created.stderr).toBe(0)
    const sock = join(dir, 'api.sock')
    const x509 = await waitFor(
      'an X.509-SVID',
      async () => {
        const r = await warrant(['api', 'fetch', 'x509', '--socket', sock, '--output', 'json'])
        return r.code === 0 ? r : undefined
      },
      { timeoutMs: 30_000, hint: () => p.output() },
    )
    expect(x509.stdout).toContain(`spiffe://${TD}/ops/workload`)
    const jwt = await warrant(['api', 'fetch', 'jwt', '--audience', 'ops-test', '--socket', sock, '--output', 'json'])
    expect(jwt.code, jwt.stderr).toBe(0)
    // A JWT-SVID for an ID this caller has no entry for: PermissionDenied (7).
    const denied = await warrant([
      'api',
      'fetch',
      'jwt',
      '--audience',
      'ops-test',
      '--spiffe-id',
      `spiffe://${TD}/not/mine`,
      '--socket',
      sock,
      '--output',
      'json',
    ])
    expect(denied.code).not.toBe(0)

    const m = await waitFor(
      'the calls in /metrics',
      async () => {
        const r = await get(`http://${metrics}/metrics`)
        return r.status === 200 && sample(r.text, 'warrant_agent_workload_api_calls_total{method="FetchJWTSVID",code="7"}') === 1 ? r.text : undefined
      },
      { timeoutMs: 15_000 },
    )
    expect(sample(m, 'warrant_agent_workload_api_calls_total{method="FetchJWTSVID",code="0"}')).toBe(1)
    const x509Calls = m.split('\n').filter((l) => l.startsWith('warrant_agent_workload_api_calls_total{method="FetchX509SVID"'))
    expect(x509Calls.reduce((n, l) => n + Number(l.split(' ')[1]), 0)).toBeGreaterThanOrEqual(1)
    expect(sample(m, 'warrant_agent_node_attestations_total{outcome="success"}')).toBe(1)
    expect(m).toContain('# TYPE warrant_agent_workload_attestation_failures_total counter')
    expect(sample(m, 'warrant_agent_x509_svids_cached')).toBeGreaterThanOrEqual(1)
    expect(sample(m, 'warrant_agent_jwt_svids_cached')).toBe(1)
    expect(sample(m, 'warrant_agent_entries')).toBe(1)
    expect(sample(m, 'warrant_agent_sync_stream_up')).toBe(1)
    expect(sample(m, 'warrant_agent_last_sync_age_seconds')).toBe(0)
    expect(sample(m, 'warrant_agent_svid_remaining_seconds')).toBeGreaterThan(60)
    expect(sample(m, 'warrant_agent_workload_api_connections')).toBeGreaterThanOrEqual(0)
    // The connection guard's metrics of the Workload API listener are on the same registry.
    expect(m).toContain('# TYPE warrant_connections_rejected_total counter')
    expect(m).toContain('warrant_agent_process_cpu_seconds_total')

    // Server gone: the Sync stream is down and its age grows; the agent still serves its cache, so it stays ready.
    await server.stop()
    const down = await waitFor(
      'sync_stream_up 0',
      async () => {
        const t = (await get(`http://${metrics}/metrics`)).text
        return sample(t, 'warrant_agent_sync_stream_up') === 0 && (sample(t, 'warrant_agent_last_sync_age_seconds') ?? 0) > 0 ? t : undefined
      },
      { timeoutMs: 30_000, hint: () => p.output() },
    )
    expect(sample(down, 'warrant_agent_last_sync_age_seconds')).toBeGreaterThan(0)
    expect((await get(`http://${health}/ready`)).status).toBe(200)
    await server.spawn()
    await p.stop()
  })

  it('relative paths in agent.toml (core and plugin) resolve against its directory, not the working directory', async () => {
    const dir = join(tmp.dir, 'a2')
    mkdirSync(join(dir, 'pki'), { recursive: true })
    for (const f of ['node.pem', 'node.key']) copyFileSync(join(tmp.dir, 's', 'pki', f), join(dir, 'pki', f))
    copyFileSync(server.bundlePemPath, join(dir, 'bundle.pem'))
    writeFileSync(
      join(dir, 'agent.toml'),
      agentToml({
        serverAddress: server.address,
        dir,
        nodeAttestor: '[plugins.node_attestor.x509pop]\ncertificate_path = "pki/node.pem"\nprivate_key_path = "pki/node.key"',
        trustBundlePath: 'bundle.pem',
        extra: '[agent.health_checks]\nbind_address = "127.0.0.1:0"\n',
      }),
    )
    // The process's working directory is the repository root, where pki/node.pem does not exist.
    const p = new WarrantProcess(['agent', 'run', '--config', join(dir, 'agent.toml')])
    procs.push(p)
    expect(E2E_REPO).not.toBe(dir)
    const health = await loggedAddress(p, 'Health endpoint listening')
    await waitFor(
      '/ready 200',
      async () => {
        if (!p.running) throw new Error(`agent exited:\n${p.output().slice(-4000)}`)
        return (await get(`http://${health}/ready`)).status === 200
      },
      { timeoutMs: 45_000, hint: () => p.output() },
    )
    expect(p.output()).toMatch(/"agent_id":"spiffe:\/\/ops\.example\/warrant\/agent\/x509pop\/[0-9a-f]+"[^\n]*Agent started/)
    await p.stop()
  })

  it('api watch prints JWT bundle updates as well as X.509-SVID updates', async () => {
    const partner = 'partner.example'
    const partnerCa = new X509Certificate(readFileSync(join(tmp.dir, 's', 'pki', 'ca.pem')))
    /** A SPIFFE bundle for the partner with one X.509 authority and one JWT authority `kid`. */
    const partnerBundle = (kid: string, sequence: number) => {
      const path = join(tmp.dir, `partner-${kid}.json`)
      const jwt = { ...(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'jwk' }) as object), use: 'jwt-svid', kid }
      const x509 = { ...(partnerCa.publicKey.export({ format: 'jwk' }) as object), use: 'x509-svid', x5c: [partnerCa.raw.toString('base64')] }
      writeFileSync(path, JSON.stringify({ keys: [x509, jwt], spiffe_sequence: sequence, spiffe_refresh_hint: 300 }))
      return path
    }
    const setBundle = async (kid: string, sequence: number) => {
      const r = await server.cli(['bundle', 'set', '--trust-domain', partner, '--format', 'spiffe', '--path', partnerBundle(kid, sequence)])
      expect(r.code, r.stderr).toBe(0)
    }
    await setBundle('partner-k1', 1)

    const dir = join(tmp.dir, 'a3')
    mkdirSync(dir, { recursive: true })
    const token = await server.joinToken()
    writeFileSync(
      join(dir, 'agent.toml'),
      agentToml({
        serverAddress: server.address,
        dir,
        nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${token}"`,
        trustBundlePath: server.bundlePemPath,
      }),
    )
    const agent = new WarrantProcess(['agent', 'run', '--config', join(dir, 'agent.toml')])
    procs.push(agent)
    const agentId = await waitFor('Agent started', () => /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*Agent started/.exec(agent.output())?.[1], {
      timeoutMs: 45_000,
      hint: () => agent.output(),
    })
    const wl = `spiffe://${TD}/ops/watched`
    const created = await server.cli([
      'entry',
      'create',
      '--spiffe-id',
      wl,
      '--parent-id',
      agentId,
      '--selector',
      `unix:uid:${uid}`,
      '--federates-with',
      partner,
    ])
    expect(created.code, created.stderr).toBe(0)
    const sock = join(dir, 'api.sock')
    await waitFor('an X.509-SVID', async () => (await warrant(['api', 'fetch', 'x509', '--socket', sock])).stdout.includes(wl), {
      timeoutMs: 30_000,
      hint: () => agent.output(),
    })

    const json = new WarrantProcess(['api', 'watch', '--socket', sock, '--output', 'json'])
    const text = new WarrantProcess(['api', 'watch', '--socket', sock])
    procs.push(json, text)
    type Line = { kind: string; svids?: { spiffe_id: string }[]; bundles?: Record<string, { keys: { kid?: string; use?: string }[] }> }
    const lines = (): Line[] =>
      json
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as Line)
    const partnerKids = (l: Line) =>
      Object.entries(l.bundles ?? {})
        .filter(([td]) => td.includes(partner))
        .flatMap(([, b]) => b.keys.map((k) => k.kid))
    const jwtWith = (kid: string) => lines().find((l) => l.kind === 'jwt_bundles' && partnerKids(l).includes(kid))

    const first = await waitFor(
      'a JWT bundle update with partner-k1',
      () => {
        if (!json.running) throw new Error(`watch exited:\n${json.output()}`)
        return jwtWith('partner-k1')
      },
      { timeoutMs: 30_000, hint: () => json.output() },
    )
    expect(Object.keys(first.bundles!).some((td) => td.includes(TD))).toBe(true)
    expect(lines().some((l) => l.kind === 'x509_svids' && l.svids?.some((s) => s.spiffe_id === wl))).toBe(true)

    await setBundle('partner-k2', 2)
    const second = await waitFor('a JWT bundle update with partner-k2', () => jwtWith('partner-k2'), {
      timeoutMs: 30_000,
      hint: () => `${json.output()}\n${agent.output().slice(-3000)}`,
    })
    expect(partnerKids(second)).toEqual(['partner-k2'])
    await waitFor('the text watch to show partner-k2', () => text.output().includes('kid partner-k2'), { timeoutMs: 30_000, hint: () => text.output() })
    expect(text.output()).toMatch(/Received JWT bundles for \d+ trust domains? after/)
    expect(text.output()).toContain(wl)

    expect((await json.stop('SIGTERM')).code).toBe(0)
    expect((await text.stop('SIGTERM')).code).toBe(0)
    await agent.stop()
  })
})
