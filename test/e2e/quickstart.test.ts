/**
 * The quickstart as a user runs it (`scripts/quickstart.sh`, not --once) in a
 * temporary data dir: once it is up, its broker demo has shown each outcome,
 * WARRANT_BROKER_CA verifies the broker's certificate on a real TLS
 * connection (and the system roots do not), and its server is killed with SIGKILL; the
 * quickstart restarts it on the same port, and a workload then gets a
 * JWT-SVID for an audience never asked before (which needs the server) and
 * its X.509-SVID. The same for its agent. Its gateway demo has shown the
 * three outcomes (an MCP tool call through the gateway with the SDK's client,
 * the MCP server seeing only a Txn-Token; payments refused for the missing
 * fraud-check hop; an agent outside the tool's namespace refused by the
 * gateway although the broker gave it a token) and a payment through
 * fraud-check, and WARRANT_GATEWAY_URL/WARRANT_GATEWAY_CA reach the gateway
 * with the demo workload's SVID (the MCP tool asks it for a token with its
 * RFC 9728 challenge; fraud-check takes the SVID); killed, the gateway comes
 * back on the same URL and forwards again. Ctrl-C (SIGINT) stops the
 * quickstart and its processes.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { get, request } from 'node:https'
import { checkServerIdentity, connect, type PeerCertificate } from 'node:tls'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { E2E_REPO, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'
import { hasTool } from '../helpers/tools.js'

/** Child pids of `pid` (Linux /proc/<pid>/task/<tid>/children). */
function childrenOf(pid: number): number[] {
  const out: number[] = []
  for (const tid of existsSync(`/proc/${pid}/task`) ? readdirSync(`/proc/${pid}/task`) : []) {
    try {
      out.push(...readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number))
    } catch {
      // the thread ended
    }
  }
  return out
}
const cmdline = (pid: number): string => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    return ''
  }
}
const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

/** A TLS handshake with the broker at `url` (127.0.0.1, SNI the URL's host), its certificate verified against `ca` (default: the system roots). */
function tlsHandshake(url: string, ca?: Buffer): Promise<{ authorized: boolean; error: string | undefined; cert: PeerCertificate }> {
  const u = new URL(url)
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port: Number(u.port), servername: u.hostname, rejectUnauthorized: false, ...(ca ? { ca } : {}) }, () => {
      const authorized = s.authorized
      const error = s.authorizationError === null ? undefined : String(s.authorizationError)
      resolve({ authorized, error, cert: s.getPeerCertificate() })
      s.end()
    })
    s.on('error', reject)
  })
}

/** GET with TLS verified (certificate chain and host name) against `ca` only. */
function httpsGet(url: string, ca: Buffer): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    get(url, { ca, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    }).on('error', reject)
  })
}

/** A JSON POST over mutual TLS: the server verified against `ca`, the client certificate and key given. */
function httpsPostMtls(
  url: string,
  o: { ca: Buffer; cert: Buffer; key: Buffer },
  json: unknown,
): Promise<{ status: number; body: string; wwwAuthenticate: string | undefined }> {
  return new Promise((resolve, reject) => {
    const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }
    const req = request(url, { method: 'POST', headers, ca: o.ca, cert: o.cert, key: o.key, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, wwwAuthenticate: res.headers['www-authenticate'] }))
    })
    req.on('error', reject)
    req.end(JSON.stringify(json))
  })
}

/** Checks WARRANT_BROKER_CA against the broker on a real connection: verified with it, not without it. */
async function expectBrokerVerifiedBy(url: string, caFile: string): Promise<void> {
  const ca = readFileSync(caFile)
  const ok = await tlsHandshake(url, ca)
  expect(ok.error).toBeUndefined()
  expect(ok.authorized).toBe(true)
  expect(checkServerIdentity(new URL(url).hostname, ok.cert)).toBeUndefined()
  expect(ok.cert.subjectaltname).toContain('URI:spiffe://example.org/warrant/broker')
  const untrusted = await tlsHandshake(url)
  expect(untrusted.authorized).toBe(false)
  const meta = await httpsGet(`${url}/.well-known/oauth-authorization-server`, ca)
  expect(meta.status).toBe(200)
  expect((JSON.parse(meta.body) as { issuer: string }).issuer).toBe(url)
}

