/**
 * Two servers of one trust domain on one datastore, and an agent that fails
 * over from one to the other: real `warrant server run` processes A and B on
 * one SQLite file (WAL, busy_timeout: several processes on one machine), each
 * with its own CA key in its own disk key manager; a `warrant agent run`
 * process with both addresses in `server_address`, attested at A with a join
 * token. After `kill -9` of A, the agent keeps serving its workload's SVID
 * from its cache, moves its Sync stream to B with the SVID A's CA signed (B
 * trusts it through the shared bundle), and gets from B what B's operator
 * registers; with both servers down, the cache still serves.
 */
import { X509Certificate } from 'node:crypto'
import { mkdtempSync, readdirSync, readFileSync, writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eServer, WarrantProcess, type E2eAgent, fetchX509Until, waitFor, warrant, type X509Json } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'failover.example'
const uid = process.getuid?.() ?? 0
const FIRST = `spiffe://${TD}/ops/first`
const SECOND = `spiffe://${TD}/ops/second`

const certCount = (pemPath: string) => (readFileSync(pemPath, 'utf8').match(/BEGIN CERTIFICATE/g) ?? []).length
const pemCerts = (pem: string) => (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map((c) => new X509Certificate(c))

describe('e2e: two servers on one datastore, agent failover', () => {
  const tmp = tempDir('fo-')
  const shared = join(tmp.dir, 'shared.sqlite3')
  let a: E2eServer
  let b: E2eServer
  let agent: WarrantProcess
  let agentSocket: string
  let agentId: string

  const server = (name: string) =>
    E2eServer.start({
      dir: join(tmp.dir, name),
      trustDomain: TD,
      // Each server's rotation check also reads the other servers' authorities: 1 s here.
      serverExtra: [`server_id = "${name}"`, 'rotation_check_interval = "1s"'],
      plugins: `[plugins.key_manager.disk]\nkeys_path = "keys"\n[plugins.datastore.sqlite]\npath = "${shared}"\n[plugins.node_attestor.join_token]\n`,
    })
  const fetchX509 = async (): Promise<X509Json | undefined> => {
    const r = await warrant(['api', 'fetch', 'x509', '--output', 'json', '--socket', agentSocket])
    return r.code === 0 ? (JSON.parse(r.stdout) as X509Json) : undefined
  }
  // fetchX509Until needs only api() and output() of an agent; this one's config names two servers.
  /** The agent's SVIDs (leaf by SPIFFE ID) and local bundle, as `api fetch x509 --write` writes them. */
  const written = async () => {
    const dir = mkdtempSync(join(tmp.dir, 'w-'))
    const r = await warrant(['api', 'fetch', 'x509', '--write', dir, '--socket', agentSocket])
    if (r.code !== 0) throw new Error(r.stderr)
    const leaves = new Map<string, X509Certificate>()
    for (const f of readdirSync(dir).filter((x) => /^svid\.\d+\.pem$/.test(x))) {
      const leaf = pemCerts(readFileSync(join(dir, f), 'utf8'))[0]!
      leaves.set(leaf.subjectAltName!.replace(/^URI:/, ''), leaf)
    }
    return { leaves, bundle: pemCerts(readFileSync(join(dir, 'bundle.0.pem'), 'utf8')) }
  }
  const agentHandle = () => ({
    api: (args: string[]) => warrant(['api', ...args, '--socket', agentSocket]),
    output: () => agent.output(),
  })

  /** A `warrant agent run` process with `servers` in server_address, attesting with `token`. */
  const startAgent = (name: string, servers: string[], token: string, bundlePem: string) => {
    const dir = join(tmp.dir, name)
    mkdirSync(dir, { recursive: true })
    const socket = join(dir, 'api.sock')
    const cfg = join(dir, 'agent.toml')
    writeFileSync(
      cfg,
      [
        '[agent]',
        `trust_domain = "${TD}"`,
        `server_address = [${servers.map((s) => `"${s}"`).join(', ')}]`,
        `socket_path = "${socket}"`,
        `data_dir = "${join(dir, 'data')}"`,
        'log_level = "debug"',
        `trust_bundle_path = "${bundlePem}"`,
        '[plugins.node_attestor.join_token]',
        `token = "${token}"`,
        '[plugins.workload_attestor.unix]',
        'workload_size_limit = -1',
        '',
      ].join('\n'),
      { mode: 0o600 },
    )
    return { proc: new WarrantProcess(['agent', 'run', '--config', cfg]), socket }
  }
  /** Waits for "Agent started" on `address`; returns the agent's SPIFFE ID. */
  const attestedAt = (p: WarrantProcess, address: string) =>
    waitFor(
      `the agent to attest at ${address}`,
      () => {
        if (!p.running) throw new Error(`agent exited:\n${p.output().slice(-4000)}`)
        const m = /"agent_id":"(spiffe:\/\/[^"]+)"[^\n]*"address":"([^"]+)"[^\n]*Agent started/.exec(p.output())
        return m && m[2] === address ? m[1] : undefined
      },
      { timeoutMs: 45_000, hint: () => p.output() },
    )

  beforeAll(async () => {
    a = await server('a')
    b = await server('b')
    // B's CA reaches A's bundle at A's next rotation check; the agent bootstraps from A's bundle file.
    await waitFor('both CAs in A’s bundle', () => certCount(a.bundlePemPath) === 2, { hint: () => a.output() })
    expect(certCount(b.bundlePemPath)).toBe(2)

    const started = startAgent('ag', [a.address, b.address], await a.joinToken(), a.bundlePemPath)
    agent = started.proc
    agentSocket = started.socket
    agentId = await attestedAt(agent, a.address)
    await a.cliJson(['entry', 'create', '--spiffe-id', FIRST, '--parent-id', agentId, '--selector', `unix:uid:${uid}`])
    await fetchX509Until(agentHandle() as unknown as E2eAgent, FIRST, { timeoutMs: 45_000 })
  }, 150_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await a?.stop('SIGKILL')
    await b?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('1. the agent syncs with A, the first server of its list', () => {
    expect(agent.output()).toMatch(new RegExp(`"address":"${a.address}"[^\\n]*Sync stream connected`))
  })

  it('2. a server started later joins the bundle the agent holds (through A, its server)', async () => {
    const c = await server('c')
    try {
      const fps = (xs: X509Certificate[]) => xs.map((x) => x.fingerprint256).sort()
      const ofC = () => fps(pemCerts(readFileSync(c.bundlePemPath, 'utf8')))
      expect(ofC()).toHaveLength(3) // A, B and C
      await waitFor('C’s CA in the agent’s bundle', async () => JSON.stringify(fps((await written()).bundle)) === JSON.stringify(ofC()), {
        timeoutMs: 30_000,
        hint: () => agent.output(),
      })
    } finally {
      await c.stop()
    }
  })

  it('3. kill -9 of A: the workload keeps its SVID from the cache, and the agent fails over to B with its SVID from A', async () => {
    const before = await fetchX509()
    const svid = before?.svids.find((s) => s.spiffe_id === FIRST)
    expect(svid).toBeDefined()
    await a.stop('SIGKILL')
    // Served at once, whichever server the agent reaches: the same SVID, from the cache.
    const during = await fetchX509()
    expect(during?.svids.find((s) => s.spiffe_id === FIRST)).toEqual(svid)
    await waitFor('the agent’s Sync stream on B', () => new RegExp(`"address":"${b.address}"[^\\n]*Sync stream connected`).test(agent.output()), {
      timeoutMs: 30_000,
      hint: () => agent.output(),
    })
    expect(agent.output()).toContain('Failing over to another server')
    // B knows the agent (shared datastore) and pushes what its operator registers.
    await b.cliJson(['entry', 'create', '--spiffe-id', SECOND, '--parent-id', agentId, '--selector', `unix:uid:${uid}`])
    const after = await fetchX509Until(agentHandle() as unknown as E2eAgent, SECOND, { timeoutMs: 30_000 })
    expect(after.svids.map((s) => s.spiffe_id).sort()).toEqual([FIRST, SECOND])
    expect(agent.running).toBe(true)
    // The new SVID is B's (its CA, not A's), and verifies against the bundle the agent serves.
    const { leaves, bundle } = await written()
    const issuer = (leaf: X509Certificate) => bundle.find((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))
    const caOf = (s: E2eServer) => pemCerts(readFileSync(s.bundlePemPath, 'utf8'))
    expect(issuer(leaves.get(SECOND)!)?.fingerprint256).toBeDefined()
    expect(issuer(leaves.get(FIRST)!)?.fingerprint256).toBeDefined()
    expect(issuer(leaves.get(SECOND)!)?.fingerprint256).not.toBe(issuer(leaves.get(FIRST)!)?.fingerprint256)
    expect(caOf(b).map((x) => x.fingerprint256)).toContain(issuer(leaves.get(SECOND)!)!.fingerprint256)
  })

  it('4. an agent whose first server is down attests at the next one', async () => {
    const second = startAgent('ag2', [a.address, b.address], await b.joinToken(), b.bundlePemPath)
    try {
      const id = await attestedAt(second.proc, b.address)
      expect(id).toMatch(new RegExp(`^spiffe://${TD}/`))
      expect(second.proc.output()).toContain('Server unavailable for node attestation')
    } finally {
      await second.proc.stop('SIGKILL')
    }
  })

  it('5. with every server down, the Workload API still serves the cached SVIDs', async () => {
    const before = await fetchX509()
    await b.stop('SIGKILL')
    const during = await fetchX509()
    expect(during?.svids.map((s) => s.spiffe_id).sort()).toEqual([FIRST, SECOND])
    expect(during?.svids).toEqual(before?.svids)
  })
})
