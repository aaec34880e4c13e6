/**
 * The audit events of issuance and instances: one `x509_svid.issued` per
 * signed SVID on both signing paths (the CSR worker pool, and checks then the
 * CA's Signer for bounded IDs), with the SVID's ID, instance, agent, entry,
 * serial and not_after; `jwt_svid.issued` with the audience, kid and expiry but
 * never the token; `instance.started` and `instance.ended` with why it ended.
 * A refused item is the same type with outcome `refused` and its code (the ID
 * asked for only once the entry is known to be the agent's); no event carries
 * a certificate, CSR or token, nor an identifier the agent sent that is not plain.
 */
import { generateKeyPairSync, X509Certificate } from 'node:crypto'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { BoundsService } from '../../../../src/server/bounds/bounds-service.js'
import { CsrVerifierPool, inlineCsrVerifier, type CsrVerifier } from '../../../../src/server/ca/csr-verifier.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { AttestedNode, NewEntry, RegistrationEntry } from '../../../../src/server/datastore/types.js'
import { InstanceService } from '../../../../src/server/instances/instance-service.js'
import { JwtIssuance } from '../../../../src/server/issuance/jwt-issuance.js'
import { Subjects } from '../../../../src/server/issuance/subject.js'
import { X509Issuance, type X509Outcome } from '../../../../src/server/issuance/x509-issuance.js'
import { createServerMetrics } from '../../../../src/server/metrics.js'
import { AuthorizedEntries } from '../../../../src/server/registration/authorized-entries.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { BoundsSet } from '../../../../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { expectNoSecrets, memoryAudit } from '../audit/memory-sink.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/join_token/n1'
const node: AttestedNode = {
  agentId: AGENT,
  attestor: 'join_token',
  selectors: [],
  serial: '01',
  expiresAt: Date.UTC(2027, 0, 1),
  previousSerial: '',
  banned: false,
  canReattest: false,
  createdAt: 0,
  updatedAt: 0,
}
const newEntry = (spiffeId: string, o: Partial<NewEntry> = {}): NewEntry => baseEntry({ spiffeId, parentId: AGENT, ...o })
const leafOf = (o: X509Outcome): X509Certificate => {
  if (!o.ok) throw new Error(`not signed: ${String((o.error as Error).message)}`)
  return new X509Certificate(o.chain[0]!)
}

let pool: CsrVerifierPool
beforeAll(async () => {
  pool = await CsrVerifierPool.start({ size: 1 })
})
afterAll(async () => {
  await pool?.close()
})

let m: ReturnType<typeof memoryAudit>
let instances: InstanceService
let create: (e: NewEntry) => Promise<RegistrationEntry>
let x509: (v: CsrVerifier) => X509Issuance
let jwt: JwtIssuance

beforeEach(async () => {
  const clock = new FakeClock()
  const log = captureLogger()
  const ds = createMemoryDataStore({ clock })
  const ca = new CaManager({
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    ds,
    clock,
    log,
    caTtlMs: 86_400_000,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 300,
  })
  await ca.init()
  // IDs under /bounded are signed through the CA's Signer, the rest on the pool (with the pool verifier).
  const bounds = new BoundsService({ trustDomain: td, ds, config: BoundsSet.parse(td, { '/bounded': { x509_svid_ttl: 600 } }), clock, log })
  await bounds.init()
  const registration = new RegistrationService({ ds, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 }, bounds })
  m = memoryAudit()
  instances = new InstanceService({ ds, clock, log, audit: m.audit })
  const entries = new AuthorizedEntries({ registration, clock })
  const subjects = new Subjects(instances)
  const metrics = createServerMetrics()
  x509 = (csrVerifier) => new X509Issuance({ entries, subjects, bounds, ca, metrics, defaultTtlMs: 3_600_000, csrVerifier, audit: m.audit })
  jwt = new JwtIssuance({ entries, subjects, bounds, ca, metrics, log, defaultTtlMs: 300_000, audit: m.audit })
  create = async (e) => {
    const [r] = await registration.createEntries([e])
    if (!r!.ok) throw r!.error
    return r!.value
  }
})

const settle = () => new Promise((r) => setImmediate(r))
const csr = () => createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey })

