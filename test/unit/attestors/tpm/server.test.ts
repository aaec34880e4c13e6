import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { parseTpmAgentConfig, parseTpmServerConfig } from '../../../../attestors/node/tpm/config.js'
import { decodeChallenge, encodeAnswer, encodePayload } from '../../../../attestors/node/tpm/payload.js'
import { createTpmServerAttestor } from '../../../../attestors/node/tpm/server.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { TPM_ALG, TPM_ST, TPMA_OBJECT, encodeTpm2bPublic, encodeTpmsCreationData, pcrSelection, tpmHash } from '../../../../src/tpm/structures.js'
import { publicKeyHash } from '../../../../src/tpm/verify/ek.js'
import { AK_ATTRS, EK_ATTRS, attestBytes, softActivateCredential, softEccKey, softQuote, softRsaKey, softSign, type SoftKey } from '../../tpm/verify/soft-tpm.js'

const td = TrustDomain.fromString('example.org')
const deps = { log: nullLogger, clock: { now: () => Date.now() }, trustDomain: td }
const FAILED = { code: 'ERR_NODE_ATTESTATION_FAILED' }
const PCR16 = new Uint8Array(randomBytes(32))

/** A software agent over soft keys, with hooks to misbehave. */
function softAgent(
  ek: SoftKey,
  ak: SoftKey,
  opts: { certifySigner?: SoftKey; creationData?: boolean; badSecret?: boolean; nonce?: Uint8Array; pcr16?: Uint8Array; dropPcr?: number; extraPcr?: number; tamperPcr?: number } = {},
) {
  const creationData = encodeTpmsCreationData({
    pcrSelect: pcrSelection([]),
    pcrDigest: tpmHash(TPM_ALG.SHA256),
    locality: 0,
    parentNameAlg: TPM_ALG.SHA256,
    parentName: new Uint8Array(34),
    parentQualifiedName: new Uint8Array(34),
    outsideInfo: new Uint8Array(0),
  })
  const certify = attestBytes({ type: TPM_ST.ATTEST_CREATION, objectName: ak.name, creationHash: tpmHash(TPM_ALG.SHA256, creationData) }, new Uint8Array(0))
  const payload = encodePayload({
    ekPublic: encodeTpm2bPublic(ek.bytes),
    akPublic: encodeTpm2bPublic(ak.bytes),
    akCreationData: opts.creationData ? creationData.map((b, i) => (i === creationData.length - 10 ? b ^ 1 : b)) : creationData,
    akCreationAttest: certify,
    akCreationSignature: softSign(opts.certifySigner ?? ak, certify),
  })
  const answer = async (bytes: Uint8Array): Promise<Uint8Array> => {
    const c = decodeChallenge(bytes)
    const secret = softActivateCredential(ek, ak.name, c.credentialBlob, c.encryptedSecret)
    const values = new Map(c.pcrs.map((i) => [i, i === 16 ? opts.pcr16 ?? PCR16 : new Uint8Array(32)]))
    const q = softQuote(ak, opts.nonce ?? c.nonce, values)
    if (opts.dropPcr !== undefined) values.delete(opts.dropPcr)
    if (opts.extraPcr !== undefined) values.set(opts.extraPcr, new Uint8Array(32))
    if (opts.tamperPcr !== undefined) values.set(opts.tamperPcr, new Uint8Array(32).fill(0xaa))
    return encodeAnswer({ activatedSecret: opts.badSecret ? new Uint8Array(randomBytes(32)) : secret, quoteAttest: q.attest, quoteSignature: q.signature, pcrValues: values })
  }
  return { payload, answer }
}

