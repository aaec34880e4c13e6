import { beforeEach, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import type { DataStore, NewEntry, Selector } from '../../../../src/server/datastore/types.js'
import { RegistrationService, type EntryChange } from '../../../../src/server/registration/service.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { newEntry } from '../../../helpers/entries.js'

const td = TrustDomain.fromString('example.org')
const SERVER = 'spiffe://example.org/warrant/server'
const AGENT = 'spiffe://example.org/warrant/agent/tpm/node-1'
const OTHER_AGENT = 'spiffe://example.org/warrant/agent/tpm/node-2'
const sel = (type: string, value: string): Selector => ({ type, value })

function entry(spiffePath: string, parentId: string, over: Partial<NewEntry> = {}): NewEntry {
  return newEntry({ spiffeId: `spiffe://example.org${spiffePath}`, parentId, selectors: [sel('unix', 'uid:1000')], ...over })
}

let clock: FakeClock
let ds: DataStore
let log: ReturnType<typeof captureLogger>
let reg: RegistrationService
let changes: EntryChange[]

function make(bounds?: { checkEntry(e: NewEntry): void }): RegistrationService {
  const r = new RegistrationService({
    ds,
    clock,
    log,
    limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 },
    ...(bounds ? { bounds } : {}),
  })
  r.onChange((c) => changes.push(c))
  return r
}

beforeEach(() => {
  clock = new FakeClock()
  ds = createMemoryDataStore({ clock })
  log = captureLogger()
  changes = []
  reg = make()
})

async function createOk(e: NewEntry) {
  const [r] = await reg.createEntries([e])
  if (!r?.ok) throw r?.error ?? new Error('no result')
  return r.value
}

const codeOf = (r: { ok: boolean; error?: IdentityError } | undefined) => (r && !r.ok ? r.error?.code : undefined)

