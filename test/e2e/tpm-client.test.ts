import { execFile } from 'node:child_process'
import { createHash, randomBytes, verify as cryptoVerify, X509Certificate, constants } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startSwtpm, type SwtpmInstance } from '../helpers/swtpm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'
import { createAk, createEk, loadAk, readEkCertificate, readNvCertificate, withEk } from '../../src/tpm/attest-client.js'
import { TpmClient, type AttestResult } from '../../src/tpm/client.js'
import { TPM_RC, TpmError } from '../../src/tpm/errors.js'
import { concatBytes, toHex } from '../../src/tpm/marshal.js'
import {
  TPM_ALG,
  TPM_CAP,
  TPM_NV_INDEX,
  TPM_PERSISTENT_HANDLE,
  TPM_PT,
  TPM_RH,
  TPM_ST,
  encodeTpm2bPublic,
  ecdsaSignatureP1363,
  pcrSelectionToBanks,
  publicKeyFromTpmtPublic,
  type TpmtPublic,
} from '../../src/tpm/structures.js'
import { SwtpmTcpTransport, openTransport } from '../../src/tpm/transport.js'
import { srkTemplateEcc } from '../../src/tpm/templates.js'

const execFileP = promisify(execFile)
const sha256 = (...b: Uint8Array[]) =>
  new Uint8Array(
    createHash('sha256')
      .update(concatBytes(...b))
      .digest(),
  )

/** Checks a TPMT_SIGNATURE over TPMS_ATTEST bytes with node crypto. */
function verifyAttest(pub: TpmtPublic, res: AttestResult): boolean {
  const key = publicKeyFromTpmtPublic(pub)
  const s = res.decodedSignature
  if (s.sigAlg === TPM_ALG.ECDSA) {
    if (pub.type !== TPM_ALG.ECC) return false
    return cryptoVerify('sha256', res.attest, { key, dsaEncoding: 'ieee-p1363' }, ecdsaSignatureP1363(s, pub.parameters.curveId))
  }
  return cryptoVerify('sha256', res.attest, { key, padding: constants.RSA_PKCS1_PADDING }, s.sig)
}

