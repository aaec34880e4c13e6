/**
 * Hostile connections against the server's agent API (a real `warrant server
 * run` process, TLS on TCP, hostile clients in a child process): before any
 * authentication, nothing a client does may leave descriptors or memory
 * behind, and agents keep attesting and calling with their SVID meanwhile.
 */
import { readdirSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { createCsr } from '../../src/spiffe/x509-svid/csr.js'
import { runHostile, startFlood, writeHostileClient, type HostileKind } from '../helpers/hostile-h2.js'
import { ServerProcess } from '../helpers/server-process.js'
import { tempDir } from '../helpers/temp.js'
import { newP256, TestAgentClient } from '../helpers/test-agent-client.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'example.org'
const MAX_PER_ADDRESS = 40
const FD_TOLERANCE = 2

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

async function until(pred: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!(await pred())) {
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 100))
  }
  return true
}

describe.runIf(requireTools('openssl'))('server agent API under hostile connections (process, TLS)', () => {
  let srv: ServerProcess
  let tmp: ReturnType<typeof tempDir>
  let script: string
  let metricsPort: number
  let agents: ReturnType<typeof adminClient>
  let host: string
  let port: number

  const fds = () => readdirSync(`/proc/${srv.pid}/fd`).length
  const rssKb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${srv.pid}/status`, 'utf8'))![1])
  const metric = async (name: string, labels: string) => {
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
    const line = body.split('\n').find((l) => l.startsWith(`${name}{`) && l.includes(labels))
    return line ? Number(line.split(' ').pop()) : 0
  }

  /** A well-behaved agent: join-token attestation, then an SVID-authenticated call (mutual TLS). */
  async function normalAgent(): Promise<void> {
    const c = new TestAgentClient({ address: srv.address, bundlePem: srv.bundlePem(), trustDomain: TD })
    try {
      const { token } = await agents.call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })
      const cred = await c.attestJoinToken(token)
      c.useCredential(cred)
      const key = newP256()
      const renewed = await c.renewAgent(await createCsr({ privateKey: key.privateKey }))
      expect(renewed.svid_chain.length).toBeGreaterThan(0)
    } finally {
      c.close()
    }
  }

  beforeAll(async () => {
    tmp = tempDir('whs-')
    script = writeHostileClient(tmp.dir)
    metricsPort = await freePort()
    srv = await ServerProcess.start({
      logLevel: 'info',
      serverExtra: [
        '[server.metrics]',
        `bind_address = "127.0.0.1:${metricsPort}"`,
        '[server.connection_limits]',
        `max_per_peer = ${MAX_PER_ADDRESS}`,
        'handshake_timeout = "3s"',
        'idle_timeout = "2m"',
        'grace = "500ms"',
      ].join('\n'),
    })
    agents = adminClient('Agents', srv.socketPath)
    ;[host, port] = ((a) => [a.slice(0, a.lastIndexOf(':')), Number(a.slice(a.lastIndexOf(':') + 1))] as const)(srv.address)
    await normalAgent() // warm-up: TLS contexts, protos, the CA
  }, 60_000)
  afterAll(async () => {
    await srv?.dispose()
    tmp?.cleanup()
  })

  async function round(kind: HostileKind, count: number, extra: { tls?: boolean; interval?: number; waitMs?: number } = {}) {
    const base = fds()
    const rss0 = rssKb()
    // From 127.0.0.2 (the normal agent connects from 127.0.0.1), fewer at a time than the per-address cap.
    const hostile = runHostile(script, { kind, count, host, port, tls: true, localAddress: '127.0.0.2', concurrency: 10, ...extra })
    await normalAgent()
    const stats = await hostile
    // Connections the server still holds count against the per-address cap until reaped, so some may be
    // refused: how many depends on how fast the client runs against the reaping (a fresh CI machine saw
    // 92 of 200 open). What must hold is that the hostile sequence really reached the server on many
    // connections, and (below) that every descriptor came back.
    expect(stats.settled).toBe(count)
    expect(stats.opened).toBeGreaterThanOrEqual(Math.min(count, 2 * 10))
    const back = await until(() => fds() <= base + FD_TOLERANCE, 15_000)
    expect({ back, fds: fds(), base }).toMatchObject({ back: true })
    await normalAgent()
    expect(rssKb() - rss0).toBeLessThan(64 * 1024)
    return stats
  }

  it('oversized frame header over TLS: every connection destroyed', async () => {
    await round('oversized', 200)
  }, 90_000)

  it('garbage HPACK over TLS: every connection destroyed', async () => {
    await round('hpack', 200)
  }, 90_000)

  it('bad preface over TLS: every connection destroyed', async () => {
    await round('badpreface', 100)
  }, 90_000)

  it('half-open TLS (TCP connect, no handshake): closed after the handshake timeout', async () => {
    const stats = await round('halfopen', 30, { waitMs: 20_000 })
    expect(stats.serverClosed).toBe(30)
    expect(stats.maxOpenMs).toBeLessThan(10_000)
  }, 90_000)

  it('slow preface after the TLS handshake: closed after the handshake timeout', async () => {
    const stats = await round('slowpreface', 20, { interval: 1000, waitMs: 20_000 })
    expect(stats.serverClosed).toBe(20)
    expect(stats.maxOpenMs).toBeLessThan(10_000)
  }, 90_000)

  it('flood from one source address: capped per address (metric, log line); agents from another address keep working', async () => {
    const base = fds()
    const rejected0 = await metric('warrant_connections_rejected_total', 'listener="agent_api"')
    // From 127.0.0.2; the normal agent connects from 127.0.0.1.
    const flood = await startFlood(script, { count: MAX_PER_ADDRESS + 30, host, port, tls: true, localAddress: '127.0.0.2', waitMs: 60_000 })
    expect(await until(async () => (await metric('warrant_connections_rejected_total', 'listener="agent_api"')) - rejected0 >= 30, 15_000)).toBe(true)
    // The flood's connections plus at most a lingering one of an earlier test.
    expect(await metric('warrant_connections_open', 'listener="agent_api"')).toBeLessThanOrEqual(MAX_PER_ADDRESS + 1)
    expect(srv.output()).toContain('Connection limit per peer reached; refusing connections')
    expect(srv.output()).toContain('127.0.0.2')
    await normalAgent()
    const stats = await flood.stop()
    expect(stats.serverClosed).toBeGreaterThanOrEqual(30)
    expect(await until(() => fds() <= base + FD_TOLERANCE, 15_000)).toBe(true)
    await normalAgent()
  }, 90_000)
})
