import { X509Certificate } from 'node:crypto'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { beforeEach, describe, expect, it } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { CaManager, type UpstreamAuthority } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore } from '../../../../src/server/datastore/types.js'
import type { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { validateJwtSvid } from '../../../../src/spiffe/jwt-svid/index.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate } from '../../../../src/spiffe/x509-svid/certificate-builder.js'
import { verifyX509Svid } from '../../../../src/spiffe/x509-svid/verify.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const td = TrustDomain.fromString('example.org')
const MIN = 60_000
const CA_TTL = 60 * MIN
const workload = SpiffeId.fromString('spiffe://example.org/ns/web')

let clock: FakeClock
let ds: DataStore
let km: MemoryKeyManager
let t0: number

function newCa(extra: { upstream?: UpstreamAuthority } = {}): CaManager {
  return new CaManager({
    trustDomain: td,
    keyManager: km,
    ds,
    clock,
    log: captureLogger(),
    caTtlMs: CA_TTL,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 120,
    ...extra,
  })
}

async function started(extra: { upstream?: UpstreamAuthority } = {}): Promise<CaManager> {
  const ca = newCa(extra)
  await ca.init()
  return ca
}

const fp = (der: Uint8Array) => new X509Certificate(der).fingerprint256
const bundleFps = (b: SpiffeBundle) => b.x509Authorities.map(fp).sort()
const activeCaDer = (ca: CaManager): Uint8Array => {
  const active = ca.slots().x509.find((s) => s.status === 'active')!
  const der = ca
    .bundle()
    .x509Authorities.find((d) => Buffer.from(new X509Certificate(d).fingerprint256.replaceAll(':', ''), 'hex').toString('hex') === active.fingerprint)
  if (!der) throw new Error('active CA not in bundle')
  return der
}
const leafKey = () => generateKeyPair('ec-p256').publicKey

async function issuerOf(ca: CaManager): Promise<X509Certificate> {
  const { chain } = await ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs: 5 * MIN })
  return new X509Certificate(chain[0]!)
}

function signedBy(leaf: X509Certificate, caDer: Uint8Array): boolean {
  const c = new X509Certificate(caDer)
  return leaf.checkIssued(c) && leaf.verify(c.publicKey)
}

async function keyIds(): Promise<string[]> {
  return (await km.listKeys()).map((k) => k.id).sort()
}

beforeEach(() => {
  clock = new FakeClock()
  t0 = clock.now()
  ds = createMemoryDataStore({ clock })
  km = new MemoryKeyManager()
})

