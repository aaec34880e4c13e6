import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createTpmAgentAttestor } from '../../attestors/node/tpm/agent.js'
import { parseTpmAgentConfig, parseTpmServerConfig } from '../../attestors/node/tpm/config.js'
import { decodeAnswer, decodeChallenge, encodeAnswer, encodeChallenge } from '../../attestors/node/tpm/payload.js'
import { tpmServerPlugin } from '../../attestors/node/tpm/server.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { TpmClient } from '../../src/tpm/client.js'
import { TPM_ALG } from '../../src/tpm/structures.js'
import { openTransport } from '../../src/tpm/transport.js'
import { systemClock } from '../../src/common/clock.js'
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js'
import { requireTools } from '../helpers/tools.js'

const td = TrustDomain.fromString('example.org')
const PCRS = [0, 1, 2, 3, 4, 5, 6, 7, 16]

describe.runIf(requireTools('swtpm', 'swtpm_setup'))('tpm node attestation against swtpm', () => {
  let tpm: SwtpmInstance
  let pcr16 = ''
  let caFiles: string[]
  const clock = systemClock
  const deps = { log: nullLogger, clock, trustDomain: td, dataDir: '/nonexistent' }

  beforeAll(async () => {
    tpm = await startSwtpm()
    const client = new TpmClient(openTransport(tpm.transportUri))
    try {
      await client.pcrExtend(16, TPM_ALG.SHA256, createHash('sha256').update('warrant e2e').digest())
      const read = await client.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [16] }])
      pcr16 = Buffer.from(read.values[0]!.digest).toString('hex')
    } finally {
      await client.close()
    }
    caFiles = [join(tpm.caDir, 'swtpm-localca-rootca-cert.pem'), join(tpm.caDir, 'issuercert.pem')]
  })
  afterAll(async () => {
    await tpm?.stop()
  })

  const agentFor = (ekType: 'rsa' | 'ecc' = 'rsa') =>
    createTpmAgentAttestor(parseTpmAgentConfig({ swtpm: `127.0.0.1:${tpm.port}`, ek_type: ekType }), { log: nullLogger })

  it('attests an agent whose EK certificate chains to the swtpm local CA', async () => {
    const server = await tpmServerPlugin.create(
      parseTpmServerConfig({ ek_ca_paths: caFiles, pcrs: PCRS, pcr_policies: { e2e: { '16': pcr16 } }, require_pcr_policy: 'e2e' }),
      deps,
    )
    const agent = agentFor()
    const res = await server.attest(await agent.payload({}), (c) => agent.answer(c, {}), {})
    const ekHash = res.agentId.toString().split('/').pop()!
    expect(res.agentId.toString()).toMatch(/^spiffe:\/\/example\.org\/warrant\/agent\/tpm\/[0-9a-f]{64}$/)
    expect(res.canReattest).toBe(true)
    const fps = caFiles.map((f) =>
      createHash('sha256')
        .update(Buffer.from(readFileSync(f, 'utf8').replace(/-----[^-]+-----|\s/g, ''), 'base64'))
        .digest('hex'),
    )
    expect(res.selectorValues).toEqual(
      expect.arrayContaining([
        `ek_hash:${ekHash}`,
        `ek_ca:${fps[1]}`,
        `ek_ca:${fps[0]}`,
        `pcr:sha256:16:${pcr16}`,
        `pcr:sha256:0:${'00'.repeat(32)}`,
        'pcr_policy:e2e',
      ]),
    )
    expect(res.selectorValues.filter((s) => s.startsWith('pcr:')).length).toBe(PCRS.length)

    // The same TPM re-attests to the same agent ID with a new AK.
    const again = await server.attest(await agent.payload({}), (c) => agent.answer(c, {}), {})
    expect(again.agentId.equals(res.agentId)).toBe(true)
  })

  it("parses swtpm's EK certificate with its critical TCG SAN and chains it to the local CA", async () => {
    const { parseEkCertificate, trustAnchorsFrom, verifyEkChain, parsePemCertificates } = await import('../../src/tpm/verify/ek.js')
    const ek = parseEkCertificate(readFileSync(join(tpm.ekCertDir, 'ek-rsa2048.crt')))
    expect(ek.tcg.model).toBe('swtpm')
    expect(ek.tcg.manufacturer).toMatch(/^id:/)
    const anchors = trustAnchorsFrom(caFiles.flatMap((file) => parsePemCertificates(readFileSync(file, 'utf8'))))
    expect(verifyEkChain(ek.cert, anchors, Date.now()).length).toBe(2)
  })

  it('attests an allow-listed ECC EK without a certificate chain', async () => {
    const probe = await tpmServerPlugin.create(parseTpmServerConfig({ ek_hash_allow_list: ['0'.repeat(64)], pcrs: [16] }), deps)
    const agent = agentFor('ecc')
    const err = await probe.attest(await agent.payload({}), (c) => agent.answer(c, {}), {}).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED', message: expect.stringMatching(/the EK is not allow-listed$/) })
    // Learn the EK hash the way an operator would (from the rejected agent's EK), then allow it.
    const payload = JSON.parse(Buffer.from(await agent.payload({})).toString()) as { ek_public: string }
    const { parseTpm2bPublic, publicKeyFromTpmtPublic } = await import('../../src/tpm/structures.js')
    const { publicKeyHash } = await import('../../src/tpm/verify/ek.js')
    const hash = publicKeyHash(publicKeyFromTpmtPublic(parseTpm2bPublic(Buffer.from(payload.ek_public, 'base64')).public))
    const server = await tpmServerPlugin.create(parseTpmServerConfig({ ek_hash_allow_list: [hash], pcrs: [16] }), deps)
    const res = await server.attest(await agent.payload({}), (c) => agent.answer(c, {}), {})
    expect(res.agentId.toString()).toBe(`spiffe://example.org/warrant/agent/tpm/${hash}`)
    expect(res.selectorValues).toEqual([`ek_hash:${hash}`, `pcr:sha256:16:${pcr16}`])
  })

  type Tamper = ((a: Uint8Array) => Uint8Array) | 'replay' | 'stale-nonce'
  const cases: { title: string; config: Record<string, unknown>; tamper: Tamper; reason: string }[] = [
    {
      title: 'a PCR policy that does not match',
      config: { pcr_policies: { golden: { '16': '11'.repeat(32) } }, require_pcr_policy: 'golden' },
      tamper: (a: Uint8Array) => a,
      reason: 'quoted PCR values do not satisfy the required PCR policy',
    },
    {
      title: 'a wrong activation answer',
      config: {},
      tamper: (a: Uint8Array) => {
        const d = decodeAnswer(a)
        return encodeAnswer({ ...d, activatedSecret: new Uint8Array(randomBytes(32)) })
      },
      reason: 'activated credential does not match the challenge',
    },
    {
      title: 'tampered PCR values',
      config: {},
      tamper: (a: Uint8Array) => {
        const d = decodeAnswer(a)
        d.pcrValues.set(16, new Uint8Array(32))
        return encodeAnswer(d)
      },
      reason: 'reported PCR values do not match the quoted digest',
    },
    {
      // The whole old answer: its secret was activated for another challenge.
      title: 'an answer replayed from another attestation',
      config: {},
      tamper: 'replay',
      reason: 'activated credential does not match the challenge',
    },
    {
      // The TPM activates this attestation's credential (so the secret is right)
      // and quotes with this attestation's AK, but over the nonce of an earlier
      // attestation: only the quote's qualifying data can tell.
      title: "a genuine quote over an earlier attestation's nonce",
      config: {},
      tamper: 'stale-nonce',
      reason: 'quote nonce does not match the challenge',
    },
  ]
  it.each(cases)('rejects $title, with the reason', async ({ config, tamper, reason }) => {
    const server = await tpmServerPlugin.create(parseTpmServerConfig({ ek_ca_paths: caFiles, pcrs: PCRS, ...config }), deps)
    const agent = agentFor()
    let old: { answer: Uint8Array; nonce: Uint8Array } | undefined
    if (tamper === 'replay' || tamper === 'stale-nonce') {
      await server.attest(
        await agent.payload({}),
        async (c) => {
          const answer = await agent.answer(c, {})
          old = { answer, nonce: decodeChallenge(c).nonce }
          return answer
        },
        {},
      )
    }
    const payload = await agent.payload({})
    const err = await server
      .attest(
        payload,
        async (c) => {
          if (tamper === 'replay') return old!.answer
          if (tamper === 'stale-nonce') {
            const challenge = decodeChallenge(c)
            expect(Buffer.from(challenge.nonce).equals(old!.nonce)).toBe(false)
            return agent.answer(encodeChallenge({ ...challenge, nonce: old!.nonce }), {})
          }
          return tamper(await agent.answer(c, {}))
        },
        {},
      )
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED', message: reason })
  })

  it('rejects an EK certificate that does not chain to the configured CA', async () => {
    const other = await startSwtpm()
    try {
      const server = await tpmServerPlugin.create(
        parseTpmServerConfig({ ek_ca_paths: [join(other.caDir, 'swtpm-localca-rootca-cert.pem'), join(other.caDir, 'issuercert.pem')], pcrs: [16] }),
        deps,
      )
      const agent = agentFor()
      const err = await server.attest(await agent.payload({}), (c) => agent.answer(c, {}), {}).catch((e: unknown) => e)
      expect(err).toMatchObject({ code: 'ERR_NODE_ATTESTATION_FAILED', message: 'EK certificate does not chain to a configured CA' })
    } finally {
      await other.stop()
    }
  })
})