describe('quickstart (scripts/quickstart.sh, kept running)', () => {
  const tmp = tempDir('wq-')
  const dataDir = join(tmp.dir, 'qs')
  let qs: ChildProcess | undefined
  let out = ''

  afterAll(async () => {
    if (qs && qs.exitCode === null && qs.signalCode === null) {
      const pids = qs.pid ? childrenOf(qs.pid) : []
      qs.kill('SIGKILL')
      for (const p of pids) if (alive(p)) process.kill(p, 'SIGKILL')
    }
    tmp.cleanup()
  })

  it('runs the broker and gateway demos and prints the broker and gateway lines; restarts its server (and its agent, and its gateway) after SIGKILL; a workload then gets SVIDs again; SIGINT stops everything', async () => {
    qs = spawn('bash', [join(E2E_REPO, 'scripts', 'quickstart.sh'), '--data-dir', dataDir], {
      cwd: E2E_REPO,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env },
    })
    const keep = (d: Buffer) => (out += d.toString())
    qs.stdout!.on('data', keep)
    qs.stderr!.on('data', keep)
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => qs!.once('exit', (code, signal) => r({ code, signal })))
    const socket = await waitFor(
      'the quickstart to be up',
      () => {
        if (qs!.exitCode !== null) throw new Error(`quickstart exited:\n${out}`)
        return out.includes('keep running') ? /^SPIFFE_ENDPOINT_SOCKET=unix:\/\/(.+)$/m.exec(out)?.[1] : undefined
      },
      { timeoutMs: 240_000, hint: () => out },
    )
    const env = { SPIFFE_ENDPOINT_SOCKET: `unix://${socket}` }

    // The broker: its issuer and a CA file that verifies its certificate, then the demo's outcomes.
    const brokerUrl = /^WARRANT_BROKER_URL=(https:\/\/localhost:\d+)$/m.exec(out)?.[1]
    const brokerCa = /^WARRANT_BROKER_CA=(.+)$/m.exec(out)?.[1]
    expect(brokerUrl, out).toBeDefined()
    expect(brokerCa, out).toBeDefined()
    expect(existsSync(brokerCa!)).toBe(true)
    await expectBrokerVerifiedBy(brokerUrl!, brokerCa!)
    // Its signing key: in the SoftHSM token when the quickstart has one (as the CA's), else the disk key manager.
    expect(out).toMatch(
      hasTool('softhsm2-util')
        ? /^ {2}broker {12}: https:\/\/localhost:\d+ \(embedded in the server, signing key in SoftHSM token "warrant";/m
        : /^ {2}broker {12}: .*signing key on disk/m,
    )
    expect(out).toMatch(/^ {2}token {13}: DPoP-bound \(cnf\.jkt [^)]+\), scope "demo:read demo:write", expires in \d+ s$/m)
    expect(out).toMatch(/^ {2}call with its key : GET \/data → 200$/m)
    expect(out).toMatch(/^ {2}without its key {3}: same token as a bearer → 401 \w+; with another key's proof → 401 \w+$/m)
    expect(out).toMatch(/^ {2}renewed {11}: new token, same key, .*; GET \/data → 200$/m)
    expect(out).toMatch(/^ {2}delegated {9}: scope "demo:read" to spiffe:\/\/example\.org\/agents\/demo\/sub-agent /m)
    expect(out).toMatch(/^ {2}sub-agent call {4}: GET \/data → 200$/m)
    expect(out).toMatch(
      /^ {2}sub-agent wider {3}: POST \/data \(needs demo:write\) → 403 insufficient_scope; asking the broker for demo:write → 400 invalid_scope$/m,
    )
    // The gateway demo: one line per outcome, and the lines for clients of the gateway.
    expect(out).toMatch(/^Gateway demo \(gateway spiffe:\/\/example\.org\/svc\/gateway at https:\/\/localhost:\d+; /m)
    // the MCP tool, with the SDK's client: the tool's result, from a server that saw only a Txn-Token for the demo agent
    expect(out).toMatch(
      /^ {2}MCP tool call {5}: tools\/list → search, lookup_order; tools\/call search → "warrant: SPIFFE workload identity for AI agents" \(the MCP server saw only a Txn-Token: sub the demo agent, path \/svc\/gateway\)$/m,
    )
    expect(out).toMatch(
      /^ {2}MCP authorization : first request → 401 with resource_metadata; broker token for https:\/\/localhost:\d+\/tools\/search \(client_credentials, SVID over mTLS, certificate-bound\) → 200; \d+ MCP requests with it → 20[02](\/20[02])*$/m,
    )
    expect(out).toMatch(/^ {2}payments direct {3}: POST \/tools\/payments\/payments → 403 access_denied \(missing hop: .*\/svc\/fraud-check\)$/m)
    expect(out).toMatch(
      /^ {2}outside namespace : spiffe:\/\/example\.org\/agents\/sandbox\/outsider → MCP initialize with its broker token → 403 access_denied \(not in the tool's allowed_agents/m,
    )
    expect(out).toMatch(/^ {2}via fraud-check {3}: POST \/tools\/fraud-check\/check → 201 payment pay-\w+ \(.*path \/svc\/gateway → \/svc\/fraud-check\)$/m)
    const gatewayUrl = /^WARRANT_GATEWAY_URL=(https:\/\/localhost:\d+)$/m.exec(out)?.[1]
    const gatewayCa = /^WARRANT_GATEWAY_CA=(.+)$/m.exec(out)?.[1]
    expect(gatewayUrl, out).toBeDefined()
    expect(gatewayCa, out).toBeDefined()
    const gw = await tlsHandshake(gatewayUrl!, readFileSync(gatewayCa!))
    expect(gw.authorized, gw.error).toBe(true)
    expect(checkServerIdentity('localhost', gw.cert)).toBeUndefined()
    expect(gw.cert.subjectaltname).toContain('URI:spiffe://example.org/svc/gateway')
    // A client of the gateway: the demo workload's SVID from the Workload API, with those two lines.
    const svidDir = join(tmp.dir, 'svid')
    const fetched = await warrant(['api', 'fetch', 'x509', '--write', svidDir], { env })
    expect(fetched.code, fetched.stderr).toBe(0)
    const demoAgentTls = { ca: readFileSync(gatewayCa!), cert: readFileSync(join(svidDir, 'svid.0.pem')), key: readFileSync(join(svidDir, 'svid.0.key')) }
    // The MCP tool takes no SVID alone: 401 with the challenge that points at its RFC 9728 metadata.
    const svidOnly = await httpsPostMtls(`${gatewayUrl!}/tools/search`, demoAgentTls, { jsonrpc: '2.0', id: 1, method: 'tools/list' })
    expect(svidOnly.status, svidOnly.body).toBe(401)
    expect(svidOnly.wwwAuthenticate).toMatch(
      new RegExp(`^Bearer scope="tools:search", resource_metadata="${gatewayUrl!}/\\.well-known/oauth-protected-resource/tools/search"`),
    )
    const prm = await httpsGet(`${gatewayUrl!}/.well-known/oauth-protected-resource/tools/search`, readFileSync(gatewayCa!))
    expect(prm.status).toBe(200)
    expect(JSON.parse(prm.body)).toMatchObject({ resource: `${gatewayUrl!}/tools/search`, scopes_supported: ['tools:search'] })
    // fraud-check takes the SVID: a payment through it, with the gateway and fraud-check on its path.
    const viaGateway = await httpsPostMtls(`${gatewayUrl!}/tools/fraud-check/check`, demoAgentTls, { amount: 5, to: 'e2e' })
    expect(viaGateway.status, viaGateway.body).toBe(201)
    expect(JSON.parse(viaGateway.body)).toMatchObject({
      amount: 5,
      sub: 'spiffe://example.org/agents/demo/quickstart',
      path: ['spiffe://example.org/svc/gateway', 'spiffe://example.org/svc/fraud-check'],
    })
    const gatewayPid = childrenOf(qs.pid!).find((p) => / gateway run /.test(cmdline(p)))
    expect(gatewayPid, `no gateway child of the quickstart:\n${out}`).toBeDefined()

    // Intents: the low-risk one approved by rule, the high-risk one waiting in the console until an operator decides.
    expect(out).toMatch(/^ {2}low risk {10}: demo:read \S+reports\/q3 → approved by rule; token DPoP-bound, authorization_details demo:read on /m)
    const intentId = /^ {2}high risk {9}: demo:write \S+control\/breaker-reset → waits for a human \(risk [\d.]+, [^)]+\); intent (int-[\w-]+),/m.exec(out)?.[1]
    expect(intentId, out).toBeDefined()
    expect(out).not.toMatch(/^ {2}approved {10}:/m)
    const consoleUrl = /^WARRANT_CONSOLE_URL=(https:\/\/localhost:\d+)$/m.exec(out)?.[1]
    const consoleCa = /^WARRANT_CONSOLE_CA=(.+)$/m.exec(out)?.[1]
    expect(/^WARRANT_CONSOLE_LOGIN=[A-Za-z0-9_-]{20,}$/m.test(out), out).toBe(true)
    const con = await tlsHandshake(consoleUrl!, readFileSync(consoleCa!))
    expect(con.authorized, con.error).toBe(true)
    const approved = await warrant([
      'approval',
      'approve',
      intentId!,
      '--reason',
      'e2e',
      '--socket',
      join(dataDir, 'server', 'private', 'broker-admin.sock'),
      '--output',
      'json',
    ])
    expect(approved.code, approved.stderr).toBe(0)
    await waitFor(
      'the quickstart to print the approved token',
      () => new RegExp(`^ {2}approved {10}: intent ${intentId!} → token DPoP-bound`, 'm').test(out) || undefined,
      {
        timeoutMs: 30_000,
        hint: () => out,
      },
    )

    // The demo's resource server and sub-agent are gone once the demo is done.
    expect(childrenOf(qs.pid!).filter((p) => /quickstart-demo-peer/.test(cmdline(p)))).toEqual([])
    const serverPid = () => childrenOf(qs!.pid!).find((p) => / server run /.test(cmdline(p)))
    const agentPid = childrenOf(qs.pid!).find((p) => / agent run /.test(cmdline(p)))
    const first = serverPid()
    expect(first, `no server child of the quickstart:\n${out}`).toBeDefined()
    expect(agentPid).toBeDefined()

    process.kill(first!, 'SIGKILL')
    await waitFor('the quickstart to restart its server', () => /server restarted \(pid (\d+)\)/.exec(out)?.[1], { timeoutMs: 90_000, hint: () => out })
    const second = serverPid()
    expect(second).toBeDefined()
    expect(second).not.toBe(first)
    expect(out).toContain('server exited (SIGKILL)')

    // A new audience is minted by the server, so this passes only once the agent talks to the restarted server.
    const jwt = await waitFor(
      'a JWT-SVID for a new audience after the restart',
      async () => {
        const r = await warrant(['api', 'fetch', 'jwt', '--audience', 'https://after-restart.example', '--output', 'json'], { env })
        return r.code === 0 ? (JSON.parse(r.stdout) as { svids: { spiffe_id: string; token: string }[] }) : undefined
      },
      { timeoutMs: 90_000, hint: () => out },
    )
    expect(jwt.svids[0]?.spiffe_id).toBe('spiffe://example.org/agents/demo/quickstart')
    const x509 = await warrant(['api', 'fetch', 'x509', '--output', 'json'], { env })
    expect(x509.code, x509.stderr).toBe(0)
    expect((JSON.parse(x509.stdout) as { svids: { spiffe_id: string }[] }).svids.map((s) => s.spiffe_id)).toContain(
      'spiffe://example.org/agents/demo/quickstart',
    )
    // The broker restarted with its server, on the same issuer, still verified by the same CA file.
    await waitFor(
      'the broker after the server restart',
      async () => (await httpsGet(`${brokerUrl!}/.well-known/oauth-authorization-server`, readFileSync(brokerCa!)).catch(() => ({ status: 0 }))).status === 200,
      { timeoutMs: 60_000, hint: () => out },
    )
    await expectBrokerVerifiedBy(brokerUrl!, brokerCa!)

    // The agent is kept running too: killed, it comes back on its persisted SVID and serves again.
    process.kill(agentPid!, 'SIGKILL')
    await waitFor('the quickstart to restart its agent', () => /agent restarted \(pid (\d+)\)/.exec(out)?.[1], { timeoutMs: 90_000, hint: () => out })
    const agentPid2 = childrenOf(qs.pid!).find((p) => / agent run /.test(cmdline(p)))
    expect(agentPid2).toBeDefined()
    expect(agentPid2).not.toBe(agentPid)
    await waitFor(
      'a JWT-SVID from the restarted agent',
      async () => (await warrant(['api', 'fetch', 'jwt', '--audience', 'https://after-agent-restart.example', '--output', 'json'], { env })).code === 0,
      { timeoutMs: 90_000, hint: () => out },
    )

    // The gateway is kept running too: killed, it comes back on the same URL and forwards again.
    process.kill(gatewayPid!, 'SIGKILL')
    await waitFor('the quickstart to restart its gateway', () => /gateway restarted \(pid (\d+)\)/.exec(out)?.[1], { timeoutMs: 90_000, hint: () => out })
    const gatewayPid2 = childrenOf(qs.pid!).find((p) => / gateway run /.test(cmdline(p)))
    expect(gatewayPid2).toBeDefined()
    expect(gatewayPid2).not.toBe(gatewayPid)
    await waitFor(
      'a tool call through the restarted gateway',
      async () =>
        (await httpsPostMtls(`${gatewayUrl!}/tools/fraud-check/check`, demoAgentTls, { amount: 6, to: 'again' }).catch(() => ({ status: 0 }))).status === 201,
      { timeoutMs: 90_000, hint: () => out },
    )

    qs.kill('SIGINT')
    const st = await exited
    expect(st.code, out).toBe(0)
    await waitFor('the server, agent and gateway to be gone', () => !alive(second!) && !alive(agentPid2!) && !alive(gatewayPid2!), { timeoutMs: 30_000 })
  }, 420_000)
})
