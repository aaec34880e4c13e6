/**
 * Batch X.509-SVID issuance with real parts: a CA over a memory key manager,
 * the memory datastore, the registration, bounds and instance services, and
 * both signing paths (the CSR worker pool that also signs with a software CA
 * key, and checks here followed by the CA's Signer, as with an HSM key).
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { BoundsService } from '../../../../src/server/bounds/bounds-service.js'
import { CsrVerifierPool, inlineCsrVerifier, type CsrVerifier } from '../../../../src/server/ca/csr-verifier.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { AttestedNode, DataStore, NewEntry, RegistrationEntry } from '../../../../src/server/datastore/types.js'
import { InstanceService } from '../../../../src/server/instances/instance-service.js'
import { Subjects } from '../../../../src/server/issuance/subject.js'
import { MAX_X509_BATCH, X509Issuance, type X509Outcome, type X509Request } from '../../../../src/server/issuance/x509-issuance.js'
import { createServerMetrics } from '../../../../src/server/metrics.js'
import { AuthorizedEntries } from '../../../../src/server/registration/authorized-entries.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { BoundsSet } from '../../../../src/spiffe/bounds/bounds-set.js'
import { parseBounds } from '../../../../src/spiffe/bounds/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/join_token/n1'
const PROD = { type: 'tpm', value: 'pcr:prod' }
const BOUNDS = BoundsSet.parse(td, {
  '/bounded': { x509_svid_ttl: 600, max_instances: 2, require_node_selectors: ['tpm:pcr:prod'] },
})

const node = (selectors = [PROD]): AttestedNode => ({
  agentId: AGENT,
  attestor: 'join_token',
  selectors,
  serial: '01',
  expiresAt: Date.UTC(2027, 0, 1),
  previousSerial: '',
  banned: false,
  canReattest: false,
  createdAt: 0,
  updatedAt: 0,
})

const newEntry = (spiffeId: string, o: Partial<NewEntry> = {}): NewEntry => baseEntry({ spiffeId, parentId: AGENT, ...o })

const newKey = () => generateKeyPairSync('ec', { namedCurve: 'P-256' })

interface World {
  ds: DataStore
  ca: CaManager
  bounds: BoundsService
  registration: RegistrationService
  issuance: (csrVerifier: CsrVerifier) => X509Issuance
  create: (e: NewEntry) => Promise<RegistrationEntry>
}

async function world(): Promise<World> {
  const clock = new FakeClock()
  const log = captureLogger()
  const ds = createMemoryDataStore({ clock })
  const ca = new CaManager({
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    ds,
    clock,
    log,
    caTtlMs: 24 * 3_600_000,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 300,
  })
  await ca.init()
  const bounds = new BoundsService({ trustDomain: td, ds, config: BOUNDS, clock, log })
  await bounds.init()
  const registration = new RegistrationService({ ds, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 }, bounds })
  const entries = new AuthorizedEntries({ registration, clock })
  const subjects = new Subjects(new InstanceService({ ds, clock, log }))
  const metrics = createServerMetrics()
  return {
    ds,
    ca,
    bounds,
    registration,
    issuance: (csrVerifier) => new X509Issuance({ entries, subjects, bounds, ca, metrics, defaultTtlMs: 3_600_000, csrVerifier }),
    create: async (e) => {
      const [r] = await registration.createEntries([e])
      if (!r!.ok) throw r!.error
      return r!.value
    },
  }
}

const leaf = (o: X509Outcome): X509Certificate => {
  if (!o.ok) throw new Error(`not signed: ${String((o.error as Error).message)}`)
  return new X509Certificate(o.chain[0]!)
}
const codeOf = (o: X509Outcome): string => (o.ok ? 'OK' : (o.error as { code: string }).code)
const ttlSeconds = (c: X509Certificate) => (Date.parse(c.validTo) - Date.parse(c.validFrom)) / 1000

let pool: CsrVerifierPool
beforeAll(async () => {
  pool = await CsrVerifierPool.start({ size: 1 })
})
afterAll(async () => {
  await pool?.close()
})

// Both signing paths: the pool (verifyAndSign with the software key for unbounded IDs) and checks then the Signer.
describe.each([
  ['the CSR worker pool', () => pool as CsrVerifier],
  ['checks then the Signer', () => inlineCsrVerifier],
])('X509Issuance through %s', (_name, verifier) => {
  let w: World
  beforeEach(async () => {
    w = await world()
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('signs each item for its entry with the CSR key, in request order, and refuses bad items one by one', async () => {
    const a = await w.create(newEntry('spiffe://example.org/free/a'))
    const b = await w.create(newEntry('spiffe://example.org/free/b'))
    const other = await w.create(newEntry('spiffe://example.org/free/other', { parentId: 'spiffe://example.org/warrant/agent/join_token/n2' }))
    const ka = newKey()
    const kb = newKey()
    const tampered = await createCsr({ privateKey: newKey().privateKey })
    tampered[tampered.length - 3] = tampered[tampered.length - 3]! ^ 1
    const requests: X509Request[] = [
      { entryId: a.id, csr: await createCsr({ privateKey: ka.privateKey }), instanceId: '' },
      { entryId: other.id, csr: await createCsr({ privateKey: kb.privateKey }), instanceId: '' },
      { entryId: b.id, csr: tampered, instanceId: '' },
      { entryId: 'no-such-entry', csr: await createCsr({ privateKey: kb.privateKey }), instanceId: '' },
      { entryId: a.id, csr: await createCsr({ privateKey: ka.privateKey }), instanceId: 'i-1' },
      { entryId: b.id, csr: await createCsr({ privateKey: kb.privateKey }), instanceId: '' },
    ]
    const out = await w.issuance(verifier()).issue(node(), requests)
    expect(out.map(codeOf)).toEqual(['OK', 'ERR_ID_NOT_AUTHORIZED', 'ERR_CSR_INVALID', 'ERR_ID_NOT_AUTHORIZED', 'ERR_INVALID_ARGUMENT', 'OK'])
    const ca = new X509Certificate(w.ca.bundle().x509Authorities[0]!)
    for (const [i, key, id] of [
      [0, ka, a.spiffeId],
      [5, kb, b.spiffeId],
    ] as const) {
      const c = leaf(out[i]!)
      expect(c.subjectAltName).toBe(`URI:${id}`)
      expect(c.publicKey.equals(key.publicKey)).toBe(true)
      expect(c.verify(ca.publicKey)).toBe(true)
      expect(ttlSeconds(c)).toBe(3_600 + 10) // the default TTL (notBefore is backdated 10 s)
    }
  })

  it('applies the namespace bounds: TTL clamped, DNS names outside the suffixes left out, node selectors required, instances counted', async () => {
    const es = [
      await w.create(newEntry('spiffe://example.org/bounded/a', { dnsNames: ['api.ok.example', 'api.other.example'] })),
      await w.create(newEntry('spiffe://example.org/bounded/b')),
      await w.create(newEntry('spiffe://example.org/bounded/c')),
    ]
    // Bounds set after the entry was written: its DNS name outside them is left out of the SVID.
    await w.bounds.set('/bounded/a', parseBounds({ dns_suffixes: ['ok.example'] }))
    const csr = await createCsr({ privateKey: newKey().privateKey })
    const issuance = w.issuance(verifier())
    // A node without the required selector gets nothing, and no instance is counted for it.
    const denied = await issuance.issue(node([]), [{ entryId: es[0]!.id, csr, instanceId: '' }])
    expect(denied.map(codeOf)).toEqual(['ERR_ID_NOT_AUTHORIZED'])
    expect((denied[0] as { error: Error }).error.message).toContain('require_node_selectors')
    expect(await w.bounds.instances('/bounded')).toBe(0)

    const out = await issuance.issue(
      node(),
      es.map((e) => ({ entryId: e.id, csr, instanceId: '' })),
    )
    expect(out.map(codeOf)).toEqual(['OK', 'OK', 'ERR_ID_NOT_AUTHORIZED']) // max_instances 2
    expect((out[2] as { error: Error }).error.message).toContain('max_instances')
    const c = leaf(out[0]!)
    expect(ttlSeconds(c)).toBe(600 + 10)
    expect(c.subjectAltName).toBe('URI:spiffe://example.org/bounded/a, DNS:api.ok.example')
    expect(await w.bounds.instances('/bounded')).toBe(2)
    // A renewal of an admitted entry is the same instance: still admitted.
    expect((await issuance.issue(node(), [{ entryId: es[0]!.id, csr, instanceId: '' }])).map(codeOf)).toEqual(['OK'])
  })

  it('looks up the effective bounds of each item once', async () => {
    const bounded = await Promise.all(['a', 'b'].map((n) => w.create(newEntry(`spiffe://example.org/bounded/${n}`))))
    const free = await Promise.all(['x', 'y', 'z'].map((n) => w.create(newEntry(`spiffe://example.org/free/${n}`))))
    const csr = await createCsr({ privateKey: newKey().privateKey })
    const issuance = w.issuance(verifier())
    const lookups = vi.spyOn(BoundsSet.prototype, 'boundsFor')
    const admissions = vi.spyOn(w.bounds, 'admitX509')
    const out = await issuance.issue(
      node(),
      [...bounded, ...free].map((e) => ({ entryId: e.id, csr, instanceId: '' })),
    )
    expect(out.map(codeOf)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK'])
    expect(lookups).toHaveBeenCalledTimes(5)
    // The bounded items were admitted (with the lookup handed on), whichever the path.
    expect(admissions.mock.calls.filter(([a]) => String(a.spiffeId).includes('/bounded/'))).toHaveLength(2)
    for (const [a] of admissions.mock.calls) expect(a.lookup?.id.equals(a.spiffeId as never)).toBe(true)
  })

  it('refuses an empty or oversized batch as a whole', async () => {
    const issuance = w.issuance(verifier())
    await expect(issuance.issue(node(), [])).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    const many = Array.from({ length: MAX_X509_BATCH + 1 }, () => ({ entryId: 'e', csr: new Uint8Array(0), instanceId: '' }))
    await expect(issuance.issue(node(), many)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
  })
})
