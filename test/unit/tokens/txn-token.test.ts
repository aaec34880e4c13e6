import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { checkChainPolicy, matchesWorkload, verifyTxnToken, type ChainPolicy, type TxnTokenClaims } from '../../../src/tokens/txn-token.js'
import { RevocationSet } from '../../../src/tokens/revocation.js'
import { ISSUER, NOW, testIssuer } from './token-fixtures.js'

const TD = 'spiffe://example.org'
const AGENT = 'spiffe://example.org/agent/a1'
const GW = 'spiffe://example.org/gw/g1'
const FRAUD = 'spiffe://example.org/svc/fraud'
const PAY = 'spiffe://example.org/svc/payments'

const base = (): Record<string, unknown> => ({
  iss: ISSUER,
  aud: TD,
  iat: NOW,
  exp: NOW + 60,
  jti: 'j1',
  txn: 't1',
  sub: AGENT,
  scope: 'pay:write fraud:check',
  req_wl: PAY,
  tctx: { purpose: 'refund', task_id: 'task-1', agentic: { agent_id: AGENT } },
  rctx: { authn: 'gateway' },
  act: { sub: AGENT },
  txn_path: [
    { wl: GW, iat: NOW, scope: 'pay:write fraud:check' },
    { wl: FRAUD, iat: NOW, scope: 'pay:write fraud:check' },
    { wl: PAY, iat: NOW, scope: 'pay:write fraud:check' },
  ],
})

async function setup() {
  const iss = await testIssuer()
  const mint = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}, omit: string[] = []) => {
    const c = { ...base(), ...claims }
    for (const k of omit) delete c[k]
    return iss.mint({ claims: c, header: { typ: 'txntoken+jwt', ...header }, omit: ['nbf', 'client_id', 'task_id', 'orchestration_id', ...omit] })
  }
  const verify = (t: string, extra: Partial<Parameters<typeof verifyTxnToken>[1]> = {}) =>
    verifyTxnToken(t, { issuer: ISSUER, trustDomain: TD, keys: iss.cache(), nowSec: NOW, ...extra })
  return { iss, mint, verify }
}

const reason = async (p: Promise<unknown>): Promise<[string, unknown]> => {
  try {
    await p
  } catch (e) {
    const err = e as { code: string; details?: { reason?: unknown } }
    return [err.code, err.details?.reason]
  }
  throw new Error('expected a refusal')
}

describe('verifyTxnToken', () => {
  it('accepts a valid token and returns its claims', async () => {
    const { mint, verify } = await setup()
    const c = await verify(await mint())
    expect([c.txn, c.sub, c.req_wl, c.txn_path.length]).toEqual(['t1', AGENT, PAY, 3])
  })

  it.each([
    ['typ', {}, { typ: 'at+jwt' }, [], 'typ'],
    ['iss', { iss: 'https://evil' }, {}, [], 'iss'],
    ['aud', { aud: 'spiffe://other.org' }, {}, [], 'aud'],
    ['expired', { exp: NOW - 31 }, {}, [], 'expired'],
    ['iat in the future', { iat: NOW + 100 }, {}, [], 'iat_future'],
    ['no txn', {}, {}, ['txn'], 'txn'],
    ['no jti', {}, {}, ['jti'], 'jti'],
    ['no sub', {}, {}, ['sub'], 'sub'],
    ['scope not a string', { scope: ['a'] }, {}, [], 'scope'],
    ['req_wl not a SPIFFE ID', { req_wl: 'https://x' }, {}, [], 'req_wl'],
    ['req_wl not the last hop', { req_wl: FRAUD }, {}, [], 'req_wl_path'],
    ['no tctx', {}, {}, ['tctx'], 'tctx'],
    ['rctx not an object', { rctx: 'x' }, {}, [], 'rctx'],
    ['no txn_path', {}, {}, ['txn_path'], 'txn_path'],
    ['empty txn_path', { txn_path: [] }, {}, [], 'txn_path'],
    ['hop without wl', { txn_path: [{ iat: NOW, scope: '' }] }, {}, [], 'txn_path'],
    [
      'hops out of order',
      {
        txn_path: [
          { wl: GW, iat: NOW, scope: '' },
          { wl: PAY, iat: NOW - 5, scope: '' },
        ],
      },
      {},
      [],
      'txn_path_order',
    ],
    ['act malformed', { act: { sub: 'nope' } }, {}, [], 'act'],
    ['agentic without agent_id', { tctx: { agentic: {} } }, {}, [], 'tctx_agentic'],
    ['key in header', {}, { jwk: { kty: 'EC' } }, [], 'header_key'],
  ])('refuses %s', async (_n, claims, header, omit, why) => {
    const { mint, verify } = await setup()
    expect(await reason(verify(await mint(claims, header, omit)))).toEqual(['ERR_TXN_TOKEN_INVALID', why])
  })

  it('refuses another issuer’s signature and an unknown kid', async () => {
    const { mint, verify } = await setup()
    const other = await testIssuer()
    const t = await other.mint({ claims: base(), header: { typ: 'txntoken+jwt' } })
    expect(await reason(verify(t))).toEqual(['ERR_TXN_TOKEN_INVALID', 'signature'])
    expect(await reason(verify(await mint({}, { kid: 'nope' })))).toEqual(['ERR_TXN_TOKEN_INVALID', 'kid_unknown'])
  })

  it('refuses a token a revocation covers (its task, its agent, any workload on its path)', async () => {
    const { mint, verify } = await setup()
    const t = await mint()
    for (const [kind, value] of [
      ['task', 'task-1'],
      ['instance', AGENT],
      ['prefix', 'spiffe://example.org/svc/fraud'],
    ] as const) {
      const set = new RevocationSet()
      set.apply({ seq: 1, kind, value, createdAt: NOW, expiresAt: NOW + 3600 })
      expect(await reason(verify(t, { revocations: set }))).toEqual(['ERR_TXN_TOKEN_INVALID', 'revoked'])
    }
    const unrelated = new RevocationSet()
    unrelated.apply({ seq: 1, kind: 'prefix', value: 'spiffe://example.org/svc/other', createdAt: NOW, expiresAt: NOW + 3600 })
    await expect(verify(t, { revocations: unrelated })).resolves.toBeDefined()
  })

  it('checks the route’s scopes', async () => {
    const { mint, verify } = await setup()
    expect(await reason(verify(await mint(), { requiredScopes: ['pay:write', 'pay:admin'] }))).toEqual(['ERR_SCOPE_INSUFFICIENT', 'scope'])
    await expect(verify(await mint(), { requiredScopes: ['pay:write'] })).resolves.toBeDefined()
  })

  it('applies the route’s chain policy', async () => {
    const { mint, verify } = await setup()
    expect(await reason(verify(await mint(), { policy: { require: [PAY, FRAUD] } }))).toEqual(['ERR_CALL_CHAIN_REFUSED', 'missing_hop'])
    await expect(verify(await mint(), { policy: { require: [FRAUD, PAY] } })).resolves.toBeDefined()
  })
})

