import net from 'node:net'
import { webcrypto, type JsonWebKey } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { decodeJwt, exportJWK } from 'jose'
import { startBrokerHttpServer, type BrokerHttpServer } from '../../src/broker/http/broker-http-server.js'
import { boundsCeilingSource } from '../../src/broker/ports.js'
import { createBrokerService, type BrokerServiceImpl } from '../../src/broker/service.js'
import { MemoryKeyManager } from '../../src/keymanager/memory/index.js'
import { BoundsSet } from '../../src/spiffe/bounds/bounds-set.js'
import type { BundleSet } from '../../src/spiffe/bundle/bundle-set.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { verifyAccessToken } from '../../src/tokens/access-token.js'
import { createDpopProof, jwkThumbprint, x5tS256 } from '../../src/tokens/dpop.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { bundlesOf, form, httpConfig, jwtSvid, makeCa, makeSvid, pem, request, type Ca, type Res, type Svid } from '../helpers/broker-http-fixtures.js'
import { tempDir } from '../helpers/temp.js'

/**
 * RFC 8693 delegation with `actor_token` (§2.1, §4.1) over real HTTPS against
 * the real broker domain: the holder of a token asks for a one-time grant
 * naming the sub-agent in `may_act`; the sub-agent, authenticated by its
 * X.509-SVID, presents the grant as `subject_token` and a token of its own as
 * `actor_token` (its JWT-SVID, or its own broker access token), and gets a
 * token with nested `act` bound to its own key. Every refusal answers the
 * RFC 6749 error and changes nothing: no token stored, the grant unused.
 */

const TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const AT = 'urn:ietf:params:oauth:token-type:access_token'
const JWT = 'urn:ietf:params:oauth:token-type:jwt'
const JWT_SVID = 'urn:ietf:params:oauth:token-type:jwt-svid'
const FORM = { 'content-type': 'application/x-www-form-urlencoded' }
const API = 'https://api.example.org'
const A = 'spiffe://example.org/agents/a'
const B = 'spiffe://example.org/agents/b'
const C = 'spiffe://example.org/agents/c'
const D = 'spiffe://example.org/agents/d'
const TOOL = 'spiffe://example.org/tools/x'
const BOUNDS = {
  '/agents': { scopes: ['read', 'write'], resources: [API], max_token_ttl: 600, max_renewals: 3, max_delegation_depth: 2, may_delegate_to: ['spiffe://example.org/agents/'] },
  '/tools': { scopes: ['read'], resources: [API] },
}

async function freePort(): Promise<number> {
  const s = net.createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  const port = (s.address() as net.AddressInfo).port
  await new Promise<void>((r) => s.close(() => r()))
  return port
}

type KeyPair = webcrypto.CryptoKeyPair
const newKey = async (): Promise<KeyPair> => (await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])) as KeyPair
const jktOf = async (k: KeyPair) => jwkThumbprint((await exportJWK(k.publicKey)) as JsonWebKey)

const tmp = tempDir('wbat-')
const log = captureLogger()
let ca: Ca
let bundles: BundleSet
let bounds = BoundsSet.parse(TrustDomain.fromString('example.org'), BOUNDS)
let svids: Record<string, Svid>
let caPem: string
let issuer: string
let tokenUrl: string
let broker: BrokerHttpServer
let svc: BrokerServiceImpl
let nonce: string | undefined
let taskN = 0

