/**
 * The audit events of what an operator changes on the server: entries
 * (`entry.created`, `entry.updated`, `entry.deleted`), namespace bounds
 * (`bounds.changed`) and revocations (`instance.revoked`, `prefix.quarantined`,
 * `revocation.deleted`). Each is durable before the change is answered; a lost
 * event is logged and counted and the change stands. Selector values, hints,
 * DNS names and a revocation's free-text reason are never in an event.
 */
import { beforeEach, describe, expect, it } from 'vitest'
import { BoundsService } from '../../../../src/server/bounds/bounds-service.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore, NewEntry } from '../../../../src/server/datastore/types.js'
import { InstanceService } from '../../../../src/server/instances/instance-service.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { RevocationService } from '../../../../src/server/revocation/revocation-service.js'
import { BoundsSet } from '../../../../src/spiffe/bounds/bounds-set.js'
import { parseBounds } from '../../../../src/spiffe/bounds/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { expectNoSecrets, memoryAudit } from '../audit/memory-sink.js'

const td = TrustDomain.fromString('example.org')
const AGENT = 'spiffe://example.org/warrant/agent/join_token/n1'
const newEntry = (spiffeId: string, o: Partial<NewEntry> = {}): NewEntry => baseEntry({ spiffeId, parentId: AGENT, ...o })
const HOUR = 3_600_000

let clock: FakeClock
let ds: DataStore
let m: ReturnType<typeof memoryAudit>
let registration: RegistrationService
let bounds: BoundsService
let instances: InstanceService
let revocations: RevocationService

beforeEach(async () => {
  clock = new FakeClock()
  const log = captureLogger()
  ds = createMemoryDataStore({ clock })
  m = memoryAudit()
  bounds = new BoundsService({ trustDomain: td, ds, clock, log, audit: m.audit })
  await bounds.init()
  expect(m.sink.events).toEqual([expect.objectContaining({ type: 'bounds.changed', attributes: expect.objectContaining({ action: 'config' }) as unknown })])
  m.sink.events.length = 0 // the first start's (empty) config bounds
  registration = new RegistrationService({
    ds,
    clock,
    log,
    bounds,
    limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 },
    audit: m.audit,
  })
  instances = new InstanceService({ ds, clock, log, audit: m.audit })
  revocations = new RevocationService({ ds, instances, trustDomain: td, clock, log, defaultX509TtlMs: HOUR, defaultJwtTtlMs: 300_000, audit: m.audit })
  await revocations.start()
  return () => revocations.stop()
})

/** Runs `change` with the log holding its appends: it must not settle until they are durable. */
async function answeredOnlyWhenDurable<T>(change: () => Promise<T>): Promise<T> {
  m.sink.hold()
  let settled = false
  const p = change().finally(() => (settled = true))
  await new Promise((r) => setTimeout(r, 20))
  expect(settled).toBe(false)
  m.sink.release()
  return p
}

