/**
 * The SVID side of revocation on the server: the service (validation,
 * idempotency, expiry of records, ending a revoked instance), issuance
 * refusing what a record covers (X.509 and JWT, by instance ID, SPIFFE ID and
 * prefix), the admin API over a real Unix socket with the CLI's client, and
 * the Sync stream pushing the set.
 */
import { generateKeyPairSync } from 'node:crypto'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { loadProto } from '../../../../src/common/grpc/proto.js'
import { deleteServerRevocation, listServerRevocations, revokeOnServer } from '../../../../src/cli/server-revocation-client.js'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { revocationsAdminService } from '../../../../src/server/api/revocations-admin.js'
import { BoundsService } from '../../../../src/server/bounds/bounds-service.js'
import { inlineCsrVerifier } from '../../../../src/server/ca/csr-verifier.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { AttestedNode, DataStore, NewEntry, RegistrationEntry } from '../../../../src/server/datastore/types.js'
import { InstanceService } from '../../../../src/server/instances/instance-service.js'
import { JwtIssuance } from '../../../../src/server/issuance/jwt-issuance.js'
import { Subjects } from '../../../../src/server/issuance/subject.js'
import { X509Issuance, type X509Outcome } from '../../../../src/server/issuance/x509-issuance.js'
import { createServerMetrics } from '../../../../src/server/metrics.js'
import { AuthorizedEntries } from '../../../../src/server/registration/authorized-entries.js'
import { RegistrationService } from '../../../../src/server/registration/service.js'
import { prefixCovers, RevocationService } from '../../../../src/server/revocation/revocation-service.js'
import { BoundsSet } from '../../../../src/spiffe/bounds/bounds-set.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { newEntry as baseEntry } from '../../../helpers/entries.js'
import { tempDir } from '../../../helpers/temp.js'

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
const HOUR = 3_600_000

interface World {
  clock: FakeClock
  ds: DataStore
  log: ReturnType<typeof captureLogger>
  instances: InstanceService
  revocations: RevocationService
  x509: X509Issuance
  jwt: JwtIssuance
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
    caTtlMs: 24 * HOUR,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 300,
  })
  await ca.init()
  const bounds = new BoundsService({ trustDomain: td, ds, config: BoundsSet.parse(td, {}), clock, log })
  await bounds.init()
  const registration = new RegistrationService({ ds, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 86_400 }, bounds })
  const entries = new AuthorizedEntries({ registration, clock })
  const instances = new InstanceService({ ds, clock, log })
  const subjects = new Subjects(instances)
  const metrics = createServerMetrics()
  const revocations = new RevocationService({ ds, instances, trustDomain: td, clock, log, defaultX509TtlMs: HOUR, defaultJwtTtlMs: 5 * 60_000 })
  await revocations.start()
  return {
    clock,
    ds,
    log,
    instances,
    revocations,
    x509: new X509Issuance({ entries, subjects, bounds, ca, metrics, defaultTtlMs: HOUR, csrVerifier: inlineCsrVerifier, revocations }),
    jwt: new JwtIssuance({ entries, subjects, bounds, ca, metrics, log, defaultTtlMs: 5 * 60_000, revocations }),
    create: async (e) => {
      const [r] = await registration.createEntries([e])
      if (!r!.ok) throw r!.error
      return r!.value
    },
  }
}

const csr = () => createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey })
const codeOf = (o: X509Outcome): string => (o.ok ? 'OK' : (o.error as { code: string }).code)

describe('prefixCovers', () => {
  it.each([
    ['spiffe://example.org/agents', 'spiffe://example.org/agents', true],
    ['spiffe://example.org/agents', 'spiffe://example.org/agents/bot/i1', true],
    ['spiffe://example.org/agents', 'spiffe://example.org/agentsmith', false],
    ['spiffe://example.org/agents/', 'spiffe://example.org/agents/x', true],
    ['spiffe://example.org/agents', 'spiffe://example.org/other', false],
  ])('%s covers %s: %s', (p, id, want) => expect(prefixCovers(p, id)).toBe(want))
})

