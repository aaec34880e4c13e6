import 'reflect-metadata'
import { createHash, randomBytes, webcrypto } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import * as x509 from '@peculiar/x509'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { parseTpmAgentConfig, parseTpmServerConfig } from '../../../../attestors/node/tpm/config.js'
import { decodeChallenge, encodeAnswer, encodePayload } from '../../../../attestors/node/tpm/payload.js'
import { createTpmServerAttestor, loadEkAnchors, tpmServerPlugin } from '../../../../attestors/node/tpm/server.js'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { IdentityError } from '../../../../src/errors/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { TPM_ALG, TPM_ST, TPMA_OBJECT, encodeTpm2bPublic, encodeTpmsCreationData, pcrSelection, tpmHash } from '../../../../src/tpm/structures.js'
import { publicKeyHash } from '../../../../src/tpm/verify/ek.js'
import { tempDir } from '../../../helpers/temp.js'
import {
  AK_ATTRS,
  EK_ATTRS,
  attestBytes,
  softActivateCredential,
  softEccKey,
  softQuote,
  softRsaKey,
  softSign,
  type SoftKey,
} from '../../tpm/verify/soft-tpm.js'

const td = TrustDomain.fromString('example.org')
const deps = { log: nullLogger, clock: { now: () => Date.now() }, trustDomain: td }
const FAILED = { code: 'ERR_NODE_ATTESTATION_FAILED' }
const PCR16 = new Uint8Array(randomBytes(32))

/** A software agent over soft keys, with hooks to misbehave. */
function softAgent(
  ek: SoftKey,
  ak: SoftKey,
  opts: {
    ekCert?: Uint8Array
    certifySigner?: SoftKey
    creationData?: boolean
    badSecret?: boolean
    nonce?: Uint8Array
    pcr16?: Uint8Array
    dropPcr?: number
    extraPcr?: number
    tamperPcr?: number
  } = {},
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
    ...(opts.ekCert === undefined ? {} : { ekCert: opts.ekCert }),
    ekPublic: encodeTpm2bPublic(ek.bytes),
    akPublic: encodeTpm2bPublic(ak.bytes),
    akCreationData: opts.creationData ? creationData.map((b, i) => (i === creationData.length - 10 ? b ^ 1 : b)) : creationData,
    akCreationAttest: certify,
    akCreationSignature: softSign(opts.certifySigner ?? ak, certify),
  })
  const answer = async (bytes: Uint8Array): Promise<Uint8Array> => {
    const c = decodeChallenge(bytes)
    const secret = softActivateCredential(ek, ak.name, c.credentialBlob, c.encryptedSecret)
    const values = new Map(c.pcrs.map((i) => [i, i === 16 ? (opts.pcr16 ?? PCR16) : new Uint8Array(32)]))
    const q = softQuote(ak, opts.nonce ?? c.nonce, values)
    if (opts.dropPcr !== undefined) values.delete(opts.dropPcr)
    if (opts.extraPcr !== undefined) values.set(opts.extraPcr, new Uint8Array(32))
    if (opts.tamperPcr !== undefined) values.set(opts.tamperPcr, new Uint8Array(32).fill(0xaa))
    return encodeAnswer({
      activatedSecret: opts.badSecret ? new Uint8Array(randomBytes(32)) : secret,
      quoteAttest: q.attest,
      quoteSignature: q.signature,
      pcrValues: values,
    })
  }
  return { payload, answer }
}

