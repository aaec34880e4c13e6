import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { decodeJwt } from 'jose'
import { verifyAccessToken } from '../../src/tokens/access-token.js'
import { createDpopProof } from '../../src/tokens/dpop.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { MemoryReplayCache } from '../../src/tokens/dpop.js'
import { verifyResourceRequest } from '../../src/tokens/request.js'
import { A, API, AT, B, C, D, RS, TOKEN_EXCHANGE, newKey, ok, redeem, startBrokerWire, type BrokerWire, type KeyPair } from '../helpers/broker-wire.js'

/**
 * Delegation chains over real HTTPS against the real broker: the depth cap,
 * the chain verified offline by a resource server from the JWKS alone
 * (src/tokens), expiry never beyond the token delegated from (also across a
 * renewal by the actor), and revocation of any member ending every token
 * below it at introspection.
 */

let w: BrokerWire
beforeAll(async () => {
  w = await startBrokerWire()
}, 30_000)
afterAll(async () => {
  await w?.close()
})
beforeEach(() => w.setBounds())

/** `holder` (proving `hKey`) delegates `subject` to `to`, which redeems with its JWT-SVID as actor_token under `tKey`. */
async function delegate(holder: string, subject: string, hKey: KeyPair, to: string, tKey: KeyPair, extra: Record<string, string> = {}): Promise<string> {
  const grant = await w.grantFor(holder, subject, hKey, to, extra)
  return ok(await w.post('/token', to, redeem(grant, await w.jwtSvid(to)), tKey)).access_token as string
}

const introspect = async (token: string) => ok(await w.post('/introspect', RS, { token }))
const keysOf = () => new JwksCache({ fetchJwks: () => w.svc.jwks() })
const nowSec = () => Math.floor(Date.now() / 1000)

describe('a two-hop chain', () => {
  let aKey: KeyPair
  let bKey: KeyPair
  let cKey: KeyPair
  let root: string
  let toB: string
  let toC: string

  beforeAll(async () => {
    ;[aKey, bKey, cKey] = await Promise.all([newKey(), newKey(), newKey()])
    root = await w.rootToken(aKey)
    toB = await delegate(A, root, aKey, B, bKey, { scope: 'read' })
    toC = await delegate(B, toB, bKey, C, cKey)
  })

  it('stops at the depth cap (2): the third hop is refused and nothing is stored', async () => {
    expect(decodeJwt(toC)).toMatchObject({ sub: A, act: { sub: C, act: { sub: B } }, scope: 'read' })
    const before = w.svc.store.countTokens()
    const r = await w.post('/token', C, { grant_type: TOKEN_EXCHANGE, subject_token: toC, subject_token_type: AT, may_act: D }, cKey)
    expect({ status: r.status, error: r.json().error }).toEqual({ status: 400, error: 'invalid_request' })
    expect(w.svc.store.countTokens()).toBe(before)
  })

  it('is verified offline from the JWKS alone: the act chain, the actor key binding, a lower depth cap refused', async () => {
    const claims = await verifyAccessToken(toC, { issuer: w.issuer, audience: API, keys: keysOf(), nowSec: nowSec() })
    expect(claims.act).toEqual({ sub: C, act: { sub: B } })
    await expect(verifyAccessToken(toC, { issuer: w.issuer, audience: API, keys: keysOf(), nowSec: nowSec(), maxDelegationDepth: 1 })).rejects.toMatchObject({
      code: 'ERR_ACCESS_TOKEN_INVALID',
    })
    // At the resource: the proof must be the actor's (C's) key, not the delegator's.
    const url = `${API}/tools/search`
    const opts = { issuer: w.issuer, audience: API, keys: keysOf(), requiredScopes: ['read'], dpop: { replay: new MemoryReplayCache({ maxEntries: 100 }) } }
    const good = await verifyResourceRequest(
      { authorization: `DPoP ${toC}`, dpop: await createDpopProof(cKey, { method: 'GET', url, accessToken: toC }), method: 'GET', url },
      opts,
    )
    expect(good.claims.act).toEqual({ sub: C, act: { sub: B } })
    await expect(
      verifyResourceRequest(
        { authorization: `DPoP ${toC}`, dpop: await createDpopProof(bKey, { method: 'GET', url, accessToken: toC }), method: 'GET', url },
        opts,
      ),
    ).rejects.toBeDefined()
    await expect(
      verifyResourceRequest(
        { authorization: `DPoP ${toC}`, dpop: await createDpopProof(cKey, { method: 'GET', url, accessToken: toC }), method: 'GET', url },
        { ...opts, requiredScopes: ['write'] },
      ),
    ).rejects.toBeDefined()
  })

  it('records parent and root jti for every hop', () => {
    const rootJti = decodeJwt(root).jti!
    const b = w.svc.store.getToken(decodeJwt(toB).jti!)!
    const c = w.svc.store.getToken(decodeJwt(toC).jti!)!
    expect(b).toMatchObject({ rootJti, actors: [B], depth: 1 })
    expect(c).toMatchObject({ rootJti, actors: [C, B], depth: 2 })
    // Each hop's parent is the one-time grant, whose parent is the delegating token.
    expect(w.svc.store.getToken(c.parentJti!)).toMatchObject({ kind: 'grant', parentJti: b.jti, mayAct: C })
    expect(w.svc.store.getToken(b.parentJti!)).toMatchObject({ kind: 'grant', parentJti: rootJti, mayAct: B })
  })
})