describe('CaManager lifecycle', () => {
  it('init creates an active X.509 CA and JWT key and publishes bundle sequence 1 with the refresh hint', async () => {
    const ca = newCa()
    const seen: SpiffeBundle[] = []
    ca.onBundleChange((b) => seen.push(b))
    await ca.init()
    const slots = ca.slots()
    expect(slots.x509.map((s) => s.status)).toEqual(['active'])
    expect(slots.jwt.map((s) => s.status)).toEqual(['active'])
    expect(slots.x509[0]!.notAfter).toBe(t0 + CA_TTL)
    const b = ca.bundle()
    expect(b.sequenceNumber).toBe(1)
    expect(b.refreshHintSeconds).toBe(120)
    expect(b.x509Authorities).toHaveLength(1)
    expect([...b.jwtAuthorities.keys()]).toEqual([slots.jwt[0]!.kid])
    const doc = JSON.parse(b.marshal()) as Record<string, unknown>
    expect(doc.spiffe_refresh_hint).toBe(120)
    expect(doc.spiffe_sequence).toBe(1)
    const stored = await ds.bundles.get('example.org')
    expect(stored).toMatchObject({ sequence: 1, document: b.marshal() })
    expect(seen).toHaveLength(1)
    expect(await keyIds()).toHaveLength(2)
    const caCert = new X509Certificate(activeCaDer(ca))
    expect(caCert.ca).toBe(true)
    expect(caCert.checkIssued(caCert)).toBe(true) // self-signed root
  })

  it('bundle() before init throws ERR_NOT_CONFIGURED; signing too', async () => {
    const ca = newCa()
    expect(() => ca.bundle()).toThrow(expect.objectContaining({ code: 'ERR_NOT_CONFIGURED' }))
    await expect(ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs: MIN })).rejects.toMatchObject({ code: 'ERR_NOT_CONFIGURED' })
    await expect(ca.mintJwtSvid({ spiffeId: workload, audience: ['a'], ttlMs: MIN })).rejects.toMatchObject({ code: 'ERR_NOT_CONFIGURED' })
  })

  it('refuses a ca_ttl under a minute', () => {
    expect(
      () =>
        new CaManager({
          trustDomain: td,
          keyManager: km,
          ds,
          clock,
          log: captureLogger(),
          caTtlMs: 59_999,
          caKeyType: 'ec-p256',
          jwtKeyType: 'ec-p256',
          refreshHintSeconds: 1,
        }),
    ).toThrow(RangeError)
  })

  it('rotates through prepare (1/2), activate (5/6), retire and destroy', async () => {
    const ca = newCa()
    const events: SpiffeBundle[] = []
    ca.onBundleChange((b) => events.push(b))
    await ca.init()
    const oldCa = activeCaDer(ca)
    const oldKid = ca.slots().jwt[0]!.kid
    const oldKeys = await keyIds()
    expect(events).toHaveLength(1)

    // Before half-life: nothing changes.
    clock.set(t0 + 29 * MIN)
    expect(await ca.rotate()).toBe(false)
    expect(ca.bundle().sequenceNumber).toBe(1)
    expect(events).toHaveLength(1)

    // Half-life: next keys prepared and published; SVIDs still from the old CA.
    clock.set(t0 + 30 * MIN)
    expect(await ca.rotate()).toBe(true)
    expect(ca.slots().x509.map((s) => s.status)).toEqual(['active', 'prepared'])
    expect(ca.slots().jwt.map((s) => s.status)).toEqual(['active', 'prepared'])
    let b = ca.bundle()
    expect(b.sequenceNumber).toBe(2)
    expect(b.x509Authorities).toHaveLength(2)
    expect(b.jwtAuthorities.size).toBe(2)
    expect(events).toHaveLength(2)
    expect(signedBy(await issuerOf(ca), oldCa)).toBe(true)
    expect((await ca.mintJwtSvid({ spiffeId: workload, audience: ['x'], ttlMs: MIN })).kid).toBe(oldKid)
    const preparedFp = ca.slots().x509[1]!.fingerprint

    // Idempotent between thresholds.
    clock.set(t0 + 40 * MIN)
    expect(await ca.rotate()).toBe(false)
    expect(ca.bundle().sequenceNumber).toBe(2)

    // 5/6 of the life: the prepared keys become active. The published keys are
    // the same set, so the bundle (and its sequence) does not change.
    clock.set(t0 + 50 * MIN)
    expect(await ca.rotate()).toBe(true)
    expect(ca.slots().x509.map((s) => s.status)).toEqual(['old', 'active'])
    expect(ca.slots().x509[1]!.fingerprint).toBe(preparedFp)
    b = ca.bundle()
    expect(b.sequenceNumber).toBe(2)
    expect(events).toHaveLength(2)
    expect(b.x509Authorities).toHaveLength(2)
    const newCaDer = activeCaDer(ca)
    expect(fp(newCaDer)).not.toBe(fp(oldCa))
    const leaf = await issuerOf(ca)
    expect(signedBy(leaf, newCaDer)).toBe(true)
    expect(signedBy(leaf, oldCa)).toBe(false)
    const jwt = await ca.mintJwtSvid({ spiffeId: workload, audience: ['x'], ttlMs: MIN })
    expect(jwt.kid).not.toBe(oldKid)
    expect(decodeProtectedHeader(jwt.token).kid).toBe(jwt.kid)
    expect(b.jwtAuthorities.has(oldKid)).toBe(true)

    // Retired key stays published until its notAfter.
    clock.set(t0 + 59 * MIN)
    expect(await ca.rotate()).toBe(false)
    expect(bundleFps(ca.bundle())).toContain(fp(oldCa))
    expect(await keyIds()).toEqual(expect.arrayContaining(oldKeys))

    // At its notAfter it leaves the bundle and its keys are destroyed (and, the
    // active key being past its own half-life, the next one is prepared).
    clock.set(t0 + 60 * MIN)
    expect(await ca.rotate()).toBe(true)
    b = ca.bundle()
    expect(b.sequenceNumber).toBe(3)
    expect(ca.slots().x509.map((s) => s.status)).toEqual(['active', 'prepared'])
    expect(bundleFps(b)).not.toContain(fp(oldCa))
    expect(b.jwtAuthorities.has(oldKid)).toBe(false)
    const ids = await keyIds()
    for (const k of oldKeys) expect(ids).not.toContain(k)
    expect(ca.slots().x509.some((s) => s.status === 'old')).toBe(false)
    // Every bundle change was announced, and only those.
    expect(events.map((e) => e.sequenceNumber)).toEqual([1, 2, 3])
    expect((await ds.bundles.get('example.org'))?.sequence).toBe(3)
  })

  it('a restart over the same datastore and key manager keeps the keys and the sequence', async () => {
    const ca1 = await started()
    clock.set(t0 + 30 * MIN)
    await ca1.rotate()
    const before = ca1.bundle()
    expect(before.sequenceNumber).toBe(2)

    const ca2 = newCa()
    const events: SpiffeBundle[] = []
    ca2.onBundleChange((b) => events.push(b))
    await ca2.init()
    expect(ca2.bundle().sequenceNumber).toBe(2)
    expect(ca2.bundle().marshal()).toBe(before.marshal())
    expect(ca2.slots()).toEqual(ca1.slots())
    expect(events).toHaveLength(0)
    expect(await ca2.rotate()).toBe(false)
    expect(signedBy(await issuerOf(ca2), activeCaDer(ca1))).toBe(true)
    // and the restarted manager carries on rotating from the journal
    clock.set(t0 + 60 * MIN)
    expect(await ca2.rotate()).toBe(true)
    expect(ca2.bundle().sequenceNumber).toBe(3)
    expect(events.map((e) => e.sequenceNumber)).toEqual([3])
  })

  it('a restart after the whole CA expired starts a fresh CA and bumps the sequence', async () => {
    const ca1 = await started()
    const oldKeys = await keyIds()
    clock.set(t0 + 2 * CA_TTL)
    const ca2 = await started()
    expect(ca2.bundle().sequenceNumber).toBe(2)
    expect(bundleFps(ca2.bundle())).not.toContain(fp(activeCaDer(ca1)))
    for (const k of oldKeys) expect(await keyIds()).not.toContain(k)
  })

  it('forceRotate activates new keys at once and keeps the old ones published', async () => {
    const ca = await started()
    const oldCa = activeCaDer(ca)
    const oldKid = ca.slots().jwt[0]!.kid
    clock.advance(5 * MIN)
    expect(await ca.forceRotate()).toBe(true)
    expect(ca.slots().x509.map((s) => s.status)).toEqual(['old', 'active'])
    expect(ca.slots().jwt.map((s) => s.status)).toEqual(['old', 'active'])
    const b = ca.bundle()
    expect(b.sequenceNumber).toBe(2)
    expect(bundleFps(b)).toContain(fp(oldCa))
    expect(b.jwtAuthorities.has(oldKid)).toBe(true)
    expect(signedBy(await issuerOf(ca), oldCa)).toBe(false)
    expect(signedBy(await issuerOf(ca), activeCaDer(ca))).toBe(true)
    expect((await ca.mintJwtSvid({ spiffeId: workload, audience: ['a'], ttlMs: MIN })).kid).not.toBe(oldKid)
  })

  it('forceRotate uses an already prepared key', async () => {
    const ca = await started()
    clock.set(t0 + 30 * MIN)
    await ca.rotate()
    const prepared = ca.slots().x509.find((s) => s.status === 'prepared')!
    await ca.forceRotate()
    expect(ca.slots().x509.find((s) => s.status === 'active')?.keyId).toBe(prepared.keyId)
    expect(ca.slots().x509).toHaveLength(2)
  })
})

