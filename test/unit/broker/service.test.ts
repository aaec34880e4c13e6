import { createHash } from 'node:crypto'
import { decodeJwt } from 'jose'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { DELEGATION_GRANT_TYP } from '../../../src/broker/service.js'
import type { KeyManager, ManagedKey } from '../../../src/keymanager/key-manager.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import type { SignatureAlgorithm } from '../../../src/spiffe/signer.js'
import { TOKEN_TYPE } from '../../../src/tokens/claims.js'
import {
  A,
  ADMIN,
  API,
  B,
  bearer,
  C,
  cc,
  client,
  dpop,
  exchange,
  fixture,
  ISSUER,
  LEDGER,
  ORCH,
  OTHER,
  OUTSIDER,
  refused,
  RS,
  type Fixture,
} from './fixture.js'

let f: Fixture
beforeEach(async () => {
  f = await fixture()
})
afterEach(async () => {
  await f.cleanup()
})

/** Asserts the refusal wrote nothing and logged its reason without the token. */
async function refusedClean(fn: () => Promise<unknown>, code: string, secret?: string): Promise<void> {
  const before = f.svc.store.countTokens()
  const lines = f.log.lines.length
  await refused(fn, code)
  expect(f.svc.store.countTokens()).toBe(before)
  const logged = f.log.lines.slice(lines)
  expect(logged.some((l) => l.level === 'warn' && l.fields.error_code === code && typeof l.fields.reason === 'string')).toBe(true)
  if (secret) expect(JSON.stringify(logged)).not.toContain(secret.split('.')[2])
}

