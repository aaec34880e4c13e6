import fc from 'fast-check'
import { decodeJwt, decodeProtectedHeader } from 'jose'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { TokenRequest } from '../../../src/broker/contract.js'
import { GRANT_TYPE, TOKEN_TYPE } from '../../../src/tokens/claims.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'
import { RevocationSet } from '../../../src/tokens/revocation.js'
import { unverifiedIssuer, verifyUserToken } from '../../../src/tokens/user-token.js'
import { testIssuer } from '../tokens/token-fixtures.js'
import { UNSIGNED_JSON_TOKEN_TYPE, verifyTxnToken, type TxnTokenClaims } from '../../../src/tokens/txn-token.js'
import { A, ADMIN, B, bearer, cc, client, dpop, fixture, ISSUER, RS, refused, type Fixture } from './fixture.js'

const TD = 'spiffe://corp.example'
const GW = 'spiffe://corp.example/gw/g1'
const PAY = 'spiffe://corp.example/svc/payments'
const FRAUD = 'spiffe://corp.example/svc/fraud'

let f: Fixture
beforeEach(async () => {
  f = await fixture({ trustDomain: TD, txnTokenRequesters: ['spiffe://corp.example/gw/'] })
})
afterEach(async () => {
  await f.cleanup()
})

const txnReq = (subjectToken: string, subjectTokenType: string = TOKEN_TYPE.accessToken, extra: Partial<TokenRequest> = {}): TokenRequest => ({
  grantType: GRANT_TYPE.tokenExchange,
  subjectToken,
  subjectTokenType,
  requestedTokenType: TOKEN_TYPE.txnToken,
  resources: [],
  audiences: [TD],
  ...extra,
})

async function agentToken(f: Fixture, scopes?: string[]): Promise<string> {
  const taskId = await f.task({ orchestrationId: 'orch-9' })
  return (await f.svc.token(cc(taskId, scopes ? { scopes } : {}), client(A), dpop('a'))).access_token
}

async function verify(f: Fixture, token: string, extra: Partial<Parameters<typeof verifyTxnToken>[1]> = {}): Promise<TxnTokenClaims> {
  const keys = new JwksCache({ fetchJwks: () => f.svc.jwks(), nowSec: () => Math.floor(f.clock.now() / 1000) })
  return verifyTxnToken(token, { issuer: ISSUER, trustDomain: TD, keys, nowSec: Math.floor(f.clock.now() / 1000), ...extra })
}