describe('tpm server attestor (software TPM)', () => {
  const ek = softRsaKey({ ek: true })
  const ak = softEccKey()
  const hash = publicKeyHash(ek.publicKey)
  const config = (extra: Record<string, unknown> = {}) =>
    parseTpmServerConfig({ ek_hash_allow_list: [hash], pcrs: [0, 16], pcr_policies: { golden: { '16': Buffer.from(PCR16).toString('hex') }, other: { '0': '11'.repeat(32) } }, ...extra })

  it('attests an allow-listed EK and reports selectors', async () => {
    const agent = softAgent(ek, ak)
    const res = await createTpmServerAttestor(config({ require_pcr_policy: 'golden' }), { roots: [], intermediates: [] }, deps).attest(agent.payload, agent.answer, {})
    expect(res.agentId.toString()).toBe(`spiffe://example.org/warrant/agent/tpm/${hash}`)
    expect(res.selectorValues).toEqual([`ek_hash:${hash}`, `pcr:sha256:0:${'00'.repeat(32)}`, `pcr:sha256:16:${Buffer.from(PCR16).toString('hex')}`, 'pcr_policy:golden'])
    expect(res.canReattest).toBe(true)
  })

  const cases: { title: string; agent: () => ReturnType<typeof softAgent>; extra?: Record<string, unknown>; reason: string; challenged: boolean }[] = [
    { title: 'an EK that is not allow-listed', agent: () => softAgent(softRsaKey({ ek: true }), ak), reason: 'no EK certificate and the EK is not allow-listed', challenged: false },
    { title: 'an AK without restricted', agent: () => softAgent(ek, softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.restricted })), reason: 'AK attribute restricted is not set', challenged: false },
    { title: 'an AK without fixedTPM', agent: () => softAgent(ek, softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.fixedTPM })), reason: 'AK attribute fixedTPM is not set', challenged: false },
    {
      title: 'a creation certification by another key',
      agent: () => softAgent(ek, ak, { certifySigner: softEccKey() }),
      reason: 'AK creation certification signature is invalid',
      challenged: false,
    },
    {
      title: 'a creation certification of other creation data',
      agent: () => softAgent(ek, ak, { creationData: true }),
      reason: 'AK creation data does not match the certified creation hash',
      challenged: false,
    },
    { title: 'a wrong activation answer', agent: () => softAgent(ek, ak, { badSecret: true }), reason: 'activated credential does not match the challenge', challenged: true },
    { title: 'a quote over an old nonce', agent: () => softAgent(ek, ak, { nonce: new Uint8Array(randomBytes(32)) }), reason: 'quote nonce does not match the challenge', challenged: true },
    { title: 'a missing PCR value', agent: () => softAgent(ek, ak, { dropPcr: 0 }), reason: 'reported PCRs are not the requested selection', challenged: true },
    { title: 'an extra PCR value', agent: () => softAgent(ek, ak, { extraPcr: 7 }), reason: 'reported PCRs are not the requested selection', challenged: true },
    { title: 'PCR values reported for other indices', agent: () => softAgent(ek, ak, { dropPcr: 0, extraPcr: 7 }), reason: 'reported PCRs are not the requested selection', challenged: true },
    {
      title: 'a tampered PCR value',
      agent: () => softAgent(ek, ak, { tamperPcr: 16 }),
      reason: 'reported PCR values do not match the quoted digest',
      challenged: true,
    },
    {
      title: 'PCRs that fail the required policy',
      agent: () => softAgent(ek, ak, { pcr16: new Uint8Array(32) }),
      extra: { require_pcr_policy: 'golden' },
      reason: 'quoted PCR values do not satisfy the required PCR policy',
      challenged: true,
    },
    {
      title: 'PCRs that satisfy another policy but not the required one',
      agent: () => softAgent(ek, ak),
      extra: { pcr_policies: { golden: { '16': Buffer.from(PCR16).toString('hex') }, zero: { '0': '00'.repeat(32) }, other: { '0': '11'.repeat(32) } }, require_pcr_policy: 'other' },
      reason: 'quoted PCR values do not satisfy the required PCR policy',
      challenged: true,
    },
    { title: 'an AK used as EK (not a decryption key)', agent: () => softAgent(softRsaKey(), ak), reason: 'EK public area is not a restricted decryption key', challenged: false },
    {
      title: 'an EK that can also sign',
      agent: () => softAgent(softRsaKey({ ek: true, attrs: EK_ATTRS | TPMA_OBJECT.sign }), ak),
      reason: 'EK public area is not a restricted decryption key',
      challenged: false,
    },
    ...(['fixedTPM', 'fixedParent', 'restricted', 'decrypt'] as const).map((bit) => ({
      title: `an EK without ${bit}`,
      agent: () => softAgent(softRsaKey({ ek: true, attrs: EK_ATTRS & ~TPMA_OBJECT[bit] }), ak),
      reason: 'EK public area is not a restricted decryption key',
      challenged: false,
    })),
  ]
  it.each(cases)('rejects $title, with the reason', async ({ agent, extra, reason, challenged }) => {
    const a = agent()
    let asked = false
    const answer = (c: Uint8Array) => {
      asked = true
      return a.answer(c)
    }
    const err = await createTpmServerAttestor(config(extra), { roots: [], intermediates: [] }, deps).attest(a.payload, answer, {}).catch((e: unknown) => e)
    expect(err).toMatchObject({ ...FAILED, message: reason })
    expect(asked).toBe(challenged)
  })

  it('reports every PCR policy the quote satisfies, and attests without a required one', async () => {
    const agent = softAgent(ek, ak)
    const c = config({ pcr_policies: { golden: { '16': Buffer.from(PCR16).toString('hex') }, zero: { '0': '00'.repeat(32) }, both: { '0': '00'.repeat(32), '16': Buffer.from(PCR16).toString('hex') }, other: { '0': '11'.repeat(32) } } })
    const res = await createTpmServerAttestor(c, { roots: [], intermediates: [] }, deps).attest(agent.payload, agent.answer, {})
    expect(res.selectorValues.filter((v) => v.startsWith('pcr_policy:'))).toEqual(['pcr_policy:golden', 'pcr_policy:zero', 'pcr_policy:both'])
  })

  it('does not challenge when the call is already aborted', async () => {
    const agent = softAgent(ek, ak)
    const ac = new AbortController()
    ac.abort(new Error('stop'))
    let asked = false
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(agent.payload, async (c) => {
        asked = true
        return agent.answer(c)
      }, { signal: ac.signal })
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ message: 'stop' })
    expect(asked).toBe(false)
  })

  it('passes an error of the challenge round trip on unchanged', async () => {
    const agent = softAgent(ek, ak)
    const gone = new IdentityError('ERR_HSM_UNAVAILABLE', 'stream closed')
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(agent.payload, async () => {
        throw gone
      }, {})
      .catch((e: unknown) => e)
    expect(err).toBe(gone)
  })

  it('rejects a malformed payload without sending a challenge, with the reason', async () => {
    let challenged = false
    const attestor = createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
    const err = await attestor
      .attest(new Uint8Array([1, 2, 3]), async () => {
        challenged = true
        return new Uint8Array(0)
      }, {})
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ ...FAILED, message: 'tpm: payload is not JSON' })
    expect((err as IdentityError).cause).toMatchObject({ code: 'ERR_ATTESTATION_PAYLOAD_INVALID' })
    expect(challenged).toBe(false)
  })

  it('rejects a malformed answer, with the reason', async () => {
    const agent = softAgent(ek, ak)
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(agent.payload, async () => new TextEncoder().encode('{"v":1}'), {})
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ ...FAILED, message: 'tpm: answer is missing activated_secret' })
  })

  it('carries the details of a verification failure', async () => {
    const agent = softAgent(ek, softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.sign }))
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps).attest(agent.payload, agent.answer, {}).catch((e: unknown) => e)
    expect(err).toMatchObject({ ...FAILED, message: 'AK attribute sign is not set', details: { attributes: AK_ATTRS & ~TPMA_OBJECT.sign } })
    expect((err as IdentityError).cause).toMatchObject({ code: 'ERR_TPM_VERIFICATION_FAILED' })
  })
})

