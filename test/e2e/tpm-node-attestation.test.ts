/**
 * TPM node attestation end to end: a server process with the `tpm` node
 * attestor (EK CA = the swtpm local CA, a PCR policy) and an agent process
 * attesting with swtpm; the agent is listed with its tpm selectors, and an
 * entry parented to it reaches a workload through the Workload API. A second
 * server requiring a PCR policy the swtpm does not satisfy refuses the agent.
 * Renewal is re-attestation: a PCR extended after attestation shows up in the
 * agent's selectors at its next renewal.
 */
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { TpmClient } from '../../src/tpm/client.js'
import { TPM_ALG } from '../../src/tpm/structures.js'
import { openTransport } from '../../src/tpm/transport.js'
import { E2eAgent, E2eServer, fetchX509Until, waitFor } from '../helpers/e2e-cluster.js'
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const TD = 'tpm.example'
const ZERO = '00'.repeat(32)
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
})