describe('client_credentials', () => {
  it('issues an at+jwt for the client itself, bound to its DPoP key, inside task and ceiling', async () => {
    const task = await f.task({ orchestrationId: 'orch-1' })
    const key = dpop()
    const r = await f.svc.token(cc(task, { scopes: ['read'], resources: [API] }), client(A), key)
    expect(r).toMatchObject({ issued_token_type: TOKEN_TYPE.accessToken, token_type: 'DPoP', expires_in: 300, scope: 'read' })
    const claims = await f.verify(r.access_token)
    expect(claims).toMatchObject({
      iss: ISSUER,
      sub: A,
      aud: API,
      scope: 'read',
      client_id: A,
      task_id: task,
      orchestration_id: 'orch-1',
      cnf: { jkt: key.jkt },
    })
    expect(claims.exp! - claims.iat!).toBe(300)
    expect(claims.nbf).toBe(claims.iat)
    expect(claims.act).toBeUndefined()
    expect(typeof claims.jti).toBe('string')
  })

  it('defaults to everything task ∩ ceiling allows', async () => {
    const task = await f.task({ scopes: ['read', 'write'], resources: [API, LEDGER] })
    const claims = decodeJwt((await f.svc.token(cc(task), client(A), dpop())).access_token)
    expect(claims.scope).toBe('read write')
    expect(claims.aud).toEqual([API, LEDGER])
  })

  it('binds to the mTLS certificate (x5t#S256), token_type Bearer', async () => {
    const task = await f.task()
    const der = Buffer.from('certificate-der')
    const x5t = createHash('sha256').update(der).digest('base64url')
    const r = await f.svc.token(cc(task), client(A, { method: 'tls_client_auth', certDer: der }), { kind: 'mtls', x5tS256: x5t })
    expect(r.token_type).toBe('Bearer')
    expect(decodeJwt(r.access_token).cnf).toEqual({ 'x5t#S256': x5t })
    await refusedClean(
      () => f.svc.token(cc(task), client(A, { method: 'tls_client_auth', certDer: der }), { kind: 'mtls', x5tS256: 'A'.repeat(43) }),
      'ERR_TOKEN_REQUEST_INVALID',
    )
    await refusedClean(() => f.svc.token(cc(task), client(A), { kind: 'mtls', x5tS256: x5t }), 'ERR_TOKEN_REQUEST_INVALID')
  })

  it('bearer only where the ceiling allows it; then no cnf', async () => {
    const task = await f.task()
    await refusedClean(() => f.svc.token(cc(task), client(A), bearer), 'ERR_TOKEN_REQUEST_INVALID')
    const open = await f.task({ agent: 'spiffe://corp.example/open/', scopes: ['read'], resources: [API] })
    const r = await f.svc.token(cc(open), client('spiffe://corp.example/open/x'), bearer)
    expect(r.token_type).toBe('Bearer')
    expect(decodeJwt(r.access_token).cnf).toBeUndefined()
  })

  it.each([
    ['scope outside the task', { scopes: ['admin'] }, 'ERR_SCOPE_INVALID'],
    ['unknown scope', { scopes: ['nope'] }, 'ERR_SCOPE_INVALID'],
    ['malformed scope', { scopes: ['a"b'] }, 'ERR_SCOPE_INVALID'],
    ['resource outside the task', { resources: [OTHER] }, 'ERR_TARGET_INVALID'],
    ['audience outside the task', { audiences: ['https://evil.example'] }, 'ERR_TARGET_INVALID'],
    ['relative resource', { resources: ['/api'] }, 'ERR_TARGET_INVALID'],
    ['resource with fragment', { resources: [`${API}#x`] }, 'ERR_TARGET_INVALID'],
    ['requested_token_type other than access_token', { requestedTokenType: TOKEN_TYPE.jwt }, 'ERR_TOKEN_REQUEST_INVALID'],
    ['authorization_details of a type not configured', { authorizationDetails: [{ type: 'payment' }] }, 'ERR_TOKEN_REQUEST_INVALID'],
    ['may_act', { mayAct: B }, 'ERR_DELEGATION_INVALID'],
    ['subject_token', { subjectToken: 'x' }, 'ERR_TOKEN_REQUEST_INVALID'],
  ])('refuses %s', async (_t, extra, code) => {
    const task = await f.task()
    await refusedClean(() => f.svc.token(cc(task, extra), client(A), dpop()), code)
  })

  it('the ceiling caps what a task grants when bounds narrow after the task was created', async () => {
    const task = await f.task({ scopes: ['read', 'write'] })
    f.setBounds({ '/agents': { scopes: ['read'], resources: [API, LEDGER] } })
    await refusedClean(() => f.svc.token(cc(task, { scopes: ['write'] }), client(A), dpop()), 'ERR_SCOPE_INVALID')
    expect(decodeJwt((await f.svc.token(cc(task), client(A), dpop())).access_token).scope).toBe('read')
  })

  it('caps the lifetime by the ceiling and the task end', async () => {
    const f2 = await fixture({ defaultTokenTtlSeconds: 3000 })
    try {
      const t = await f2.task({ ttlSeconds: 3600 })
      expect((await f2.svc.token(cc(t), client(A), dpop())).expires_in).toBe(600) // max_token_ttl of /agents
      const short = await f2.task({ ttlSeconds: 100 })
      expect((await f2.svc.token(cc(short), client(A), dpop())).expires_in).toBe(100)
    } finally {
      await f2.cleanup()
    }
  })

  it('task rules: required, known, live, for this agent', async () => {
    await refusedClean(() => f.svc.token(cc(undefined), client(A), dpop()), 'ERR_TOKEN_REQUEST_INVALID')
    await refusedClean(() => f.svc.token(cc('nope'), client(A), dpop()), 'ERR_TASK_NOT_FOUND')
    const t = await f.task({ agent: A })
    await refusedClean(() => f.svc.token(cc(t), client(B), dpop()), 'ERR_CLIENT_UNAUTHORIZED')
    const short = await f.task({ ttlSeconds: 10 })
    f.clock.advance(10_000)
    await refusedClean(() => f.svc.token(cc(short), client(A), dpop()), 'ERR_TASK_ENDED')
    await f.svc.endTask(t, 'admin')
    await refusedClean(() => f.svc.token(cc(t), client(A), dpop()), 'ERR_TASK_ENDED')
  })

  it('without requireTask the ceiling alone bounds the token', async () => {
    const f2 = await fixture({ requireTask: false })
    try {
      const claims = decodeJwt((await f2.svc.token(cc(undefined, { scopes: ['admin'] }), client(A), dpop())).access_token)
      expect(claims.scope).toBe('admin')
      expect(claims.task_id).toBeUndefined()
      await refused(() => f2.svc.token(cc(undefined), client(OUTSIDER), dpop()), 'ERR_SCOPE_INVALID')
    } finally {
      await f2.cleanup()
    }
  })

  it('unsupported grant types are refused', async () => {
    await refusedClean(() => f.svc.token({ ...cc(undefined), grantType: 'password' }, client(A), dpop()), 'ERR_GRANT_TYPE_UNSUPPORTED')
  })

  it('carries authorization_details of configured types', async () => {
    const f2 = await fixture({ authorizationDetailsTypes: ['tool_call'] })
    try {
      const t = await f2.task()
      const details = [{ type: 'tool_call', actions: ['refund'] }]
      const r = await f2.svc.token(cc(t, { authorizationDetails: details }), client(A), dpop())
      expect(decodeJwt(r.access_token).authorization_details).toEqual(details)
    } finally {
      await f2.cleanup()
    }
  })
})