describe('checkChainPolicy', () => {
  const claims = base() as unknown as TxnTokenClaims
  const why = (p: ChainPolicy): unknown => {
    try {
      checkChainPolicy(claims, p)
      return 'ok'
    } catch (e) {
      return (e as { details: { reason: string } }).details.reason
    }
  }

  it('require: in order, others may come between; prefixes match under them', () => {
    expect(why({ require: [GW, PAY] })).toBe('ok')
    expect(why({ require: ['spiffe://example.org/svc/', PAY] })).toBe('ok')
    expect(why({ require: [FRAUD, GW] })).toBe('missing_hop')
    expect(why({ require: ['spiffe://example.org/svc/kyc'] })).toBe('missing_hop')
    expect(why({ require: [FRAUD, FRAUD] })).toBe('missing_hop')
  })

  it('forbid covers the path and the act chain', () => {
    expect(why({ forbid: ['spiffe://example.org/svc/fraud'] })).toBe('forbidden_hop')
    expect(why({ forbid: [AGENT] })).toBe('forbidden_hop')
    expect(why({ forbid: ['spiffe://example.org/untrusted/'] })).toBe('ok')
  })

  it('callers, subjects, purposes, scopes, max hops', () => {
    expect(why({ callers: [PAY] })).toBe('ok')
    expect(why({ callers: [FRAUD] })).toBe('caller')
    expect(why({ subjects: ['spiffe://example.org/agent/'] })).toBe('ok')
    expect(why({ subjects: ['spiffe://example.org/humans/'] })).toBe('subject')
    expect(why({ purposes: ['refund', 'chargeback'] })).toBe('ok')
    expect(why({ purposes: ['payout'] })).toBe('purpose')
    expect(why({ scopes: ['fraud:check'] })).toBe('ok')
    expect(why({ scopes: ['pay:admin'] })).toBe('scope')
    expect(why({ maxHops: 3 })).toBe('ok')
    expect(why({ maxHops: 2 })).toBe('max_hops')
    expect(why({ context: { purpose: 'refund', task_id: 'task-1' } })).toBe('ok')
    expect(why({ context: { tool: 'payments' } })).toBe('context')
    expect(why({ context: { purpose: 'refund', task_id: 'task-2' } })).toBe('context')
  })

  it('matchesWorkload: an ID matches itself only; a prefix matches strictly under it, by path segment', () => {
    expect(matchesWorkload(PAY, PAY)).toBe(true)
    expect(matchesWorkload(`${PAY}/x`, PAY)).toBe(false)
    expect(matchesWorkload(PAY, 'spiffe://example.org/svc/')).toBe(true)
    expect(matchesWorkload('spiffe://example.org/svc', 'spiffe://example.org/svc/')).toBe(false)
    expect(matchesWorkload('spiffe://example.org/svcx/a', 'spiffe://example.org/svc/')).toBe(false)
  })

  it('property: a required sequence is satisfied exactly when it is a subsequence of the path', () => {
    const ids = ['spiffe://d/a', 'spiffe://d/b', 'spiffe://d/c', 'spiffe://d/e']
    fc.assert(
      fc.property(fc.array(fc.constantFrom(...ids), { minLength: 1, maxLength: 6 }), fc.array(fc.constantFrom(...ids), { maxLength: 4 }), (path, req) => {
        const c = { ...claims, req_wl: path[path.length - 1]!, txn_path: path.map((wl) => ({ wl, iat: NOW, scope: '' })) }
        let i = 0
        for (const x of path) if (i < req.length && x === req[i]) i++
        const expected = i === req.length
        let ok = true
        try {
          checkChainPolicy(c, { require: req })
        } catch {
          ok = false
        }
        expect(ok).toBe(expected)
      }),
    )
  })
})
