import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import {
  claimRuns,
  leafJobAt,
  packLeafJobs,
  packLeafOutcomes,
  signJob,
  unpackLeafOutcomes,
  type LeafJob,
  type LeafOutcome,
} from '../../../../src/server/ca/csr-jobs.js'
import { KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid, createX509SvidSync } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { createCsr, verifyCsr } from '../../../../src/spiffe/x509-svid/csr.js'

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 7 + seed) & 0xff)
const job = (csr: Uint8Array, spiffeId: string, dnsNames: string[] = []): LeafJob => ({
  csr,
  spiffeId,
  notBefore: 1_767_225_600_000,
  notAfter: 1_767_229_200_000 + csr.length,
  dnsNames,
})

async function newCa() {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const signer = new KeyObjectSigner(privateKey)
  const certificate = await createCaCertificate({
    trustDomain: TrustDomain.fromString('example.org'),
    publicKey,
    signer,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3_600_000),
  })
  return { signer, certificate }
}

describe('packed leaf jobs', () => {
  it('round-trip: CSR bytes, IDs, times and DNS names per job, on shared memory that a clone does not copy', () => {
    const jobs = [
      job(bytes(200, 1), 'spiffe://example.org/a', ['a.example.org', 'b.example.org']),
      job(bytes(1, 2), 'spiffe://example.org/b'),
      job(bytes(333, 3), 'spiffe://example.org/c'),
    ]
    const packed = packLeafJobs(jobs)
    for (const a of [packed.csrs, packed.ends, packed.times]) expect(a.buffer).toBeInstanceOf(SharedArrayBuffer)
    // A structured clone, as postMessage does: the clone sees the same memory.
    const received = structuredClone(packed)
    received.csrs[0] = 0xee
    expect(packed.csrs[0]).toBe(0xee)
    received.csrs[0] = jobs[0]!.csr[0]!
    const back = jobs.map((_, i) => leafJobAt(received, i))
    expect(back.map((j) => ({ ...j, csr: Buffer.from(j.csr).toString('hex') }))).toEqual(jobs.map((j) => ({ ...j, csr: Buffer.from(j.csr).toString('hex') })))
  })

  it('leave DNS names out when no job has any', () => {
    const packed = packLeafJobs([job(bytes(10, 1), 'spiffe://example.org/a')])
    expect(packed.dnsNames).toBeUndefined()
    expect(leafJobAt(packed, 0).dnsNames).toEqual([])
  })

  it('claims: disjoint runs of the chunk size until every position is taken, and at most `max` runs per call', () => {
    const claim = new Int32Array(new SharedArrayBuffer(4))
    const seen: number[] = []
    expect(claimRuns(claim, 10, 4, (i) => seen.push(i), 1)).toEqual([0, 4])
    expect(claimRuns(claim, 10, 4, (i) => seen.push(i))).toEqual([4, 8, 8, 10])
    expect(claimRuns(claim, 10, 4, (i) => seen.push(i))).toEqual([])
    expect(seen).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
  })

  it('answers: leaves by position with errors in place, and a short answer is ERR_INTERNAL for the missing items', () => {
    const outcomes: LeafOutcome[] = [bytes(50, 1), { code: 'ERR_CSR_INVALID', message: 'bad CSR' }, bytes(70, 2), { code: 'ERR_INTERNAL', message: 'boom' }]
    const { packed, transfer } = packLeafOutcomes(outcomes)
    const back = unpackLeafOutcomes(structuredClone(packed, { transfer }), 5)
    expect(Buffer.from(back[0] as Uint8Array).equals(Buffer.from(bytes(50, 1)))).toBe(true)
    expect(back[1]).toEqual({ code: 'ERR_CSR_INVALID', message: 'bad CSR' })
    expect(Buffer.from(back[2] as Uint8Array).equals(Buffer.from(bytes(70, 2)))).toBe(true)
    expect(back[3]).toEqual({ code: 'ERR_INTERNAL', message: 'boom' })
    expect(back[4]).toEqual({ code: 'ERR_INTERNAL', message: 'CSR verifier worker answered short' })
  })
})

describe('signJob', () => {
  it('signs the CSR key with the job ID, validity and DNS names; refuses a tampered CSR and an ID that does not parse', async () => {
    const ca = await newCa()
    const csr = await createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey })
    const leaf = signJob(job(csr, 'spiffe://example.org/w', ['w.example.org']), ca, {})
    expect(leaf).toBeInstanceOf(Uint8Array)
    const cert = new X509Certificate(leaf as Uint8Array)
    expect(cert.verify(new X509Certificate(ca.certificate).publicKey)).toBe(true)
    expect(cert.subjectAltName).toBe('URI:spiffe://example.org/w, DNS:w.example.org')
    expect(Buffer.from(cert.publicKey.export({ format: 'der', type: 'spki' })).equals(Buffer.from(verifyCsr(csr).spki))).toBe(true)
    expect(Date.parse(cert.validTo)).toBe(Math.floor(job(csr, '').notAfter / 1000) * 1000)
    const tampered = csr.slice()
    tampered[tampered.length - 2]! ^= 1
    expect(signJob(job(tampered, 'spiffe://example.org/w'), ca, {})).toMatchObject({ code: 'ERR_CSR_INVALID' })
    expect(signJob(job(csr, 'not a spiffe id'), ca, {})).toMatchObject({ code: expect.stringMatching(/^ERR_/) })
  })
})

describe('createX509SvidSync', () => {
  it('builds the certificate createX509Svid builds, signed without a promise', async () => {
    const ca = await newCa()
    const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const opts = {
      spiffeId: SpiffeId.fromString('spiffe://example.org/s'),
      publicKey,
      signer: ca.signer,
      issuer: { certificate: ca.certificate },
      notBefore: new Date(1_767_225_600_000),
      notAfter: new Date(1_767_229_200_000),
      dnsNames: ['s.example.org'],
    }
    const a = new X509Certificate(createX509SvidSync(opts))
    const b = new X509Certificate(await createX509Svid(opts))
    expect(a.verify(new X509Certificate(ca.certificate).publicKey)).toBe(true)
    for (const k of ['subjectAltName', 'validFrom', 'validTo', 'issuer', 'keyUsage', 'ca'] as const) expect(a[k]).toEqual(b[k])
    expect(a.publicKey.equals(b.publicKey)).toBe(true)
    expect(a.serialNumber).not.toBe(b.serialNumber)
  })
})