describe('token exchange with a JWT-SVID subject token', () => {
  it('issues for the client when the SVID names the broker and is the client', async () => {
    const t = await f.task()
    const svid = await f.jwtSvid(A)
    const r = await f.svc.token(exchange(svid, { subjectTokenType: TOKEN_TYPE.jwtSvid, taskId: t }), client(A), dpop())
    expect(decodeJwt(r.access_token)).toMatchObject({ sub: A, task_id: t })
    const r2 = await f.svc.token(exchange(await f.jwtSvid(A), { subjectTokenType: TOKEN_TYPE.jwt, taskId: t }), client(A), dpop())
    expect(decodeJwt(r2.access_token).sub).toBe(A)
  })

  it.each([
    ['another subject', async () => f.jwtSvid(B), 'ERR_GRANT_INVALID'],
    ['another audience', async () => f.jwtSvid(A, ['https://other.example']), 'ERR_GRANT_INVALID'],
    ['garbage', async () => 'not.a.jwt', 'ERR_GRANT_INVALID'],
  ])('refuses %s', async (_t, mk, code) => {
    const t = await f.task()
    const svid = await mk()
    await refusedClean(
      () => f.svc.token(exchange(svid, { subjectTokenType: TOKEN_TYPE.jwtSvid, taskId: t }), client(A), dpop()),
      code,
      svid.length > 20 ? svid : undefined,
    )
  })

  it('refuses an expired JWT-SVID', async () => {
    const t = await f.task()
    const svid = await f.jwtSvid(A, [ISSUER], 60)
    f.clock.advance(120_000)
    await refusedClean(() => f.svc.token(exchange(svid, { subjectTokenType: TOKEN_TYPE.jwtSvid, taskId: t }), client(A), dpop()), 'ERR_GRANT_INVALID', svid)
  })

  it('RFC 8693 request rules', async () => {
    const t = await f.task()
    const svid = await f.jwtSvid(A)
    const { subjectTokenType: _omit, ...noType } = exchange(svid, { taskId: t })
    await refusedClean(() => f.svc.token(noType, client(A), dpop()), 'ERR_TOKEN_REQUEST_INVALID')
    await refusedClean(() => f.svc.token(exchange(svid, { subjectTokenType: 'urn:x:unknown', taskId: t }), client(A), dpop()), 'ERR_TOKEN_REQUEST_INVALID')
    await refusedClean(
      () => f.svc.token(exchange(svid, { subjectTokenType: TOKEN_TYPE.jwtSvid, requestedTokenType: TOKEN_TYPE.txnToken, taskId: t }), client(A), dpop()),
      'ERR_TOKEN_REQUEST_INVALID',
    )
    await refusedClean(
      () => f.svc.token(exchange(svid, { subjectTokenType: TOKEN_TYPE.jwtSvid, actorToken: 'x', taskId: t }), client(A), dpop()),
      'ERR_TOKEN_REQUEST_INVALID',
    )
    await refusedClean(
      () => f.svc.token(exchange(svid, { subjectTokenType: TOKEN_TYPE.jwtSvid, actorTokenType: TOKEN_TYPE.jwt, taskId: t }), client(A), dpop()),
      'ERR_TOKEN_REQUEST_INVALID',
    )
  })
})

