import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mintJwtSvid, validateJwtSvid } from '../../../src/spiffe/jwt-svid/index.js'
import { generateKeyPair, KeyObjectSigner } from '../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { JwtSource } from '../../../src/workload-client/index.js'
import { FakeWorkloadApi } from './fake-workload-api.js'

const A = 'spiffe://a.test/web'
let fake: FakeWorkloadApi
const kp = generateKeyPair('ec-p256')
const signer = new KeyObjectSigner(kp.privateKey)
const jwks = (kid: string) => Buffer.from(JSON.stringify({ keys: [{ ...kp.publicKey.export({ format: 'jwk' }), kid }] }))
const T0 = Math.floor(Date.now() / 1000) * 1000

async function token(audience: string[], iatMs: number, ttlMs: number): Promise<string> {
  return mintJwtSvid({ spiffeId: SpiffeId.fromString(A), audience, signer, kid: 'k1', issuedAt: new Date(iatMs), expiresAt: new Date(iatMs + ttlMs) })
}

beforeAll(async () => {
  fake = await FakeWorkloadApi.start()
})
afterAll(async () => fake.stop())

describe('JwtSource', () => {
  it('caches a JWT-SVID per audience set until half its lifetime, then fetches a new one; concurrent calls share one fetch', async () => {
    fake.jwtBundles = { 'spiffe://a.test': jwks('k1') }
    let now = T0
    const src = await JwtSource.create({ socketPath: fake.socketPath, clock: { now: () => now } })
    try {
      const t1 = await token(['svc'], T0, 600_000)
      fake.jwtSvids = { svids: [{ spiffe_id: A, svid: t1, hint: '' }] }
      const before = fake.requests.length
      const [a, b] = await Promise.all([src.fetchJwtSvid({ audience: 'svc' }), src.fetchJwtSvid({ audience: ['svc'] })])
      expect(a).toBe(b)
      expect(fake.requests.length - before).toBe(1)
      now = T0 + 299_000
      expect(await src.fetchJwtSvid({ audience: 'svc' })).toBe(a)
      expect(fake.requests.length - before).toBe(1)
      const t2 = await token(['svc'], T0 + 300_000, 600_000)
      fake.jwtSvids = { svids: [{ spiffe_id: A, svid: t2, hint: '' }] }
      now = T0 + 300_000
      const c = await src.fetchJwtSvid({ audience: 'svc' })
      expect(c.token).toBe(t2)
      expect(fake.requests.length - before).toBe(2)
      // another audience set is another cache entry
      fake.jwtSvids = { svids: [{ spiffe_id: A, svid: await token(['other', 'svc'], T0, 600_000), hint: '' }] }
      expect((await src.fetchJwtSvid({ audience: ['svc', 'other'] })).audience).toEqual(['other', 'svc'])
      expect(fake.requests.length - before).toBe(3)
      // the source is a JwtBundleSource: it validates what the agent minted
      expect((await validateJwtSvid(t2, src, { audience: 'svc', now: new Date(T0 + 300_000) })).id.toString()).toBe(A)
      expect(src.getJwtBundleForTrustDomain(TrustDomain.fromString('a.test')).findKey('k1')).toBeDefined()
    } finally {
      await src.close()
    }
    await expect(src.fetchJwtSvid({ audience: 'svc' })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })

  it('a failed fetch is not cached', async () => {
    fake.jwtBundles = { 'spiffe://a.test': jwks('k1') }
    const src = await JwtSource.create({ socketPath: fake.socketPath })
    try {
      fake.jwtSvids = { code: 7, details: 'no identity issued' }
      await expect(src.fetchJwtSvid({ audience: 'x' })).rejects.toMatchObject({ code: 'ERR_NO_IDENTITY_ISSUED' })
      fake.jwtSvids = { svids: [{ spiffe_id: A, svid: await token(['x'], Date.now(), 600_000), hint: '' }] }
      await expect(src.fetchJwtSvid({ audience: 'x' })).resolves.toMatchObject({ audience: ['x'] })
    } finally {
      await src.close()
    }
  })
})
