/**
 * TPM node attestation end to end: a server process with the `tpm` node
 * attestor (EK CA = the swtpm local CA, a PCR policy) and an agent process
 * attesting with swtpm; the agent is listed with its tpm selectors, and an
 * entry parented to it reaches a workload through the Workload API. A second
 * server requiring a PCR policy the swtpm does not satisfy refuses the agent.
 * Renewal is re-attestation: a PCR extended after attestation shows up in the
 * agent's selectors at its next renewal. With a required PCR policy and the
 * embedded broker's SSF transmitter, a node whose re-attestation is refused
 * is announced as an assurance-level-change (current none) to a receiver
 * polling its stream; a node never attested there, refused alike, is not.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import https from 'node:https'
import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TpmClient } from '../../src/tpm/client.js'
import { TPM_ALG } from '../../src/tpm/structures.js'
import { openTransport } from '../../src/tpm/transport.js'
import { E2eAgent, E2eServer, fetchX509Until, waitFor } from '../helpers/e2e-cluster.js'
import { freePort } from '../helpers/e2e-procs.js'
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'tpm.example'
const ZERO = '00'.repeat(32)
const ASSURANCE = 'https://schemas.openid.net/secevent/caep/event-type/assurance-level-change'
const FF = 'ff'.repeat(32)

type AgentsJson = { agents: { agent_id: string; attestor: string; selectors: { type: string; value: string }[] }[] }

const fingerprint = (file: string) =>
  createHash('sha256')
    .update(Buffer.from(readFileSync(file, 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64'))
    .digest('hex')

describe.runIf(requireTools('swtpm', 'swtpm_setup'))('tpm node attestation: server and agent processes with swtpm', () => {
  const tmp = tempDir('wtpm-')
  let tpm: SwtpmInstance
  let caFiles: string[] = []
  const servers: E2eServer[] = []
  const agents: E2eAgent[] = []

  const tpmPlugins = (policy: string) =>
    [
      '[plugins.key_manager.disk]',
      'keys_path = "keys"',
      '[plugins.node_attestor.tpm]',
      `ek_ca_paths = ${JSON.stringify(caFiles)}`,
      'pcrs = [0, 1, 2, 3, 4, 5, 6, 7]',
      policy,
    ].join('\n')

  beforeAll(async () => {
    tpm = await startSwtpm()
    caFiles = [join(tpm.caDir, 'swtpm-localca-rootca-cert.pem'), join(tpm.caDir, 'issuercert.pem')]
  }, 60_000)

  afterAll(async () => {
    for (const a of agents) await a.stop('SIGKILL')
    for (const s of servers) await s.stop('SIGKILL')
    await tpm?.stop()
    tmp.cleanup()
  })

  it('attests the agent, lists it with tpm selectors, and delivers an SVID parented to it', async () => {
    const server = await E2eServer.start({
      dir: join(tmp.dir, 's1'),
      trustDomain: TD,
      plugins: tpmPlugins(`[plugins.node_attestor.tpm.pcr_policies.boot]\n"0" = "${ZERO}"\n`),
    })
    servers.push(server)
    const agent = E2eAgent.start({ dir: join(tmp.dir, 'a1'), server, nodeAttestor: `[plugins.node_attestor.tpm]\nswtpm = "127.0.0.1:${tpm.port}"\n` })
    agents.push(agent)
    const agentId = await agent.attested()
    expect(agentId).toMatch(new RegExp(`^spiffe://${TD.replace('.', '\\.')}/warrant/agent/tpm/[0-9a-f]{64}$`))
    const ekHash = agentId.split('/').pop()!

    const list = await server.cliJson<AgentsJson>(['agent', 'list'])
    expect(list.agents.map((a) => a.agent_id)).toEqual([agentId])
    const node = list.agents[0]!
    expect(node.attestor).toBe('tpm')
    const sel = node.selectors.map((s) => `${s.type}:${s.value}`)
    expect(sel).toEqual(
      expect.arrayContaining([
        `tpm:ek_hash:${ekHash}`,
        `tpm:ek_ca:${fingerprint(caFiles[0]!)}`,
        `tpm:ek_ca:${fingerprint(caFiles[1]!)}`,
        `tpm:pcr:sha256:0:${ZERO}`,
        'tpm:pcr_policy:boot',
      ]),
    )
    expect(sel.filter((s) => s.startsWith('tpm:pcr:sha256:'))).toHaveLength(8)
    for (const s of sel.filter((x) => x.startsWith('tpm:pcr:sha256:'))) expect(s).toMatch(/^tpm:pcr:sha256:[0-7]:[0-9a-f]{64}$/)

    const workloadId = `spiffe://${TD}/workload/tpm-backed`
    const created = await server.cli(['entry', 'create', '--spiffe-id', workloadId, '--parent-id', agentId, '--selector', `unix:uid:${process.getuid!()}`])
    expect(created.code, created.stderr).toBe(0)
    const svids = await fetchX509Until(agent, workloadId)
    expect(svids.svids.map((s) => s.spiffe_id)).toEqual([workloadId])
    expect(Date.parse(svids.svids[0]!.not_after)).toBeGreaterThan(Date.now())
    await agent.stop()
  }, 120_000)

  it('renews by attesting again: a PCR changed after attestation is noticed at the next renewal', async () => {
    const server = await E2eServer.start({
      dir: join(tmp.dir, 's3'),
      trustDomain: TD,
      serverExtra: ['agent_ttl = "12s"'],
      plugins: [
        '[plugins.key_manager.disk]',
        'keys_path = "keys"',
        '[plugins.node_attestor.tpm]',
        `ek_ca_paths = ${JSON.stringify(caFiles)}`,
        'pcrs = [0, 16]',
      ].join('\n'),
    })
    servers.push(server)
    const agent = E2eAgent.start({ dir: join(tmp.dir, 'a3'), server, nodeAttestor: `[plugins.node_attestor.tpm]\nswtpm = "127.0.0.1:${tpm.port}"\n` })
    agents.push(agent)
    const agentId = await agent.attested()
    const pcr16 = async () => {
      const node = (await server.cliJson<AgentsJson & { agents: { serial: string }[] }>(['agent', 'list'])).agents.find((a) => a.agent_id === agentId)!
      return {
        value: node.selectors.find((s) => s.value.startsWith('pcr:sha256:16:'))?.value.split(':')[3],
        serial: (node as unknown as { serial: string }).serial,
      }
    }
    const before = await pcr16()
    expect(before.value).toMatch(/^[0-9a-f]{64}$/)
    // Extend PCR 16 behind the agent's back (swtpm serves one client at a time; the agent connects only per step).
    const client = new TpmClient(openTransport(tpm.transportUri))
    try {
      await client.pcrExtend(16, TPM_ALG.SHA256, createHash('sha256').update('warrant e2e: changed boot state').digest())
    } finally {
      await client.close()
    }
    const after = await waitFor(
      'the renewal quote to report the new PCR 16',
      async () => {
        const now = await pcr16()
        return now.value !== before.value ? now : undefined
      },
      { timeoutMs: 45_000, hint: () => server.output() },
    )
    expect(after.value).toMatch(/^[0-9a-f]{64}$/)
    expect(after.serial).not.toBe(before.serial)
    expect(agent.output()).toContain('Agent re-attested')
    await agent.stop()
  }, 120_000)

  it('refuses the agent when the required PCR policy does not match the quoted PCRs', async () => {
    const server = await E2eServer.start({
      dir: join(tmp.dir, 's2'),
      trustDomain: TD,
      plugins: tpmPlugins(`require_pcr_policy = "golden"\n[plugins.node_attestor.tpm.pcr_policies.golden]\n"0" = "${FF}"\n`),
    })
    servers.push(server)
    const agent = E2eAgent.start({ dir: join(tmp.dir, 'a2'), server, nodeAttestor: `[plugins.node_attestor.tpm]\nswtpm = "127.0.0.1:${tpm.port}"\n` })
    agents.push(agent)
    // The agent gives up (the reason stays on the server; the agent is told only that attestation failed).
    const exit = await Promise.race([agent.proc.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 45_000))])
    expect(exit, `agent still running:\n${agent.output()}`).toBeDefined()
    expect(exit!.code).not.toBe(0)
    expect(agent.output()).toMatch(/attestation failed \[ERR_NODE_ATTESTATION_FAILED\]/)
    expect(agent.output()).not.toContain('Agent started')
    expect(server.output()).toContain('quoted PCR values do not satisfy the required PCR policy')
    const list = await server.cliJson<AgentsJson>(['agent', 'list'])
    expect(list.agents).toEqual([])
  }, 120_000)

  it('a node whose re-attestation is refused (its PCR policy no longer met) is announced as an assurance-level-change; a node never seen is not', async () => {
    const extend = async (t: SwtpmInstance, what: string) => {
      const c = new TpmClient(openTransport(t.transportUri))
      try {
        await c.pcrExtend(16, TPM_ALG.SHA256, createHash('sha256').update(what).digest())
      } finally {
        await c.close()
      }
    }
    // PCR 16 (the debug PCR) back to zeros on the shared TPM: the golden value of the policy below
    const reset = new TpmClient(openTransport(tpm.transportUri))
    try {
      await reset.pcrReset(16)
    } finally {
      await reset.close()
    }
    // a second TPM, its EK CA trusted too: a node this server never attested
    const tpm2 = await startSwtpm()
    try {
      const port = await freePort()
      const issuer = `https://localhost:${port}`
      const RX = `spiffe://${TD}/soc/receiver`
      const server = await E2eServer.start({
        dir: join(tmp.dir, 's4'),
        trustDomain: TD,
        serverExtra: ['agent_ttl = "12s"'],
        serverTables: ['[broker]', `issuer = "${issuer}"`, `bind_address = "127.0.0.1:${port}"`, '[broker.signals]', `receivers = ["${RX}"]`].join('\n'),
        plugins: [
          '[plugins.key_manager.disk]',
          'keys_path = "keys"',
          '[plugins.node_attestor.tpm]',
          `ek_ca_paths = ${JSON.stringify([...caFiles, join(tpm2.caDir, 'swtpm-localca-rootca-cert.pem'), join(tpm2.caDir, 'issuercert.pem')])}`,
          'pcrs = [0, 16]',
          'require_pcr_policy = "boot"',
          '[plugins.node_attestor.tpm.pcr_policies.boot]',
          `"16" = "${ZERO}"`,
        ].join('\n'),
      })
      servers.push(server)
      const hint = () => server.output().slice(-5000)
      const agent = E2eAgent.start({ dir: join(tmp.dir, 'a4'), server, nodeAttestor: `[plugins.node_attestor.tpm]\nswtpm = "127.0.0.1:${tpm.port}"\n` })
      agents.push(agent)
      const agentId = await agent.attested()

      // the receiver: a workload of that node, polling an SSF stream of the server's broker with its X.509-SVID
      const created = await server.cli(['entry', 'create', '--spiffe-id', RX, '--parent-id', agentId, '--selector', `unix:uid:${process.getuid!()}`])
      expect(created.code, created.stderr).toBe(0)
      const out = join(tmp.dir, 'rx-svid')
      await waitFor(
        "the receiver's SVID on disk",
        async () => (await agent.api(['fetch', 'x509', '--write', out])).code === 0 && readdirSync(out).some((f) => /^svid\.\d+\.pem$/.test(f)),
        { timeoutMs: 30_000, hint: () => agent.output() },
      )
      const f = readdirSync(out).find((x) => /^svid\.\d+\.pem$/.test(x))!
      const rxTls = {
        ca: readFileSync(server.bundlePemPath, 'utf8'),
        cert: readFileSync(join(out, f), 'utf8'),
        key: readFileSync(join(out, f.replace('.pem', '.key')), 'utf8'),
      }
      const ssf = (path: string, body: unknown) =>
        new Promise<{ status: number; json: Record<string, unknown> }>((resolve, reject) => {
          const req = https.request(`${issuer}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, ...rxTls, agent: false }, (res) => {
            let b = ''
            res.on('data', (c: Buffer) => (b += c.toString()))
            res.on('end', () => resolve({ status: res.statusCode ?? 0, json: b ? (JSON.parse(b) as Record<string, unknown>) : {} }))
          })
          req.on('error', reject)
          req.end(JSON.stringify(body))
        })
      const stream = await waitFor(
        'an SSF stream at the broker',
        async () => {
          const r = await ssf('/ssf/streams', { events_requested: [ASSURANCE] }).catch(() => undefined)
          return r?.status === 201 ? (r.json.stream_id as string) : undefined
        },
        { timeoutMs: 30_000, hint },
      )
      type Set = { sub_id: { format: string; uri?: string }; events: Record<string, Record<string, unknown>> }
      const assurance = async () => {
        const r = await ssf(`/ssf/poll/${stream}`, { returnImmediately: true })
        expect(r.status).toBe(200)
        return Object.values(r.json.sets as Record<string, string>)
          .map((t) => decodeJwt(t) as unknown as Set)
          .filter((c) => c.events[ASSURANCE] !== undefined)
      }

      // a node never attested here, refused by the same policy once its EK is proven: no announcement
      await extend(tpm2, 'warrant e2e: the never-seen node booted something else')
      const stranger = E2eAgent.start({ dir: join(tmp.dir, 'a5'), server, nodeAttestor: `[plugins.node_attestor.tpm]\nswtpm = "127.0.0.1:${tpm2.port}"\n` })
      agents.push(stranger)
      const exit = await Promise.race([stranger.proc.exited, new Promise<undefined>((r) => setTimeout(() => r(undefined), 45_000))])
      expect(exit, `the stranger agent still runs:\n${stranger.output()}`).toBeDefined()
      expect(server.output()).toContain('quoted PCR values do not satisfy the required PCR policy')
      expect(server.output()).not.toContain('Re-attestation of an attested node refused')

      // the attested node's boot state changes: its next renewal (a fresh quote) is refused, and announced
      await extend(tpm, 'warrant e2e: changed boot state of an attested node')
      const [set] = await waitFor(
        'the assurance level change about the node',
        async () => {
          const l = await assurance()
          return l.length > 0 ? l : undefined
        },
        { timeoutMs: 60_000, hint },
      )
      expect(set!.sub_id).toEqual({ format: 'uri', uri: agentId })
      const e = set!.events[ASSURANCE]!
      expect(e).toMatchObject({
        namespace: 'warrant-node-attestation',
        current_level: 'none',
        previous_level: 'tpm',
        change_direction: 'decrease',
        initiating_entity: 'system',
      })
      expect((e.reason_admin as { en: string }).en).toMatch(/^node re-attestation refused \(tpm\): .*quoted PCR values do not satisfy the required PCR policy/)
      expect(server.output()).toContain('Re-attestation of an attested node refused')
      // the agent keeps trying: announced once, and never the stranger
      await waitFor(
        'the agent to be refused again',
        () => (server.output().match(/Re-attestation of an attested node refused/g)?.length ?? 0) >= 2 || undefined,
        {
          timeoutMs: 60_000,
          hint,
        },
      )
      expect((await assurance()).map((x) => x.sub_id)).toEqual([{ format: 'uri', uri: agentId }])
      await agent.stop()
    } finally {
      await tpm2.stop()
    }
  }, 240_000)
})