describe.each([
  ['the CSR worker pool', () => pool as CsrVerifier],
  ['checks then the Signer', () => inlineCsrVerifier],
])('x509_svid.issued through %s', (_name, verifier) => {
  it('one event per signed SVID, with ID, agent, entry, serial and not_after; a refused item with its code', async () => {
    const free = await create(newEntry('spiffe://example.org/free/a'))
    const bounded = await create(newEntry('spiffe://example.org/bounded/b'))
    const out = await x509(verifier()).issue(node, [
      { entryId: free.id, csr: await csr(), instanceId: '' },
      { entryId: 'no-such-entry', csr: await csr(), instanceId: '' },
      { entryId: bounded.id, csr: await csr(), instanceId: '' },
    ])
    await settle()
    const issued = m.sink.of('x509_svid.issued').filter((e) => e.outcome === 'success')
    expect(issued).toHaveLength(2)
    expect(m.sink.of('x509_svid.issued').filter((e) => e.outcome !== 'success')).toEqual([
      {
        type: 'x509_svid.issued',
        outcome: 'refused',
        reason: 'ERR_ID_NOT_AUTHORIZED',
        node: AGENT,
        attributes: { kind: 'workload', entry_id: 'no-such-entry' },
      },
    ])
    for (const [i, e] of [
      [0, free],
      [2, bounded],
    ] as const) {
      const leaf = leafOf(out[i]!)
      expect(issued.find((x) => x.subject === e.spiffeId)).toEqual({
        type: 'x509_svid.issued',
        outcome: 'success',
        actor: { spiffe_id: e.spiffeId },
        subject: e.spiffeId,
        node: AGENT,
        attributes: { kind: 'workload', entry_id: e.id, serial: leaf.serialNumber.toLowerCase(), not_after: new Date(leaf.validTo).toISOString() },
      })
    }
    expectNoSecrets(m.sink.events)
  })

  it("a per-instance SVID names its instance (actor.instance) and the instance's ID", async () => {
    const tpl = await create(newEntry('spiffe://example.org/free/bot/{instance}'))
    const inst = await instances.register(AGENT, tpl, { pid: 4242, startTime: '12345' })
    const out = await x509(verifier()).issue(node, [{ entryId: tpl.id, csr: await csr(), instanceId: inst.instanceId }])
    await settle()
    expect(out[0]!.ok).toBe(true)
    expect(m.sink.of('x509_svid.issued')).toEqual([
      expect.objectContaining({ actor: { spiffe_id: inst.spiffeId, instance: inst.instanceId }, subject: inst.spiffeId, node: AGENT }),
    ])
  })

  it("a refusal names the ID asked for when the entry is the agent's; an identifier that is not plain is left out, and nothing is lost", async () => {
    const tpl = await create(newEntry('spiffe://example.org/free/bot/{instance}'))
    const unknown = 'i0000000000000000000000042'
    await x509(verifier()).issue(node, [
      { entryId: tpl.id, csr: await csr(), instanceId: unknown },
      { entryId: tpl.id, csr: await csr(), instanceId: 'eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.' },
      { entryId: 'eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.', csr: await csr(), instanceId: '' },
    ])
    await settle()
    expect(m.sink.of('x509_svid.issued')).toEqual([
      {
        type: 'x509_svid.issued',
        outcome: 'refused',
        reason: 'ERR_ID_NOT_AUTHORIZED',
        actor: { spiffe_id: 'spiffe://example.org/free/bot/' + unknown, instance: unknown },
        subject: 'spiffe://example.org/free/bot/' + unknown,
        node: AGENT,
        attributes: { kind: 'workload', entry_id: tpl.id },
      },
      { type: 'x509_svid.issued', outcome: 'refused', reason: 'ERR_ID_NOT_AUTHORIZED', node: AGENT, attributes: { kind: 'workload', entry_id: tpl.id } },
      { type: 'x509_svid.issued', outcome: 'refused', reason: 'ERR_ID_NOT_AUTHORIZED', node: AGENT, attributes: { kind: 'workload' } },
    ])
    expect(await m.lost()).toBe(0)
  })
})