describe('tpm config', () => {
  it('applies defaults', () => {
    const c = parseTpmServerConfig({ ek_hash_allow_list: ['AB'.repeat(32)] })
    expect(c).toMatchObject({ pcrBank: 'sha256', pcrs: [0, 1, 2, 3, 4, 5, 6, 7], ekHashAllowList: ['ab'.repeat(32)], ekCaPaths: [] })
    expect(parseTpmAgentConfig({})).toEqual({ transportUri: 'device:/dev/tpmrm0', ekType: 'rsa' })
    expect(parseTpmAgentConfig({ swtpm: '127.0.0.1:2321', ek_type: 'ecc' })).toEqual({ transportUri: 'swtpm:127.0.0.1:2321', ekType: 'ecc' })
  })

  it.each([
    { title: 'neither CA nor allow-list', raw: {} },
    { title: 'an unknown key', raw: { ek_hash_allow_list: ['ab'.repeat(32)], pcr: [1] } },
    { title: 'a short hash', raw: { ek_hash_allow_list: ['abcd'] } },
    { title: 'a PCR out of range', raw: { ek_hash_allow_list: ['ab'.repeat(32)], pcrs: [24] } },
    { title: 'duplicate PCRs', raw: { ek_hash_allow_list: ['ab'.repeat(32)], pcrs: [1, 1] } },
    { title: 'a policy on an unquoted PCR', raw: { ek_hash_allow_list: ['ab'.repeat(32)], pcrs: [0], pcr_policies: { p: { '16': '00'.repeat(32) } } } },
    { title: 'a policy value of the wrong size', raw: { ek_hash_allow_list: ['ab'.repeat(32)], pcrs: [0], pcr_policies: { p: { '0': '00'.repeat(20) } } } },
    { title: 'a required policy that does not exist', raw: { ek_hash_allow_list: ['ab'.repeat(32)], require_pcr_policy: 'nope' } },
  ])('rejects a server config with $title', ({ raw }) => {
    expect(() => parseTpmServerConfig(raw)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })

  it.each([
    { title: 'device and swtpm together', raw: { device: '/dev/tpmrm0', swtpm: 'localhost:2321' } },
    { title: 'a relative device', raw: { device: 'tpmrm0' } },
    { title: 'an unknown EK type', raw: { ek_type: 'dsa' } },
    { title: 'an unknown key', raw: { tcti: 'x' } },
  ])('rejects an agent config with $title', ({ raw }) => {
    expect(() => parseTpmAgentConfig(raw)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })
})