beforeAll(async () => {
  ca = await makeCa('example.org')
  bundles = bundlesOf([ca])
  svids = {}
  for (const id of [A, B, C, D, TOOL]) svids[id] = await makeSvid(ca, id)
  const serverSvid = await makeSvid(ca, 'spiffe://example.org/warrant/broker', { dnsNames: ['localhost'] })
  caPem = pem(ca.certificate)
  const port = await freePort()
  issuer = `https://localhost:${port}`
  svc = await createBrokerService(
    { keyManager: new MemoryKeyManager(), ceilings: boundsCeilingSource(() => bounds), jwtBundles: bundles, log },
    { issuer, storePath: join(tmp.dir, 'broker.db'), introspectors: ['spiffe://example.org/rs'] },
  )
  broker = await startBrokerHttpServer({
    service: svc,
    config: httpConfig({ issuer, bindAddress: { host: '127.0.0.1', port } }),
    trust: { localTrustDomain: () => TrustDomain.fromString('example.org'), bundles: () => bundles, version: () => bundles },
    identity: { current: () => ({ certChainPem: serverSvid.certPem, keyPem: serverSvid.keyPem }), onChange: () => () => undefined },
    log,
  })
  tokenUrl = broker.endpoints.token
}, 30_000)

afterAll(async () => {
  await broker?.close()
  await svc?.close()
  tmp.cleanup()
})

beforeEach(() => {
  bounds = BoundsSet.parse(TrustDomain.fromString('example.org'), BOUNDS)
})

/** POST /token as `client` (mutual TLS), with a DPoP proof of `key` when given (answering use_dpop_nonce once). */
async function token(client: string, params: Record<string, string>, key?: KeyPair): Promise<Res> {
  const send = async () => {
    const headers: Record<string, string> = { ...FORM }
    if (key) headers.dpop = await createDpopProof(key, { method: 'POST', url: tokenUrl, ...(nonce !== undefined ? { nonce } : {}) })
    const res = await request(tokenUrl, { method: 'POST', headers, body: form(params), client: svids[client]!, ca: caPem })
    const n = res.headers['dpop-nonce']
    if (typeof n === 'string') nonce = n
    return res
  }
  const res = await send()
  return key && res.status === 400 && res.json().error === 'use_dpop_nonce' ? send() : res
}

async function ok(res: Res): Promise<Record<string, unknown>> {
  expect({ status: res.status, body: res.status === 200 ? 'ok' : res.body }).toEqual({ status: 200, body: 'ok' })
  return res.json()
}

/** A's task and a DPoP-bound token for it. */
async function rootToken(key: KeyPair, scope = 'read write'): Promise<string> {
  const t = await svc.createTask({ taskId: `t${++taskN}`, agent: 'spiffe://example.org/agents/', scopes: ['read', 'write'], resources: [API], ttlSeconds: 3600, maxRenewals: 3 }, 'admin')
  return (await ok(await token(A, { grant_type: 'client_credentials', task_id: t.taskId, scope }, key))).access_token as string
}

/** The holder of `subject` (proving `key`) asks for a one-time grant naming `to`. */
async function grantFor(holder: string, subject: string, key: KeyPair, to: string, extra: Record<string, string> = {}): Promise<string> {
  const r = await ok(await token(holder, { grant_type: TOKEN_EXCHANGE, subject_token: subject, subject_token_type: AT, may_act: to, ...extra }, key))
  expect(r).toMatchObject({ issued_token_type: JWT, token_type: 'N_A' })
  return r.access_token as string
}

const redeem = (grant: string, actorToken: string, actorTokenType = JWT, extra: Record<string, string> = {}) => ({
  grant_type: TOKEN_EXCHANGE, subject_token: grant, subject_token_type: JWT, actor_token: actorToken, actor_token_type: actorTokenType, ...extra,
})

/** Expects the OAuth error and that nothing changed: no token stored, `grant` (if any) still unused. */
async function refusedClean(res: Promise<Res>, error: string, grant?: string): Promise<void> {
  const before = svc.store.countTokens()
  const r = await res
  expect({ status: r.status, error: r.json().error }).toEqual({ status: 400, error })
  expect(r.headers['cache-control']).toBe('no-store')
  expect(svc.store.countTokens()).toBe(before)
  if (grant !== undefined) expect(svc.store.grantUse(decodeJwt(grant).jti!)).toBeUndefined()
}