describe('renewal', () => {
  async function first(key = dpop(), extra = {}) {
    const t = await f.task({ maxRenewals: 2 })
    const r = await f.svc.token(cc(t, extra), client(A), key)
    return { t, key, token: r.access_token }
  }

  it('same client and key: same sub/task, fresh exp, same scope, counted', async () => {
    const { t, key, token } = await first()
    f.clock.advance(200_000)
    const r = await f.svc.token(exchange(token), client(A), key)
    const old = decodeJwt(token)
    const claims = await f.verify(r.access_token)
    expect(claims).toMatchObject({ sub: A, task_id: t, scope: old.scope, aud: old.aud, cnf: { jkt: key.jkt } })
    expect(claims.exp).toBe(old.exp! + 200)
    expect(claims.jti).not.toBe(old.jti)
    const rec = f.svc.store.getToken(claims.jti as string)!
    expect(rec).toMatchObject({ parentJti: old.jti, rootJti: old.jti, renewals: 1 })
  })

  it('narrows on request and never widens', async () => {
    const { key, token } = await first(dpop(), { scopes: ['read', 'write'], resources: [API] })
    const r = await f.svc.token(exchange(token, { scopes: ['read'] }), client(A), key)
    expect(decodeJwt(r.access_token).scope).toBe('read')
    await refusedClean(() => f.svc.token(exchange(r.access_token, { scopes: ['read', 'write'] }), client(A), key), 'ERR_SCOPE_INVALID')
    await refusedClean(() => f.svc.token(exchange(r.access_token, { resources: [LEDGER] }), client(A), key), 'ERR_TARGET_INVALID')
  })

  it('refuses another client, another key, a bearer request, a second renewal of the same token', async () => {
    const { key, token } = await first()
    await refusedClean(() => f.svc.token(exchange(token), client(B), key), 'ERR_GRANT_INVALID', token)
    await refusedClean(() => f.svc.token(exchange(token), client(A), dpop()), 'ERR_GRANT_INVALID', token)
    await refusedClean(() => f.svc.token(exchange(token), client(A), bearer), 'ERR_GRANT_INVALID', token)
    await f.svc.token(exchange(token), client(A), key)
    await refusedClean(() => f.svc.token(exchange(token), client(A), key), 'ERR_GRANT_INVALID', token)
  })

  it('counts against the task limit and the ceiling limit', async () => {
    const { key, token } = await first()
    let tok = token
    for (let i = 0; i < 2; i++) tok = (await f.svc.token(exchange(tok), client(A), key)).access_token
    await refusedClean(() => f.svc.token(exchange(tok), client(A), key), 'ERR_GRANT_INVALID')
    // ceiling max_renewals 1 below the task's 2
    const t = await f.task({ maxRenewals: 2 })
    f.setBounds({ '/agents': { scopes: ['read', 'write'], resources: [API, LEDGER], max_renewals: 1 } })
    const k = dpop()
    const once = (await f.svc.token(exchange((await f.svc.token(cc(t), client(A), k)).access_token), client(A), k)).access_token
    await refusedClean(() => f.svc.token(exchange(once), client(A), k), 'ERR_GRANT_INVALID')
  })

  it('never past the task end; refused once the task ended or the token expired', async () => {
    const t = await f.task({ ttlSeconds: 400 })
    const key = dpop()
    const tok = (await f.svc.token(cc(t), client(A), key)).access_token
    f.clock.advance(250_000)
    const r = await f.svc.token(exchange(tok), client(A), key)
    expect(r.expires_in).toBe(150)
    await f.svc.endTask(t, 'admin')
    await refusedClean(() => f.svc.token(exchange(r.access_token), client(A), key), 'ERR_TASK_ENDED')
    const { key: k2, token: t2 } = await first()
    f.clock.advance(301_000)
    await refusedClean(() => f.svc.token(exchange(t2), client(A), k2), 'ERR_GRANT_INVALID')
  })

  it('refuses a token with a bad signature, from another issuer key, or forged', async () => {
    const { key, token } = await first()
    const [h, p, s] = token.split('.') as [string, string, string]
    const flipped = `${h}.${p}.${s.slice(0, -2)}${s.endsWith('AA') ? 'BA' : 'AA'}`
    await refusedClean(() => f.svc.token(exchange(flipped), client(A), key), 'ERR_GRANT_INVALID')
    const widened = `${h}.${Buffer.from(JSON.stringify({ ...decodeJwt(token), scope: 'admin' })).toString('base64url')}.${s}`
    await refusedClean(() => f.svc.token(exchange(widened), client(A), key), 'ERR_GRANT_INVALID')
  })
})

