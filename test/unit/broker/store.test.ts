import { statSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { BrokerStore, type TokenRecord } from '../../../src/broker/store/broker-store.js'
import { tempDir } from '../../helpers/temp.js'

const tok = (jti: string, parentJti?: string): TokenRecord => ({
  jti,
  kind: 'access',
  sub: 'spiffe://td/a',
  clientId: 'spiffe://td/a',
  taskId: undefined,
  parentJti,
  rootJti: parentJti ?? jti,
  actors: [],
  depth: 0,
  scopes: ['read'],
  resources: ['https://x.example'],
  audiences: ['https://x.example'],
  authorizationDetails: undefined,
  cnfJkt: 'k',
  cnfX5t: undefined,
  mayAct: undefined,
  kid: 'kid',
  iat: 1,
  exp: 100,
  maxExp: 100,
  renewals: 0,
  renewedBy: undefined,
  revokedAt: undefined,
})

describe('BrokerStore', () => {
  let tmp: { dir: string; cleanup: () => void }
  let store: BrokerStore
  beforeEach(() => {
    tmp = tempDir('wbs-')
    store = BrokerStore.open({ path: join(tmp.dir, 'sub', 'b.db') })
  })
  afterEach(() => {
    store.close()
    tmp.cleanup()
  })

  it('creates the file 0600 in a 0700 directory and reopens with its data', () => {
    expect(statSync(join(tmp.dir, 'sub', 'b.db')).mode & 0o777).toBe(0o600)
    expect(statSync(join(tmp.dir, 'sub')).mode & 0o777).toBe(0o700)
    store.insertToken(tok('a'))
    store.close()
    store = BrokerStore.open({ path: join(tmp.dir, 'sub', 'b.db') })
    expect(store.getToken('a')).toMatchObject({ jti: 'a', scopes: ['read'], cnfJkt: 'k' })
  })

  it('group commit: calls run in order in one transaction; one that throws undoes only its own writes', async () => {
    const results = await Promise.allSettled([
      store.txQueued(() => store.insertToken(tok('a'))),
      store.txQueued(() => {
        store.insertToken(tok('b'))
        throw new Error('refused')
      }),
      store.txQueued(() => store.markRenewed('a', 'c')),
      store.txQueued(() => store.markRenewed('a', 'd')),
    ])
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value : 'rejected'))).toEqual([undefined, 'rejected', true, false])
    expect(store.getToken('b')).toBeUndefined()
    expect(store.getToken('a')?.renewedBy).toBe('c')
  })

  describe('group commit durability: nothing settles before the journal is on disk', () => {
    let syncs: { fd: number; done: (err: Error | null) => void }[]
    let held: BrokerStore
    beforeEach(() => {
      syncs = []
      held = BrokerStore.open({ path: join(tmp.dir, 'held.db'), syncJournal: (fd, done) => syncs.push({ fd, done }) })
    })
    afterEach(() => {
      for (const s of syncs.splice(0)) s.done(null)
      held.close()
    })
    const turn = () => new Promise((r) => setImmediate(r))

    it('a committed round settles only when its fdatasync returns; rounds committed meanwhile share the next one', async () => {
      const settled: string[] = []
      const a = held.txQueued(() => held.insertToken(tok('a'))).then(() => settled.push('a'))
      await turn()
      await turn()
      // committed (a reader sees it) but not released
      expect(held.getToken('a')?.jti).toBe('a')
      expect(syncs).toHaveLength(1)
      expect(settled).toEqual([])
      // two more rounds while the first sync runs: no second sync yet
      const b = held.txQueued(() => held.insertToken(tok('b'))).then(() => settled.push('b'))
      await turn()
      const c = held.txQueued(() => held.insertToken(tok('c'))).then(() => settled.push('c'))
      await turn()
      await turn()
      expect(syncs).toHaveLength(1)
      expect(settled).toEqual([])
      syncs[0]!.done(null)
      await a
      expect(settled).toEqual(['a'])
      // the rounds of b and c share the second sync
      expect(syncs).toHaveLength(2)
      syncs[1]!.done(null)
      await Promise.all([b, c])
      expect(settled).toEqual(['a', 'b', 'c'])
      expect(syncs).toHaveLength(2)
      // between rounds the connection is back to synchronous=FULL, so every other write syncs as before
      expect(held.synchronousLevel()).toBe(2)
    })

    it('a refusal in the round also waits for the sync; a failed sync rejects every call of its round with ERR_DATASTORE', async () => {
      let refusedEarly = false
      const ok = held.txQueued(() => held.insertToken(tok('x')))
      const refused = held
        .txQueued(() => {
          throw new Error('refused')
        })
        .catch((e: unknown) => {
          refusedEarly = syncs.length === 1 && !syncDone
          throw e
        })
      let syncDone = false
      await turn()
      await turn()
      expect(syncs).toHaveLength(1)
      syncDone = true
      syncs.shift()!.done(Object.assign(new Error('EIO'), { code: 'EIO' }))
      await expect(ok).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
      await expect(refused).rejects.toMatchObject({ code: 'ERR_DATASTORE' })
      expect(refusedEarly).toBe(false)
      // the store goes on: the next round syncs again and settles
      const next = held.txQueued(() => held.insertToken(tok('y')))
      await turn()
      await turn()
      syncs.shift()!.done(null)
      await expect(next).resolves.toBeUndefined()
    })

    it('a round of process-durability calls settles once committed; one disk call makes its whole round wait', async () => {
      await held.txQueued(() => held.insertToken(tok('p1')), 'process')
      expect(syncs).toHaveLength(0)
      let settled = false
      const p2 = held.txQueued(() => held.insertToken(tok('p2')), 'process').then(() => (settled = true))
      const d = held.txQueued(() => held.markRenewed('p1', 'p2'))
      await turn()
      await turn()
      expect(syncs).toHaveLength(1)
      expect(settled).toBe(false)
      syncs.shift()!.done(null)
      await Promise.all([p2, d])
      expect(settled).toBe(true)
    })

    it('close settles what is still waiting for a sync (synchronously synced) and keeps the fd until a running sync returns', async () => {
      const a = held.txQueued(() => held.insertToken(tok('a')))
      await turn()
      await turn()
      expect(syncs).toHaveLength(1)
      const b = held.txQueued(() => held.insertToken(tok('b')))
      await turn()
      await turn()
      held.close()
      await expect(b).resolves.toBeUndefined()
      const running = syncs.shift()!
      running.done(null)
      await expect(a).resolves.toBeUndefined()
      held = BrokerStore.open({ path: join(tmp.dir, 'held.db'), syncJournal: (fd, done) => syncs.push({ fd, done }) })
      expect(held.getToken('a')?.jti).toBe('a')
      expect(held.getToken('b')?.jti).toBe('b')
    })
  })

  it('a grant is used once; revokeTree revokes the subtree only', () => {
    store.tx(() => {
      store.insertToken(tok('root'))
      store.insertToken(tok('child', 'root'))
      store.insertToken(tok('grandchild', 'child'))
      store.insertToken(tok('other'))
    })
    expect(store.useGrant('child', 'spiffe://td/b', 5, 'grandchild')).toBe(true)
    expect(store.useGrant('child', 'spiffe://td/b', 6, 'x')).toBe(false)
    expect(store.grantUse('child')).toEqual({ usedBy: 'spiffe://td/b', usedAt: 5, issuedJti: 'grandchild' })
    expect(store.revokeTree('child', 9)).toBe(2)
    expect(store.getToken('root')?.revokedAt).toBeUndefined()
    expect(store.getToken('grandchild')?.revokedAt).toBe(9)
    expect(store.revokeTree('root', 10)).toBe(1)
    expect(store.getToken('other')?.revokedAt).toBeUndefined()
  })
})