describe('entry events', () => {
  it('created, updated, deleted: the ID, entry id, revision, parent and TTLs; selectors and DNS names counted, no hint', async () => {
    const e = newEntry('spiffe://example.org/ns/web', {
      selectors: [{ type: 'unix', value: 'user:alice-personal' }],
      dnsNames: ['web.example'],
      hint: 'alice-personal-hint',
      x509SvidTtl: 600,
    })
    const [created] = await answeredOnlyWhenDurable(() => registration.createEntries([e, newEntry('not a spiffe id')]))
    const entry = created!.ok ? created!.value : undefined
    const attrs = (revision: number, jwt = 0) => ({
      via: 'admin',
      entry_id: entry!.id,
      revision,
      parent_id: AGENT,
      selectors: 1,
      dns_names: 1,
      x509_svid_ttl: 600,
      jwt_svid_ttl: jwt,
      admin: false,
      downstream: false,
    })
    expect(m.sink.events).toEqual([{ type: 'entry.created', outcome: 'success', subject: 'spiffe://example.org/ns/web', attributes: attrs(1) }])
    await answeredOnlyWhenDurable(() => registration.updateEntries([{ id: entry!.id, jwtSvidTtl: 60 }, { id: 'missing' }]))
    await answeredOnlyWhenDurable(() => registration.deleteEntries([entry!.id, 'missing']))
    expect(m.sink.events.slice(1)).toEqual([
      { type: 'entry.updated', outcome: 'success', subject: 'spiffe://example.org/ns/web', attributes: attrs(2, 60) },
      { type: 'entry.deleted', outcome: 'success', subject: 'spiffe://example.org/ns/web', attributes: attrs(2, 60) },
    ])
    expectNoSecrets(m.sink.events, 'alice-personal')
    expect(JSON.stringify(m.sink.events)).not.toContain('web.example')
  })

  it('a template is no SPIFFE ID: no subject, the template as an attribute; a parent over 256 characters is left out', async () => {
    const longAgent = `spiffe://example.org/warrant/agent/x509pop/${'a'.repeat(250)}`
    await registration.createEntries([newEntry('spiffe://example.org/bots/{instance}'), newEntry('spiffe://example.org/long', { parentId: longAgent })])
    expect(m.sink.events[0]).toEqual({
      type: 'entry.created',
      outcome: 'success',
      attributes: expect.objectContaining({ template: 'spiffe://example.org/bots/{instance}', parent_id: AGENT }) as unknown,
    })
    expect(m.sink.events[1]!.subject).toBe('spiffe://example.org/long')
    expect(m.sink.events[1]!.attributes).not.toHaveProperty('parent_id')
    expect(await m.lost()).toBe(0)
  })

  it('an alias entry the server creates at attestation is audited as via server', async () => {
    await registration.createInternal(newEntry('spiffe://example.org/nodes/edge-1', { parentId: 'spiffe://example.org/warrant/server' }))
    expect(m.sink.events).toEqual([expect.objectContaining({ type: 'entry.created', subject: 'spiffe://example.org/nodes/edge-1' })])
    expect(m.sink.events[0]!.attributes).toMatchObject({ via: 'server' })
  })

  it('a lost event is logged and counted; the change stands and is answered', async () => {
    m.sink.failing = true
    const [r] = await registration.createEntries([newEntry('spiffe://example.org/ns/web')])
    expect(r!.ok).toBe(true)
    expect(await registration.count({})).toBe(1)
    expect(await m.lost()).toBe(1)
    expect(m.log.lines.some((l) => l.level === 'error' && l.msg === 'Audit event lost')).toBe(true)
  })
})

describe('bounds.changed', () => {
  it('set and delete: the prefix as a SPIFFE ID, the action, the new sequence and a SHA-256 of the bounds; durable before answered', async () => {
    await answeredOnlyWhenDurable(() => bounds.set('/agents/pay/', parseBounds({ x509_svid_ttl: 600, scopes: ['refund:write'] })))
    await answeredOnlyWhenDurable(() => bounds.delete('/agents/pay'))
    await bounds.set('/', parseBounds({ x509_svid_ttl: 3600 }))
    await expect(bounds.set('/agents/pay', parseBounds({ x509_svid_ttl: 7200 }))).rejects.toMatchObject({ code: 'ERR_BOUNDS_INVALID' }) // wider than /
    expect(m.sink.events.map((e) => [e.subject, e.attributes?.action, e.attributes?.sequence])).toEqual([
      ['spiffe://example.org/agents/pay', 'set', 2], // sequence 1: the first start's config
      ['spiffe://example.org/agents/pay', 'delete', 3],
      ['spiffe://example.org', 'set', 4],
    ])
    expect(m.sink.events[0]).toEqual({
      type: 'bounds.changed',
      outcome: 'success',
      subject: 'spiffe://example.org/agents/pay',
      attributes: { via: 'admin', action: 'set', sequence: 2, bounds_sha256: expect.stringMatching(/^[0-9a-f]{64}$/) as unknown },
    })
    // the same bounds hash the same, whether set or deleted
    expect(m.sink.events[1]!.attributes!.bounds_sha256).toBe(m.sink.events[0]!.attributes!.bounds_sha256)
    expect(m.sink.events[2]!.attributes!.bounds_sha256).not.toBe(m.sink.events[0]!.attributes!.bounds_sha256)
  })
})