describe('CaManager signing', () => {
  it.each([
    { title: 'a short TTL is kept', ttlMs: 5 * MIN, expected: (now: number) => now + 5 * MIN },
    { title: 'a TTL beyond the CA life is clamped to the CA notAfter', ttlMs: 10 * CA_TTL, expected: () => t0 + CA_TTL },
  ])('X.509-SVID: $title', async ({ ttlMs, expected }) => {
    const ca = await started()
    clock.advance(20 * MIN)
    const now = clock.now()
    const svid = await ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs, dnsNames: ['web.example.org'] })
    expect(svid.notAfter).toBe(expected(now))
    const leaf = new X509Certificate(svid.chain[0]!)
    expect(Date.parse(leaf.validTo)).toBe(Math.floor(expected(now) / 1000) * 1000)
    expect(Date.parse(leaf.validTo)).toBeLessThanOrEqual(Date.parse(new X509Certificate(activeCaDer(ca)).validTo))
    expect(leaf.subjectAltName).toContain('URI:spiffe://example.org/ns/web')
    expect(leaf.subjectAltName).toContain('DNS:web.example.org')
    expect(svid.serial).toBe(leaf.serialNumber.toLowerCase())
    expect(svid.chain).toHaveLength(1)
    expect(ca.remainingCaLifetimeMs()).toBe(t0 + CA_TTL - now)
    const v = await verifyX509Svid(svid.chain, ca.bundle(), { now: new Date(now) })
    expect(v.id.toString()).toBe(workload.toString())
  })

  it('JWT exp never passes the JWT key notAfter and the token verifies against the bundle', async () => {
    const ca = await started()
    const jwtNotAfter = ca.slots().jwt[0]!.notAfter
    clock.advance(45 * MIN + 500)
    const short = await ca.mintJwtSvid({ spiffeId: workload, audience: ['svc'], ttlMs: 5 * MIN })
    expect(short.expiresAt).toBe(Math.floor((clock.now() + 5 * MIN) / 1000) * 1000)
    const long = await ca.mintJwtSvid({ spiffeId: workload, audience: ['svc'], ttlMs: 10 * CA_TTL })
    expect(long.expiresAt).toBeLessThanOrEqual(jwtNotAfter)
    expect(decodeJwt(long.token).exp! * 1000).toBe(long.expiresAt)
    expect(decodeJwt(long.token).exp! * 1000).toBeLessThanOrEqual(jwtNotAfter)
    const v = await validateJwtSvid(long.token, ca.bundle(), { audience: 'svc', now: new Date(clock.now()) })
    expect(v.id.toString()).toBe(workload.toString())
  })

  it('JWT minting with a key at its notAfter (rotation not run) refuses with ERR_UNAVAILABLE', async () => {
    const ca = await started()
    const jwtNotAfter = ca.slots().jwt[0]!.notAfter
    clock.set(jwtNotAfter - 1)
    const last = await ca.mintJwtSvid({ spiffeId: workload, audience: ['svc'], ttlMs: MIN })
    expect(last.expiresAt).toBeLessThanOrEqual(jwtNotAfter)
    expect(last.expiresAt).toBeGreaterThan(last.issuedAt)
    clock.set(jwtNotAfter)
    await expect(ca.mintJwtSvid({ spiffeId: workload, audience: ['svc'], ttlMs: MIN })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })
})

