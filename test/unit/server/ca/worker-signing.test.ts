import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { KeyManager, ManagedKey } from '../../../../src/keymanager/key-manager.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { CsrVerifierPool, type SignItem, type SignOutcome } from '../../../../src/server/ca/csr-verifier.js'
import { CaManager, type X509CaDelegate } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCsr, MAX_CSR_BYTES, verifyCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const td = TrustDomain.fromString('example.org')
const MIN = 60_000
const CA_TTL = 60 * MIN

let clock: FakeClock

function newCa(keyManager: KeyManager): CaManager {
  return new CaManager({
    trustDomain: td,
    keyManager,
    ds: createMemoryDataStore({ clock }),
    clock,
    log: captureLogger(),
    caTtlMs: CA_TTL,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 60,
  })
}

/** A key manager whose keys, like an HSM's, only sign: no in-process handle. */
function hsmLike(inner: KeyManager): KeyManager {
  const strip = (k: ManagedKey): ManagedKey => ({ id: k.id, type: k.type, publicKey: k.publicKey, sign: (d, a) => k.sign(d, a) })
  return {
    generateKey: async (id, type) => strip(await inner.generateKey(id, type)),
    getKey: async (id) => strip(await inner.getKey(id)),
    listKeys: async () => (await inner.listKeys()).map(strip),
    deleteKey: (id) => inner.deleteKey(id),
  }
}

const csrFor = () => createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey })
const hex = (u: Uint8Array) => Buffer.from(u).toString('hex')

function item(csr: Uint8Array, spiffeId: string, ca: X509CaDelegate, ttlMs = 10 * MIN, dnsNames: string[] = []): SignItem {
  return { csr, spiffeId, ...ca.validity(ttlMs), dnsNames }
}

function leafOf(o: SignOutcome): X509Certificate {
  if (!o.ok) throw new Error(`not signed: ${o.error.code} ${o.error.message}`)
  return new X509Certificate(o.leaf)
}

const issuedBy = (leaf: X509Certificate, caDer: Uint8Array) => {
  const ca = new X509Certificate(caDer)
  return leaf.checkIssued(ca) && leaf.verify(ca.publicKey)
}

beforeEach(() => {
  clock = new FakeClock()
})

describe('CaManager.x509Delegate', () => {
  it('is the active CA with a software key: the same object until a rotation makes a new one', async () => {
    const ca = newCa(new MemoryKeyManager())
    expect(ca.x509Delegate()).toBeUndefined() // no CA yet
    await ca.init()
    const a = ca.x509Delegate()!
    expect(a).toBeDefined()
    expect(ca.x509Delegate()).toBe(a)
    expect(a.privateKey.type).toBe('private')
    expect(a.chainTail).toEqual([])
    expect(ca.bundle().x509Authorities.map(hex)).toContain(hex(a.certificate))
    await ca.forceRotate()
    const b = ca.x509Delegate()!
    expect(b).not.toBe(a)
    expect(hex(b.certificate)).not.toBe(hex(a.certificate))
  })

  it('validity starts 10 s back and never passes the CA notAfter', async () => {
    const ca = newCa(new MemoryKeyManager())
    await ca.init()
    const d = ca.x509Delegate()!
    const now = clock.now()
    expect(d.validity(5 * MIN)).toEqual({ notBefore: now - 10_000, notAfter: now + 5 * MIN })
    expect(d.validity(10 * CA_TTL).notAfter).toBe(now + CA_TTL)
    clock.advance(CA_TTL - MIN)
    expect(d.validity(5 * MIN).notAfter).toBe(now + CA_TTL)
  })

  it('is undefined when the CA key can only sign behind its key manager (an HSM)', async () => {
    const ca = newCa(hsmLike(new MemoryKeyManager()))
    await ca.init()
    expect(ca.x509Delegate()).toBeUndefined()
    // Signing on this thread still works.
    const csr = verifyCsr(await csrFor())
    const { chain } = await ca.signX509Svid({ spiffeId: SpiffeId.fromString('spiffe://example.org/w'), publicKey: { spki: csr.spki }, ttlMs: MIN })
    expect(issuedBy(new X509Certificate(chain[0]!), ca.bundle().x509Authorities[0]!)).toBe(true)
  })
})