describe.runIf(requireTools('swtpm', 'swtpm_setup', 'tpm2_makecredential', 'tpm2_pcrread'))('TpmClient against swtpm', () => {
  let sw: SwtpmInstance
  let client: TpmClient
  const tmp = tempDir('tpmc-')

  beforeAll(async () => {
    sw = await startSwtpm({ withEkCert: true })
    client = new TpmClient(openTransport(sw.transportUri))
  })
  afterAll(async () => {
    await client?.close()
    await sw?.stop()
    tmp.cleanup()
  })

  it('1. startup treats TPM_RC_INITIALIZE as success; the raw code decodes', async () => {
    await client.startup()
    const err = await client.execute('Startup', [], undefined, new Uint8Array([0, 0]), 0).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(TpmError)
    expect((err as TpmError).rc).toBe(TPM_RC.INITIALIZE)
    expect((err as TpmError).message).toContain('TPM_RC_INITIALIZE (0x100)')
    expect((err as TpmError).code).toBe('ERR_TPM')
  })

  it('2. getCapability: properties, PCR banks, persistent handles', async () => {
    expect(await client.getProperty(TPM_PT.NV_BUFFER_MAX)).toBe(1024)
    expect(await client.getProperty(TPM_PT.HR_TRANSIENT_MIN)).toBe(3)
    const { data } = await client.getCapability(TPM_CAP.TPM_PROPERTIES, TPM_PT.FAMILY_INDICATOR, 4)
    expect(data.capability === TPM_CAP.TPM_PROPERTIES && data.properties[0]).toEqual({ property: TPM_PT.FAMILY_INDICATOR, value: 0x322e3000 })
    const banks = pcrSelectionToBanks(await client.getPcrBanks())
    expect(banks.map((b) => b.hash)).toEqual(expect.arrayContaining([TPM_ALG.SHA1, TPM_ALG.SHA256]))
    expect(await client.getHandles(0x81000000)).toEqual([TPM_PERSISTENT_HANDLE.EK_RSA, TPM_PERSISTENT_HANDLE.EK_ECC_SWTPM])
  })

  it('3. pcrRead loops past 8 digests; reset and extend PCR 16 and 23', async () => {
    const all = await client.pcrRead([
      { hash: TPM_ALG.SHA1, pcrs: [...Array(24).keys()] },
      { hash: TPM_ALG.SHA256, pcrs: [...Array(24).keys()] },
    ])
    expect(all.values).toHaveLength(48)
    expect(all.values[0]).toEqual({ hash: TPM_ALG.SHA1, pcr: 0, digest: new Uint8Array(20) })
    expect(all.values[47]!.pcr).toBe(23)
    for (const pcr of [16, 23]) {
      await client.pcrReset(pcr)
      const d = sha256(new TextEncoder().encode(`warrant-${pcr}`))
      await client.pcrExtend(pcr, TPM_ALG.SHA256, d)
      const { values } = await client.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [pcr] }])
      expect(values[0]!.digest).toEqual(sha256(new Uint8Array(32), d))
    }
  })

  it('4. EK certificates chain to the swtpm local CA and match the EK keys', async () => {
    const rsaDer = await readEkCertificate(client, 'rsa')
    expect(rsaDer).toBeDefined()
    expect(Buffer.from(rsaDer!)).toEqual(readFileSync(join(sw.ekCertDir, 'ek-rsa2048.crt')))
    const root = new X509Certificate(readFileSync(join(sw.caDir, 'swtpm-localca-rootca-cert.pem')))
    const inter = new X509Certificate(readFileSync(join(sw.caDir, 'issuercert.pem')))
    const ekCert = new X509Certificate(rsaDer!)
    expect(ekCert.verify(inter.publicKey)).toBe(true)
    expect(ekCert.checkIssued(inter)).toBe(true)
    expect(inter.verify(root.publicKey)).toBe(true)
    expect(root.verify(root.publicKey)).toBe(true)
    expect(ekCert.verify(root.publicKey)).toBe(false)

    await withEk(client, 'rsa', async (ek) => {
      expect(publicKeyFromTpmtPublic(ek.public).equals(ekCert.publicKey)).toBe(true)
      const persisted = await client.readPublic(TPM_PERSISTENT_HANDLE.EK_RSA)
      expect(persisted.publicBytes).toEqual(ek.publicBytes)
      expect(persisted.name).toEqual(ek.name)
    })

    const eccDer = await readEkCertificate(client, 'ecc')
    expect(Buffer.from(eccDer!)).toEqual(readFileSync(join(sw.ekCertDir, 'ek-secp384r1.crt')))
    const eccCert = new X509Certificate(eccDer!)
    expect(eccCert.verify(inter.publicKey)).toBe(true)
    const eccEk = await client.readPublic(TPM_PERSISTENT_HANDLE.EK_ECC_SWTPM)
    expect(publicKeyFromTpmtPublic(eccEk.public).equals(eccCert.publicKey)).toBe(true)

    expect(await readNvCertificate(client, TPM_NV_INDEX.EK_NONCE_ECC)).toBeUndefined()
    // chunked NV_Read gives the same bytes with small chunks
    const small = await client.nvRead(TPM_NV_INDEX.EK_CERT_RSA, { chunk: 100 })
    expect(small).toEqual(rsaDer)
  })

  it.each(['ecc', 'rsa'] as const)('5. %s AK: creation certified by itself, quote verifies against PCR values', async (kind) => {
    const qualifyingData = new Uint8Array(randomBytes(32))
    const ak = await createAk(client, kind, { qualifyingData })
    try {
      expect(ak.public.objectAttributes).toBe(0x00050472)
      expect(sha256(ak.creationData)).toEqual(ak.creationHash)
      const cc = ak.certifyCreation
      expect(cc.decodedAttest.attested).toEqual({ type: TPM_ST.ATTEST_CREATION, objectName: ak.name, creationHash: ak.creationHash })
      expect(cc.decodedAttest.extraData).toEqual(qualifyingData)
      expect(verifyAttest(ak.public, cc)).toBe(true)

      const nonce = new Uint8Array(randomBytes(32))
      const sel = [
        { hash: TPM_ALG.SHA256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 16, 23] },
        { hash: TPM_ALG.SHA1, pcrs: [16] },
      ]
      const q = await client.quote(ak.handle, nonce, sel)
      expect(q.decodedAttest.type).toBe(TPM_ST.ATTEST_QUOTE)
      expect(q.decodedAttest.extraData).toEqual(nonce)
      expect(verifyAttest(ak.public, q)).toBe(true)
      const tampered = q.attest.slice()
      tampered[tampered.length - 1]! ^= 1
      expect(verifyAttest(ak.public, { ...q, attest: tampered })).toBe(false)
      const { values } = await client.pcrRead(sel)
      const att = q.decodedAttest.attested
      expect(att.type === TPM_ST.ATTEST_QUOTE && pcrSelectionToBanks(att.pcrSelect)).toEqual(sel)
      expect(att.type === TPM_ST.ATTEST_QUOTE && att.pcrDigest).toEqual(sha256(...values.map((v) => v.digest)))
    } finally {
      await client.flushContext(ak.handle)
    }
    // the blobs reload under a re-created SRK with the same name
    const again = await loadAk(client, ak)
    expect(again.name).toEqual(ak.name)
    await client.flushContext(again.handle)
  })

  it.each(['rsa', 'ecc'] as const)('6. activateCredential (%s EK) of a tpm2_makecredential blob', async (kind) => {
    const ek = await createEk(client, kind)
    const ak = await createAk(client, 'ecc')
    try {
      const ekPub = join(tmp.dir, `ek-${kind}.pub`)
      writeFileSync(ekPub, encodeTpm2bPublic(ek.publicBytes))
      const secret = new Uint8Array(randomBytes(32))
      const makeCred = async (name: Uint8Array): Promise<{ blob: Uint8Array; secret: Uint8Array }> => {
        const secretFile = join(tmp.dir, 'secret.bin')
        const out = join(tmp.dir, `cred-${kind}.out`)
        writeFileSync(secretFile, secret)
        await execFileP('tpm2_makecredential', ['-T', 'none', '-u', ekPub, '-s', secretFile, '-n', toHex(name), '-o', out])
        let b: Uint8Array = new Uint8Array(readFileSync(out))
        if (toHex(b.subarray(0, 4)) === 'badcc0de') b = b.subarray(8) // tpm2-tools file header
        const dv = new DataView(b.buffer, b.byteOffset)
        const idLen = dv.getUint16(0)
        const blob = b.slice(2, 2 + idLen)
        const secLen = dv.getUint16(2 + idLen)
        return { blob, secret: b.slice(4 + idLen, 4 + idLen + secLen) }
      }
      const good = await makeCred(ak.name)
      expect(await client.activateCredential(ak.handle, ek.handle, good.blob, good.secret)).toEqual(secret)

      const wrongName = ak.name.slice()
      wrongName[5]! ^= 0xff
      const bad = await makeCred(wrongName)
      const err = await client.activateCredential(ak.handle, ek.handle, bad.blob, bad.secret).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TpmError)
      expect((err as TpmError).base).toBe(TPM_RC.INTEGRITY)
      expect((err as TpmError).decoded.parameter).toBe(1)
      expect((err as TpmError).message).toContain('TPM_RC_INTEGRITY (0x1df) on parameter 1')
      // the failed activation's policy session was flushed
      expect(await client.getHandles(0x02000000)).toEqual([])
    } finally {
      await client.flushContext(ak.handle)
      await client.flushContext(ek.handle)
    }
  })

  it('7. 20 AK create/flush cycles leave no transient objects; a 4th object gives TPM_RC_OBJECT_MEMORY', async () => {
    for (let i = 0; i < 20; i++) {
      const ak = await createAk(client, i % 2 === 0 ? 'ecc' : 'rsa')
      await client.flushContext(ak.handle)
    }
    expect(await client.getHandles(0x80000000)).toEqual([])
    const held: number[] = []
    try {
      for (let i = 0; i < 3; i++) held.push((await client.createPrimary(TPM_RH.OWNER, srkTemplateEcc())).handle)
      const err = await client.createPrimary(TPM_RH.OWNER, srkTemplateEcc()).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(TpmError)
      expect((err as TpmError).rc).toBe(TPM_RC.OBJECT_MEMORY)
      expect((err as TpmError).message).toContain('TPM_RC_OBJECT_MEMORY (0x902)')
    } finally {
      expect(await client.flushAllTransient()).toBe(held.length)
    }
  })

  it('8. raw and mssim framing, and tpm2-tools sees the same PCRs after we close', async () => {
    await client.close()
    for (const framing of ['raw', 'mssim'] as const) {
      const c = new TpmClient(new SwtpmTcpTransport({ host: '127.0.0.1', port: sw.port, framing }))
      // concurrent commands queue on one connection
      const [a, b] = await Promise.all([c.getProperty(TPM_PT.NV_BUFFER_MAX), c.getProperty(TPM_PT.HR_TRANSIENT_MIN)])
      expect([a, b]).toEqual([1024, 3])
      await c.close()
    }
    const { stdout } = await execFileP('tpm2_pcrread', ['-T', sw.tcti, 'sha256:16'])
    client = new TpmClient(openTransport(`${sw.transportUri}?framing=raw`))
    const { values } = await client.pcrRead([{ hash: TPM_ALG.SHA256, pcrs: [16] }])
    expect(stdout.toLowerCase()).toContain(toHex(values[0]!.digest))
  })
})