describe('CaManager with an upstream authority', () => {
  async function upstreamRoot(notAfterMs: number): Promise<UpstreamAuthority> {
    const kp = generateKeyPair('ec-p256')
    const signer = new KeyObjectSigner(kp.privateKey)
    const root = await createCaCertificate({
      trustDomain: td,
      publicKey: kp.publicKey,
      signer,
      notBefore: new Date(t0 - MIN),
      notAfter: new Date(notAfterMs),
      subject: { organization: 'Upstream', commonName: 'upstream root' },
    })
    return { certificate: root, signer, roots: [root], intermediates: [] }
  }

  it('makes the CA an intermediate: the bundle holds the root, SVID chains are [leaf, intermediate]', async () => {
    const up = await upstreamRoot(t0 + 10 * CA_TTL)
    const ca = await started({ upstream: up })
    const b = ca.bundle()
    expect(b.x509Authorities).toHaveLength(1)
    expect(fp(b.x509Authorities[0]!)).toBe(fp(up.certificate))
    const svid = await ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs: 5 * MIN })
    expect(svid.chain).toHaveLength(2)
    const inter = new X509Certificate(svid.chain[1]!)
    expect(inter.ca).toBe(true)
    expect(inter.checkIssued(new X509Certificate(up.certificate))).toBe(true)
    expect(inter.verify(new X509Certificate(up.certificate).publicKey)).toBe(true)
    expect(signedBy(new X509Certificate(svid.chain[0]!), svid.chain[1]!)).toBe(true)
    const v = await verifyX509Svid(svid.chain, b, { now: new Date(clock.now()) })
    expect(v.id.toString()).toBe(workload.toString())
    expect(v.verifiedChain.map(fp)).toEqual([fp(svid.chain[0]!), fp(svid.chain[1]!), fp(up.certificate)])
    // a leaf alone does not verify: the intermediate is needed
    await expect(verifyX509Svid([svid.chain[0]!], b, { now: new Date(clock.now()) })).rejects.toMatchObject({ code: 'ERR_X509_SVID_UNTRUSTED' })
  })

  it('hands worker threads the intermediate as the issuer and the same chain tail as signX509Svid', async () => {
    const up = await upstreamRoot(t0 + 10 * CA_TTL)
    const ca = await started({ upstream: up })
    const d = ca.x509Delegate()!
    const svid = await ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs: 5 * MIN })
    expect(d.chainTail.map(fp)).toEqual(svid.chain.slice(1).map(fp))
    expect(fp(d.certificate)).toBe(fp(svid.chain[1]!))
    expect(signedBy(new X509Certificate(svid.chain[0]!), d.certificate)).toBe(true)
  })

  it('rotation keeps publishing the upstream root only; the JWT keys still change', async () => {
    const up = await upstreamRoot(t0 + 10 * CA_TTL)
    const ca = await started({ upstream: up })
    clock.set(t0 + 30 * MIN)
    expect(await ca.rotate()).toBe(true)
    expect(ca.bundle().x509Authorities.map(fp)).toEqual([fp(up.certificate)])
    expect(ca.bundle().jwtAuthorities.size).toBe(2)
    clock.set(t0 + 50 * MIN)
    await ca.rotate()
    const svid = await ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs: 5 * MIN })
    await expect(verifyX509Svid(svid.chain, ca.bundle(), { now: new Date(clock.now()) })).resolves.toBeDefined()
  })

  it('the intermediate never outlives the upstream certificate', async () => {
    const upNotAfter = t0 + 20 * MIN
    const ca = await started({ upstream: await upstreamRoot(upNotAfter) })
    expect(ca.slots().x509[0]!.notAfter).toBe(upNotAfter)
    const svid = await ca.signX509Svid({ spiffeId: workload, publicKey: leafKey(), ttlMs: CA_TTL })
    expect(svid.notAfter).toBe(upNotAfter)
  })
})
