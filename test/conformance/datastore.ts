import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Clock } from '../../src/common/clock.js'
import type { AttestedNode, DataStore, NewEntry, RegistrationEntry, Selector, SelectorMatch } from '../../src/server/datastore/index.js'
import { FakeClock } from '../helpers/fake-clock.js'
import { newEntry as baseEntry } from '../helpers/entries.js'

export interface DataStoreHarness {
  ds: DataStore
  /** Closes `ds` and opens the same storage again (omit for non-persistent stores). */
  reopen?: () => Promise<DataStore>
  /** Removes whatever `open` created; `ds` is already closed. */
  cleanup: () => Promise<void>
}

export interface DataStoreConformanceOptions {
  /** Opens a fresh, empty store that takes its timestamps from `clock`. */
  open: (ctx: { clock: Clock }) => Promise<DataStoreHarness>
  /** The store keeps its data across close and open: the harness must provide `reopen`. */
  persistent?: boolean
}

const sel = (spec: string): Selector[] =>
  spec === ''
    ? []
    : spec.split(' ').map((s) => {
        const i = s.indexOf(':')
        return { type: s.slice(0, i), value: s.slice(i + 1) }
      })

function newEntry(over: Partial<NewEntry> = {}): NewEntry {
  return baseEntry({
    spiffeId: 'spiffe://corp.example/web',
    parentId: 'spiffe://corp.example/warrant/agent/join_token/a1',
    selectors: sel('unix:uid:1000'),
    ...over,
  })
}

function newNode(over: Partial<Omit<AttestedNode, 'createdAt' | 'updatedAt'>> = {}): Omit<AttestedNode, 'createdAt' | 'updatedAt'> {
  return {
    agentId: 'spiffe://corp.example/warrant/agent/tpm/n1',
    attestor: 'tpm',
    selectors: sel('tpm:ek_hash:ab'),
    serial: '01',
    previousSerial: '',
    expiresAt: Date.UTC(2026, 1, 1),
    banned: false,
    canReattest: true,
    ...over,
  }
}

const ids = (entries: RegistrationEntry[]): string[] => entries.map((e) => e.id)

/**
 * The behaviour every DataStore implementation must have (memory, SQLite and,
 * later, PostgreSQL run the same suite).
 */
