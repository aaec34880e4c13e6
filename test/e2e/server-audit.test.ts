/**
 * The server's audit log end to end: a server and an agent as processes
 * (`node bin/warrant.js`), `[audit]` in server.toml. The agent attests, a
 * workload gets an X.509-SVID and a JWT-SVID, an entry is changed; after the
 * server stopped, `warrant audit verify` checks the log with the verifier key
 * the server logged at start (chain, tree, signed checkpoints), and
 * `warrant audit search` finds each event with its fields and no token,
 * certificate or key in any of them; a copy with one event changed fails.
 */
import { copyFileSync, existsSync } from 'node:fs'
import Database from 'better-sqlite3'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { E2eAgent, E2eServer, fetchX509Until, waitFor, warrant } from '../helpers/e2e-cluster.js'
import { tempDir } from '../helpers/temp.js'

const TD = 'audit.example'
const WORKLOAD = `spiffe://${TD}/svc/reporter`
const uid = process.getuid!()

interface Row {
  seq: number
  event: {
    type: string
    outcome: string
    time: string
    reason?: string
    actor?: { spiffe_id: string; instance?: string }
    subject?: string
    node?: string
    resource?: string[]
    key_id?: string
    attributes?: Record<string, string | number | boolean>
  }
}

describe('server audit log (e2e)', () => {
  const tmp = tempDir('wsa-')
  let server: E2eServer
  let agent: E2eAgent
  let agentId: string
  let entryId: string
  let logPath: string

  beforeAll(async () => {
    server = await E2eServer.start({ dir: `${tmp.dir}/s`, trustDomain: TD, serverTables: '[audit]\ncheckpoint_interval = "1s"\n' })
    logPath = join(server.dataDir, 'server-audit.sqlite3')
  }, 60_000)

  afterAll(async () => {
    await agent?.stop('SIGKILL')
    await server?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('1. the agent attests, a workload gets its SVIDs, an entry changes; the server stops', async () => {
    expect(existsSync(logPath)).toBe(true)
    agent = E2eAgent.start({ dir: `${tmp.dir}/a`, server, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${await server.joinToken()}"\n` })
    agentId = await agent.attested()
    const created = await server.cliJson<{ results: { entry: { id: string } }[] }>([
      'entry',
      'create',
      '--spiffe-id',
      WORKLOAD,
      '--parent-id',
      agentId,
      '--selector',
      `unix:uid:${uid}`,
    ])
    entryId = created.results[0]!.entry.id
    await fetchX509Until(agent, WORKLOAD, { timeoutMs: 45_000 })
    const jwt = await agent.api(['fetch', 'jwt', '--audience', 'https://reports.example', '--output', 'json'])
    expect(jwt.code, jwt.stderr).toBe(0)
    const updated = await server.cli(['entry', 'update', '--id', entryId, '--jwt-svid-ttl', '120'])
    expect(updated.code, updated.stderr).toBe(0)
    // Every event so far under a signed checkpoint (one per second while the log grows), then a clean stop.
    await waitFor('a checkpoint over the entry update', () => {
      const sizes = [...server.output().matchAll(/"size":(\d+)[^\n]*Signed audit checkpoint/g)].map((m) => Number(m[1]))
      return sizes.length > 0 && Math.max(...sizes) >= 5
    })
    await agent.stop()
    const st = await server.stop()
    expect(st.code).toBe(0)
  }, 120_000)

  it('2. warrant audit verify: the chain and the tree re-derive and the checkpoints verify with the key the server logged', async () => {
    const vkey = /"verifier_key":"([^"]+)"[^\n]*Server audit log open/.exec(server.output())?.[1]
    expect(vkey).toMatch(new RegExp(`^${TD.replace('.', '\\.')}/warrant/server-audit\\+`))
    const r = await warrant(['audit', 'verify', '--log', logPath, '--key', vkey!, '--output', 'json'])
    expect(r.code, r.stderr + r.stdout).toBe(0)
    const report = JSON.parse(r.stdout) as { ok: boolean; events: number; checkpoints: number; problem: unknown }
    expect(report).toMatchObject({ ok: true, problem: null })
    expect(report.events).toBeGreaterThanOrEqual(5)
    expect(report.checkpoints).toBeGreaterThanOrEqual(1)
  })

  it('3. the events are there with their fields, and none carries a token, certificate or key', async () => {
    const search = async (type: string): Promise<Row[]> => {
      const r = await warrant(['audit', 'search', '--log', logPath, '--type', type, '--output', 'json'])
      expect(r.code, r.stderr).toBe(0)
      return JSON.parse(r.stdout) as Row[]
    }
    const [accepted] = await search('node_attestation.accepted')
    expect(accepted!.event).toMatchObject({ outcome: 'success', actor: { spiffe_id: agentId }, subject: agentId, node: agentId })
    expect(accepted!.event.attributes).toMatchObject({ attestor: 'join_token', can_reattest: false })
    expect(accepted!.event.attributes!.serial).toMatch(/^[0-9a-f]+$/)

    const [entryCreated] = await search('entry.created')
    expect(entryCreated!.event).toMatchObject({ outcome: 'success', subject: WORKLOAD, attributes: { entry_id: entryId, parent_id: agentId, selectors: 1 } })
    const [entryUpdated] = await search('entry.updated')
    expect(entryUpdated!.event).toMatchObject({ subject: WORKLOAD, attributes: { entry_id: entryId, revision: 2, jwt_svid_ttl: 120 } })

    const x509 = (await search('x509_svid.issued')).filter((r) => r.event.subject === WORKLOAD)
    expect(x509.length).toBeGreaterThanOrEqual(1)
    expect(x509[0]!.event).toMatchObject({ actor: { spiffe_id: WORKLOAD }, node: agentId, attributes: { kind: 'workload', entry_id: entryId } })
    expect(x509[0]!.event.attributes!.serial).toMatch(/^[0-9a-f]+$/)

    const [jwt] = await search('jwt_svid.issued')
    expect(jwt!.event).toMatchObject({ subject: WORKLOAD, node: agentId, resource: ['https://reports.example'], attributes: { entry_id: entryId } })
    expect(jwt!.event.key_id).toBeTruthy()

    // Attestation first, then the entry, then what it produced: the log's order is the server's.
    expect(accepted!.seq).toBeLessThan(entryCreated!.seq)
    expect(entryCreated!.seq).toBeLessThan(x509[0]!.seq)

    const all = await warrant(['audit', 'tail', '--log', logPath, '-n', '1000', '--output', 'json'])
    expect(all.code).toBe(0)
    expect(all.stdout).not.toMatch(/eyJ[A-Za-z0-9_-]+\.|-----BEGIN|MII[A-Za-z0-9+/]{20}/)
    expect(all.stdout).not.toMatch(/join_token:|"token"/)
  })

  it('4. a copy whose entry.updated event was rewritten fails verify at that event', async () => {
    const vkey = /"verifier_key":"([^"]+)"[^\n]*Server audit log open/.exec(server.output())![1]!
    const copy = join(tmp.dir, 'tampered.sqlite3')
    copyFileSync(logPath, copy)
    const db = new Database(copy)
    const row = db.prepare("SELECT seq, event FROM audit_events WHERE type = 'entry.updated'").get() as { seq: number; event: Buffer }
    db.prepare('UPDATE audit_events SET event = ? WHERE seq = ?').run(
      Buffer.from(row.event.toString().replace('"jwt_svid_ttl":120', '"jwt_svid_ttl":999')),
      row.seq,
    )
    db.close()
    const r = await warrant(['audit', 'verify', '--log', copy, '--key', vkey, '--output', 'json'])
    expect(r.code).toBe(1)
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, problem: { code: 'ERR_AUDIT_LOG_TAMPERED', seq: row.seq } })
  })
})