describe('delegation', () => {
  async function holder(extra = {}) {
    const t = await f.task({ scopes: ['read', 'write'], resources: [API, LEDGER] })
    const key = dpop()
    const token = (await f.svc.token(cc(t, extra), client(A), key)).access_token
    return { t, key, token }
  }

  async function delegate(token: string, from: string, fromKey: ReturnType<typeof dpop>, to: string, extra = {}) {
    const grant = await f.svc.token(exchange(token, { mayAct: to, ...extra }), client(from), fromKey)
    const toKey = dpop()
    const r = await f.svc.token(exchange(grant.access_token), client(to), toKey)
    return { grant, toKey, token: r.access_token, r }
  }

  it('two steps: a one-time grant naming the sub-agent, then a token bound to the sub-agent key with act', async () => {
    const { t, key, token } = await holder()
    const grant = await f.svc.token(exchange(token, { mayAct: B, scopes: ['read'] }), client(A), key)
    expect(grant).toMatchObject({ issued_token_type: TOKEN_TYPE.jwt, token_type: 'N_A', scope: 'read', expires_in: 60 })
    const g = await f.verify(grant.access_token, DELEGATION_GRANT_TYP)
    expect(g).toMatchObject({ sub: A, aud: ISSUER, may_act: { sub: B }, task_id: t })
    expect(g.cnf).toBeUndefined()
    const bKey = dpop()
    const r = await f.svc.token(exchange(grant.access_token, { subjectTokenType: TOKEN_TYPE.jwt }), client(B), bKey)
    const claims = await f.verify(r.access_token)
    expect(claims).toMatchObject({ sub: A, client_id: B, act: { sub: B }, scope: 'read', cnf: { jkt: bKey.jkt }, task_id: t })
    expect(claims.exp).toBeLessThanOrEqual(decodeJwt(token).exp!)
    const rec = f.svc.store.getToken(claims.jti as string)!
    expect(rec).toMatchObject({ parentJti: g.jti, rootJti: decodeJwt(token).jti, depth: 1, actors: [B] })
    expect(f.svc.store.grantUse(g.jti as string)?.issuedJti).toBe(claims.jti)
  })

  it('durability: a fresh token or grant settles once committed; a renewal and a grant redemption only once on disk', async () => {
    const spy = vi.spyOn(f.svc.store, 'txQueued')
    const { key, token } = await holder()
    const renewed = await f.svc.token(exchange(token), client(A), key)
    const grant = await f.svc.token(exchange(renewed.access_token, { mayAct: B }), client(A), key)
    await f.svc.token(exchange(grant.access_token), client(B), dpop())
    // issue, renew (counts the renewal), grant (a fresh record), redeem (uses the grant)
    expect(spy.mock.calls.map((c) => c[1])).toEqual(['process', 'disk', 'process', 'disk'])
    spy.mockRestore()
  })

  it('nests act for a second hop and refuses beyond max_delegation_depth', async () => {
    const { key, token } = await holder()
    const one = await delegate(token, A, key, B)
    const two = await delegate(one.token, B, one.toKey, 'spiffe://corp.example/agents/d')
    expect(decodeJwt(two.token).act).toEqual({ sub: 'spiffe://corp.example/agents/d', act: { sub: B } })
    expect(decodeJwt(two.token).sub).toBe(A)
    await refusedClean(
      () => f.svc.token(exchange(two.token, { mayAct: 'spiffe://corp.example/agents/e' }), client('spiffe://corp.example/agents/d'), two.toKey),
      'ERR_DELEGATION_INVALID',
    )
  })

  it('a grant is used once, only by may_act.sub', async () => {
    const { key, token } = await holder()
    const grant = (await f.svc.token(exchange(token, { mayAct: B }), client(A), key)).access_token
    await refusedClean(() => f.svc.token(exchange(grant), client(C), dpop()), 'ERR_DELEGATION_INVALID', grant)
    await f.svc.token(exchange(grant), client(B), dpop())
    await refusedClean(() => f.svc.token(exchange(grant), client(B), dpop()), 'ERR_GRANT_INVALID', grant)
  })

  it('refuses delegation outside may_delegate_to, to the chain, by another client or key, and wider scope', async () => {
    const { key, token } = await holder({ scopes: ['read'] })
    await refusedClean(() => f.svc.token(exchange(token, { mayAct: OUTSIDER }), client(A), key), 'ERR_DELEGATION_INVALID')
    await refusedClean(() => f.svc.token(exchange(token, { mayAct: A }), client(A), key), 'ERR_DELEGATION_INVALID')
    await refusedClean(() => f.svc.token(exchange(token, { mayAct: 'not-an-id' }), client(A), key), 'ERR_DELEGATION_INVALID')
    await refusedClean(() => f.svc.token(exchange(token, { mayAct: B }), client(B), key), 'ERR_GRANT_INVALID')
    await refusedClean(() => f.svc.token(exchange(token, { mayAct: B }), client(A), dpop()), 'ERR_GRANT_INVALID')
    await refusedClean(() => f.svc.token(exchange(token, { mayAct: B, scopes: ['write'] }), client(A), key), 'ERR_SCOPE_INVALID')
    await refusedClean(
      () => f.svc.token(exchange(token, { mayAct: B, requestedTokenType: TOKEN_TYPE.accessToken }), client(A), key),
      'ERR_TOKEN_REQUEST_INVALID',
    )
  })

  it('the sub-agent ceiling narrows too; step 2 may narrow, never widen', async () => {
    const { key, token } = await holder()
    const grant = (await f.svc.token(exchange(token, { mayAct: C }), client(A), key)).access_token
    // C's ceiling allows only read
    await refusedClean(() => f.svc.token(exchange(grant, { scopes: ['write'] }), client(C), dpop()), 'ERR_SCOPE_INVALID')
    const r = await f.svc.token(exchange(grant), client(C), dpop())
    expect(decodeJwt(r.access_token).scope).toBe('read')
    const g2 = (await f.svc.token(exchange(token, { mayAct: B, resources: [API] }), client(A), key)).access_token
    await refusedClean(() => f.svc.token(exchange(g2, { resources: [LEDGER] }), client(B), dpop()), 'ERR_TARGET_INVALID')
  })

  it('a delegated token never outlives the token it came from, even when renewed', async () => {
    const { key, token } = await holder()
    const parentExp = decodeJwt(token).exp!
    f.clock.advance(200_000)
    const d = await delegate(token, A, key, B)
    expect(decodeJwt(d.token).exp).toBe(parentExp)
    f.clock.advance(50_000)
    const renewed = await f.svc.token(exchange(d.token), client(B), d.toKey)
    expect(decodeJwt(renewed.access_token).exp).toBe(parentExp)
    expect(decodeJwt(renewed.access_token).act).toEqual({ sub: B })
  })
})