export function dataStoreConformance(name: string, opts: DataStoreConformanceOptions): void {
  describe(`DataStore conformance: ${name}`, () => {
    let h: DataStoreHarness
    let ds: DataStore
    let clock: FakeClock

    beforeEach(async () => {
      clock = new FakeClock()
      h = await opts.open({ clock })
      ds = h.ds
    })
    afterEach(async () => {
      await ds.close()
      await h.cleanup()
    })

    describe('entries', () => {
      it('creates an entry with generated id, times, revision 1 and normalized selectors', async () => {
        const e = await ds.entries.create(
          newEntry({
            selectors: sel('unix:uid:1000 docker:label:a unix:gid:5 unix:uid:1000'),
            dnsNames: ['b.example', 'a.example'],
            federatesWith: ['partner.example'],
            x509SvidTtl: 3600,
            jwtSvidTtl: 300,
            hint: 'web',
            admin: true,
            downstream: true,
            expiresAt: Date.UTC(2027, 0, 1),
          }),
        )
        expect(e.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        expect(e).toEqual({
          id: e.id,
          spiffeId: 'spiffe://corp.example/web',
          parentId: 'spiffe://corp.example/warrant/agent/join_token/a1',
          selectors: sel('docker:label:a unix:gid:5 unix:uid:1000'),
          x509SvidTtl: 3600,
          jwtSvidTtl: 300,
          dnsNames: ['b.example', 'a.example'],
          federatesWith: ['partner.example'],
          hint: 'web',
          admin: true,
          downstream: true,
          expiresAt: Date.UTC(2027, 0, 1),
          createdAt: clock.now(),
          updatedAt: clock.now(),
          revision: 1,
        })
        expect(await ds.entries.get(e.id)).toEqual(e)
        expect(await ds.entries.find(e.id)).toEqual(e)
      })

      it('keeps a caller-supplied id', async () => {
        const e = await ds.entries.create(newEntry({ id: 'fixed-id' }))
        expect(e.id).toBe('fixed-id')
        expect((await ds.entries.get('fixed-id')).spiffeId).toBe('spiffe://corp.example/web')
      })

      it.each([
        { title: 'same selectors in another order', over: { selectors: sel('unix:gid:5 unix:uid:1000') } },
        { title: 'duplicated selector', over: { selectors: sel('unix:uid:1000 unix:gid:5 unix:gid:5') } },
        { title: 'other TTLs and hint', over: { selectors: sel('unix:uid:1000 unix:gid:5'), x509SvidTtl: 60, hint: 'x' } },
      ])('rejects a duplicate entry ($title) with ERR_ALREADY_EXISTS', async ({ over }) => {
        const first = await ds.entries.create(newEntry({ selectors: sel('unix:uid:1000 unix:gid:5') }))
        const err = await ds.entries.create(newEntry(over)).catch((e: unknown) => e)
        expect(err).toMatchObject({ code: 'ERR_ALREADY_EXISTS', details: { entryId: first.id } })
        expect(await ds.entries.count()).toBe(1)
      })

      it('rejects a second entry with the same id', async () => {
        await ds.entries.create(newEntry({ id: 'x' }))
        await expect(ds.entries.create(newEntry({ id: 'x', spiffeId: 'spiffe://corp.example/other' }))).rejects.toMatchObject({
          code: 'ERR_ALREADY_EXISTS',
        })
      })

      it.each([
        { title: 'other SPIFFE ID', over: { spiffeId: 'spiffe://corp.example/api' } },
        { title: 'other parent', over: { parentId: 'spiffe://corp.example/warrant/agent/join_token/a2' } },
        { title: 'fewer selectors', over: { selectors: sel('unix:uid:1000') } },
        { title: 'more selectors', over: { selectors: sel('unix:uid:1000 unix:gid:5 unix:gid:6') } },
      ])('allows entries that differ by $title', async ({ over }) => {
        await ds.entries.create(newEntry({ selectors: sel('unix:uid:1000 unix:gid:5') }))
        await ds.entries.create(newEntry(over))
        expect(await ds.entries.count()).toBe(2)
      })

      it.each([
        { method: 'get', run: (d: DataStore) => d.entries.get('missing') },
        { method: 'update', run: (d: DataStore) => d.entries.update('missing', { hint: 'x' }) },
        { method: 'delete', run: (d: DataStore) => d.entries.delete('missing') },
      ])('$method of an unknown id throws ERR_ENTRY_NOT_FOUND', async ({ run }) => {
        await expect(run(ds)).rejects.toMatchObject({ code: 'ERR_ENTRY_NOT_FOUND' })
      })

      it('find of an unknown id returns undefined', async () => {
        expect(await ds.entries.find('missing')).toBeUndefined()
      })

      it('returns copies: mutating a result does not change the store', async () => {
        const e = await ds.entries.create(newEntry({ dnsNames: ['a.example'] }))
        e.selectors.push({ type: 'x', value: 'y' })
        e.dnsNames.push('evil.example')
        e.hint = 'changed'
        const again = await ds.entries.get(e.id)
        expect(again.selectors).toEqual(sel('unix:uid:1000'))
        expect(again.dnsNames).toEqual(['a.example'])
        expect(again.hint).toBe('')
      })

      it('update changes only the patched fields, bumps revision and updatedAt', async () => {
        const e = await ds.entries.create(newEntry({ dnsNames: ['a.example'], expiresAt: 5 }))
        clock.advance(1000)
        const u = await ds.entries.update(e.id, {
          selectors: sel('unix:uid:2 k8s:ns:prod'),
          dnsNames: ['z.example', 'y.example'],
          federatesWith: ['p.example', 'o.example'],
          x509SvidTtl: 60,
          admin: true,
          expiresAt: null,
        })
        expect(u).toEqual({
          ...e,
          selectors: sel('k8s:ns:prod unix:uid:2'),
          dnsNames: ['z.example', 'y.example'],
          federatesWith: ['p.example', 'o.example'],
          x509SvidTtl: 60,
          admin: true,
          expiresAt: null,
          updatedAt: e.createdAt + 1000,
          revision: 2,
        })
        expect(await ds.entries.get(e.id)).toEqual(u)
        clock.advance(1)
        const u2 = await ds.entries.update(e.id, { hint: 'h' })
        expect(u2).toEqual({ ...u, hint: 'h', revision: 3, updatedAt: u.updatedAt + 1 })
      })

      it('update with expectedRevision: matches pass, stale ones throw ERR_INVALID_ARGUMENT', async () => {
        const e = await ds.entries.create(newEntry())
        const u = await ds.entries.update(e.id, { hint: 'a' }, { expectedRevision: 1 })
        expect(u.revision).toBe(2)
        await expect(ds.entries.update(e.id, { hint: 'b' }, { expectedRevision: 1 })).rejects.toMatchObject({
          code: 'ERR_INVALID_ARGUMENT',
        })
        expect((await ds.entries.get(e.id)).hint).toBe('a')
      })

      it('update that would duplicate another entry throws ERR_ALREADY_EXISTS and changes nothing', async () => {
        const a = await ds.entries.create(newEntry({ selectors: sel('unix:uid:1') }))
        const b = await ds.entries.create(newEntry({ selectors: sel('unix:uid:2'), dnsNames: ['b.example'] }))
        await expect(ds.entries.update(b.id, { selectors: sel('unix:uid:1'), dnsNames: ['changed.example'] })).rejects.toMatchObject({
          code: 'ERR_ALREADY_EXISTS',
          details: { entryId: a.id },
        })
        expect(await ds.entries.get(b.id)).toEqual(b)
      })

      it('delete returns the entry, frees its identity, and a second delete throws', async () => {
        const e = await ds.entries.create(newEntry({ dnsNames: ['a.example'], federatesWith: ['p.example'] }))
        expect(await ds.entries.delete(e.id)).toEqual(e)
        expect(await ds.entries.find(e.id)).toBeUndefined()
        await expect(ds.entries.delete(e.id)).rejects.toMatchObject({ code: 'ERR_ENTRY_NOT_FOUND' })
        expect(await ds.entries.list({ federatesWith: 'p.example' })).toEqual({ entries: [], nextPageToken: '' })
        const again = await ds.entries.create(newEntry())
        expect(again.id).not.toBe(e.id)
      })

      it('rejects malformed input with TypeError / RangeError', async () => {
        await expect(ds.entries.create(newEntry({ x509SvidTtl: -1 }))).rejects.toBeInstanceOf(RangeError)
        await expect(ds.entries.create(newEntry({ jwtSvidTtl: 1.5 }))).rejects.toBeInstanceOf(RangeError)
        await expect(ds.entries.create(newEntry({ selectors: 'unix:uid:1' as unknown as Selector[] }))).rejects.toBeInstanceOf(TypeError)
        await expect(ds.entries.create(newEntry({ admin: 1 as unknown as boolean }))).rejects.toBeInstanceOf(TypeError)
        await expect(ds.entries.list({}, { pageSize: -1 })).rejects.toBeInstanceOf(RangeError)
        await expect(ds.entries.list({ selectors: { set: [], match: 'most' as SelectorMatch } })).rejects.toBeInstanceOf(TypeError)
        await expect(ds.entries.list({ parentIds: 'p1' as unknown as string[] })).rejects.toBeInstanceOf(TypeError)
        await expect(ds.entries.list({ parentIds: ['p1', 7 as unknown as string] })).rejects.toBeInstanceOf(TypeError)
        await expect(ds.entries.list({ parentIds: Array.from({ length: 1001 }, (_, i) => `p${i}`) })).rejects.toBeInstanceOf(TypeError)
        expect(await ds.entries.count()).toBe(0)
      })

      describe('list and count filters', () => {
        const fixtures: Record<string, Partial<NewEntry>> = {
          web: { spiffeId: 'spiffe://corp.example/web', parentId: 'p1', selectors: sel('unix:uid:1'), hint: 'h1' },
          web2: { spiffeId: 'spiffe://corp.example/web', parentId: 'p2', selectors: sel('unix:uid:1'), federatesWith: ['a.example'] },
          api: {
            spiffeId: 'spiffe://corp.example/api',
            parentId: 'p1',
            selectors: sel('unix:uid:2'),
            federatesWith: ['b.example', 'a.example'],
            hint: 'h1',
          },
          db: { spiffeId: 'spiffe://corp.example/db', parentId: 'p2', selectors: sel('unix:uid:3') },
        }
        let byName: Map<string, string>
        beforeEach(async () => {
          byName = new Map()
          for (const [n, over] of Object.entries(fixtures)) byName.set((await ds.entries.create(newEntry(over))).id, n)
        })

        it.each([
          { title: 'no filter', filter: {}, want: ['web', 'web2', 'api', 'db'] },
          { title: 'spiffeId', filter: { spiffeId: 'spiffe://corp.example/web' }, want: ['web', 'web2'] },
          { title: 'parentId', filter: { parentId: 'p1' }, want: ['web', 'api'] },
          { title: 'parentId + spiffeId', filter: { parentId: 'p2', spiffeId: 'spiffe://corp.example/web' }, want: ['web2'] },
          { title: 'hint', filter: { hint: 'h1' }, want: ['web', 'api'] },
          { title: 'federatesWith a', filter: { federatesWith: 'a.example' }, want: ['web2', 'api'] },
          { title: 'federatesWith b + parent', filter: { federatesWith: 'b.example', parentId: 'p2' }, want: [] },
          { title: 'unknown parent', filter: { parentId: 'nope' }, want: [] },
          { title: 'parentIds one', filter: { parentIds: ['p1'] }, want: ['web', 'api'] },
          { title: 'parentIds two, repeated and unknown', filter: { parentIds: ['p2', 'nope', 'p1', 'p2'] }, want: ['web', 'web2', 'api', 'db'] },
          { title: 'parentIds empty', filter: { parentIds: [] }, want: [] },
          { title: 'parentIds + spiffeId', filter: { parentIds: ['p1', 'p2'], spiffeId: 'spiffe://corp.example/web' }, want: ['web', 'web2'] },
          { title: 'parentIds + parentId', filter: { parentIds: ['p1', 'p2'], parentId: 'p2' }, want: ['web2', 'db'] },
        ])('$title', async ({ filter, want }) => {
          const { entries, nextPageToken } = await ds.entries.list(filter)
          expect(nextPageToken).toBe('')
          expect(entries.map((e) => byName.get(e.id)).sort()).toEqual([...want].sort())
          expect(ids(entries)).toEqual([...ids(entries)].sort())
          expect(await ds.entries.count(filter)).toBe(want.length)
        })
      })

      describe('selector match modes', () => {
        const fixtures: Record<string, string> = {
          A: 'u:1',
          B: 'u:1 g:2',
          C: 'g:2 n:3',
          D: 'd:4',
          E: 'u:1 g:2 n:3',
        }
        let byName: Map<string, string>
        beforeEach(async () => {
          byName = new Map()
          for (const [n, s] of Object.entries(fixtures)) {
            byName.set((await ds.entries.create(newEntry({ spiffeId: `spiffe://corp.example/${n}`, selectors: sel(s) }))).id, n)
          }
          // same selectors as A under another parent: filters combine
          byName.set((await ds.entries.create(newEntry({ spiffeId: 'spiffe://corp.example/A2', parentId: 'other', selectors: sel('u:1') }))).id, 'A2')
        })

        it.each([
          { match: 'exact', set: 'u:1', want: ['A', 'A2'] },
          { match: 'exact', set: 'g:2 u:1', want: ['B'] },
          { match: 'exact', set: 'u:1 g:2 g:2', want: ['B'] },
          { match: 'exact', set: 'g:2', want: [] },
          { match: 'exact', set: '', want: [] },
          { match: 'subset', set: 'u:1 g:2', want: ['A', 'A2', 'B'] },
          { match: 'subset', set: 'u:1 g:2 n:3 x:9', want: ['A', 'A2', 'B', 'C', 'E'] },
          { match: 'subset', set: 'g:2', want: [] },
          { match: 'subset', set: 'd:4 u:1', want: ['A', 'A2', 'D'] },
          { match: 'subset', set: '', want: [] },
          { match: 'superset', set: 'g:2', want: ['B', 'C', 'E'] },
          { match: 'superset', set: 'u:1 g:2', want: ['B', 'E'] },
          { match: 'superset', set: 'u:1 x:9', want: [] },
          { match: 'superset', set: '', want: ['A', 'A2', 'B', 'C', 'D', 'E'] },
          { match: 'any', set: 'n:3 d:4', want: ['C', 'D', 'E'] },
          { match: 'any', set: 'x:9', want: [] },
          { match: 'any', set: '', want: [] },
          // type and value are matched as a pair
          { match: 'any', set: 'u:2 g:1', want: [] },
        ] as { match: SelectorMatch; set: string; want: string[] }[])('$match of [$set]', async ({ match, set, want }) => {
          const filter = { selectors: { set: sel(set), match } }
          const { entries } = await ds.entries.list(filter)
          expect(entries.map((e) => byName.get(e.id)).sort()).toEqual([...want].sort())
          expect(await ds.entries.count(filter)).toBe(want.length)
        })

        it('combines a selector match with parentId', async () => {
          const filter = { parentId: 'other', selectors: { set: sel('u:1 g:2'), match: 'subset' as const } }
          const { entries } = await ds.entries.list(filter)
          expect(entries.map((e) => byName.get(e.id))).toEqual(['A2'])
          expect(await ds.entries.count(filter)).toBe(1)
        })

        it('pages through a selector match', async () => {
          const filter = { selectors: { set: sel('u:1 g:2 n:3'), match: 'subset' as const } }
          const seen: string[] = []
          let pageToken = ''
          do {
            const res = await ds.entries.list(filter, { pageSize: 2, pageToken })
            expect(res.entries.length).toBeLessThanOrEqual(2)
            seen.push(...ids(res.entries))
            pageToken = res.nextPageToken
          } while (pageToken !== '')
          expect(seen.map((id) => byName.get(id)).sort()).toEqual(['A', 'A2', 'B', 'C', 'E'])
        })
      })

      it('paginates by id with opaque tokens', async () => {
        for (let i = 0; i < 25; i++) await ds.entries.create(newEntry({ selectors: sel(`unix:uid:${i}`) }))
        const all = (await ds.entries.list()).entries
        expect(all).toHaveLength(25)
        expect(ids(all)).toEqual([...ids(all)].sort())
        expect((await ds.entries.list({}, { pageSize: 0 })).entries).toHaveLength(25)

        const pages: RegistrationEntry[][] = []
        let pageToken = ''
        do {
          const res = await ds.entries.list({}, { pageSize: 10, pageToken })
          pages.push(res.entries)
          pageToken = res.nextPageToken
        } while (pageToken !== '')
        expect(pages.map((p) => p.length)).toEqual([10, 10, 5])
        expect(pages.flat()).toEqual(all)

        const exact = await ds.entries.list({}, { pageSize: 25 })
        expect(exact.entries).toHaveLength(25)
        expect(exact.nextPageToken).toBe('')
      })

      it('continues a page token after the last entry was deleted', async () => {
        for (let i = 0; i < 4; i++) await ds.entries.create(newEntry({ selectors: sel(`unix:uid:${i}`) }))
        const first = await ds.entries.list({}, { pageSize: 2 })
        await ds.entries.delete(first.entries[1]?.id as string)
        const second = await ds.entries.list({}, { pageSize: 2, pageToken: first.nextPageToken })
        expect(second.entries).toHaveLength(2)
        expect(second.nextPageToken).toBe('')
      })

      it.each(['garbage!', 'AAAA', Buffer.from('x').toString('base64url')])('rejects page token %j with ERR_INVALID_ARGUMENT', async (t) => {
        await expect(ds.entries.list({}, { pageSize: 1, pageToken: t })).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      })

      it('pruneExpired deletes and returns entries that expired strictly before now', async () => {
        const now = Date.UTC(2026, 5, 1)
        const old = await ds.entries.create(newEntry({ selectors: sel('u:1'), expiresAt: now - 1 }))
        const edge = await ds.entries.create(newEntry({ selectors: sel('u:2'), expiresAt: now }))
        const never = await ds.entries.create(newEntry({ selectors: sel('u:3'), expiresAt: null }))
        const pruned = await ds.entries.pruneExpired(now)
        expect(pruned).toEqual([old])
        expect(ids((await ds.entries.list()).entries).sort()).toEqual([edge.id, never.id].sort())
        expect(await ds.entries.pruneExpired(now)).toEqual([])
        expect(await ds.entries.list({ selectors: { set: sel('u:1'), match: 'any' } })).toEqual({ entries: [], nextPageToken: '' })
      })

      it('serves many concurrent creates', async () => {
        const made = await Promise.all(Array.from({ length: 50 }, (_, i) => ds.entries.create(newEntry({ selectors: sel(`unix:uid:${i} unix:gid:${i % 3}`) }))))
        expect(new Set(ids(made)).size).toBe(50)
        expect(await ds.entries.count()).toBe(50)
        expect(await ds.entries.count({ selectors: { set: sel('unix:gid:0'), match: 'superset' } })).toBe(17)
      })
    })

    describe('attested nodes', () => {
      it('upsert inserts, then replaces while keeping createdAt', async () => {
        const n = await ds.nodes.upsert(newNode({ selectors: sel('tpm:b tpm:a tpm:a') }))
        expect(n).toEqual({ ...newNode(), selectors: sel('tpm:a tpm:b'), createdAt: clock.now(), updatedAt: clock.now() })
        clock.advance(500)
        const r = await ds.nodes.upsert(newNode({ serial: '02', previousSerial: '01', selectors: sel('tpm:c'), canReattest: false }))
        expect(r).toEqual({
          ...newNode({ serial: '02', previousSerial: '01', selectors: sel('tpm:c'), canReattest: false }),
          createdAt: n.createdAt,
          updatedAt: n.createdAt + 500,
        })
        expect(await ds.nodes.get(r.agentId)).toEqual(r)
        expect(await ds.nodes.find(r.agentId)).toEqual(r)
        expect(await ds.nodes.count()).toBe(1)
      })

      it.each([
        { method: 'get', run: (d: DataStore) => d.nodes.get('spiffe://x/missing') },
        { method: 'update', run: (d: DataStore) => d.nodes.update('spiffe://x/missing', { banned: true }) },
        { method: 'delete', run: (d: DataStore) => d.nodes.delete('spiffe://x/missing') },
      ])('$method of an unknown agent throws ERR_NOT_FOUND', async ({ run }) => {
        await expect(run(ds)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
      })

      it('find of an unknown agent returns undefined', async () => {
        expect(await ds.nodes.find('spiffe://x/missing')).toBeUndefined()
      })

      it('update patches only the given fields', async () => {
        const n = await ds.nodes.upsert(newNode())
        clock.advance(10)
        const u = await ds.nodes.update(n.agentId, { serial: '02', previousSerial: '01', expiresAt: 99 })
        expect(u).toEqual({ ...n, serial: '02', previousSerial: '01', expiresAt: 99, updatedAt: n.updatedAt + 10 })
        const b = await ds.nodes.update(n.agentId, { banned: true, serial: '', selectors: sel('tpm:z') })
        expect(b).toEqual({ ...u, banned: true, serial: '', selectors: sel('tpm:z') })
        expect(await ds.nodes.get(n.agentId)).toEqual(b)
      })

      it('delete returns the node', async () => {
        const n = await ds.nodes.upsert(newNode())
        expect(await ds.nodes.delete(n.agentId)).toEqual(n)
        expect(await ds.nodes.find(n.agentId)).toBeUndefined()
        expect(await ds.nodes.count({ selectors: sel('tpm:ek_hash:ab') })).toBe(0)
      })

      describe('list and count filters', () => {
        beforeEach(async () => {
          await ds.nodes.upsert(newNode({ agentId: 'spiffe://td/a', attestor: 'tpm', selectors: sel('tpm:x tpm:y'), expiresAt: 100 }))
          await ds.nodes.upsert(newNode({ agentId: 'spiffe://td/b', attestor: 'tpm', selectors: sel('tpm:x'), expiresAt: 200, banned: true }))
          await ds.nodes.upsert(newNode({ agentId: 'spiffe://td/c', attestor: 'join_token', selectors: [], expiresAt: 300 }))
        })

        it.each([
          { title: 'no filter', filter: {}, want: ['a', 'b', 'c'] },
          { title: 'attestor', filter: { attestor: 'tpm' }, want: ['a', 'b'] },
          { title: 'banned', filter: { banned: true }, want: ['b'] },
          { title: 'not banned', filter: { banned: false }, want: ['a', 'c'] },
          { title: 'selectors (all of)', filter: { selectors: sel('tpm:x') }, want: ['a', 'b'] },
          { title: 'selectors (all of, 2)', filter: { selectors: sel('tpm:y tpm:x') }, want: ['a'] },
          { title: 'selectors none match', filter: { selectors: sel('tpm:q') }, want: [] },
          { title: 'expiresBefore', filter: { expiresBefore: 200 }, want: ['a'] },
          { title: 'combined', filter: { attestor: 'tpm', banned: false, expiresBefore: 1000 }, want: ['a'] },
        ])('$title', async ({ filter, want }) => {
          const { nodes, nextPageToken } = await ds.nodes.list(filter)
          expect(nextPageToken).toBe('')
          expect(nodes.map((n) => n.agentId)).toEqual(want.map((w) => `spiffe://td/${w}`))
          expect(await ds.nodes.count(filter)).toBe(want.length)
        })

        it('paginates by agentId', async () => {
          const p1 = await ds.nodes.list({}, { pageSize: 2 })
          expect(p1.nodes.map((n) => n.agentId)).toEqual(['spiffe://td/a', 'spiffe://td/b'])
          const p2 = await ds.nodes.list({}, { pageSize: 2, pageToken: p1.nextPageToken })
          expect(p2).toEqual({ nodes: [expect.objectContaining({ agentId: 'spiffe://td/c' })], nextPageToken: '' })
        })
      })
    })

    describe('join tokens', () => {
      const token = { tokenHash: 'a'.repeat(64), spiffeId: 'spiffe://corp.example/host1', expiresAt: Date.UTC(2026, 0, 2) }

      it('create, count, and a one-use consume', async () => {
        expect(await ds.joinTokens.create(token)).toEqual({ ...token, createdAt: clock.now() })
        expect(await ds.joinTokens.count()).toBe(1)
        expect(await ds.joinTokens.consume(token.tokenHash)).toEqual({ ...token, createdAt: clock.now() })
        expect(await ds.joinTokens.consume(token.tokenHash)).toBeUndefined()
        expect(await ds.joinTokens.count()).toBe(0)
        expect(await ds.joinTokens.consume('b'.repeat(64))).toBeUndefined()
      })

      it('rejects a duplicate token with ERR_ALREADY_EXISTS', async () => {
        await ds.joinTokens.create(token)
        await expect(ds.joinTokens.create(token)).rejects.toMatchObject({ code: 'ERR_ALREADY_EXISTS' })
      })

      it('concurrent consumes: exactly one wins', async () => {
        await ds.joinTokens.create(token)
        const results = await Promise.all(Array.from({ length: 10 }, () => ds.joinTokens.consume(token.tokenHash)))
        expect(results.filter((r) => r !== undefined)).toHaveLength(1)
      })

      it('concurrent consumes inside transactions: exactly one wins', async () => {
        await ds.joinTokens.create(token)
        const results = await Promise.all(Array.from({ length: 5 }, () => ds.tx(async (t) => t.joinTokens.consume(token.tokenHash))))
        expect(results.filter((r) => r !== undefined)).toHaveLength(1)
      })

      it('pruneExpired removes tokens that expired strictly before now', async () => {
        await ds.joinTokens.create({ ...token, tokenHash: '1', expiresAt: 10 })
        await ds.joinTokens.create({ ...token, tokenHash: '2', expiresAt: 20 })
        await ds.joinTokens.create({ ...token, tokenHash: '3', expiresAt: 30 })
        expect(await ds.joinTokens.pruneExpired(20)).toBe(1)
        expect(await ds.joinTokens.count()).toBe(2)
        expect(await ds.joinTokens.consume('1')).toBeUndefined()
        expect(await ds.joinTokens.consume('2')).toMatchObject({ tokenHash: '2' })
      })
    })

    describe('bundles', () => {
      it('put, get, replace, list sorted, delete', async () => {
        expect(await ds.bundles.get('corp.example')).toBeUndefined()
        const b1 = await ds.bundles.put({ trustDomain: 'corp.example', document: '{"keys":[]}', sequence: 1 })
        expect(b1).toEqual({ trustDomain: 'corp.example', document: '{"keys":[]}', sequence: 1, updatedAt: clock.now() })
        clock.advance(5)
        const b2 = await ds.bundles.put({ trustDomain: 'corp.example', document: '{"keys":[1]}', sequence: 2 })
        expect(b2.updatedAt).toBe(b1.updatedAt + 5)
        expect(await ds.bundles.get('corp.example')).toEqual(b2)
        const p = await ds.bundles.put({ trustDomain: 'a-partner.example', document: '{}', sequence: 7 })
        expect(await ds.bundles.list()).toEqual([p, b2])
        await ds.bundles.delete('corp.example')
        expect(await ds.bundles.get('corp.example')).toBeUndefined()
        await expect(ds.bundles.delete('corp.example')).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
        expect(await ds.bundles.list()).toEqual([p])
      })
    })

    describe('CA journal', () => {
      it('get, put, overwrite', async () => {
        expect(await ds.journal.get('x509')).toBeUndefined()
        await ds.journal.put('x509', '{"a":1}')
        await ds.journal.put('jwt', '{"b":2}')
        await ds.journal.put('x509', '{"a":2}')
        expect(await ds.journal.get('x509')).toBe('{"a":2}')
        expect(await ds.journal.get('jwt')).toBe('{"b":2}')
      })
    })

    describe('kv', () => {
      it('namespaces are separate; list is sorted by key; delete reports whether it removed', async () => {
        await ds.kv.put('fed', 'b', '2')
        await ds.kv.put('fed', 'a', '1')
        await ds.kv.put('other', 'a', 'x')
        await ds.kv.put('fed', 'a', '1b')
        expect(await ds.kv.get('fed', 'a')).toBe('1b')
        expect(await ds.kv.get('other', 'a')).toBe('x')
        expect(await ds.kv.get('fed', 'zz')).toBeUndefined()
        expect(await ds.kv.list('fed')).toEqual([
          { key: 'a', value: '1b' },
          { key: 'b', value: '2' },
        ])
        expect(await ds.kv.list('empty')).toEqual([])
        expect(await ds.kv.delete('fed', 'a')).toBe(true)
        expect(await ds.kv.delete('fed', 'a')).toBe(false)
        expect(await ds.kv.list('fed')).toEqual([{ key: 'b', value: '2' }])
        expect(await ds.kv.list('other')).toEqual([{ key: 'a', value: 'x' }])
      })
    })

    describe('live instances', () => {
      const P = '/agents/payments'
      it('put keeps the later expiry; list gives the unexpired ones of a prefix by key; release covers every prefix', async () => {
        expect(await ds.liveInstances.put({ prefix: P, instanceKey: 'a2|e2', expiresAt: 2_000 })).toEqual({ prefix: P, instanceKey: 'a2|e2', expiresAt: 2_000 })
        await ds.liveInstances.put({ prefix: P, instanceKey: 'a1|e1', expiresAt: 1_000 })
        await ds.liveInstances.put({ prefix: '/agents', instanceKey: 'a1|e1', expiresAt: 1_000 })
        // A renewal extends; an older expiry never shortens.
        expect(await ds.liveInstances.put({ prefix: P, instanceKey: 'a1|e1', expiresAt: 3_000 })).toMatchObject({ expiresAt: 3_000 })
        expect(await ds.liveInstances.put({ prefix: P, instanceKey: 'a1|e1', expiresAt: 500 })).toMatchObject({ expiresAt: 3_000 })
        expect(await ds.liveInstances.list(P, 0)).toEqual([
          { prefix: P, instanceKey: 'a1|e1', expiresAt: 3_000 },
          { prefix: P, instanceKey: 'a2|e2', expiresAt: 2_000 },
        ])
        expect((await ds.liveInstances.list(P, 2_000)).map((i) => i.instanceKey)).toEqual(['a1|e1']) // expiresAt <= now is not live
        expect(await ds.liveInstances.list('/agents', 0)).toEqual([{ prefix: '/agents', instanceKey: 'a1|e1', expiresAt: 1_000 }])
        expect(await ds.liveInstances.list('/none', 0)).toEqual([])
        expect(await ds.liveInstances.release('a1|e1')).toBe(2)
        expect(await ds.liveInstances.release('a1|e1')).toBe(0)
        expect((await ds.liveInstances.list(P, 0)).map((i) => i.instanceKey)).toEqual(['a2|e2'])
      })

      it('pruneExpired removes the records at or before now, and counts them', async () => {
        await ds.liveInstances.put({ prefix: P, instanceKey: 'x', expiresAt: 1_000 })
        await ds.liveInstances.put({ prefix: P, instanceKey: 'y', expiresAt: 2_000 })
        await ds.liveInstances.put({ prefix: '/other', instanceKey: 'x', expiresAt: 1_500 })
        expect(await ds.liveInstances.pruneExpired(1_500)).toBe(2)
        expect(await ds.liveInstances.list(P, 0)).toEqual([{ prefix: P, instanceKey: 'y', expiresAt: 2_000 }])
        expect(await ds.liveInstances.list('/other', 0)).toEqual([])
      })

      it('malformed input is a TypeError or RangeError and changes nothing', async () => {
        await expect(ds.liveInstances.put({ prefix: P, instanceKey: 'k', expiresAt: 1.5 })).rejects.toBeInstanceOf(RangeError)
        await expect(ds.liveInstances.put({ prefix: P, instanceKey: 7 as unknown as string, expiresAt: 1 })).rejects.toBeInstanceOf(TypeError)
        await expect(ds.liveInstances.list(P, Number.NaN)).rejects.toBeInstanceOf(RangeError)
        expect(await ds.liveInstances.list(P, 0)).toEqual([])
      })

      it('writes inside a transaction that throws are undone', async () => {
        await ds.liveInstances.put({ prefix: P, instanceKey: 'kept', expiresAt: 5_000 })
        await expect(
          ds.tx(async (t) => {
            await t.liveInstances.put({ prefix: P, instanceKey: 'new', expiresAt: 5_000 })
            await t.liveInstances.release('kept')
            expect((await t.liveInstances.list(P, 0)).map((i) => i.instanceKey)).toEqual(['new'])
            throw new Error('boom')
          }),
        ).rejects.toThrow('boom')
        expect((await ds.liveInstances.list(P, 0)).map((i) => i.instanceKey)).toEqual(['kept'])
      })
    })

    describe('revocations', () => {
      const inst = (value: string, expiresAt: number | null = clock.now() + 10_000) => ({
        kind: 'instance' as const,
        value,
        reason: '',
        notAfter: null,
        expiresAt,
      })
      const prefix = (value: string, notAfter: number | null) => ({ kind: 'prefix' as const, value, reason: 'quarantine', notAfter, expiresAt: notAfter })

      it('creates records with increasing ids, the store clock as createdAt, and lists them by id', async () => {
        const a = await ds.revocations.create({ ...inst('iaaa'), reason: 'compromised' })
        expect(a.created).toBe(true)
        expect(a.revocation).toEqual({
          id: a.revocation.id,
          kind: 'instance',
          value: 'iaaa',
          reason: 'compromised',
          createdAt: clock.now(),
          notAfter: null,
          expiresAt: clock.now() + 10_000,
        })
        clock.advance(5)
        const b = await ds.revocations.create(prefix('spiffe://corp.example/agents', null))
        expect(b.revocation.id).toBeGreaterThan(a.revocation.id)
        expect(b.revocation).toMatchObject({ kind: 'prefix', notAfter: null, expiresAt: null, createdAt: clock.now() })
        expect(await ds.revocations.list()).toEqual([a.revocation, b.revocation])
        expect(await ds.revocations.find(b.revocation.id)).toEqual(b.revocation)
        expect(await ds.revocations.find(b.revocation.id + 100)).toBeUndefined()
      })

      it('is idempotent on kind and value: the active record comes back unchanged', async () => {
        const a = await ds.revocations.create(inst('spiffe://corp.example/x'))
        clock.advance(1)
        const again = await ds.revocations.create({ ...inst('spiffe://corp.example/x', clock.now() + 99_999), reason: 'other' })
        expect(again).toEqual({ revocation: a.revocation, created: false })
        // the same value under the other kind is another record
        const p = await ds.revocations.create(prefix('spiffe://corp.example/x', null))
        expect(p.created).toBe(true)
        expect((await ds.revocations.list()).length).toBe(2)
      })

      it('replaces an expired record of the same kind and value with a new id', async () => {
        const a = await ds.revocations.create(inst('iexp', clock.now() + 10))
        clock.advance(10)
        const b = await ds.revocations.create(inst('iexp', clock.now() + 10))
        expect(b.created).toBe(true)
        expect(b.revocation.id).toBeGreaterThan(a.revocation.id)
        expect(await ds.revocations.list()).toEqual([b.revocation])
      })

      it('lists only the active ones at now, and sweeps the expired (expiresAt at or before now)', async () => {
        const never = await ds.revocations.create(prefix('spiffe://corp.example/p', null))
        const soon = await ds.revocations.create(inst('isoon', 1_000))
        const later = await ds.revocations.create(inst('ilater', 2_000))
        expect((await ds.revocations.list({ now: 999 })).map((r) => r.id)).toEqual([never.revocation.id, soon.revocation.id, later.revocation.id])
        expect((await ds.revocations.list({ now: 1_000 })).map((r) => r.id)).toEqual([never.revocation.id, later.revocation.id])
        expect(await ds.revocations.pruneExpired(1_000)).toEqual([soon.revocation])
        expect(await ds.revocations.pruneExpired(1_000)).toEqual([])
        expect((await ds.revocations.list()).map((r) => r.id)).toEqual([never.revocation.id, later.revocation.id])
        expect(await ds.revocations.pruneExpired(Number.MAX_SAFE_INTEGER)).toEqual([later.revocation])
        expect(await ds.revocations.list()).toEqual([never.revocation])
      })

      it('deletes by id (ERR_NOT_FOUND when absent) and never reuses an id', async () => {
        const a = await ds.revocations.create(inst('ia'))
        const b = await ds.revocations.create(inst('ib'))
        expect(await ds.revocations.delete(b.revocation.id)).toEqual(b.revocation)
        await expect(ds.revocations.delete(b.revocation.id)).rejects.toMatchObject({ code: 'ERR_NOT_FOUND' })
        const c = await ds.revocations.create(inst('ic'))
        expect(c.revocation.id).toBeGreaterThan(b.revocation.id)
        expect((await ds.revocations.list()).map((r) => r.id)).toEqual([a.revocation.id, c.revocation.id])
      })

      it('refuses malformed input and stores nothing', async () => {
        const bad: unknown[] = [
          { ...inst('x'), kind: 'task' },
          { ...inst(''), value: '' },
          { ...inst('x'), value: 7 },
          { ...inst('x'), reason: undefined },
          { ...inst('x'), expiresAt: 1.5 },
          { ...inst('x'), notAfter: '2026' },
          null,
        ]
        for (const r of bad) await expect(ds.revocations.create(r as never)).rejects.toSatisfy((e) => e instanceof TypeError || e instanceof RangeError)
        await expect(ds.revocations.delete(0)).rejects.toBeInstanceOf(RangeError)
        await expect(ds.revocations.find(1.5)).rejects.toBeInstanceOf(RangeError)
        await expect(ds.revocations.list({ now: Number.NaN })).rejects.toBeInstanceOf(RangeError)
        expect(await ds.revocations.list()).toEqual([])
      })

      it('rolls back with its transaction', async () => {
        const kept = await ds.revocations.create(inst('ikept'))
        await expect(
          ds.tx(async (t) => {
            await t.revocations.create(inst('inew'))
            await t.revocations.delete(kept.revocation.id)
            throw new Error('abort')
          }),
        ).rejects.toThrow('abort')
        expect(await ds.revocations.list()).toEqual([kept.revocation])
      })
    })

    describe('transactions', () => {
      async function writeOneOfEach(d: DataStore): Promise<void> {
        await d.entries.create(newEntry())
        await d.nodes.upsert(newNode())
        await d.joinTokens.create({ tokenHash: 't', spiffeId: '', expiresAt: 1 })
        await d.bundles.put({ trustDomain: 'corp.example', document: '{}', sequence: 1 })
        await d.journal.put('x509', '{}')
        await d.kv.put('ns', 'k', 'v')
      }
      async function counts(d: DataStore): Promise<number[]> {
        return [
          await d.entries.count(),
          await d.nodes.count(),
          await d.joinTokens.count(),
          (await d.bundles.list()).length,
          (await d.journal.get('x509')) === undefined ? 0 : 1,
          (await d.kv.list('ns')).length,
        ]
      }

      it('commits every write and returns the callback value', async () => {
        const r = await ds.tx(async (t) => {
          await writeOneOfEach(t)
          expect(await counts(t)).toEqual([1, 1, 1, 1, 1, 1])
          return 'done'
        })
        expect(r).toBe('done')
        expect(await counts(ds)).toEqual([1, 1, 1, 1, 1, 1])
      })

      it('a throw inside tx leaves nothing written and rethrows the same error', async () => {
        await ds.kv.put('ns', 'before', 'x')
        const boom = new Error('boom')
        await expect(
          ds.tx(async (t) => {
            await writeOneOfEach(t)
            await t.kv.delete('ns', 'before')
            throw boom
          }),
        ).rejects.toBe(boom)
        expect(await counts(ds)).toEqual([0, 0, 0, 0, 0, 1])
        expect(await ds.kv.get('ns', 'before')).toBe('x')
      })

      it('rolls back updates and deletes too', async () => {
        const e = await ds.entries.create(newEntry())
        await ds.joinTokens.create({ tokenHash: 't', spiffeId: '', expiresAt: 1 })
        await expect(
          ds.tx(async (t) => {
            await t.entries.update(e.id, { hint: 'changed', selectors: sel('unix:uid:9') })
            expect(await t.joinTokens.consume('t')).toBeDefined()
            throw new Error('abort')
          }),
        ).rejects.toThrow('abort')
        expect(await ds.entries.get(e.id)).toEqual(e)
        expect(await ds.joinTokens.count()).toBe(1)
      })

      it('a failed operation inside tx can be caught; the rest commits', async () => {
        await ds.tx(async (t) => {
          await t.entries.create(newEntry())
          await expect(t.entries.create(newEntry())).rejects.toMatchObject({ code: 'ERR_ALREADY_EXISTS' })
          await t.kv.put('ns', 'k', 'v')
        })
        expect(await ds.entries.count()).toBe(1)
        expect(await ds.kv.get('ns', 'k')).toBe('v')
      })

      it('outside operations wait for the transaction and never join it', async () => {
        // Another caller (another request's async context) writes while the transaction is open.
        let open!: () => void
        const gate = new Promise<void>((resolve) => {
          open = resolve
        })
        let called = false
        const outside = gate.then(() => {
          called = true
          return ds.entries.create(newEntry({ selectors: sel('u:outside') }))
        })
        await expect(
          ds.tx(async (t) => {
            await t.entries.create(newEntry({ selectors: sel('u:inside') }))
            open()
            await t.kv.put('ns', 'k', 'v')
            await gate
            expect(called).toBe(true)
            // The outside write has not run inside this transaction.
            expect(await t.entries.count()).toBe(1)
            throw new Error('abort')
          }),
        ).rejects.toThrow('abort')
        const o = await outside
        expect(ids((await ds.entries.list()).entries)).toEqual([o.id])
        expect(await ds.kv.get('ns', 'k')).toBeUndefined()
      })

      it('transactions run one at a time', async () => {
        const order: string[] = []
        await Promise.all(
          ['a', 'b', 'c'].map((n) =>
            ds.tx(async (t) => {
              order.push(`${n}:start`)
              await t.kv.put('ns', n, n)
              await Promise.resolve()
              order.push(`${n}:end`)
            }),
          ),
        )
        expect(order).toEqual(['a:start', 'a:end', 'b:start', 'b:end', 'c:start', 'c:end'])
      })

      it('a nested tx rolls back alone when its error is caught', async () => {
        await ds.tx(async (t) => {
          await t.kv.put('ns', 'outer', '1')
          await expect(
            t.tx(async (inner) => {
              await inner.kv.put('ns', 'inner', '1')
              await inner.entries.create(newEntry())
              throw new Error('inner')
            }),
          ).rejects.toThrow('inner')
          await t.tx(async (inner) => inner.kv.put('ns', 'inner2', '1'))
        })
        expect(await ds.kv.list('ns')).toEqual([
          { key: 'inner2', value: '1' },
          { key: 'outer', value: '1' },
        ])
        expect(await ds.entries.count()).toBe(0)
      })

      it('using the outer store inside tx throws TypeError instead of deadlocking', async () => {
        await ds.tx(async () => {
          await expect(ds.kv.get('ns', 'k')).rejects.toBeInstanceOf(TypeError)
          await expect(ds.tx(async () => 1)).rejects.toBeInstanceOf(TypeError)
        })
        expect(await ds.kv.get('ns', 'k')).toBeUndefined()
      })

      it('still refuses the outer store inside a later transaction, and inside one of two concurrent ones after the other ended', async () => {
        await ds.tx(async (t) => t.kv.put('ns', 'a', '1'))
        await ds.tx(async () => {
          await expect(ds.kv.get('ns', 'a')).rejects.toBeInstanceOf(TypeError)
        })
        let finishFirst!: () => void
        const first = ds.tx(() => new Promise<void>((r) => (finishFirst = r)))
        // The second waits for the first (one writer at a time), then runs alone.
        const second = ds.tx(async () => {
          await expect(ds.kv.get('ns', 'a')).rejects.toBeInstanceOf(TypeError)
          return 'second'
        })
        await new Promise((r) => setImmediate(r))
        finishFirst()
        await first
        expect(await second).toBe('second')
        // Outside every transaction the outer store works.
        expect(await ds.kv.get('ns', 'a')).toBe('1')
      })

      it('a transaction store cannot be used after the transaction ends', async () => {
        let leaked: DataStore | undefined
        await ds.tx(async (t) => {
          leaked = t
        })
        await expect((leaked as DataStore).kv.put('ns', 'k', 'v')).rejects.toBeInstanceOf(TypeError)
        expect(await ds.kv.get('ns', 'k')).toBeUndefined()
      })
    })

    it('close: later calls reject with ERR_DATASTORE; close is idempotent', async () => {
      const other = await opts.open({ clock })
      await other.ds.close()
      await other.ds.close()
      await expect(other.ds.kv.get('a', 'b')).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
      await expect(other.ds.tx(async () => 1)).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
      await other.cleanup()
    })

    if (opts.persistent === true) {
      it('persists everything across reopen', async () => {
        if (h.reopen === undefined) throw new TypeError('a persistent store harness must provide reopen()')
        const e = await ds.entries.create(newEntry({ dnsNames: ['b.example', 'a.example'], federatesWith: ['p.example'], expiresAt: 42 }))
        const u = await ds.entries.update(e.id, { hint: 'x' })
        const n = await ds.nodes.upsert(newNode())
        await ds.joinTokens.create({ tokenHash: 't', spiffeId: 's', expiresAt: 1 })
        const b = await ds.bundles.put({ trustDomain: 'corp.example', document: '{}', sequence: 3 })
        await ds.journal.put('x509', '{"slots":[]}')
        await ds.kv.put('ns', 'k', 'v')
        await ds.liveInstances.put({ prefix: '/p', instanceKey: 'a|e', expiresAt: 9_000 })
        const rv = await ds.revocations.create({ kind: 'prefix', value: 'spiffe://corp.example/q', reason: 'r', notAfter: 7, expiresAt: 7 })
        const gone = await ds.revocations.create({ kind: 'instance', value: 'igone', reason: '', notAfter: null, expiresAt: null })
        await ds.revocations.delete(gone.revocation.id)
        ds = await h.reopen()
        expect(await ds.revocations.list()).toEqual([rv.revocation])
        // ids are never reused, across a restart either
        const next = await ds.revocations.create({ kind: 'instance', value: 'inext', reason: '', notAfter: null, expiresAt: null })
        expect(next.revocation.id).toBeGreaterThan(gone.revocation.id)
        expect(await ds.liveInstances.list('/p', 0)).toEqual([{ prefix: '/p', instanceKey: 'a|e', expiresAt: 9_000 }])
        expect(await ds.entries.get(e.id)).toEqual(u)
        expect(await ds.entries.count({ selectors: { set: u.selectors, match: 'exact' } })).toBe(1)
        expect(await ds.nodes.get(n.agentId)).toEqual(n)
        expect(await ds.joinTokens.consume('t')).toMatchObject({ tokenHash: 't', spiffeId: 's' })
        expect(await ds.bundles.list()).toEqual([b])
        expect(await ds.journal.get('x509')).toBe('{"slots":[]}')
        expect(await ds.kv.list('ns')).toEqual([{ key: 'k', value: 'v' }])
        await expect(ds.entries.create(newEntry())).rejects.toMatchObject({ code: 'ERR_ALREADY_EXISTS' })
      })
    }
  })
}
