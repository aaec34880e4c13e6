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