describe('expiry', () => {
  it('a delegated token never outlives the token it came from, nor does its renewal', async () => {
    const [aKey, bKey] = await Promise.all([newKey(), newKey()])
    const root = await w.rootToken(aKey)
    const rootExp = decodeJwt(root).exp!
    // Later than the root by at least a second: the default lifetime (300 s) would end after the root's.
    await new Promise((r) => setTimeout(r, 1100))
    const toB = await delegate(A, root, aKey, B, bKey)
    const d = decodeJwt(toB)
    expect(d.exp).toBe(rootExp)
    expect(d.exp! - d.iat!).toBeLessThan(300)
    // The actor renews it with its key: fresh iat, still the root's end.
    await new Promise((r) => setTimeout(r, 1100))
    const renewed = ok(await w.post('/token', B, { grant_type: TOKEN_EXCHANGE, subject_token: toB, subject_token_type: AT }, bKey)).access_token as string
    const r = decodeJwt(renewed)
    expect(r).toMatchObject({ sub: A, act: { sub: B }, exp: rootExp })
    expect(r.iat!).toBeGreaterThan(d.iat!)
  })
})

describe('revocation', () => {
  it('revoking the parent ends every token below it at introspection', async () => {
    const [aKey, bKey, cKey] = await Promise.all([newKey(), newKey(), newKey()])
    const root = await w.rootToken(aKey)
    const toB = await delegate(A, root, aKey, B, bKey)
    const toC = await delegate(B, toB, bKey, C, cKey)
    for (const t of [root, toB, toC]) expect(await introspect(t)).toMatchObject({ active: true })
    expect(await introspect(toC)).toMatchObject({ sub: A, act: { sub: C, act: { sub: B } } })

    // The middle hop's holder (its client, B) revokes it: C's token ends, the root lives on.
    expect((await w.post('/revoke', B, { token: toB })).status).toBe(200)
    expect(await introspect(toB)).toEqual({ active: false })
    expect(await introspect(toC)).toEqual({ active: false })
    expect(await introspect(root)).toMatchObject({ active: true })

    // A second chain from the same root ends when the root is revoked.
    const toB2 = await delegate(A, root, aKey, B, bKey)
    expect(await introspect(toB2)).toMatchObject({ active: true })
    expect((await w.post('/revoke', A, { token: root })).status).toBe(200)
    for (const t of [root, toB2]) expect(await introspect(t)).toEqual({ active: false })
    // And nothing can be derived from a revoked chain any more.
    const r = await w.post('/token', B, { grant_type: TOKEN_EXCHANGE, subject_token: toB2, subject_token_type: AT }, bKey)
    expect({ status: r.status, error: r.json().error }).toEqual({ status: 400, error: 'invalid_request' })
  })

  it('a revoked grant cannot be redeemed', async () => {
    const [aKey, bKey] = await Promise.all([newKey(), newKey()])
    const root = await w.rootToken(aKey)
    const grant = await w.grantFor(A, root, aKey, B)
    expect((await w.post('/revoke', A, { token: root })).status).toBe(200)
    const before = w.svc.store.countTokens()
    const r = await w.post('/token', B, redeem(grant, await w.jwtSvid(B)), bKey)
    expect({ status: r.status, error: r.json().error }).toEqual({ status: 400, error: 'invalid_request' })
    expect(w.svc.store.countTokens()).toBe(before)
  })
})