describe.each([
  { name: 'workers only', opts: { size: 2, chunkSize: 3, callerRuns: false } },
  { name: 'a worker and the calling thread', opts: { size: 1, chunkSize: 1 } },
])('CsrVerifierPool.verifyAndSign, $name', ({ opts }) => {
  let pool: CsrVerifierPool
  beforeAll(async () => {
    pool = await CsrVerifierPool.start(opts)
  })
  afterAll(async () => {
    await pool.close()
  })

  it('signs each good CSR with the item ID, validity and DNS names, and refuses bad ones, in order', async () => {
    const ca = newCa(new MemoryKeyManager())
    await ca.init()
    const d = ca.x509Delegate()!
    const good = await Promise.all(Array.from({ length: 9 }, csrFor))
    const tampered = good[1]!.slice()
    tampered[tampered.length - 3]! ^= 0x01
    const items: SignItem[] = [
      item(good[0]!, 'spiffe://example.org/a', d, 5 * MIN, ['a.example.org']),
      item(tampered, 'spiffe://example.org/b', d),
      item(new Uint8Array([0x30, 0x00]), 'spiffe://example.org/c', d),
      item(new Uint8Array(MAX_CSR_BYTES + 1), 'spiffe://example.org/d', d),
      ...good.slice(2).map((c, i) => item(c, `spiffe://example.org/w${i}`, d)),
    ]
    const out = await pool.verifyAndSign(items, d)
    expect(out.map((o) => (o.ok ? 'ok' : o.error.code))).toEqual([
      'ok',
      'ERR_CSR_INVALID',
      'ERR_CSR_INVALID',
      'ERR_CSR_INVALID',
      ...good.slice(2).map(() => 'ok'),
    ])
    for (const [i, o] of out.entries()) {
      if (!o.ok) continue
      const leaf = leafOf(o)
      expect(issuedBy(leaf, d.certificate)).toBe(true)
      expect(leaf.ca).toBe(false)
      expect(leaf.subjectAltName).toBe(i === 0 ? 'URI:spiffe://example.org/a, DNS:a.example.org' : `URI:${items[i]!.spiffeId}`)
      // The CSR's key, and the validity the server decided (to the second).
      expect(hex(leaf.publicKey.export({ format: 'der', type: 'spki' }))).toBe(hex(verifyCsr(items[i]!.csr).spki))
      expect(Date.parse(leaf.validFrom)).toBe(Math.floor(items[i]!.notBefore / 1000) * 1000)
      expect(Date.parse(leaf.validTo)).toBe(Math.floor(items[i]!.notAfter / 1000) * 1000)
    }
    expect(await pool.verifyAndSign([], d)).toEqual([])
    // Who signed: the workers alone, or both the worker and the calling thread.
    if (opts.callerRuns === false) {
      expect(pool.stats.worker).toBeGreaterThan(0)
      expect(pool.stats.caller).toBe(0)
    } else {
      // Which thread claims a position is a race (a worker that is slow to wake leaves all of a small batch to the
      // caller), so larger batches are signed until both have taken part; a pool where either never signs fails.
      const more = await Promise.all(Array.from({ length: 32 }, csrFor))
      for (let round = 0; round < 20 && (pool.stats.worker === 0 || pool.stats.caller === 0); round++) {
        const out2 = await pool.verifyAndSign(
          more.map((c, i) => item(c, `spiffe://example.org/m${i}`, d)),
          d,
        )
        expect(out2.every((o) => o.ok)).toBe(true)
      }
      expect(pool.stats.worker).toBeGreaterThan(0)
      expect(pool.stats.caller).toBeGreaterThan(0)
    }
  })

  it('signs with the CA it is handed: after a rotation the workers sign with the new one, and with the old one on request', async () => {
    const ca = newCa(new MemoryKeyManager())
    await ca.init()
    const a = ca.x509Delegate()!
    const csrs = await Promise.all(Array.from({ length: 6 }, csrFor))
    const before = await pool.verifyAndSign(
      csrs.map((c) => item(c, 'spiffe://example.org/r', a)),
      a,
    )
    for (const o of before) expect(issuedBy(leafOf(o), a.certificate)).toBe(true)
    await ca.forceRotate()
    const b = ca.x509Delegate()!
    // Both in flight at once: every worker switches CA per job, in order.
    const [afterB, againA] = await Promise.all([
      pool.verifyAndSign(
        csrs.map((c) => item(c, 'spiffe://example.org/r', b)),
        b,
      ),
      pool.verifyAndSign(
        csrs.map((c) => item(c, 'spiffe://example.org/r', a)),
        a,
      ),
    ])
    for (const o of afterB) {
      expect(issuedBy(leafOf(o), b.certificate)).toBe(true)
      expect(issuedBy(leafOf(o), a.certificate)).toBe(false)
    }
    for (const o of againA) expect(issuedBy(leafOf(o), a.certificate)).toBe(true)
  })

  it('settles with ERR_UNAVAILABLE once the pool is closed', async () => {
    const ca = newCa(new MemoryKeyManager())
    await ca.init()
    const d = ca.x509Delegate()!
    const own = await CsrVerifierPool.start({ size: 1 })
    const csrs = await Promise.all(Array.from({ length: 4 }, csrFor))
    const inFlight = own.verifyAndSign(
      csrs.map((c) => item(c, 'spiffe://example.org/x', d)),
      d,
    )
    await own.close()
    for (const o of await inFlight) if (!o.ok) expect(o.error.code).toBe('ERR_UNAVAILABLE')
    const after = await own.verifyAndSign([item(csrs[0]!, 'spiffe://example.org/x', d)], d)
    expect(after.map((o) => (o.ok ? 'ok' : o.error.code))).toEqual(['ERR_UNAVAILABLE'])
  })
})

describe('CsrVerifierPool.verifyAndSign, a worker lost', () => {
  it('a worker lost mid-batch: what it had claimed fails with ERR_INTERNAL, the calling thread signs the rest, the next batch is whole', async () => {
    const ca = newCa(new MemoryKeyManager())
    await ca.init()
    const d = ca.x509Delegate()!
    const own = await CsrVerifierPool.start({ size: 1, chunkSize: 2, callerRuns: false })
    try {
      const csrs = await Promise.all(Array.from({ length: 200 }, csrFor))
      const items = csrs.map((c, i) => item(c, `spiffe://example.org/l${i}`, d))
      const inFlight = own.verifyAndSign(items, d)
      await new Promise((r) => setTimeout(r, 5))
      await own.crashWorkersForTest()
      const out = await inFlight
      expect(out).toHaveLength(200)
      for (const [i, o] of out.entries()) {
        if (o.ok) expect(leafOf(o).subjectAltName).toBe(`URI:spiffe://example.org/l${i}`)
        else expect([o.error.code, o.error.message]).toEqual(['ERR_INTERNAL', 'CSR verifier worker exited'])
      }
      // The worker never answered, so nothing it signed counts; the calling thread took over what was left.
      expect(own.stats.worker).toBe(0)
      expect(own.stats.caller).toBe(out.filter((o) => o.ok).length)
      const again = await own.verifyAndSign(items.slice(0, 8), d)
      expect(again.map((o) => o.ok)).toEqual(Array(8).fill(true))
    } finally {
      await own.close()
    }
  })
})
