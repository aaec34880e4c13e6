import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { decodeJwt } from 'jose'
import { verifyAccessToken } from '../../src/tokens/access-token.js'
import { x5tS256 } from '../../src/tokens/dpop.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import type { Res } from '../helpers/broker-http-fixtures.js'
import {
  A,
  API,
  AT,
  B,
  BOUNDS,
  C,
  D,
  JWT,
  JWT_SVID,
  TOKEN_EXCHANGE,
  jktOf,
  newKey,
  ok as okRes,
  redeem,
  startBrokerWire,
  type BrokerWire,
  type KeyPair,
} from '../helpers/broker-wire.js'

/**
 * RFC 8693 delegation with `actor_token` (§2.1, §4.1) over real HTTPS against
 * the real broker domain: the holder of a token asks for a one-time grant
 * naming the sub-agent in `may_act`; the sub-agent, authenticated by its
 * X.509-SVID, presents the grant as `subject_token` and a token of its own as
 * `actor_token` (its JWT-SVID, or its own broker access token), and gets a
 * token with nested `act` bound to its own key. Every refusal answers the
 * RFC 6749 error and changes nothing: no token stored, the grant unused.
 */

let w: BrokerWire
let taskN = 0

beforeAll(async () => {
  w = await startBrokerWire()
}, 30_000)

afterAll(async () => {
  await w?.close()
})

beforeEach(() => w.setBounds())

const token = (client: string, params: Record<string, string>, key?: KeyPair) => w.post('/token', client, params, key)
const ok = async (res: Res) => okRes(res)
const jwtSvid = (id: string, audience?: string[], opts: { ttlSec?: number; iatOffsetSec?: number } = {}) =>
  w.jwtSvid(id, { ...(audience ? { audience } : {}), ...opts })
const rootToken = (key: KeyPair) => w.rootToken(key)
const grantFor = (holder: string, subject: string, key: KeyPair, to: string, extra: Record<string, string> = {}) => w.grantFor(holder, subject, key, to, extra)

/** Expects the OAuth error and that nothing changed: no token stored, `grant` (if any) still unused. */
async function refusedClean(res: Promise<Res>, error: string, grant?: string): Promise<void> {
  const before = w.svc.store.countTokens()
  const r = await res
  expect({ status: r.status, error: r.json().error }).toEqual({ status: 400, error })
  expect(r.headers['cache-control']).toBe('no-store')
  expect(w.svc.store.countTokens()).toBe(before)
  if (grant !== undefined) expect(w.svc.store.grantUse(decodeJwt(grant).jti!)).toBeUndefined()
}

