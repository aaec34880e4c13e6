/**
 * Shared Signals end to end (issue 22): two `warrant server run` processes,
 * each with its embedded broker. A's broker is an SSF transmitter for B's
 * broker (`[broker.signals] receivers`, B's trust bundle set on A so A's
 * broker admits B's SVID over mutual TLS); B's broker is a receiver, polling A or pushed to by A
 * (each file run twice, `delivery = "poll"` and `"push"`)
 * (`[[broker.signals.transmitters]]`, A's bundle as `ca_file`) with a response
 * policy mapping `credential-change` about `spiffe://a.example/agents/...` to
 * `revoke instance`. Checked through the processes' CLIs only: `warrant revoke
 * instance` on A ends in B revoking that instance and nothing else (B's
 * revocation list; `warrant signal list` on B's SSF store and B's broker audit
 * log name the signal);
 * `warrant signal send` on A (a signal by hand, no revocation at A) does the
 * same; and an event queued while A is killed with SIGKILL (B stopped, so it cannot
 * have polled it) reaches B after both restart.
 */
import Database from 'better-sqlite3'
import https from 'node:https'
import net from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, waitFor, warrant, warrantJson } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const A = 'a.example'
const B = 'b.example'
const X = `spiffe://${A}/agents/compromised`
const Y = `spiffe://${A}/agents/healthy`
const Z = `spiffe://${A}/agents/later`
const M = `spiffe://${A}/agents/by-hand`

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

type Revocation = { kind: string; value: string; reason?: string }
type Signal = { jti: string; issuer: string; eventType: string; outcome: string; decision: { action?: string; level?: string; value?: string } | null }