describe('Txn-Tokens (draft-ietf-oauth-transaction-tokens)', () => {
  it('exchanges an agent access token for a txntoken+jwt with the draft claims, N_A, never outliving the subject', async () => {
    const at = await agentToken(f)
    const r = await f.svc.token(
      txnReq(at, TOKEN_TYPE.accessToken, { requestDetails: { purpose: 'refund', tool: 'pay' }, requestContext: { req_ip: '10.0.0.7' } }),
      client(A),
      bearer,
    )
    expect([r.token_type, r.issued_token_type]).toEqual(['N_A', TOKEN_TYPE.txnToken])
    expect(decodeProtectedHeader(r.access_token).typ).toBe('txntoken+jwt')
    const c = await verify(f, r.access_token)
    const atc = decodeJwt(at)
    expect(c.aud).toBe(TD)
    expect(c.sub).toBe(A)
    expect(c.req_wl).toBe(A)
    expect(c.scope).toBe('read write')
    expect(c.txn).toMatch(/^[0-9a-f-]{36}$/)
    expect(c.jti).not.toBe(c.txn)
    expect(c.tctx).toEqual({ purpose: 'refund', tool: 'pay', task_id: atc.task_id, orchestration_id: 'orch-9', source_jti: atc.jti, agentic: { agent_id: A } })
    expect(c.rctx).toEqual({ req_ip: '10.0.0.7', authn: 'access_token' })
    expect(c.act).toEqual({ sub: A })
    expect(c.txn_path).toEqual([{ wl: A, iat: c.iat, scope: 'read write' }])
    expect(c.exp - c.iat).toBe(60)
    expect(c.exp).toBeLessThanOrEqual(atc.exp!)
    expect(r.expires_in).toBe(60)
  })

  it('caps the lifetime at the subject token’s expiry', async () => {
    const at = await agentToken(f)
    f.clock.advance((decodeJwt(at).exp! - decodeJwt(at).iat! - 10) * 1000)
    const c = decodeJwt((await f.svc.token(txnReq(at), client(A), bearer)).access_token)
    expect(c.exp).toBe(decodeJwt(at).exp)
  })

  it('narrows the scope on request and refuses a wider one', async () => {
    const at = await agentToken(f, ['read'])
    const c = decodeJwt((await f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { scopes: ['read'] }), client(A), bearer)).access_token)
    expect(c.scope).toBe('read')
    await refused(() => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { scopes: ['read', 'write'] }), client(A), bearer), 'ERR_SCOPE_INVALID')
  })

  it('only the token’s own client or a trusted requester may present an access token', async () => {
    const at = await agentToken(f)
    await refused(() => f.svc.token(txnReq(at), client(B), bearer), 'ERR_GRANT_INVALID')
    const c = await verify(f, (await f.svc.token(txnReq(at), client(GW), bearer)).access_token)
    expect([c.sub, c.req_wl, c.act?.sub]).toEqual([A, GW, A])
  })

  it('unsigned_json subject tokens only from trusted requesters, within the subject’s ceiling', async () => {
    const subj = JSON.stringify({ sub: A })
    await refused(() => f.svc.token(txnReq(subj, UNSIGNED_JSON_TOKEN_TYPE), client(B), bearer), 'ERR_GRANT_INVALID')
    await refused(() => f.svc.token(txnReq(JSON.stringify({ sub: 'nope' }), UNSIGNED_JSON_TOKEN_TYPE), client(GW), bearer), 'ERR_GRANT_INVALID')
    await refused(() => f.svc.token(txnReq('{not json', UNSIGNED_JSON_TOKEN_TYPE), client(GW), bearer), 'ERR_GRANT_INVALID')
    const c = await verify(f, (await f.svc.token(txnReq(subj, UNSIGNED_JSON_TOKEN_TYPE, { scopes: ['read'] }), client(GW), bearer)).access_token)
    expect([c.sub, c.scope, c.rctx?.authn]).toEqual([A, 'read', 'gateway'])
    await refused(() => f.svc.token(txnReq(subj, UNSIGNED_JSON_TOKEN_TYPE, { scopes: ['deploy'] }), client(GW), bearer), 'ERR_SCOPE_INVALID')
  })

  it('a JWT-SVID subject token of the client itself', async () => {
    const svid = await f.jwtSvid(A)
    const c = await verify(f, (await f.svc.token(txnReq(svid, TOKEN_TYPE.jwtSvid), client(A), bearer)).access_token)
    expect([c.sub, c.rctx?.authn]).toEqual([A, 'jwt-svid'])
    await refused(() => f.svc.token(txnReq(svid, TOKEN_TYPE.jwtSvid), client(B), bearer), 'ERR_GRANT_INVALID')
    const elsewhere = await f.jwtSvid(A, ['https://elsewhere'])
    await refused(() => f.svc.token(txnReq(elsewhere, TOKEN_TYPE.jwtSvid), client(A), bearer), 'ERR_GRANT_INVALID')
  })

  it('aud is the trust domain only; no resource; no actor token', async () => {
    const at = await agentToken(f)
    await refused(() => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { audiences: ['spiffe://other.example'] }), client(A), bearer), 'ERR_TARGET_INVALID')
    await refused(() => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { resources: ['https://api.corp.example'] }), client(A), bearer), 'ERR_TARGET_INVALID')
    await refused(
      () => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { actorToken: at, actorTokenType: TOKEN_TYPE.accessToken }), client(A), bearer),
      'ERR_TOKEN_REQUEST_INVALID',
    )
    const c = decodeJwt((await f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { audiences: [] }), client(A), bearer)).access_token)
    expect(c.aud).toBe(TD)
  })

  it('request_details cannot set what the broker establishes, and only scalars', async () => {
    const at = await agentToken(f)
    for (const d of [{ task_id: 'x' }, { orchestration_id: 'x' }, { agentic: { agent_id: B } }, { nested: { a: 1 } }, { agentic: { intent: 5 } }]) {
      await refused(() => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { requestDetails: d }), client(A), bearer), 'ERR_TOKEN_REQUEST_INVALID')
    }
    await refused(() => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { requestContext: { authn: 'mfa' } }), client(A), bearer), 'ERR_TOKEN_REQUEST_INVALID')
    const r = await f.svc.token(
      txnReq(at, TOKEN_TYPE.accessToken, { requestDetails: { agentic: { intent: 'refund order 7', allowed_actions: ['refund'], agent_type: 'support' } } }),
      client(A),
      bearer,
    )
    expect(decodeJwt(r.access_token).tctx).toMatchObject({
      agentic: { agent_id: A, intent: 'refund order 7', allowed_actions: ['refund'], agent_type: 'support' },
    })
  })

  it('request_details and request_context belong to Txn-Token requests only', async () => {
    const taskId = await f.task()
    await refused(() => f.svc.token(cc(taskId, { requestDetails: { a: 'b' } }), client(A), dpop()), 'ERR_TOKEN_REQUEST_INVALID')
  })

  it('without a trust domain the broker issues no Txn-Tokens', async () => {
    const g = await fixture()
    try {
      const taskId = await g.task()
      const at = (await g.svc.token(cc(taskId), client(A), dpop())).access_token
      await refused(() => g.svc.token(txnReq(at), client(A), bearer), 'ERR_TOKEN_REQUEST_INVALID')
    } finally {
      await g.cleanup()
    }
  })

  describe('replacement', () => {
    async function first(): Promise<string> {
      const at = await agentToken(f)
      return (await f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { requestDetails: { purpose: 'refund' } }), client(GW), bearer)).access_token
    }

    it('keeps txn, sub, aud, tctx and act; appends the requester; never extends exp', async () => {
      const t1 = await first()
      f.clock.advance(10_000)
      const t2 = (await f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken, { scopes: ['read'] }), client(FRAUD), bearer)).access_token
      f.clock.advance(10_000)
      const t3 = (await f.svc.token(txnReq(t2, TOKEN_TYPE.txnToken), client(PAY), bearer)).access_token
      const [c1, c3] = [await verify(f, t1), await verify(f, t3)]
      expect([c3.txn, c3.sub, c3.aud, c3.tctx, c3.act]).toEqual([c1.txn, c1.sub, c1.aud, c1.tctx, c1.act])
      expect(c3.txn_path.map((h) => h.wl)).toEqual([GW, FRAUD, PAY])
      expect(c3.txn_path.map((h) => h.scope)).toEqual(['read write', 'read', 'read'])
      expect(c3.req_wl).toBe(PAY)
      expect(c3.scope).toBe('read')
      expect(c3.exp).toBe(c1.exp)
      expect(c3.jti).not.toBe(c1.jti)
    })

    it('never widens the scope', async () => {
      const t1 = await first()
      const t2 = (await f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken, { scopes: ['read'] }), client(FRAUD), bearer)).access_token
      await refused(() => f.svc.token(txnReq(t2, TOKEN_TYPE.txnToken, { scopes: ['read', 'write'] }), client(PAY), bearer), 'ERR_SCOPE_INVALID')
    })

    it('refuses request_details (tctx is immutable), loops, an expired token, a forged one and another trust domain', async () => {
      const t1 = await first()
      await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken, { requestDetails: { purpose: 'x' } }), client(PAY), bearer), 'ERR_TOKEN_REQUEST_INVALID')
      await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client(GW), bearer), 'ERR_GRANT_INVALID')
      await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client('spiffe://other.example/svc/x'), bearer), 'ERR_GRANT_INVALID')
      const [h, p] = t1.split('.')
      const forged = `${h}.${Buffer.from(JSON.stringify({ ...decodeJwt(t1), scope: 'read write admin' })).toString('base64url')}.${t1.split('.')[2]}`
      expect(p).not.toBe(forged.split('.')[1])
      await refused(() => f.svc.token(txnReq(forged, TOKEN_TYPE.txnToken), client(PAY), bearer), 'ERR_GRANT_INVALID')
      f.clock.advance(61_000)
      await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client(PAY), bearer), 'ERR_GRANT_INVALID')
    })

    it('an access token is not a Txn-Token, and a Txn-Token is not an access token', async () => {
      const at = await agentToken(f)
      const t1 = await first()
      await refused(() => f.svc.token(txnReq(at, TOKEN_TYPE.txnToken), client(A), bearer), 'ERR_GRANT_INVALID')
      await refused(() => f.svc.token({ ...txnReq(t1), requestedTokenType: TOKEN_TYPE.accessToken }, client(GW), dpop()), 'ERR_GRANT_INVALID')
    })
  })

  it('property: a chain of replacements never widens the scope, never extends exp, and keeps txn and sub', async () => {
    const at = await agentToken(f)
    const hops = ['spiffe://corp.example/svc/s0', 'spiffe://corp.example/svc/s1', 'spiffe://corp.example/svc/s2', 'spiffe://corp.example/svc/s3']
    await fc.assert(
      fc.asyncProperty(fc.array(fc.subarray(['read', 'write', 'admin']), { minLength: 1, maxLength: 4 }), async (asks) => {
        const t0 = (await f.svc.token(txnReq(at), client(GW), bearer)).access_token
        const c0 = decodeJwt(t0)
        let cur = t0
        let scope = new Set(String(c0.scope).split(' '))
        for (const [i, ask] of asks.entries()) {
          const req = txnReq(cur, TOKEN_TYPE.txnToken, ask.length > 0 ? { scopes: ask } : {})
          const wider = ask.some((s) => !scope.has(s))
          let next: string | undefined
          try {
            next = (await f.svc.token(req, client(hops[i]!), bearer)).access_token
          } catch (e) {
            expect((e as { code: string }).code).toBe('ERR_SCOPE_INVALID')
          }
          expect(next === undefined).toBe(wider)
          if (next === undefined) return
          const c = decodeJwt(next)
          const got = String(c.scope).split(' ').filter(Boolean)
          expect(got.every((s) => scope.has(s))).toBe(true)
          expect([c.txn, c.sub, c.exp! <= c0.exp!]).toEqual([c0.txn, c0.sub, true])
          scope = new Set(got)
          cur = next
        }
      }),
      { numRuns: 40 },
    )
  })

  describe('revocation', () => {
    it('a revoked instance or prefix on the path gets no Txn-Token, and a verifier with the feed refuses one already issued', async () => {
      const at = await agentToken(f)
      const t1 = (await f.svc.token(txnReq(at), client(GW), bearer)).access_token
      await f.svc.revokeAt({ kind: 'prefix', value: 'spiffe://corp.example/gw' }, 'admin')
      await refused(() => f.svc.token(txnReq(at), client(GW), bearer), 'ERR_REVOKED')
      await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client(PAY), bearer), 'ERR_REVOKED')
      const set = new RevocationSet()
      for (const e of await f.svc.listRevocations()) set.apply(e)
      await expect(verify(f, t1, { revocations: set })).rejects.toMatchObject({ code: 'ERR_TXN_TOKEN_INVALID', details: { reason: 'revoked' } })
      await expect(verify(f, t1)).resolves.toBeDefined()
    })

    it('revoking the access token a transaction started from (token or chain, by jti) covers its Txn-Tokens and their replacements (tctx.source_jti)', async () => {
      for (const kind of ['token', 'chain'] as const) {
        const at = await agentToken(f)
        const other = await agentToken(f)
        const t1 = (await f.svc.token(txnReq(at), client(A), bearer)).access_token
        const t2 = (await f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client(PAY), bearer)).access_token
        const u1 = (await f.svc.token(txnReq(other), client(A), bearer)).access_token
        expect((await verify(f, t2)).tctx.source_jti).toBe(decodeJwt(at).jti)
        await f.svc.revokeAt({ kind, value: decodeJwt(at).jti! }, 'admin')
        const set = new RevocationSet()
        for (const e of await f.svc.listRevocations()) set.apply(e)
        await expect(verify(f, t1, { revocations: set })).rejects.toMatchObject({ code: 'ERR_TXN_TOKEN_INVALID', details: { reason: 'revoked', kind } })
        await expect(verify(f, t2, { revocations: set })).rejects.toMatchObject({ code: 'ERR_TXN_TOKEN_INVALID', details: { reason: 'revoked', kind } })
        await expect(verify(f, u1, { revocations: set })).resolves.toMatchObject({ sub: A })
        // the broker replaces neither (the transaction is revoked with its source)
        await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client(FRAUD), bearer), 'ERR_REVOKED')
      }
    })

    it('a caller cannot set tctx.source_jti (it would point the transaction at a token of its choosing)', async () => {
      const at = await agentToken(f)
      await refused(
        () => f.svc.token(txnReq(at, TOKEN_TYPE.accessToken, { requestDetails: { source_jti: 'x' } }), client(A), bearer),
        'ERR_TOKEN_REQUEST_INVALID',
      )
    })

    it('a task revocation covers the transaction (tctx.task_id)', async () => {
      const at = await agentToken(f)
      const t1 = (await f.svc.token(txnReq(at), client(A), bearer)).access_token
      await f.svc.revokeAt({ kind: 'task', value: decodeJwt(at).task_id as string }, { spiffeId: ADMIN, method: 'jwt-spiffe' })
      const set = new RevocationSet()
      for (const e of await f.svc.listRevocations()) set.apply(e)
      await expect(verify(f, t1, { revocations: set })).rejects.toMatchObject({ details: { reason: 'revoked' } })
      await refused(() => f.svc.token(txnReq(t1, TOKEN_TYPE.txnToken), client(RS), bearer), 'ERR_REVOKED')
    })
  })

  it('audits each issuance without the token', async () => {
    const events: unknown[] = []
    const g = await fixture({
      trustDomain: TD,
      audit: {
        append: async (e) => {
          events.push(e)
          return { seq: events.length, hash: 'h' } as never
        },
      },
    })
    try {
      const taskId = await g.task()
      const at = (await g.svc.token(cc(taskId), client(A), dpop())).access_token
      const r = await g.svc.token(txnReq(at), client(A), bearer)
      const e = events.find((x) => (x as { type: string }).type === 'txn_token.issued') as Record<string, unknown>
      expect(e).toMatchObject({ outcome: 'success', actor: { spiffe_id: A }, subject: A, token_id: decodeJwt(r.access_token).jti, task_id: taskId })
      expect(JSON.stringify(events)).not.toContain(r.access_token.split('.')[2])
    } finally {
      await g.cleanup()
    }
  })

  it('on behalf of a user: a trusted IdP’s token makes the user the subject and the agent the actor, within user scopes ∩ agent ceiling', async () => {
    const idp = await testIssuer('idp-1')
    const IDP = 'https://idp.corp.example'
    const trust = { issuers: new Map([[IDP, idp.cache({ nowSec: () => Math.floor(f.clock.now() / 1000) })]]), audience: ISSUER }
    const g = await fixture({
      trustDomain: TD,
      userTokens: async (t) => (unverifiedIssuer(t) === IDP ? verifyUserToken(t, trust, Math.floor(g.clock.now() / 1000)) : undefined),
    })
    try {
      const now = Math.floor(g.clock.now() / 1000)
      const user = await idp.mint({
        claims: { iss: IDP, aud: ISSUER, sub: 'alice', scope: 'read admin deploy', iat: now, nbf: now, exp: now + 600 },
        omit: ['client_id', 'task_id', 'orchestration_id'],
      })
      const c = decodeJwt((await g.svc.token(txnReq(user), client('spiffe://corp.example/agents/c'), bearer)).access_token)
      expect([c.sub, c.act, c.scope, (c.tctx as Record<string, unknown>).principal_issuer, (c.rctx as Record<string, unknown>).authn]).toEqual([
        'alice',
        { sub: 'spiffe://corp.example/agents/c' },
        'read',
        IDP,
        'user_token',
      ])
      await refused(
        () => g.svc.token(txnReq(user, TOKEN_TYPE.accessToken, { scopes: ['admin'] }), client('spiffe://corp.example/agents/c'), bearer),
        'ERR_SCOPE_INVALID',
      )
      const wrongAud = await idp.mint({ claims: { iss: IDP, aud: 'https://x', sub: 'alice', iat: now, nbf: now, exp: now + 600 } })
      await refused(() => g.svc.token(txnReq(wrongAud), client(A), bearer), 'ERR_GRANT_INVALID')
      const untrusted = await (await testIssuer('k')).mint({ claims: { iss: 'https://evil', aud: ISSUER, sub: 'alice', iat: now, nbf: now, exp: now + 600 } })
      await refused(() => g.svc.token(txnReq(untrusted), client(A), bearer), 'ERR_GRANT_INVALID')
    } finally {
      await g.cleanup()
    }
  })
})