describe('actor_token: the actor presents the grant naming it and a token of its own', () => {
  it('with its JWT-SVID: nested act (actor outermost), bound to the actor key, narrowed, chain recorded', async () => {
    const aKey = await newKey()
    const bKey = await newKey()
    const root = await rootToken(aKey)
    const grant = await grantFor(A, root, aKey, B, { scope: 'read' })
    const r = await ok(await token(B, redeem(grant, await jwtSvid(ca, B, [issuer])), bKey))
    expect(r).toMatchObject({ issued_token_type: AT, token_type: 'DPoP', scope: 'read' })
    const claims = decodeJwt(r.access_token as string)
    const rootClaims = decodeJwt(root)
    expect(claims).toMatchObject({ sub: A, client_id: B, act: { sub: B }, cnf: { jkt: await jktOf(bKey) }, scope: 'read', task_id: rootClaims.task_id })
    expect(claims.exp!).toBeLessThanOrEqual(rootClaims.exp!)
    // The store links it to the grant and the root exactly as a grant redemption without actor_token does.
    const rec = svc.store.getToken(claims.jti!)!
    expect(rec).toMatchObject({ parentJti: decodeJwt(grant).jti, rootJti: rootClaims.jti, actors: [B], depth: 1 })
    expect(svc.store.grantUse(decodeJwt(grant).jti!)).toMatchObject({ usedBy: B, issuedJti: claims.jti })
    // A resource server verifies the chain offline from the broker's JWKS (src/tokens).
    const keys = new JwksCache({ fetchJwks: () => svc.jwks() })
    const verified = await verifyAccessToken(r.access_token as string, { issuer, audience: API, keys, nowSec: Math.floor(Date.now() / 1000) })
    expect(verified.act).toEqual({ sub: B })
  })

  it('with the jwt-svid token type, and bound to the actor certificate under mutual TLS', async () => {
    const aKey = await newKey()
    const root = await rootToken(aKey)
    const grant = await grantFor(A, root, aKey, B)
    const r = await ok(await token(B, redeem(grant, await jwtSvid(ca, B, [issuer]), JWT_SVID)))
    expect(r.token_type).toBe('Bearer')
    expect(decodeJwt(r.access_token as string)).toMatchObject({ act: { sub: B }, cnf: { 'x5t#S256': x5tS256(svids[B]!.certDer) } })
  })

  it('with its own broker access token, proving that token key', async () => {
    const aKey = await newKey()
    const bKey = await newKey()
    const root = await rootToken(aKey)
    const t = await svc.createTask({ taskId: `own${++taskN}`, agent: B, scopes: ['read'], resources: [API], ttlSeconds: 600, maxRenewals: 0 }, 'admin')
    const own = (await ok(await token(B, { grant_type: 'client_credentials', task_id: t.taskId }, bKey))).access_token as string
    const grant = await grantFor(A, root, aKey, B)
    // The same token under another proof key is refused (the actor must hold it), and that changes nothing.
    await refusedClean(token(B, redeem(grant, own, AT), await newKey()), 'invalid_grant', grant)
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
    const toB = (await ok(await token(B, redeem(await grantFor(A, root, aKey, B), await jwtSvid(ca, B, [issuer])), bKey))).access_token as string
    const toC = (await ok(await token(C, redeem(await grantFor(B, toB, bKey, C), await jwtSvid(ca, C, [issuer])), cKey))).access_token as string
    expect(decodeJwt(toC)).toMatchObject({ sub: A, act: { sub: C, act: { sub: B } } })
    expect(svc.store.getToken(decodeJwt(toC).jti!)).toMatchObject({ actors: [C, B], depth: 2, rootJti: decodeJwt(root).jti })
    await refusedClean(token(C, { grant_type: TOKEN_EXCHANGE, subject_token: toC, subject_token_type: AT, may_act: D }, cKey), 'invalid_grant')
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
    bSvid = await jwtSvid(ca, B, [issuer])
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

  it('an actor token of someone other than the client: invalid_grant', async () => {
    await refusedClean(token(B, redeem(grant, await jwtSvid(ca, C, [issuer])), bKey), 'invalid_grant', grant)
  })

  it('an actor JWT-SVID for another audience, expired, or garbage: invalid_grant', async () => {
    await refusedClean(token(B, redeem(grant, await jwtSvid(ca, B, ['https://elsewhere.example'])), bKey), 'invalid_grant', grant)
    await refusedClean(token(B, redeem(grant, await jwtSvid(ca, B, [issuer], { ttlSec: 10, iatOffsetSec: -120 })), bKey), 'invalid_grant', grant)
    await refusedClean(token(B, redeem(grant, 'not-a-jwt'), bKey), 'invalid_grant', grant)
  })

  it('an actor the grant does not name (may_act), with its own valid actor token: invalid_grant', async () => {
    await refusedClean(token(C, redeem(grant, await jwtSvid(ca, C, [issuer])), await newKey()), 'invalid_grant', grant)
  })

  it('an actor no longer under may_delegate_to when the grant is redeemed: invalid_grant', async () => {
    bounds = BoundsSet.parse(TrustDomain.fromString('example.org'), { ...BOUNDS, '/agents': { ...BOUNDS['/agents'], may_delegate_to: ['spiffe://example.org/agents/c'] } })
    await refusedClean(token(B, redeem(grant, bSvid), bKey), 'invalid_grant', grant)
    bounds = BoundsSet.parse(TrustDomain.fromString('example.org'), BOUNDS)
  })

  it('a depth cap lowered below the hop when the grant is redeemed: invalid_grant', async () => {
    bounds = BoundsSet.parse(TrustDomain.fromString('example.org'), { ...BOUNDS, '/agents': { ...BOUNDS['/agents'], max_delegation_depth: 0 } })
    await refusedClean(token(B, redeem(grant, bSvid), bKey), 'invalid_grant', grant)
    bounds = BoundsSet.parse(TrustDomain.fromString('example.org'), BOUNDS)
  })

  it('a scope wider than the grant: invalid_scope', async () => {
    await refusedClean(token(B, redeem(grant, bSvid, JWT, { scope: 'read write' }), bKey), 'invalid_scope', grant)
  })

  it('a resource outside the grant: invalid_target', async () => {
    await refusedClean(token(B, redeem(grant, bSvid, JWT, { resource: 'https://other.example.org' }), bKey), 'invalid_target', grant)
  })

  it('an access token (not a may_act grant) as subject_token with actor_token: invalid_grant, never a renewal', async () => {
    const root = await rootToken(aKey)
    await refusedClean(token(B, { grant_type: TOKEN_EXCHANGE, subject_token: root, subject_token_type: AT, actor_token: bSvid, actor_token_type: JWT }, bKey), 'invalid_grant', grant)
    // Even its own holder, with its key: an actor_token asks for delegation, which only a grant gives.
    await refusedClean(token(A, { grant_type: TOKEN_EXCHANGE, subject_token: root, subject_token_type: AT, actor_token: await jwtSvid(ca, A, [issuer]), actor_token_type: JWT }, aKey), 'invalid_grant', grant)
  })

  it('a JWT-SVID as subject_token with actor_token: invalid_grant', async () => {
    const t = await svc.createTask({ taskId: `svid${++taskN}`, agent: B, scopes: ['read'], resources: [API], ttlSeconds: 600, maxRenewals: 0 }, 'admin')
    await refusedClean(token(B, { grant_type: TOKEN_EXCHANGE, subject_token: bSvid, subject_token_type: JWT_SVID, actor_token: bSvid, actor_token_type: JWT, task_id: t.taskId }, bKey), 'invalid_grant', grant)
    // Without the actor token, the same exchange is B's own token.
    await ok(await token(B, { grant_type: TOKEN_EXCHANGE, subject_token: bSvid, subject_token_type: JWT_SVID, task_id: t.taskId }, bKey))
  })
})