describe('RegistrationService.createEntries', () => {
  it('returns one result per item; a bad item does not stop the good ones and writes nothing', async () => {
    const results = await reg.createEntries([
      entry('/ns/a', AGENT),
      entry('/warrant/x', AGENT), // reserved
      entry('/ns/b', SERVER, { selectors: [sel('tpm', 'ek:1')] }),
      entry('/ns/c', 'spiffe://example.org/ns/nobody'), // parent does not exist
      entry('/ns/d', AGENT, { x509SvidTtl: -1 }),
      entry('/ns/a', AGENT), // duplicate of the first
    ])
    expect(results.map((r) => r.ok)).toEqual([true, false, true, false, false, false])
    expect(results.map(codeOf)).toEqual([undefined, 'ERR_ENTRY_INVALID', undefined, 'ERR_ENTRY_INVALID', 'ERR_ENTRY_INVALID', 'ERR_ALREADY_EXISTS'])
    const stored = (await ds.entries.list()).entries.map((e) => e.spiffeId).sort()
    expect(stored).toEqual(['spiffe://example.org/ns/a', 'spiffe://example.org/ns/b'])
    expect(await ds.entries.count()).toBe(2)
  })

  it.each<{ title: string; parent: (ids: { workload: string }) => string; ok: boolean }>([
    { title: 'the server ID', parent: () => SERVER, ok: true },
    { title: 'an agent ID (attested or not)', parent: () => 'spiffe://example.org/warrant/agent/x509pop/abc', ok: true },
    { title: 'the SPIFFE ID of an existing entry', parent: (ids) => ids.workload, ok: true },
    { title: 'a SPIFFE ID no entry has', parent: () => 'spiffe://example.org/ns/ghost', ok: false },
    { title: 'another /warrant/ ID that is not an agent', parent: () => 'spiffe://example.org/warrant/other', ok: false },
  ])('parent rule: $title → ok=$ok', async ({ parent, ok }) => {
    const workload = await createOk(entry('/ns/downstream', AGENT, { downstream: true }))
    const [r] = await reg.createEntries([entry('/ns/child', parent({ workload: workload.spiffeId }))])
    expect(r?.ok).toBe(ok)
    if (!ok) {
      expect(codeOf(r)).toBe('ERR_ENTRY_INVALID')
      expect((r as { error: IdentityError }).error.details?.issues).toEqual([expect.objectContaining({ path: 'parent_id' })])
      expect(await ds.entries.count()).toBe(1)
    }
  })

  it('stores the normalised entry', async () => {
    const e = await createOk(
      entry('/ns/n', AGENT, { selectors: [sel('unix', 'uid:2'), sel('k8s', 'ns:a'), sel('unix', 'uid:2')], federatesWith: ['b.example', 'a.example'] }),
    )
    expect(e.selectors).toEqual([sel('k8s', 'ns:a'), sel('unix', 'uid:2')])
    expect(e.federatesWith).toEqual(['a.example', 'b.example'])
    expect(await ds.entries.get(e.id)).toEqual(e)
  })

  it.each([
    ['empty', 0],
    ['over 500 items', 501],
  ])('refuses a batch that is %s', async (_t, n) => {
    const batch = Array.from({ length: n }, (_, i) => entry(`/ns/${i}`, AGENT))
    await expect(reg.createEntries(batch)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    await expect(reg.deleteEntries(batch.map((_, i) => String(i)))).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    expect(await ds.entries.count()).toBe(0)
  })
})

describe('RegistrationService.updateEntries / deleteEntries', () => {
  it('updates per item: bad patches and unknown IDs fail alone, nothing of them is written', async () => {
    const a = await createOk(entry('/ns/a', AGENT))
    const b = await createOk(entry('/ns/b', AGENT))
    changes.length = 0
    const results = await reg.updateEntries([
      { id: a.id, hint: 'hello', selectors: [sel('unix', 'uid:1'), sel('unix', 'uid:0')] },
      { id: b.id, jwtSvidTtl: 999_999, hint: 'never' },
      { id: 'no-such-id', hint: 'x' },
      { id: b.id, parentId: 'spiffe://example.org/ns/ghost' },
    ])
    expect(results.map(codeOf)).toEqual([undefined, 'ERR_ENTRY_INVALID', 'ERR_ENTRY_NOT_FOUND', 'ERR_ENTRY_INVALID'])
    const a2 = await ds.entries.get(a.id)
    expect(a2.hint).toBe('hello')
    expect(a2.selectors).toEqual([sel('unix', 'uid:0'), sel('unix', 'uid:1')])
    expect(a2.revision).toBe(a.revision + 1)
    expect(await ds.entries.get(b.id)).toEqual(b)
    expect(changes).toEqual([{ upserted: [a2], deleted: [] }])
  })

  it('accepts moving an entry under an existing entry', async () => {
    const p = await createOk(entry('/ns/p', AGENT))
    const c = await createOk(entry('/ns/c', AGENT, { selectors: [sel('unix', 'uid:7')] }))
    const [r] = await reg.updateEntries([{ id: c.id, parentId: p.spiffeId }])
    expect(r?.ok).toBe(true)
    expect((await ds.entries.get(c.id)).parentId).toBe(p.spiffeId)
  })

  it('keeps fields a patch leaves undefined', async () => {
    const a = await createOk(entry('/ns/a', AGENT, { hint: 'keep', dnsNames: ['a.example.org'] }))
    // a patch decoded from the wire may carry explicit undefineds
    const [r] = await reg.updateEntries([{ id: a.id, hint: undefined, admin: true } as unknown as { id: string; admin: boolean }])
    expect(r?.ok).toBe(true)
    const a2 = await ds.entries.get(a.id)
    expect(a2).toMatchObject({ hint: 'keep', dnsNames: ['a.example.org'], admin: true })
  })

  it('deletes per item and reports the deleted entries', async () => {
    const a = await createOk(entry('/ns/a', AGENT))
    changes.length = 0
    const results = await reg.deleteEntries([a.id, 'missing', a.id])
    expect(results.map(codeOf)).toEqual([undefined, 'ERR_ENTRY_NOT_FOUND', 'ERR_ENTRY_NOT_FOUND'])
    expect(results[0]).toEqual({ ok: true, value: a })
    expect(changes).toEqual([{ upserted: [], deleted: [a] }])
    expect(await ds.entries.count()).toBe(0)
  })
})

describe('RegistrationService change events', () => {
  it('carries upserted entries of a batch in one event, and nothing when no item succeeded', async () => {
    const results = await reg.createEntries([entry('/ns/a', AGENT), entry('/warrant/bad', AGENT), entry('/ns/b', AGENT)])
    expect(changes).toHaveLength(1)
    expect(changes[0]!.upserted.map((e) => e.spiffeId)).toEqual(['spiffe://example.org/ns/a', 'spiffe://example.org/ns/b'])
    expect(changes[0]!.deleted).toEqual([])
    expect(changes[0]!.upserted).toEqual(results.filter((r) => r.ok).map((r) => (r as { value: unknown }).value))
    await reg.createEntries([entry('/warrant/bad', AGENT)])
    await reg.deleteEntries(['nope'])
    await reg.updateEntries([{ id: 'nope', hint: 'x' }])
    expect(changes).toHaveLength(1)
  })

  it('stops calling a listener after unsubscribe', async () => {
    const seen: EntryChange[] = []
    const off = reg.onChange((c) => seen.push(c))
    await reg.createEntries([entry('/ns/a', AGENT)])
    off()
    await reg.createEntries([entry('/ns/b', AGENT)])
    expect(seen).toHaveLength(1)
    expect(changes).toHaveLength(2)
  })

  it('createInternal emits and skips the parent check', async () => {
    const e = await reg.createInternal(entry('/ns/alias', SERVER, { selectors: [sel('join_token', 'abc')] }))
    expect(changes).toEqual([{ upserted: [e], deleted: [] }])
    await expect(reg.createInternal(entry('/warrant/agent/x', SERVER))).rejects.toMatchObject({ code: 'ERR_ENTRY_INVALID' })
  })
})

describe('RegistrationService bounds hook', () => {
  const refuse = (prefix: string) => ({
    checkEntry(e: NewEntry) {
      if (e.spiffeId.startsWith(`spiffe://example.org${prefix}`)) {
        throw new IdentityError('ERR_ENTRY_INVALID', `bound ${prefix}`, { details: { issues: [{ path: 'spiffe_id', message: 'outside bounds' }] } })
      }
    },
  })

  it('a throwing checkEntry stops create, update and createInternal writes', async () => {
    reg = make(refuse('/agents/'))
    const results = await reg.createEntries([entry('/agents/bot', AGENT), entry('/ns/ok', AGENT)])
    expect(results.map(codeOf)).toEqual(['ERR_ENTRY_INVALID', undefined])
    const ok = (results[1] as { value: { id: string; spiffeId: string } }).value
    const [u] = await reg.updateEntries([{ id: ok.id, spiffeId: 'spiffe://example.org/agents/moved' }])
    expect(codeOf(u)).toBe('ERR_ENTRY_INVALID')
    expect((await ds.entries.get(ok.id)).spiffeId).toBe(ok.spiffeId)
    await expect(reg.createInternal(entry('/agents/x', SERVER))).rejects.toMatchObject({ code: 'ERR_ENTRY_INVALID' })
    expect(await ds.entries.count()).toBe(1)
  })

  it('sees the validated, normalised entry', async () => {
    const seen: NewEntry[] = []
    reg = make({ checkEntry: (e) => void seen.push(e) })
    await reg.createEntries([entry('/ns/a', AGENT, { selectors: [sel('z', '1'), sel('a', '1')] })])
    expect(seen[0]?.selectors).toEqual([sel('a', '1'), sel('z', '1')])
  })

  it('a non-IdentityError from the hook becomes ERR_INTERNAL for that item', async () => {
    reg = make({
      checkEntry: () => {
        throw new Error('boom')
      },
    })
    const [r] = await reg.createEntries([entry('/ns/a', AGENT)])
    expect(codeOf(r)).toBe('ERR_INTERNAL')
    expect(await ds.entries.count()).toBe(0)
  })
})

describe('RegistrationService.authorizedEntries', () => {
  const node = { agentId: AGENT, selectors: [sel('tpm', 'ek:1'), sel('tpm', 'pcr:7:aa'), sel('tpm', 'model:x')] }
  const ids = async () => (await reg.authorizedEntries(node)).map((e) => e.spiffeId.replace('spiffe://example.org', '')).sort()

  it('includes entries parented to the agent, not to another agent', async () => {
    await createOk(entry('/ns/mine', AGENT))
    await createOk(entry('/ns/theirs', OTHER_AGENT))
    expect(await ids()).toEqual(['/ns/mine'])
  })

  it('follows node aliases whose selectors are a subset of the node selectors, and their children', async () => {
    await createOk(entry('/alias/match', SERVER, { selectors: [sel('tpm', 'ek:1'), sel('tpm', 'pcr:7:aa')] }))
    await createOk(entry('/alias/other', SERVER, { selectors: [sel('tpm', 'ek:1'), sel('tpm', 'pcr:7:bb')] }))
    await createOk(entry('/ns/via-alias', 'spiffe://example.org/alias/match'))
    await createOk(entry('/ns/via-other', 'spiffe://example.org/alias/other'))
    // the alias itself is not served (its parent is the server), its children are
    expect(await ids()).toEqual(['/ns/via-alias'])
  })

  it('a node without selectors matches no alias', async () => {
    await createOk(entry('/alias/a', SERVER, { selectors: [sel('tpm', 'ek:1')] }))
    await createOk(entry('/ns/child', 'spiffe://example.org/alias/a'))
    expect(await reg.authorizedEntries({ agentId: AGENT, selectors: [] })).toEqual([])
  })

  it('follows downstream chains transitively', async () => {
    await createOk(entry('/ds/1', AGENT, { downstream: true }))
    await createOk(entry('/ds/2', 'spiffe://example.org/ds/1', { downstream: true }))
    await createOk(entry('/ds/3', 'spiffe://example.org/ds/2'))
    await createOk(entry('/elsewhere', OTHER_AGENT))
    expect(await ids()).toEqual(['/ds/1', '/ds/2', '/ds/3'])
  })

  it('an agent with more than 10,000 entries gets what is nested under the last of them, in one query per 1,000 parents', async () => {
    const n = 10_050
    for (let i = 0; i < n; i++) await ds.entries.create(entry(`/w/${i}`, AGENT, { selectors: [sel('unix', `uid:${i}`)] }))
    await ds.entries.create(entry('/nested/under-last', `spiffe://example.org/w/${n - 1}`))
    let lists = 0
    // the memory store is frozen: count through objects that inherit from it
    const list = (...a: Parameters<DataStore['entries']['list']>) => (lists++, ds.entries.list(...a))
    const entries = Object.create(ds.entries, { list: { value: list } }) as DataStore['entries']
    const counted = Object.create(ds, { entries: { value: entries } }) as DataStore
    const r = new RegistrationService({ ds: counted, clock, log, limits: { trustDomain: td, maxX509TtlSeconds: 86_400, maxJwtTtlSeconds: 3_600 } })
    const got = await r.authorizedEntries({ agentId: AGENT, selectors: [] })
    expect(got).toHaveLength(n + 1)
    expect(got.some((e) => e.spiffeId === 'spiffe://example.org/nested/under-last')).toBe(true)
    // the agent; its 10,050 entries in 11 batches; the nested one
    expect(lists).toBe(1 + 11 + 1)
  })

  it('terminates on cycles', async () => {
    await createOk(entry('/c/a', AGENT))
    const b = await createOk(entry('/c/b', 'spiffe://example.org/c/a'))
    const a2 = await createOk(entry('/c/a', 'spiffe://example.org/c/b', { selectors: [sel('unix', 'uid:2')] }))
    expect(await ids()).toEqual(['/c/a', '/c/a', '/c/b'])
    expect((await reg.authorizedEntries(node)).map((e) => e.id)).toEqual(expect.arrayContaining([b.id, a2.id]))
  })

  it('leaves out expired entries (and what hangs below an expired one)', async () => {
    const t = clock.now()
    await createOk(entry('/ns/short', AGENT, { expiresAt: t + 60_000 }))
    await createOk(entry('/ns/under-short', 'spiffe://example.org/ns/short'))
    await createOk(entry('/alias/short', SERVER, { selectors: [sel('tpm', 'ek:1')], expiresAt: t + 60_000 }))
    await createOk(entry('/ns/under-alias', 'spiffe://example.org/alias/short'))
    await createOk(entry('/ns/long', AGENT))
    expect(await ids()).toEqual(['/ns/long', '/ns/short', '/ns/under-alias', '/ns/under-short'])
    clock.advance(60_000)
    expect(await ids()).toEqual(['/ns/long'])
  })

  it('authorizedSet holds until the earliest expiry among the entries and the aliases that led to them', async () => {
    const t = clock.now()
    await createOk(entry('/ns/long', AGENT))
    expect((await reg.authorizedSet(node)).validUntil).toBeNull()
    await createOk(entry('/alias/soon', SERVER, { selectors: [sel('tpm', 'ek:1')], expiresAt: t + 40_000 }))
    await createOk(entry('/ns/under-alias', 'spiffe://example.org/alias/soon', { expiresAt: t + 90_000 }))
    await createOk(entry('/ns/later', AGENT, { expiresAt: t + 70_000 }))
    // An alias that does not match, and an entry of another agent, do not count.
    await createOk(entry('/alias/other', SERVER, { selectors: [sel('tpm', 'ek:2')], expiresAt: t + 10_000 }))
    await createOk(entry('/ns/theirs', OTHER_AGENT, { expiresAt: t + 5_000 }))
    const set = await reg.authorizedSet(node)
    expect(set.validUntil).toBe(t + 40_000)
    expect(set.entries.map((e) => e.spiffeId.replace('spiffe://example.org', '')).sort()).toEqual(['/ns/later', '/ns/long', '/ns/under-alias'])
    clock.advance(40_000)
    expect((await reg.authorizedSet(node)).validUntil).toBe(t + 70_000)
  })

  it('authorizedEntry returns an authorized entry and throws ERR_ID_NOT_AUTHORIZED otherwise', async () => {
    const mine = await createOk(entry('/ns/mine', AGENT))
    const theirs = await createOk(entry('/ns/theirs', OTHER_AGENT))
    expect(await reg.authorizedEntry(node, mine.id)).toEqual(mine)
    await expect(reg.authorizedEntry(node, theirs.id)).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
    await expect(reg.authorizedEntry(node, 'no-such-id')).rejects.toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
  })
})

describe('RegistrationService logging', () => {
  it('logs created entries by ID, with the registration subsystem', async () => {
    const e = await createOk(entry('/ns/a', AGENT))
    const line = log.lines.find((l) => l.msg === 'Entry created')
    expect(line?.fields).toMatchObject({ subsystem: 'registration', entry_id: e.id, spiffe_id: e.spiffeId })
  })
})