/**
 * A fixture whose signatures wait while `hold(n)` is in force: the n calls
 * started get past every check and into signing before any is stored, so
 * only the re-checks inside the store transaction can decide between them.
 */
async function gatedFixture(): Promise<{
  g: Fixture
  hold<T>(calls: (() => Promise<T>)[], meanwhile?: () => Promise<unknown>): Promise<PromiseSettledResult<T>[]>
}> {
  const mem = new MemoryKeyManager()
  let gate: Promise<void> | undefined
  let arrived: (() => void) | undefined
  const wrap = (k: ManagedKey): ManagedKey =>
    Object.assign(Object.create(k) as ManagedKey, {
      sign: async (d: Uint8Array, alg: SignatureAlgorithm) => {
        if (gate) {
          const g = gate
          arrived?.()
          await g
        }
        return k.sign(d, alg)
      },
    })
  const km: KeyManager = {
    generateKey: async (id, type) => wrap(await mem.generateKey(id, type)),
    getKey: async (id) => wrap(await mem.getKey(id)),
    listKeys: () => mem.listKeys(),
    deleteKey: (id) => mem.deleteKey(id),
  }
  const g = await fixture({ km })
  return {
    g,
    async hold(calls, meanwhile) {
      let release!: () => void
      gate = new Promise((r) => (release = r))
      let count = 0
      const all = new Promise<void>((r) => (arrived = () => ++count === calls.length && r()))
      const ps = calls.map((c) => c())
      for (const p of ps) p.catch(() => undefined)
      await all
      gate = undefined
      await meanwhile?.()
      release()
      return Promise.allSettled(ps)
    },
  }
}