describe('jwt_svid.issued', () => {
  it('the ID, agent, audience, kid and expiry; never the token', async () => {
    const e = await create(newEntry('spiffe://example.org/free/j'))
    const r = await jwt.issue(node, { entryId: e.id, audience: ['https://api.example', ''], instanceId: '' })
    await settle()
    const kid = (JSON.parse(Buffer.from(r.token.split('.')[0]!, 'base64url').toString()) as { kid: string }).kid
    expect(m.sink.of('jwt_svid.issued')).toEqual([
      {
        type: 'jwt_svid.issued',
        outcome: 'success',
        actor: { spiffe_id: e.spiffeId },
        subject: e.spiffeId,
        node: AGENT,
        resource: ['https://api.example'],
        key_id: kid,
        attributes: { entry_id: e.id, expires_at: new Date(r.expiresAt).toISOString() },
      },
    ])
    expectNoSecrets(m.sink.events, r.token.split('.')[2])
  })

  it("a refusal: its code, the ID asked for once the entry is the agent's, never the audience", async () => {
    const e = await create(newEntry('spiffe://example.org/free/j', { selectors: [{ type: 'unix', value: 'uid:1' }] }))
    await expect(jwt.issue(node, { entryId: 'nope', audience: ['a'], instanceId: '' })).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
    await expect(jwt.issue(node, { entryId: e.id, audience: ['a'], instanceId: 'i0000000000000000000000042' })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    })
    // a template with an instance ID that is none: no ID is claimed
    const tpl = await create(newEntry('spiffe://example.org/free/bot/{instance}'))
    await expect(jwt.issue(node, { entryId: tpl.id, audience: ['a'], instanceId: 'not/an/instance' })).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
    await settle()
    expect(m.sink.of('jwt_svid.issued')).toEqual([
      { type: 'jwt_svid.issued', outcome: 'refused', reason: 'ERR_ID_NOT_AUTHORIZED', node: AGENT, attributes: { entry_id: 'nope' } },
      {
        type: 'jwt_svid.issued',
        outcome: 'refused',
        reason: 'ERR_INVALID_ARGUMENT',
        actor: { spiffe_id: e.spiffeId, instance: 'i0000000000000000000000042' },
        subject: e.spiffeId,
        node: AGENT,
        attributes: { entry_id: e.id },
      },
      { type: 'jwt_svid.issued', outcome: 'refused', reason: 'ERR_ID_NOT_AUTHORIZED', node: AGENT, attributes: { entry_id: tpl.id } },
    ])
    expect(await m.lost()).toBe(0)
  })

  it('issuance does not wait for the log, and a lost event does not fail it (logged and counted)', async () => {
    const e = await create(newEntry('spiffe://example.org/free/j'))
    m.sink.failing = true
    await expect(jwt.issue(node, { entryId: e.id, audience: ['a'], instanceId: '' })).resolves.toMatchObject({ token: expect.any(String) })
    m.sink.failing = false
    m.sink.hold()
    await expect(jwt.issue(node, { entryId: e.id, audience: ['b'], instanceId: '' })).resolves.toMatchObject({ token: expect.any(String) })
    await settle()
    expect(await m.lost()).toBe(1)
    m.sink.release()
  })
})

describe('instance.started and instance.ended', () => {
  it('start: the instance ID and SPIFFE ID, agent, entry, pid; end: by the agent, by its restart', async () => {
    const tpl = await create(newEntry('spiffe://example.org/free/bot/{instance}'))
    const a = await instances.register(AGENT, tpl, { pid: 100, startTime: '1' })
    const b = await instances.register(AGENT, tpl, { pid: 101, startTime: '2' })
    await instances.end(AGENT, a.instanceId)
    await instances.end(AGENT, a.instanceId) // already ended: no second event
    await instances.endAll(AGENT)
    await settle()
    const ev = (r: typeof a, type: 'instance.started' | 'instance.ended', attrs: Record<string, string | number>) => ({
      type,
      outcome: 'success',
      actor: { spiffe_id: r.spiffeId, instance: r.instanceId },
      subject: r.spiffeId,
      node: AGENT,
      attributes: { entry_id: tpl.id, ...attrs },
    })
    expect(m.sink.events).toEqual([
      ev(a, 'instance.started', { pid: 100 }),
      ev(b, 'instance.started', { pid: 101 }),
      ev(a, 'instance.ended', { cause: 'agent' }),
      ev(b, 'instance.ended', { cause: 'agent_restart' }),
    ])
  })
})