describe.each(['poll', 'push'] as const)('Shared Signals e2e: a transmitter broker and a receiver broker as separate processes (%s delivery)', (delivery) => {
  const tmp = tempDir('wsig-')
  let serverA: E2eServer
  let serverB: E2eServer
  let issuerA = ''
  let issuerB = ''
  const brokerSock = (s: E2eServer) => join(s.dataDir, 'private', 'broker-admin.sock')
  const revocations = async (s: E2eServer) => (await warrantJson<{ revocations: Revocation[] }>(['revocation', 'list', '--socket', brokerSock(s)])).revocations
  const signalsAtB = async () => (await warrantJson<{ signals: Signal[] }>(['signal', 'list', '--store', join(serverB.dataDir, 'broker-ssf.sqlite3')])).signals
  const hint = () => `--- A ---\n${serverA?.output().slice(-3000)}\n--- B ---\n${serverB?.output().slice(-3000)}`

  beforeAll(async () => {
    const [portA, portB] = [await freePort(), await freePort()]
    issuerA = `https://localhost:${portA}`
    issuerB = `https://localhost:${portB}`
    serverA = await E2eServer.start({
      dir: join(tmp.dir, 'sa'),
      trustDomain: A,
      serverTables: [
        '[broker]',
        `issuer = "${issuerA}"`,
        `bind_address = "127.0.0.1:${portA}"`,
        `federated_trust_domains = ["${B}"]`,
        '[broker.signals]',
        `receivers = ["spiffe://${B}/warrant/broker"]`,
        'poll_wait = "2s"',
      ].join('\n'),
    })
    serverB = await E2eServer.start({
      dir: join(tmp.dir, 'sb'),
      trustDomain: B,
      serverTables: [
        '[broker]',
        `issuer = "${issuerB}"`,
        `bind_address = "127.0.0.1:${portB}"`,
        '[broker.signals]',
        'poll_wait = "2s"',
        '[[broker.signals.transmitters]]',
        `issuer = "${issuerA}"`,
        `ca_file = "${serverA.bundlePemPath}"`,
        `delivery = "${delivery}"`,
        '[[broker.signals.policy]]',
        'event = "credential-change"',
        `match = { prefix = "spiffe://${A}/agents/" }`,
        'action = "revoke"',
        'level = "instance"',
      ].join('\n'),
    })
    // A's broker admits B's broker SVID: B's trust bundle, set by hand on A.
    const set = await serverA.cli(['bundle', 'set', '--trust-domain', B, '--format', 'spiffe', '--path', serverB.bundleSpiffePath])
    expect(set.code, set.stderr).toBe(0)
    // B's receiver creates its stream at A once A admits its SVID (B's store remembers it across restarts).
    await waitFor('B to subscribe at A', () => /SSF stream created at transmitter/.test(serverB.output()) || undefined, { timeoutMs: 60_000, hint })
  }, 120_000)

  afterAll(async () => {
    for (const s of [serverA, serverB]) await s?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('warrant revoke instance on A revokes that instance at B, and only it', async () => {
    const r = await warrant(['revoke', 'instance', X, '--reason', 'e2e compromise', '--socket', brokerSock(serverA), '--output', 'json'])
    expect(r.code, r.stderr).toBe(0)
    const got = await waitFor(
      'B to revoke the instance',
      async () => {
        const list = await revocations(serverB)
        return list.length > 0 ? list : undefined
      },
      { timeoutMs: 60_000, hint },
    )
    expect(got.map((e) => [e.kind, e.value])).toEqual([['instance', X]])
    expect(got[0]!.reason).toMatch(/^signal credential-change \S+ from https:\/\/localhost:\d+ \(rule 0\)/)
    expect(got.some((e) => e.value === Y)).toBe(false)
    const signals = await signalsAtB()
    expect(signals).toEqual([
      expect.objectContaining({ issuer: issuerA, decision: expect.objectContaining({ action: 'revoke', level: 'instance', value: X }) }),
    ])
    // B's broker audit log has the signal, named, with what was done
    const audited = await waitFor(
      "the signal in B's audit log",
      async () => {
        const rows = await warrantJson<{ seq: number; event: Record<string, unknown> }[]>([
          'audit',
          'search',
          '--log',
          join(serverB.dataDir, 'broker-audit.sqlite3'),
          '--type',
          'signal',
        ])
        return rows.length > 0 ? rows : undefined
      },
      { timeoutMs: 20_000, hint },
    )
    expect(audited.map((r) => r.event)).toEqual([
      expect.objectContaining({
        type: 'signal',
        outcome: 'success',
        subject: X,
        attributes: expect.objectContaining({ issuer: issuerA, jti: signals[0]!.jti, event_type: 'credential-change', action: 'revoke', value: X }),
      }),
    ])
  }, 90_000)

  if (delivery === 'push')
    it("B's push endpoint refuses a SET without the stream's secret (401) and at an unknown path (404), and changes nothing", async () => {
      const db = new Database(join(serverB.dataDir, 'broker-ssf.sqlite3'), { readonly: true })
      const path = (db.prepare('SELECT push_path FROM ssf_subscriptions').get() as { push_path: string }).push_path
      db.close()
      expect(path).toMatch(/^[0-9a-f]{32}$/)
      const post = (p: string, headers: Record<string, string>) =>
        new Promise<number>((resolve, reject) => {
          const req = https.request(
            `${issuerB}/ssf/push/${p}`,
            { method: 'POST', rejectUnauthorized: false, headers: { 'content-type': 'application/secevent+jwt', ...headers } },
            (res) => (res.resume(), resolve(res.statusCode ?? 0)),
          )
          req.on('error', reject)
          req.end('eyJhbGciOiJub25lIn0.eyJqdGkiOiJ4In0.')
        })
      const before = await revocations(serverB)
      expect(await post(path, {})).toBe(401)
      expect(await post(path, { authorization: 'Bearer guess' })).toBe(401)
      expect(await post('0'.repeat(32), { authorization: 'Bearer guess' })).toBe(404)
      expect(await revocations(serverB)).toEqual(before)
    })

  if (delivery === 'push')
    it('a node banned at A is announced to B as an assurance-level-change (current none, previous its attestor), recorded at B', async () => {
      const agent = E2eAgent.start({
        dir: join(tmp.dir, 'agent-a'),
        server: serverA,
        nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await serverA.joinToken()}"\n`,
      })
      try {
        const node = await agent.attested()
        const banned = await serverA.cli(['agent', 'ban', '--id', node])
        expect(banned.code, banned.stderr).toBe(0)
        const got = await waitFor(
          'B to record the assurance level change',
          async () => (await signalsAtB()).find((x) => x.eventType.endsWith('/assurance-level-change')),
          { timeoutMs: 30_000, hint },
        )
        expect(got).toMatchObject({ issuer: issuerA, outcome: 'recorded' })
      } finally {
        await agent.stop()
      }
    })

  if (delivery === 'push')
    it("narrowing a prefix's scopes in A's bounds is announced to B as a token-claims-change with the scopes left", async () => {
      const set = (scopes: string[]) => serverA.cli(['bounds', 'set', '--prefix', '/agents/ci', ...scopes.flatMap((x) => ['--scope', x])])
      const wide = await set(['read', 'write'])
      expect(wide.code, wide.stderr).toBe(0)
      // the broker reads the signed bounds document the server rewrites (stat polling, 1 s)
      await new Promise((r) => setTimeout(r, 2500))
      const narrow = await set(['read'])
      expect(narrow.code, narrow.stderr).toBe(0)
      const got = await waitFor(
        'B to record the token claims change',
        async () => (await signalsAtB()).find((x) => x.eventType.endsWith('/token-claims-change')),
        { timeoutMs: 30_000, hint },
      )
      expect(got).toMatchObject({ issuer: issuerA, outcome: 'recorded', subject: { format: 'uri', uri: `spiffe://${A}/agents/ci` } })
    })

  it('warrant signal send on A (no revocation at A) ends in the same response at B', async () => {
    const sent = await warrantJson<{ event_type: string; streams: string[] }>([
      'signal',
      'send',
      '--event',
      'credential-change',
      '--subject',
      M,
      '--instance',
      'i-42',
      '--reason',
      'edr alert',
      '--socket',
      brokerSock(serverA),
    ])
    expect(sent.streams).toHaveLength(1)
    expect((await revocations(serverA)).map((e) => e.value)).toEqual([X])
    const got = await waitFor(
      'B to revoke the instance signalled by hand',
      async () => {
        const list = await revocations(serverB)
        return list.some((e) => e.value === M) ? list : undefined
      },
      { timeoutMs: 60_000, hint },
    )
    expect(got.map((e) => [e.kind, e.value])).toEqual([
      ['instance', X],
      ['instance', M],
    ])
  }, 90_000)

  it('an event queued at A survives a SIGKILL of A before B polls it', async () => {
    await serverB.stop()
    const r = await warrant(['revoke', 'instance', Z, '--socket', brokerSock(serverA), '--output', 'json'])
    expect(r.code, r.stderr).toBe(0)
    await serverA.stop('SIGKILL')
    await serverA.spawn()
    await serverB.spawn()
    const got = await waitFor(
      'B to revoke the second instance',
      async () => {
        const list = await revocations(serverB)
        return list.some((e) => e.value === Z) ? list : undefined
      },
      { timeoutMs: 90_000, hint },
    )
    expect(got.map((e) => e.value).sort()).toEqual([X, M, Z].sort())
    expect(got.some((e) => e.value === Y)).toBe(false)
    // one signal each, none applied twice
    expect((await signalsAtB()).filter((s) => s.eventType.endsWith('/credential-change')).map((s) => s.decision?.value)).toEqual([X, M, Z])
  }, 150_000)
})