describe('actor_token: the actor presents the grant naming it and a token of its own', () => {
  it('with its JWT-SVID: nested act (actor outermost), bound to the actor key, narrowed, chain recorded', async () => {
    const aKey = await newKey()
    const bKey = await newKey()
    const root = await rootToken(aKey)
    const grant = await grantFor(A, root, aKey, B, { scope: 'read' })
    const r = await ok(await token(B, redeem(grant, await jwtSvid(B)), bKey))
    expect(r).toMatchObject({ issued_token_type: AT, token_type: 'DPoP', scope: 'read' })
    const claims = decodeJwt(r.access_token as string)
    const rootClaims = decodeJwt(root)
    expect(claims).toMatchObject({ sub: A, client_id: B, act: { sub: B }, cnf: { jkt: await jktOf(bKey) }, scope: 'read', task_id: rootClaims.task_id })
    expect(claims.exp!).toBeLessThanOrEqual(rootClaims.exp!)
    // The store links it to the grant and the root exactly as a grant redemption without actor_token does.
    const rec = w.svc.store.getToken(claims.jti!)!
    expect(rec).toMatchObject({ parentJti: decodeJwt(grant).jti, rootJti: rootClaims.jti, actors: [B], depth: 1 })
    expect(w.svc.store.grantUse(decodeJwt(grant).jti!)).toMatchObject({ usedBy: B, issuedJti: claims.jti })
    // A resource server verifies the chain offline from the broker's JWKS (src/tokens).
    const keys = new JwksCache({ fetchJwks: () => w.svc.jwks() })
    const verified = await verifyAccessToken(r.access_token as string, { issuer: w.issuer, audience: API, keys, nowSec: Math.floor(Date.now() / 1000) })
    expect(verified.act).toEqual({ sub: B })
  })

  it('with the jwt-svid token type, and bound to the actor certificate under mutual TLS', async () => {
    const aKey = await newKey()
    const root = await rootToken(aKey)
    const grant = await grantFor(A, root, aKey, B)
    const r = await ok(await token(B, redeem(grant, await jwtSvid(B), JWT_SVID)))
    expect(r.token_type).toBe('Bearer')
    expect(decodeJwt(r.access_token as string)).toMatchObject({ act: { sub: B }, cnf: { 'x5t#S256': x5tS256(w.svids[B]!.certDer) } })
  })

  it('with its own broker access token, proving that token key', async () => {
    const aKey = await newKey()
    const bKey = await newKey()
    const root = await rootToken(aKey)
    const t = await w.svc.createTask({ taskId: `own${++taskN}`, agent: B, scopes: ['read'], resources: [API], ttlSeconds: 600, maxRenewals: 0 }, 'admin')
    const own = (await ok(await token(B, { grant_type: 'client_credentials', task_id: t.taskId }, bKey))).access_token as string
    const grant = await grantFor(A, root, aKey, B)
    // The same token under another proof key is refused (the actor must hold it), and that changes nothing.
    await refusedClean(token(B, redeem(grant, own, AT), await newKey()), 'invalid_request', grant)
    const r = await ok(await token(B, redeem(grant, own, AT), bKey))
    expect(decodeJwt(r.access_token as string)).toMatchObject({ sub: A, act: { sub: B }, cnf: { jkt: await jktOf(bKey) } })
    // Its typ tells a broker token apart under the generic jwt type too.
    const grant2 = await grantFor(A, root, aKey, B)
    await ok(await token(B, redeem(grant2, own, JWT), bKey))
  })

  it('counts depth against the cap: a second hop by actor_token reaches it, a third is refused', async () => {
    const aKey = await newKey()
    const bKey = await newKey()
    const cKey = await newKey()
    const root = await rootToken(aKey)
    const toB = (await ok(await token(B, redeem(await grantFor(A, root, aKey, B), await jwtSvid(B)), bKey))).access_token as string
    const toC = (await ok(await token(C, redeem(await grantFor(B, toB, bKey, C), await jwtSvid(C)), cKey))).access_token as string
    expect(decodeJwt(toC)).toMatchObject({ sub: A, act: { sub: C, act: { sub: B } } })
    expect(w.svc.store.getToken(decodeJwt(toC).jti!)).toMatchObject({ actors: [C, B], depth: 2, rootJti: decodeJwt(root).jti })
    await refusedClean(token(C, { grant_type: TOKEN_EXCHANGE, subject_token: toC, subject_token_type: AT, may_act: D }, cKey), 'invalid_request')
  })
})

