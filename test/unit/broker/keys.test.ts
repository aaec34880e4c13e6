import { join } from 'node:path'
import { calculateJwkThumbprint, createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { SigningKeys } from '../../../src/broker/keys.js'
import { BrokerStore } from '../../../src/broker/store/broker-store.js'
import { nullLogger } from '../../../src/common/log/logger.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { tempDir } from '../../helpers/temp.js'
import { A, cc, client, dpop, exchange, fixture, ISSUER } from './fixture.js'

describe('SigningKeys', () => {
  let tmp: { dir: string; cleanup: () => void }
  let store: BrokerStore
  const km = new MemoryKeyManager()
  beforeEach(() => {
    tmp = tempDir('wbk-')
    store = BrokerStore.open({ path: join(tmp.dir, 'b.db') })
  })
  afterEach(() => {
    store.close()
    tmp.cleanup()
  })

  it('starts with a current and a published next key; kid is the RFC 7638 thumbprint', async () => {
    const keys = await SigningKeys.open(km, store, nullLogger, 1000)
    expect(
      keys
        .records()
        .map((r) => r.state)
        .sort(),
    ).toEqual(['current', 'next'])
    const jwks = keys.jwks()
    expect(jwks.keys).toHaveLength(2)
    for (const k of jwks.keys) {
      expect(k).toMatchObject({ kty: 'EC', crv: 'P-256', alg: 'ES256', use: 'sig' })
      expect(k.d).toBeUndefined()
      const { kid, alg: _a, use: _u, ...pub } = k
      expect(kid).toBe(await calculateJwkThumbprint(pub as Parameters<typeof calculateJwkThumbprint>[0]))
    }
    expect(jwks.keys[0]!.kid).toBe(keys.active().kid)
  })

  it('rotates with overlap: next becomes current, the old key stays published until its tokens expire, then is deleted', async () => {
    const keys = await SigningKeys.open(km, store, nullLogger, 1000, { rotationPeriodSeconds: 600, maxTokenLifetimeSeconds: 300 })
    const first = keys.active()
    const next = keys.records().find((r) => r.state === 'next')!
    await keys.maintain(1599) // not due
    expect(keys.active().kid).toBe(first.kid)
    await keys.maintain(1600)
    expect(keys.active().kid).toBe(next.kid)
    const prev = keys.records().find((r) => r.kid === first.kid)!
    expect(prev).toMatchObject({ state: 'previous', publishUntil: 1900 })
    expect(keys.jwks().keys.map((k) => k.kid)).toContain(first.kid)
    expect(keys.jwks().keys).toHaveLength(3)
    await keys.maintain(1900)
    expect(keys.publicKeyFor(first.kid)).toBeDefined()
    await keys.maintain(1901)
    expect(keys.publicKeyFor(first.kid)).toBeUndefined()
    expect(keys.jwks().keys.map((k) => k.kid)).not.toContain(first.kid)
    await expect(km.getKey(prev.keyId)).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
  })

  it('a previous key stays published while a token it signed is still live, even past its recorded bound', async () => {
    const keys = await SigningKeys.open(km, store, nullLogger, 1000, { rotationPeriodSeconds: 600, maxTokenLifetimeSeconds: 300 })
    const first = keys.active()
    store.insertToken({
      jti: 'late',
      kind: 'access',
      sub: 's',
      clientId: 's',
      taskId: undefined,
      parentJti: undefined,
      rootJti: 'late',
      actors: [],
      depth: 0,
      scopes: [],
      resources: [],
      audiences: [],
      authorizationDetails: undefined,
      cnfJkt: undefined,
      cnfX5t: undefined,
      mayAct: undefined,
      kid: first.kid,
      iat: 1000,
      exp: 2500,
      maxExp: 2500,
      renewals: 0,
      renewedBy: undefined,
      revokedAt: undefined,
    })
    await keys.rotate(1100) // publishUntil = max(2500, 1400)
    expect(keys.records().find((r) => r.kid === first.kid)?.publishUntil).toBe(2500)
    await keys.maintain(2500)
    expect(keys.publicKeyFor(first.kid)).toBeDefined()
    // a token it signed just before the rotation, stored just after, outlives the bound
    store.insertToken({ ...store.getToken('late')!, jti: 'later', rootJti: 'later', exp: 3000, maxExp: 3000 })
    await keys.maintain(2501)
    expect(keys.publicKeyFor(first.kid)).toBeDefined()
    expect(keys.records().find((r) => r.kid === first.kid)?.publishUntil).toBe(3000)
    await keys.maintain(3001)
    expect(keys.publicKeyFor(first.kid)).toBeUndefined()
  })

  it('a reopened store finds its keys again; keys the manager lost are forgotten', async () => {
    const keys = await SigningKeys.open(km, store, nullLogger, 1000)
    const again = await SigningKeys.open(km, store, nullLogger, 1001)
    expect(again.active().kid).toBe(keys.active().kid)
    const fresh = await SigningKeys.open(new MemoryKeyManager(), store, nullLogger, 1002)
    expect(fresh.active().kid).not.toBe(keys.active().kid)
    expect(store.listSigningKeys()).toHaveLength(2)
  })
})

describe('tokens across a key rotation', () => {
  it('a token signed before rotation verifies against the JWKS after it and can be renewed; the renewal uses the new kid', async () => {
    const f = await fixture()
    try {
      const t = await f.task()
      const key = dpop()
      const tok = (await f.svc.token(cc(t), client(A), key)).access_token
      const oldKid = decodeProtectedHeader(tok).kid
      const nextKid = f.svc.keys.records().find((r) => r.state === 'next')!.kid
      expect((await f.svc.jwks()).keys.map((k) => k.kid)).toContain(nextKid) // published before use
      await f.svc.keys.rotate(Math.floor(f.clock.now() / 1000))
      const jwks = createLocalJWKSet(await f.svc.jwks())
      await expect(jwtVerify(tok, jwks, { issuer: ISSUER, currentDate: new Date(f.clock.now()) })).resolves.toBeDefined()
      const renewed = (await f.svc.token(exchange(tok), client(A), key)).access_token
      expect(decodeProtectedHeader(renewed).kid).toBe(nextKid)
      expect(decodeProtectedHeader(renewed).kid).not.toBe(oldKid)
      expect(decodeJwt(renewed).sub).toBe(A)
    } finally {
      await f.cleanup()
    }
  })
})