describe('bounds.changed at start', () => {
  it('config bounds that differ from the last start are one event (the trust domain, action config, digest); the same again none', async () => {
    const log = captureLogger()
    const start = async (config: BoundsSet) => {
      const b = new BoundsService({ trustDomain: td, ds, clock, log, config, audit: m.audit })
      await b.init()
      return b
    }
    m.sink.events.length = 0
    const one = BoundsSet.parse(td, { '/agents': { x509_svid_ttl: 600 } })
    await start(one)
    await start(one)
    await start(BoundsSet.parse(td, { '/agents': { x509_svid_ttl: 300 }, '/svc': { x509_svid_ttl: 600 } }))
    expect(m.sink.events.map((e) => [e.type, e.subject, e.attributes?.via, e.attributes?.action, e.attributes?.sequence, e.attributes?.prefixes])).toEqual([
      ['bounds.changed', 'spiffe://example.org', 'config', 'config', 2, 1],
      ['bounds.changed', 'spiffe://example.org', 'config', 'config', 3, 2],
    ])
    expect(m.sink.events[0]!.attributes!.bounds_sha256).toMatch(/^[0-9a-f]{64}$/)
    expect(m.sink.events[1]!.attributes!.bounds_sha256).not.toBe(m.sink.events[0]!.attributes!.bounds_sha256)
  })
})

describe('revocation events', () => {
  it('an instance revoked by its instance ID: its SPIFFE ID, agent, record id and expiry, never the reason; the instance ends (cause revoked)', async () => {
    const [r] = await registration.createEntries([newEntry('spiffe://example.org/bots/{instance}')])
    const inst = await instances.register(AGENT, r!.ok ? r!.value : (undefined as never), { pid: 7, startTime: '1' })
    m.sink.events.length = 0
    const out = await answeredOnlyWhenDurable(() => revocations.revoke({ kind: 'instance', value: inst.instanceId, reason: 'ticket 42 by alice@example.org' }))
    await new Promise((res) => setImmediate(res))
    expect(m.sink.of('instance.revoked')).toEqual([
      {
        type: 'instance.revoked',
        outcome: 'success',
        subject: inst.spiffeId,
        node: AGENT,
        attributes: {
          via: 'admin',
          kind: 'instance',
          revocation_id: out.revocation.id,
          instance_id: inst.instanceId,
          expires_at: new Date(out.revocation.expiresAt!).toISOString(),
        },
      },
    ])
    expect(m.sink.of('instance.ended')).toEqual([expect.objectContaining({ attributes: expect.objectContaining({ cause: 'revoked' }) as unknown })])
    // idempotent: the same revocation again is no new event
    await revocations.revoke({ kind: 'instance', value: inst.instanceId })
    expect(m.sink.of('instance.revoked')).toHaveLength(1)
    expectNoSecrets(m.sink.events, 'alice')
  })

  it('by SPIFFE ID of an unknown instance, a prefix quarantine with its end, and a deletion', async () => {
    await revocations.revoke({ kind: 'instance', value: 'spiffe://example.org/bots/i0000000000000000000000001' })
    const until = clock.now() + HOUR
    const q = await revocations.revoke({ kind: 'prefix', value: 'spiffe://example.org/agents/pay', notAfter: until, reason: 'incident' })
    await answeredOnlyWhenDurable(() => revocations.delete(q.revocation.id))
    expect(m.sink.events.map((e) => e.type)).toEqual(['instance.revoked', 'prefix.quarantined', 'revocation.deleted'])
    expect(m.sink.events[0]).toMatchObject({ subject: 'spiffe://example.org/bots/i0000000000000000000000001', attributes: { kind: 'instance' } })
    expect(m.sink.events[0]!.attributes).not.toHaveProperty('instance_id')
    const quarantine = {
      outcome: 'success',
      subject: 'spiffe://example.org/agents/pay',
      attributes: {
        via: 'admin',
        kind: 'prefix',
        revocation_id: q.revocation.id,
        not_after: new Date(until).toISOString(),
        expires_at: new Date(until).toISOString(),
      },
    }
    expect(m.sink.events[1]).toEqual({ type: 'prefix.quarantined', ...quarantine })
    expect(m.sink.events[2]).toEqual({ type: 'revocation.deleted', ...quarantine })
    // refused input: nothing changes, nothing is audited
    await expect(revocations.revoke({ kind: 'prefix', value: 'spiffe://other.org/x' })).rejects.toMatchObject({ code: 'ERR_REVOCATION_INVALID' })
    expect(m.sink.events).toHaveLength(3)
  })
})
