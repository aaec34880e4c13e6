import { generateKeyPairSync } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CsrVerifierPool, inlineCsrVerifier, type CsrCheck, type CsrVerifier } from '../../../../src/server/ca/csr-verifier.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { createCsr, MAX_CSR_BYTES, verifyCsr } from '../../../../src/spiffe/x509-svid/csr.js'

const id = SpiffeId.fromString('spiffe://example.org/w')
const p256 = () => generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey

function tamper(der: Uint8Array): Uint8Array {
  const out = der.slice()
  out[out.length - 3] = out[out.length - 3]! ^ 0x01
  return out
}

const summary = (c: CsrCheck) => (c.ok ? `ok:${c.csr.spiffeId ?? '-'}` : c.error.code)

let good: Uint8Array[]
let mixed: { der: Uint8Array; want: string }[]

beforeAll(async () => {
  good = await Promise.all(Array.from({ length: 40 }, () => createCsr({ privateKey: p256(), spiffeId: id })))
  mixed = [
    { der: good[0]!, want: `ok:${id}` },
    { der: tamper(good[1]!), want: 'ERR_CSR_INVALID' },
    { der: new Uint8Array([0x30, 0x00]), want: 'ERR_CSR_INVALID' },
    { der: new Uint8Array(MAX_CSR_BYTES + 1), want: 'ERR_CSR_INVALID' },
    { der: await createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey }), want: 'ERR_CSR_INVALID' },
    { der: await createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey, dnsNames: ['a.example.org'] }), want: 'ok:-' },
    { der: good[2]!, want: `ok:${id}` },
  ]
})

describe.each([
  { name: 'inline', make: async (): Promise<CsrVerifier> => inlineCsrVerifier },
  { name: 'pool of 2, chunks of 3', make: async (): Promise<CsrVerifier> => CsrVerifierPool.start({ size: 2, chunkSize: 3 }) },
  { name: 'pool of 1', make: async (): Promise<CsrVerifier> => CsrVerifierPool.start({ size: 1 }) },
  { name: 'pool of 1, chunks of 1, workers only', make: async (): Promise<CsrVerifier> => CsrVerifierPool.start({ size: 1, chunkSize: 1, callerRuns: false }) },
])('$name', ({ make }) => {
  let v: CsrVerifier
  beforeAll(async () => {
    v = await make()
  })
  afterAll(async () => {
    await v.close()
  })

  it('answers per CSR, in order, with the codes verifyCsr gives', async () => {
    const got = (await Promise.all(v.verify(mixed.map((m) => m.der)))).map(summary)
    expect(got).toEqual(mixed.map((m) => m.want))
  })

  it('hands back the SPKI verifyCsr reads', async () => {
    const got = await Promise.all(v.verify(good))
    expect(got.map((c) => (c.ok ? Buffer.from(c.csr.spki).toString('hex') : c.error.code))).toEqual(
      good.map((g) => Buffer.from(verifyCsr(g).spki).toString('hex')),
    )
  })

  it('accepts views into a larger buffer and an empty batch', async () => {
    const big = Buffer.concat([Buffer.alloc(7), Buffer.from(good[3]!), Buffer.alloc(5)])
    const view = big.subarray(7, 7 + good[3]!.length)
    expect((await Promise.all(v.verify([view]))).map(summary)).toEqual([`ok:${id}`])
    expect(v.verify([])).toEqual([])
  })
})

describe('CsrVerifierPool lifecycle', () => {
  it('settles checks with ERR_UNAVAILABLE once closed, and closes twice safely', async () => {
    const pool = await CsrVerifierPool.start({ size: 1 })
    expect(pool.size).toBe(1)
    // The workers load the native ECDSA addon that npm ci builds.
    expect(pool.nativeEcdsa).toBe(true)
    const inFlight = pool.verify(good.slice(0, 20))
    await pool.close()
    for (const c of await Promise.all(inFlight)) if (!c.ok) expect(c.error.code).toBe('ERR_UNAVAILABLE')
    expect((await Promise.all(pool.verify([good[0]!]))).map(summary)).toEqual(['ERR_UNAVAILABLE'])
    await pool.close()
  })

  it('shares the work: the worker holds a few chunks, the calling thread takes queued ones when idle', async () => {
    const shared = await CsrVerifierPool.start({ size: 1, chunkSize: 1 })
    const only = await CsrVerifierPool.start({ size: 1, chunkSize: 1, callerRuns: false })
    try {
      const want = good.map(() => `ok:${id}`)
      expect((await Promise.all(shared.verify(good))).map(summary)).toEqual(want)
      expect(shared.stats.worker).toBeGreaterThan(0)
      expect(shared.stats.caller).toBeGreaterThan(0)
      expect(shared.stats.worker + shared.stats.caller).toBe(good.length)
      expect((await Promise.all(only.verify(good))).map(summary)).toEqual(want)
      expect(only.stats).toEqual({ worker: good.length, caller: 0 })
    } finally {
      await shared.close()
      await only.close()
    }
  })

  it('settles queued chunks with ERR_UNAVAILABLE once closed', async () => {
    const pool = await CsrVerifierPool.start({ size: 1, chunkSize: 1, callerRuns: false })
    const inFlight = pool.verify(good)
    await pool.close()
    const got = (await Promise.all(inFlight)).map(summary)
    // The worker held at most a few chunks; everything still queued is refused, nothing is lost.
    expect(got.filter((c) => c === 'ERR_UNAVAILABLE').length).toBeGreaterThanOrEqual(good.length - 6)
    expect(got.every((c) => c === 'ERR_UNAVAILABLE' || c === `ok:${id}`)).toBe(true)
  })

  it.each([{ size: 0 }, { size: 1.5 }, { size: 99 }, { chunkSize: 0 }])('RangeError for %o', async (opts) => {
    await expect(CsrVerifierPool.start(opts)).rejects.toBeInstanceOf(RangeError)
  })
})