describe('actor_token refusals: the RFC 6749 error, and nothing changes', () => {
  let aKey: KeyPair
  let bKey: KeyPair
  let grant: string
  let bSvid: string

  beforeEach(async () => {
    aKey = await newKey()
    bKey = await newKey()
    grant = await grantFor(A, await rootToken(aKey), aKey, B, { scope: 'read' })
    bSvid = await jwtSvid(B)
  })

  // After each refusal, the grant is redeemed by the right actor with a valid actor token: the refusal left it unused.
  afterEach(async () => {
    const r = await ok(await token(B, redeem(grant, bSvid), bKey))
    expect(decodeJwt(r.access_token as string)).toMatchObject({ act: { sub: B }, scope: 'read' })
  })

  it('actor_token_type without actor_token: invalid_request', async () => {
    const { actor_token: _omit, ...params } = redeem(grant, bSvid)
    await refusedClean(token(B, params, bKey), 'invalid_request', grant)
  })

  it('actor_token without actor_token_type: invalid_request', async () => {
    const { actor_token_type: _omit, ...params } = redeem(grant, bSvid)
    await refusedClean(token(B, params, bKey), 'invalid_request', grant)
  })

  it('an unknown actor_token_type, even with a valid JWT-SVID of the actor: invalid_request', async () => {
    await refusedClean(token(B, redeem(grant, bSvid, 'urn:example:token-type:unknown'), bKey), 'invalid_request', grant)
  })

  it('an actor token of someone other than the client: invalid_request (RFC 8693 §2.2.2)', async () => {
    await refusedClean(token(B, redeem(grant, await jwtSvid(C)), bKey), 'invalid_request', grant)
  })

  it('an actor JWT-SVID for another audience, expired, or garbage: invalid_request (RFC 8693 §2.2.2)', async () => {
    await refusedClean(token(B, redeem(grant, await jwtSvid(B, ['https://elsewhere.example'])), bKey), 'invalid_request', grant)
    await refusedClean(token(B, redeem(grant, await jwtSvid(B, undefined, { ttlSec: 10, iatOffsetSec: -120 })), bKey), 'invalid_request', grant)
    await refusedClean(token(B, redeem(grant, 'not-a-jwt'), bKey), 'invalid_request', grant)
  })

  it('an actor the grant does not name (may_act), with its own valid actor token: invalid_request (RFC 8693 §2.2.2)', async () => {
    await refusedClean(token(C, redeem(grant, await jwtSvid(C)), await newKey()), 'invalid_request', grant)
  })

  it('an actor no longer under may_delegate_to when the grant is redeemed: invalid_request (RFC 8693 §2.2.2)', async () => {
    w.setBounds({ ...BOUNDS, '/agents': { ...BOUNDS['/agents'], may_delegate_to: ['spiffe://example.org/agents/c'] } })
    await refusedClean(token(B, redeem(grant, bSvid), bKey), 'invalid_request', grant)
    w.setBounds()
  })

  it('a depth cap lowered below the hop when the grant is redeemed: invalid_request (RFC 8693 §2.2.2)', async () => {
    w.setBounds({ ...BOUNDS, '/agents': { ...BOUNDS['/agents'], max_delegation_depth: 0 } })
    await refusedClean(token(B, redeem(grant, bSvid), bKey), 'invalid_request', grant)
    w.setBounds()
  })

  it('a scope wider than the grant: invalid_scope', async () => {
    await refusedClean(token(B, redeem(grant, bSvid, JWT, { scope: 'read write' }), bKey), 'invalid_scope', grant)
  })

  it('a resource outside the grant: invalid_target', async () => {
    await refusedClean(token(B, redeem(grant, bSvid, JWT, { resource: 'https://other.example.org' }), bKey), 'invalid_target', grant)
  })

  it('an access token (not a may_act grant) as subject_token with actor_token: invalid_request (RFC 8693 §2.2.2), never a renewal', async () => {
    const root = await rootToken(aKey)
    await refusedClean(
      token(B, { grant_type: TOKEN_EXCHANGE, subject_token: root, subject_token_type: AT, actor_token: bSvid, actor_token_type: JWT }, bKey),
      'invalid_request',
      grant,
    )
    // Even its own holder, with its key: an actor_token asks for delegation, which only a grant gives.
    await refusedClean(
      token(A, { grant_type: TOKEN_EXCHANGE, subject_token: root, subject_token_type: AT, actor_token: await jwtSvid(A), actor_token_type: JWT }, aKey),
      'invalid_request',
      grant,
    )
  })

  it('a JWT-SVID as subject_token with actor_token: invalid_request (RFC 8693 §2.2.2)', async () => {
    const t = await w.svc.createTask({ taskId: `svid${++taskN}`, agent: B, scopes: ['read'], resources: [API], ttlSeconds: 600, maxRenewals: 0 }, 'admin')
    await refusedClean(
      token(
        B,
        { grant_type: TOKEN_EXCHANGE, subject_token: bSvid, subject_token_type: JWT_SVID, actor_token: bSvid, actor_token_type: JWT, task_id: t.taskId },
        bKey,
      ),
      'invalid_request',
      grant,
    )
    // Without the actor token, the same exchange is B's own token.
    await ok(await token(B, { grant_type: TOKEN_EXCHANGE, subject_token: bSvid, subject_token_type: JWT_SVID, task_id: t.taskId }, bKey))
  })
})