describe('concurrent requests (the re-checks inside the store transaction)', () => {
  let gf: Awaited<ReturnType<typeof gatedFixture>>
  beforeEach(async () => {
    gf = await gatedFixture()
  })
  afterEach(async () => {
    await gf.g.cleanup()
  })

  it('two renewals of one token at once: exactly one succeeds', async () => {
    const { g } = gf
    const t = await g.task()
    const key = dpop()
    const tok = (await g.svc.token(cc(t), client(A), key)).access_token
    const before = g.svc.store.countTokens()
    const results = await gf.hold([() => g.svc.token(exchange(tok), client(A), key), () => g.svc.token(exchange(tok), client(A), key)])
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected'])
    expect((results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_GRANT_INVALID' })
    expect(g.svc.store.countTokens()).toBe(before + 1)
  })

  it('two redemptions of one grant at once: exactly one succeeds', async () => {
    const { g } = gf
    const t = await g.task()
    const key = dpop()
    const tok = (await g.svc.token(cc(t), client(A), key)).access_token
    const grant = (await g.svc.token(exchange(tok, { mayAct: B }), client(A), key)).access_token
    const before = g.svc.store.countTokens()
    const results = await gf.hold([() => g.svc.token(exchange(grant), client(B), dpop()), () => g.svc.token(exchange(grant), client(B), dpop())])
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected'])
    expect(g.svc.store.countTokens()).toBe(before + 1)
  })

  it('a revocation or a task end while a token is minted refuses it', async () => {
    const { g } = gf
    const t = await g.task()
    const key = dpop()
    const tok = (await g.svc.token(cc(t), client(A), key)).access_token
    const before = g.svc.store.countTokens()
    const [renewal] = await gf.hold([() => g.svc.token(exchange(tok), client(A), key)], () => g.svc.revoke(tok, client(A)))
    expect(renewal).toMatchObject({ status: 'rejected', reason: { code: 'ERR_GRANT_INVALID' } })
    const t2 = await g.task()
    const [issued] = await gf.hold([() => g.svc.token(cc(t2), client(A), key)], () => g.svc.endTask(t2, 'admin'))
    expect(issued).toMatchObject({ status: 'rejected', reason: { code: 'ERR_TASK_ENDED' } })
    expect(g.svc.store.countTokens()).toBe(before)
  })
})

describe('revocation and introspection', () => {
  it('introspection: active with claims for allowed callers, inactive otherwise', async () => {
    const t = await f.task()
    const tok = (await f.svc.token(cc(t), client(A), dpop())).access_token
    const r = await f.svc.introspect(tok, client(RS))
    expect(r).toMatchObject({ active: true, sub: A, task_id: t, token_type: 'DPoP', client_id: A })
    expect(await f.svc.introspect(tok, client(A))).toEqual({ active: false })
    expect(await f.svc.introspect('garbage', client(RS))).toEqual({ active: false })
    expect(f.log.lines.some((l) => l.msg === 'Introspection refused' && l.fields.client_id === A)).toBe(true)
  })

  it('introspection: a grant, an expired token, an ended task are inactive', async () => {
    const t = await f.task()
    const key = dpop()
    const tok = (await f.svc.token(cc(t), client(A), key)).access_token
    const grant = (await f.svc.token(exchange(tok, { mayAct: B }), client(A), key)).access_token
    expect(await f.svc.introspect(grant, client(RS))).toEqual({ active: false })
    await f.svc.endTask(t, 'admin')
    expect(await f.svc.introspect(tok, client(RS))).toEqual({ active: false })
    const t2 = await f.task()
    const tok2 = (await f.svc.token(cc(t2), client(A), key)).access_token
    f.clock.advance(301_000)
    expect(await f.svc.introspect(tok2, client(RS))).toEqual({ active: false })
  })

  it('revoking a token revokes everything derived from it; renewal and delegation from them are refused', async () => {
    const t = await f.task()
    const key = dpop()
    const root = (await f.svc.token(cc(t), client(A), key)).access_token
    const renewed = (await f.svc.token(exchange(root), client(A), key)).access_token
    const grant = (await f.svc.token(exchange(renewed, { mayAct: B }), client(A), key)).access_token
    const bKey = dpop()
    const delegated = (await f.svc.token(exchange(grant), client(B), bKey)).access_token
    const unusedGrant = (await f.svc.token(exchange(renewed, { mayAct: C }), client(A), key)).access_token
    expect((await f.svc.introspect(delegated, client(RS))).active).toBe(true)

    await refused(() => f.svc.revoke(root, client(B)), 'ERR_CLIENT_UNAUTHORIZED')
    expect((await f.svc.introspect(root, client(RS))).active).toBe(true)

    await f.svc.revoke(root, client(A))
    for (const tok of [root, renewed, delegated]) expect(await f.svc.introspect(tok, client(RS))).toEqual({ active: false })
    await refusedClean(() => f.svc.token(exchange(delegated), client(B), bKey), 'ERR_GRANT_INVALID')
    await refusedClean(() => f.svc.token(exchange(renewed, { mayAct: C }), client(A), key), 'ERR_GRANT_INVALID')
    await refusedClean(() => f.svc.token(exchange(unusedGrant), client(C), dpop()), 'ERR_GRANT_INVALID')
  })

  it('revoking a middle token leaves its ancestors alone; an admin may revoke any token; unknown tokens are ignored', async () => {
    const t = await f.task()
    const key = dpop()
    const root = (await f.svc.token(cc(t), client(A), key)).access_token
    const d = (await f.svc.token(exchange((await f.svc.token(exchange(root, { mayAct: B }), client(A), key)).access_token), client(B), dpop())).access_token
    await f.svc.revoke(d, client(ADMIN))
    expect((await f.svc.introspect(d, client(RS))).active).toBe(false)
    expect((await f.svc.introspect(root, client(RS))).active).toBe(true)
    await expect(f.svc.revoke('not-a-token', client(A))).resolves.toBeUndefined()
  })
})

describe('tasks', () => {
  it('created by an allowed orchestrator within the ceiling; listed, shown, ended by its creator', async () => {
    const task = await f.svc.createTask(
      { agent: 'spiffe://corp.example/agents/', scopes: ['read'], resources: [API], ttlSeconds: 600, maxRenewals: 3, orchestrationId: 'o-1' },
      client(ORCH),
    )
    expect(task).toMatchObject({ agent: 'spiffe://corp.example/agents/', createdBy: ORCH, orchestrationId: 'o-1', expiresAt: task.createdAt + 600 })
    expect(task.taskId).toMatch(/^task-/)
    expect(await f.svc.getTask(task.taskId)).toEqual(task)
    expect((await f.svc.listTasks({ orchestrationId: 'o-1' })).map((x) => x.taskId)).toEqual([task.taskId])
    await refused(() => f.svc.endTask(task.taskId, client('spiffe://corp.example/orch/o2')), 'ERR_CLIENT_UNAUTHORIZED')
    const ended = await f.svc.endTask(task.taskId, client(ORCH))
    expect(ended.endedAt).toBeDefined()
    expect(await f.svc.listTasks({ orchestrationId: 'o-1' })).toEqual([])
    expect((await f.svc.listTasks({ orchestrationId: 'o-1', includeEnded: true })).length).toBe(1)
    await refused(() => f.svc.getTask('nope'), 'ERR_TASK_NOT_FOUND')
  })

  it.each([
    ['a non-orchestrator', client(A), {}, 'ERR_CLIENT_UNAUTHORIZED'],
    ['scopes above the ceiling', 'admin' as const, { scopes: ['root'] }, 'ERR_TASK_INVALID'],
    ['resources above the ceiling', 'admin' as const, { resources: ['https://evil.example'] }, 'ERR_TASK_INVALID'],
    ['renewals above the ceiling', 'admin' as const, { maxRenewals: 4 }, 'ERR_TASK_INVALID'],
    ['an agent outside any ceiling', 'admin' as const, { agent: OUTSIDER }, 'ERR_TASK_INVALID'],
    ['a bad agent', 'admin' as const, { agent: 'agents/a' }, 'ERR_TASK_INVALID'],
    ['a bad task id', 'admin' as const, { taskId: 'a b' }, 'ERR_TASK_INVALID'],
    ['a zero TTL', 'admin' as const, { ttlSeconds: 0 }, 'ERR_TASK_INVALID'],
    ['negative renewals', 'admin' as const, { maxRenewals: -1 }, 'ERR_TASK_INVALID'],
    ['a bad resource', 'admin' as const, { resources: ['nope'] }, 'ERR_TASK_INVALID'],
  ])('refuses %s and stores nothing', async (_t, by, extra, code) => {
    await refused(() => f.svc.createTask({ agent: A, scopes: ['read'], resources: [API], ttlSeconds: 60, maxRenewals: 1, ...extra }, by), code)
    expect(await f.svc.listTasks({ includeEnded: true })).toEqual([])
  })

  it('refuses a duplicate task id', async () => {
    await f.task({ taskId: 'dup' })
    await refused(() => f.task({ taskId: 'dup' }), 'ERR_ALREADY_EXISTS')
  })
})

describe('logging', () => {
  it('never logs a token', async () => {
    const t = await f.task()
    const key = dpop()
    const tok = (await f.svc.token(cc(t), client(A), key)).access_token
    const grant = (await f.svc.token(exchange(tok, { mayAct: B }), client(A), key)).access_token
    await refused(() => f.svc.token(exchange(tok, { scopes: ['admin'] }), client(A), key), 'ERR_SCOPE_INVALID')
    const all = JSON.stringify(f.log.lines)
    for (const s of [tok, grant]) expect(all).not.toContain(s.split('.')[2])
    expect(f.log.lines.some((l) => l.msg === 'Access token issued' && l.fields.jti === decodeJwt(tok).jti)).toBe(true)
  })
})