describe('RevocationService', () => {
  let w: World
  beforeEach(async () => {
    w = await world()
  })
  afterEach(() => w.revocations.stop())

  it('revokes a live instance by ID: expires after its longest SVID lifetime, ends it at the server, idempotent, tells listeners', async () => {
    const tpl = await w.create(newEntry('spiffe://example.org/agents/bot/{instance}', { x509SvidTtl: 600, jwtSvidTtl: 1200 }))
    const inst = await w.instances.register(AGENT, tpl, { pid: 10, startTime: '1' })
    let changes = 0
    w.revocations.onChange(() => changes++)
    const { revocation, created } = await w.revocations.revoke({ kind: 'instance', value: inst.instanceId, reason: 'compromised' })
    expect(created).toBe(true)
    expect(revocation).toMatchObject({ kind: 'instance', value: inst.instanceId, reason: 'compromised', notAfter: null, expiresAt: w.clock.now() + 1_200_000 })
    expect((await w.instances.get(inst.instanceId)).endedAt).not.toBeNull()
    expect(changes).toBe(1)
    expect(w.log.lines.find((l) => l.msg === 'Instance revoked')?.fields).toMatchObject({ reason: 'compromised', revocation_id: revocation.id })
    const again = await w.revocations.revoke({ kind: 'instance', value: inst.instanceId, reason: 'other' })
    expect(again).toEqual({ revocation, created: false })
    expect(changes).toBe(1)
    expect(w.revocations.covering(inst.spiffeId, inst.instanceId)?.id).toBe(revocation.id)
    expect(w.revocations.covering('spiffe://example.org/agents/bot/iother', 'iother0000000000000000000x')).toBeUndefined()
  })

  it('an unknown instance or SPIFFE ID expires after the longest lifetime of any entry or default', async () => {
    await w.create(newEntry('spiffe://example.org/long', { x509SvidTtl: 7200 }))
    const r = await w.revocations.revoke({ kind: 'instance', value: 'spiffe://example.org/long' })
    expect(r.revocation.expiresAt).toBe(w.clock.now() + 7_200_000)
    const u = await w.revocations.revoke({ kind: 'instance', value: 'i0000000000000000000000000' })
    expect(u.revocation.expiresAt).toBe(w.clock.now() + 7_200_000)
  })

  it('a prefix quarantine applies until not_after, then is swept and listeners told', async () => {
    const until = w.clock.now() + 60_000
    const { revocation } = await w.revocations.revoke({ kind: 'prefix', value: 'spiffe://example.org/agents', notAfter: until })
    expect(revocation).toMatchObject({ notAfter: until, expiresAt: until })
    expect(w.revocations.covering('spiffe://example.org/agents/x', undefined)?.id).toBe(revocation.id)
    expect(w.revocations.covering('spiffe://example.org/agentsx', undefined)).toBeUndefined()
    let changes = 0
    w.revocations.onChange(() => changes++)
    w.clock.advance(60_000)
    expect(w.revocations.covering('spiffe://example.org/agents/x', undefined)).toBeUndefined()
    expect(w.revocations.active()).toEqual([])
    expect(await w.revocations.list({ includeExpired: true })).toHaveLength(1)
    expect(await w.revocations.sweep()).toBe(1)
    expect(changes).toBe(1)
    expect(await w.revocations.list({ includeExpired: true })).toEqual([])
  })

  it('delete removes a record (logged), ERR_NOT_FOUND for an unknown id', async () => {
    const { revocation } = await w.revocations.revoke({ kind: 'prefix', value: 'spiffe://example.org/q' })
    expect(await w.revocations.delete(revocation.id)).toEqual(revocation)
    expect(w.log.lines.some((l) => l.msg === 'Revocation deleted')).toBe(true)
    expect(w.revocations.covering('spiffe://example.org/q/a', undefined)).toBeUndefined()
    await expect(w.revocations.delete(revocation.id)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
    await expect(w.revocations.delete(0)).rejects.toMatchObject({ code: 'ERR_REVOCATION_INVALID' })
  })

  it.each([
    ['an unknown kind', { kind: 'task', value: 'spiffe://example.org/a' }],
    ['an empty value', { kind: 'instance', value: '' }],
    ['a value that is neither instance ID nor SPIFFE ID', { kind: 'instance', value: 'not an id' }],
    ['another trust domain', { kind: 'prefix', value: 'spiffe://other.org/a' }],
    ['the whole trust domain', { kind: 'prefix', value: 'spiffe://example.org' }],
    ['a malformed prefix', { kind: 'prefix', value: 'spiffe://example.org/a//b' }],
    ['not_after on an instance', { kind: 'instance', value: 'spiffe://example.org/a', notAfter: Date.UTC(2030, 0, 1) }],
    ['not_after in the past', { kind: 'prefix', value: 'spiffe://example.org/a', notAfter: Date.UTC(2025, 0, 1) }],
    ['a control character in the reason', { kind: 'prefix', value: 'spiffe://example.org/a', reason: 'a\nb' }],
    ['a reason too long', { kind: 'prefix', value: 'spiffe://example.org/a', reason: 'x'.repeat(1025) }],
  ])('refuses %s with ERR_REVOCATION_INVALID and stores nothing', async (_name, req) => {
    await expect(w.revocations.revoke(req)).rejects.toMatchObject({ code: 'ERR_REVOCATION_INVALID' })
    expect(await w.revocations.list({ includeExpired: true })).toEqual([])
  })
})

describe('issuance refuses what a revocation covers (ERR_REVOKED), the rest is signed', () => {
  let w: World
  beforeEach(async () => {
    w = await world()
  })
  afterEach(() => w.revocations.stop())

  it('X.509 and JWT: a revoked instance (by ID or SPIFFE ID), a quarantined prefix; the reason only in the error details', async () => {
    const tpl = await w.create(newEntry('spiffe://example.org/agents/bot/{instance}'))
    const free = await w.create(newEntry('spiffe://example.org/free/a'))
    const quarantined = await w.create(newEntry('spiffe://example.org/q/a'))
    const byId = await w.instances.register(AGENT, tpl, { pid: 10, startTime: '1' })
    const bySpiffe = await w.instances.register(AGENT, tpl, { pid: 11, startTime: '2' })
    const kept = await w.instances.register(AGENT, tpl, { pid: 12, startTime: '3' })
    const before = await w.x509.issue(node, [{ entryId: tpl.id, csr: await csr(), instanceId: byId.instanceId }])
    expect(before.map(codeOf)).toEqual(['OK'])

    await w.revocations.revoke({ kind: 'instance', value: byId.instanceId, reason: 'leaked key' })
    await w.revocations.revoke({ kind: 'instance', value: bySpiffe.spiffeId })
    await w.revocations.revoke({ kind: 'prefix', value: 'spiffe://example.org/q' })
    const out = await w.x509.issue(node, [
      { entryId: tpl.id, csr: await csr(), instanceId: byId.instanceId },
      { entryId: tpl.id, csr: await csr(), instanceId: bySpiffe.instanceId },
      { entryId: tpl.id, csr: await csr(), instanceId: kept.instanceId },
      { entryId: quarantined.id, csr: await csr(), instanceId: '' },
      { entryId: free.id, csr: await csr(), instanceId: '' },
    ])
    expect(out.map(codeOf)).toEqual(['ERR_REVOKED', 'ERR_REVOKED', 'OK', 'ERR_REVOKED', 'OK'])
    const err = (out[0] as { error: Error & { details: Record<string, unknown> } }).error
    expect(err.message).toBe('identity revoked')
    expect(err.details).toMatchObject({ reason: 'leaked key', kind: 'instance' })

    const jwt = (entryId: string, instanceId: string) => w.jwt.issue(node, { entryId, audience: ['aud'], instanceId })
    await expect(jwt(tpl.id, byId.instanceId)).rejects.toMatchObject({ code: 'ERR_REVOKED' })
    await expect(jwt(tpl.id, bySpiffe.instanceId)).rejects.toMatchObject({ code: 'ERR_REVOKED' })
    await expect(jwt(quarantined.id, '')).rejects.toMatchObject({ code: 'ERR_REVOKED' })
    await expect(jwt(tpl.id, kept.instanceId)).resolves.toMatchObject({ token: expect.any(String) as string })
    await expect(jwt(free.id, '')).resolves.toMatchObject({ token: expect.any(String) as string })
  })

  it('a quarantine that ended no longer refuses; a deleted one neither', async () => {
    const q = await w.create(newEntry('spiffe://example.org/q/a'))
    await w.revocations.revoke({ kind: 'prefix', value: 'spiffe://example.org/q', notAfter: w.clock.now() + 1000 })
    expect((await w.x509.issue(node, [{ entryId: q.id, csr: await csr(), instanceId: '' }])).map(codeOf)).toEqual(['ERR_REVOKED'])
    w.clock.advance(1000)
    expect((await w.x509.issue(node, [{ entryId: q.id, csr: await csr(), instanceId: '' }])).map(codeOf)).toEqual(['OK'])
    const { revocation } = await w.revocations.revoke({ kind: 'prefix', value: 'spiffe://example.org/q/a' })
    await expect(w.jwt.issue(node, { entryId: q.id, audience: ['a'], instanceId: '' })).rejects.toMatchObject({ code: 'ERR_REVOKED' })
    await w.revocations.delete(revocation.id)
    await expect(w.jwt.issue(node, { entryId: q.id, audience: ['a'], instanceId: '' })).resolves.toBeDefined()
  })
})

describe('Revocations admin API over a Unix socket, with the CLI client', () => {
  let w: World
  let server: grpc.Server
  let socket: string
  let cleanup: () => void
  beforeEach(async () => {
    w = await world()
    const t = tempDir('w-rev-')
    cleanup = t.cleanup
    socket = join(t.dir, 'admin.sock')
    const proto = loadProto('warrant/admin/v1/admin.proto') as unknown as { warrant: { admin: { v1: Record<string, grpc.ServiceClientConstructor> } } }
    server = new grpc.Server()
    server.addService(proto.warrant.admin.v1.Revocations!.service, revocationsAdminService({ revocations: w.revocations, log: w.log }))
    await new Promise<void>((res, rej) => server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())))
  })
  afterEach(async () => {
    w.revocations.stop()
    await new Promise<void>((res) => server.tryShutdown(() => res()))
    cleanup()
  })

  it('revoke, list, idempotent again, delete', async () => {
    const until = new Date(w.clock.now() + HOUR)
    const q = await revokeOnServer(socket, { kind: 'prefix', value: 'spiffe://example.org/q', reason: 'incident 7', notAfter: until })
    expect(q).toMatchObject({ kind: 'prefix', value: 'spiffe://example.org/q', reason: 'incident 7', notAfter: until.getTime(), expiresAt: until.getTime() })
    const i = await revokeOnServer(socket, { kind: 'instance', value: 'spiffe://example.org/x' })
    expect(i.notAfter).toBeUndefined()
    expect(await revokeOnServer(socket, { kind: 'prefix', value: 'spiffe://example.org/q' })).toEqual(q)
    expect((await listServerRevocations(socket)).map((r) => r.id)).toEqual([q.id, i.id])
    expect(await deleteServerRevocation(socket, q.id)).toEqual(q)
    expect((await listServerRevocations(socket)).map((r) => r.id)).toEqual([i.id])
  })

  it.each([
    ['a bad kind', { kind: 'chain', value: 'spiffe://example.org/q' }],
    ['a foreign prefix', { kind: 'prefix', value: 'spiffe://evil.org/q' }],
    ['an end in the past', { kind: 'prefix', value: 'spiffe://example.org/q', notAfter: Date.UTC(2020, 0, 1) }],
    ['an end for an instance', { kind: 'instance', value: 'spiffe://example.org/q', notAfter: Date.UTC(2030, 0, 1) }],
  ])('refuses %s: INVALID_ARGUMENT, x-error-code ERR_REVOCATION_INVALID, nothing stored', async (_n, req) => {
    const err = (await revokeOnServer(socket, req as never).catch((e: unknown) => e)) as grpc.ServiceError
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT)
    expect(err.metadata.get('x-error-code')).toEqual(['ERR_REVOCATION_INVALID'])
    expect(await listServerRevocations(socket, { includeExpired: true })).toEqual([])
  })

  it('delete of an unknown id is NOT_FOUND and of a malformed one INVALID_ARGUMENT', async () => {
    const kept = await revokeOnServer(socket, { kind: 'prefix', value: 'spiffe://example.org/q' })
    expect(((await deleteServerRevocation(socket, 99).catch((e: unknown) => e)) as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND)
    expect(((await deleteServerRevocation(socket, -1).catch((e: unknown) => e)) as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT)
    expect(await listServerRevocations(socket)).toEqual([kept])
  })
})