describe('tpm server attestor (software TPM)', () => {
  const ek = softRsaKey({ ek: true })
  const ak = softEccKey()
  const hash = publicKeyHash(ek.publicKey)
  const config = (extra: Record<string, unknown> = {}) =>
    parseTpmServerConfig({
      ek_hash_allow_list: [hash],
      pcrs: [0, 16],
      pcr_policies: { golden: { '16': Buffer.from(PCR16).toString('hex') }, other: { '0': '11'.repeat(32) } },
      ...extra,
    })

  it('attests an allow-listed EK and reports selectors', async () => {
    const agent = softAgent(ek, ak)
    const res = await createTpmServerAttestor(config({ require_pcr_policy: 'golden' }), { roots: [], intermediates: [] }, deps).attest(
      agent.payload,
      agent.answer,
      {},
    )
    expect(res.agentId.toString()).toBe(`spiffe://example.org/warrant/agent/tpm/${hash}`)
    expect(res.selectorValues).toEqual([
      `ek_hash:${hash}`,
      `pcr:sha256:0:${'00'.repeat(32)}`,
      `pcr:sha256:16:${Buffer.from(PCR16).toString('hex')}`,
      'pcr_policy:golden',
    ])
    expect(res.canReattest).toBe(true)
  })

  const cases: { title: string; agent: () => ReturnType<typeof softAgent>; extra?: Record<string, unknown>; reason: string; challenged: boolean }[] = [
    {
      title: 'an EK that is not allow-listed',
      agent: () => softAgent(softRsaKey({ ek: true }), ak),
      reason: 'no EK certificate and the EK is not allow-listed',
      challenged: false,
    },
    {
      title: 'an AK without restricted',
      agent: () => softAgent(ek, softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.restricted })),
      reason: 'AK attribute restricted is not set',
      challenged: false,
    },
    {
      title: 'an AK without fixedTPM',
      agent: () => softAgent(ek, softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.fixedTPM })),
      reason: 'AK attribute fixedTPM is not set',
      challenged: false,
    },
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
    {
      title: 'a wrong activation answer',
      agent: () => softAgent(ek, ak, { badSecret: true }),
      reason: 'activated credential does not match the challenge',
      challenged: true,
    },
    {
      title: 'a quote over an old nonce',
      agent: () => softAgent(ek, ak, { nonce: new Uint8Array(randomBytes(32)) }),
      reason: 'quote nonce does not match the challenge',
      challenged: true,
    },
    { title: 'a missing PCR value', agent: () => softAgent(ek, ak, { dropPcr: 0 }), reason: 'reported PCRs are not the requested selection', challenged: true },
    {
      title: 'a missing last PCR value',
      agent: () => softAgent(ek, ak, { dropPcr: 16 }),
      reason: 'reported PCRs are not the requested selection',
      challenged: true,
    },
    {
      title: 'an EK certificate that is not DER',
      agent: () => softAgent(ek, ak, { ekCert: new Uint8Array([1, 2, 3]) }),
      reason: 'EK certificate is not a DER SEQUENCE',
      challenged: false,
    },
    { title: 'an extra PCR value', agent: () => softAgent(ek, ak, { extraPcr: 7 }), reason: 'reported PCRs are not the requested selection', challenged: true },
    {
      title: 'PCR values reported for other indices',
      agent: () => softAgent(ek, ak, { dropPcr: 0, extraPcr: 7 }),
      reason: 'reported PCRs are not the requested selection',
      challenged: true,
    },
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
      extra: {
        pcr_policies: { golden: { '16': Buffer.from(PCR16).toString('hex') }, zero: { '0': '00'.repeat(32) }, other: { '0': '11'.repeat(32) } },
        require_pcr_policy: 'other',
      },
      reason: 'quoted PCR values do not satisfy the required PCR policy',
      challenged: true,
    },
    {
      title: 'an AK used as EK (not a decryption key)',
      agent: () => softAgent(softRsaKey(), ak),
      reason: 'EK public area is not a restricted decryption key',
      challenged: false,
    },
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
    const err = await createTpmServerAttestor(config(extra), { roots: [], intermediates: [] }, deps)
      .attest(a.payload, answer, {})
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ ...FAILED, message: reason })
    expect(asked).toBe(challenged)
  })

  it('names the node in a refusal only once the credential activation proved its EK (a PCR policy or quote failure), never before', async () => {
    const refusal = async (a: ReturnType<typeof softAgent>, extra?: Record<string, unknown>) =>
      (await createTpmServerAttestor(config(extra), { roots: [], intermediates: [] }, deps)
        .attest(a.payload, a.answer, {})
        .catch((e: unknown) => e)) as IdentityError
    const id = `spiffe://example.org/warrant/agent/tpm/${hash}`
    const policy = await refusal(softAgent(ek, ak, { pcr16: new Uint8Array(32) }), { require_pcr_policy: 'golden' })
    expect(policy).toMatchObject({ ...FAILED, message: 'quoted PCR values do not satisfy the required PCR policy', details: { agent_id: id } })
    expect((await refusal(softAgent(ek, ak, { tamperPcr: 16 }))).details).toMatchObject({ agent_id: id })
    expect((await refusal(softAgent(ek, ak, { nonce: new Uint8Array(randomBytes(32)) }))).details).toMatchObject({ agent_id: id })
    // before: anyone may send another node's EK public area, so nothing is named
    expect((await refusal(softAgent(ek, ak, { badSecret: true }))).details?.agent_id).toBeUndefined()
    expect((await refusal(softAgent(ek, softEccKey({ attrs: AK_ATTRS & ~TPMA_OBJECT.restricted })))).details?.agent_id).toBeUndefined()
    expect((await refusal(softAgent(softRsaKey({ ek: true }), ak))).details?.agent_id).toBeUndefined()
  })

  it('reports every PCR policy the quote satisfies, and attests without a required one', async () => {
    const agent = softAgent(ek, ak)
    const c = config({
      pcr_policies: {
        golden: { '16': Buffer.from(PCR16).toString('hex') },
        zero: { '0': '00'.repeat(32) },
        both: { '0': '00'.repeat(32), '16': Buffer.from(PCR16).toString('hex') },
        half: { '0': '00'.repeat(32), '16': '11'.repeat(32) },
        other: { '0': '11'.repeat(32) },
      },
    })
    const res = await createTpmServerAttestor(c, { roots: [], intermediates: [] }, deps).attest(agent.payload, agent.answer, {})
    expect(res.selectorValues.filter((v) => v.startsWith('pcr_policy:'))).toEqual(['pcr_policy:golden', 'pcr_policy:zero', 'pcr_policy:both'])
  })

  it('rejects an EK certificate that is not DER with the payload error as cause', async () => {
    const agent = softAgent(ek, ak, { ekCert: new Uint8Array([1, 2, 3]) })
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(agent.payload, agent.answer, {})
      .catch((e: unknown) => e)
    expect((err as IdentityError).cause).toMatchObject({ code: 'ERR_TPM_PAYLOAD_INVALID' })
  })

  it('does not challenge when the call is already aborted', async () => {
    const agent = softAgent(ek, ak)
    const ac = new AbortController()
    ac.abort(new Error('stop'))
    let asked = false
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(
        agent.payload,
        async (c) => {
          asked = true
          return agent.answer(c)
        },
        { signal: ac.signal },
      )
      .catch((e: unknown) => e)
    expect(err).toMatchObject({ message: 'stop' })
    expect(asked).toBe(false)
  })

  it('passes an error of the challenge round trip on unchanged', async () => {
    const agent = softAgent(ek, ak)
    const gone = new IdentityError('ERR_HSM_UNAVAILABLE', 'stream closed')
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(
        agent.payload,
        async () => {
          throw gone
        },
        {},
      )
      .catch((e: unknown) => e)
    expect(err).toBe(gone)
  })

  it('rejects a malformed payload without sending a challenge, with the reason', async () => {
    let challenged = false
    const attestor = createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
    const err = await attestor
      .attest(
        new Uint8Array([1, 2, 3]),
        async () => {
          challenged = true
          return new Uint8Array(0)
        },
        {},
      )
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
    const err = await createTpmServerAttestor(config(), { roots: [], intermediates: [] }, deps)
      .attest(agent.payload, agent.answer, {})
      .catch((e: unknown) => e)
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

describe('tpm server attestor with EK CA files', () => {
  const tmp = tempDir('wtpmca-')
  const ek = softRsaKey({ ek: true })
  const ak = softEccKey()
  const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
  type Ca = { cert: x509.X509Certificate; keys: webcrypto.CryptoKeyPair }
  let root: Ca, inter: Ca, ekCert: Uint8Array
  const files = { root: '', inter: '' }

  async function makeCa(name: string, issuer?: Ca): Promise<Ca> {
    const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '0b',
      subject: name,
      issuer: issuer ? issuer.cert.subject : name,
      notBefore: new Date(Date.now() - 86_400_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey: keys.publicKey,
      signingKey: (issuer ?? { keys }).keys.privateKey,
      signingAlgorithm: EC,
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
        ...(issuer ? [await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey)] : []),
      ],
    })
    return { cert, keys }
  }

  beforeAll(async () => {
    x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])
    root = await makeCa('CN=tpm-test-root')
    inter = await makeCa('CN=tpm-test-ca', root)
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '01',
      subject: 'CN=ek',
      issuer: inter.cert.subject,
      notBefore: new Date(Date.now() - 86_400_000),
      notAfter: new Date(Date.now() + 86_400_000),
      publicKey: await webcrypto.subtle.importKey('spki', ek.publicKey.export({ format: 'der', type: 'spki' }), { name: 'RSA-OAEP', hash: 'SHA-256' }, true, [
        'encrypt',
      ]),
      signingKey: inter.keys.privateKey,
      signingAlgorithm: EC,
      extensions: [await x509.AuthorityKeyIdentifierExtension.create(inter.keys.publicKey)],
    })
    ekCert = new Uint8Array(cert.rawData)
    files.root = join(tmp.dir, 'root.pem')
    files.inter = join(tmp.dir, 'inter.pem')
    writeFileSync(files.root, root.cert.toString('pem'))
    writeFileSync(files.inter, inter.cert.toString('pem'))
  })
  afterAll(() => tmp.cleanup())

  const create = (raw: Record<string, unknown>) => tpmServerPlugin.create(parseTpmServerConfig({ pcrs: [0], ...raw }), { ...deps, dataDir: tmp.dir })
  const fingerprint = (c: Ca) => createHash('sha256').update(Buffer.from(c.cert.rawData)).digest('hex')

  it('attests an EK whose certificate chains to the configured CA files, with ek_ca selectors', async () => {
    const attestor = await create({ ek_ca_paths: [files.root, files.inter] })
    const agent = softAgent(ek, ak, { ekCert })
    const res = await attestor.attest(agent.payload, agent.answer, {})
    expect(res.selectorValues.slice(0, 3)).toEqual([`ek_hash:${publicKeyHash(ek.publicKey)}`, `ek_ca:${fingerprint(inter)}`, `ek_ca:${fingerprint(root)}`])
  })

  it('refuses an EK certificate when its intermediate is not configured, with the reason', async () => {
    const attestor = await create({ ek_ca_paths: [files.root] })
    const agent = softAgent(ek, ak, { ekCert })
    await expect(attestor.attest(agent.payload, agent.answer, {})).rejects.toMatchObject({
      ...FAILED,
      message: 'EK certificate does not chain to a configured CA',
    })
  })

  it('refuses CA files without a root, or that cannot be read', async () => {
    await expect(create({ ek_ca_paths: [files.inter] })).rejects.toMatchObject({
      code: 'ERR_CONFIG_INVALID',
      message: 'ek_ca_paths holds no self-signed root CA certificate',
    })
    const missing = join(tmp.dir, 'missing.pem')
    const err = await create({ ek_ca_paths: [missing] }).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'ERR_CONFIG_INVALID', message: `cannot read EK CA file ${missing}` })
    expect((err as IdentityError).cause).toMatchObject({ code: 'ENOENT' })
  })

  it('loads no anchors from no files', async () => {
    expect(await loadEkAnchors([])).toEqual({ roots: [], intermediates: [] })
    const anchors = await loadEkAnchors([files.root, files.inter])
    expect([anchors.roots.length, anchors.intermediates.length]).toEqual([1, 1])
  })
})
