import { decodeJwt } from 'jose'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { StoredRevocation } from '../../../src/broker/store/broker-store.js'
import { A, ADMIN, API, B, C, cc, client, dpop, exchange, fixture, refused, RS, type Fixture } from './fixture.js'

let f: Fixture
beforeEach(async () => {
  f = await fixture()
})
afterEach(async () => {
  await f.cleanup()
})

const active = async (token: string) => (await f.svc.introspect(token, client(RS))).active

/** A direct token for A, a grant from it to B, B's delegated token, and a second hop from B to C. */
async function chainOfThree() {
  const t = await f.task({ scopes: ['read', 'write'], resources: [API] })
  const aKey = dpop()
  const a = (await f.svc.token(cc(t), client(A), aKey)).access_token
  const g1 = (await f.svc.token(exchange(a, { mayAct: B }), client(A), aKey)).access_token
  const bKey = dpop()
  const b = (await f.svc.token(exchange(g1), client(B), bKey)).access_token
  const g2 = (await f.svc.token(exchange(b, { mayAct: C }), client(B), bKey)).access_token
  const c = (await f.svc.token(exchange(g2), client(C), dpop())).access_token
  return { t, a, aKey, b, bKey, c }
}

describe('revocation at five levels', () => {
  it('token: the token and every token derived from it, nothing else; renewal and delegation from it refused', async () => {
    const { a, aKey, b, bKey, c } = await chainOfThree()
    const t2 = await f.task()
    const other = (await f.svc.token(cc(t2), client(A), dpop())).access_token
    const r = await f.svc.revokeAt({ kind: 'token', value: decodeJwt(b).jti! }, 'admin')
    expect(r.created).toBe(true)
    expect(r.entry.jtis).toEqual(expect.arrayContaining([decodeJwt(b).jti, decodeJwt(c).jti]))
    expect(r.entry.jtis).not.toContain(decodeJwt(a).jti)
    expect(await active(b)).toBe(false)
    expect(await active(c)).toBe(false)
    expect(await active(a)).toBe(true)
    expect(await active(other)).toBe(true)
    await refused(() => f.svc.token(exchange(b), client(B), bKey), 'ERR_GRANT_INVALID')
    await refused(() => f.svc.token(exchange(b, { mayAct: C }), client(B), bKey), 'ERR_GRANT_INVALID')
    // A's own token still renews
    expect((await f.svc.token(exchange(a), client(A), aKey)).access_token).toBeTypeOf('string')
  })

  it('chain by jti: the whole tree the token belongs to, from its root', async () => {
    const { a, b, c } = await chainOfThree()
    const other = (await f.svc.token(cc(await f.task()), client(A), dpop())).access_token
    await f.svc.revokeAt({ kind: 'chain', value: decodeJwt(b).jti! }, 'admin')
    for (const tok of [a, b, c]) expect(await active(tok)).toBe(false)
    expect(await active(other)).toBe(true)
  })

  it('chain by actor: every token the actor acted on, at any depth; the delegator keeps its own token', async () => {
    const { a, b, c } = await chainOfThree()
    const tb = await f.task({ agent: B })
    const bOwn = (await f.svc.token(cc(tb), client(B), dpop())).access_token
    await f.svc.revokeAt({ kind: 'chain', value: B }, 'admin')
    expect(await active(b)).toBe(false)
    expect(await active(c)).toBe(false)
    expect(await active(a)).toBe(true)
    // B's own token has no act chain: the chain revocation does not cover it
    expect(await active(bOwn)).toBe(true)
  })

  it('instance: every token it holds, was issued for, or acted on; new tokens for it refused; other agents untouched', async () => {
    const { a, b, c } = await chainOfThree()
    const t = await f.task({ agent: C, scopes: ['read'], resources: [API] })
    const cOwn = (await f.svc.token(cc(t), client(C), dpop())).access_token
    await f.svc.revokeAt({ kind: 'instance', value: B }, 'admin')
    expect(await active(b)).toBe(false)
    expect(await active(c)).toBe(false) // B is in its act chain
    expect(await active(a)).toBe(true)
    expect(await active(cOwn)).toBe(true)
    const tb = await f.task({ agent: B })
    await refused(() => f.svc.token(cc(tb), client(B), dpop()), 'ERR_REVOKED')
  })

  it('task: every token of the task whatever the agent, and the task ends', async () => {
    const { t, a, b, c } = await chainOfThree()
    const t2 = await f.task()
    const other = (await f.svc.token(cc(t2), client(A), dpop())).access_token
    await f.svc.revokeAt({ kind: 'task', value: t }, 'admin')
    for (const tok of [a, b, c]) expect(await active(tok)).toBe(false)
    expect(await active(other)).toBe(true)
    expect((await f.svc.getTask(t)).endedAt).toBeDefined()
    await refused(() => f.svc.token(cc(t), client(A), dpop()), 'ERR_TASK_ENDED')
  })

  it('prefix: a namespace quarantined until its end time, path-segment aware', async () => {
    const t = await f.task()
    const a = (await f.svc.token(cc(t), client(A), dpop())).access_token
    const now = Math.floor(f.clock.now() / 1000)
    await f.svc.revokeAt({ kind: 'prefix', value: 'spiffe://corp.example/agents/a', notAfter: now + 60 }, 'admin')
    expect(await active(a)).toBe(false)
    await refused(() => f.svc.token(cc(t), client(A), dpop()), 'ERR_REVOKED')
    // spiffe://corp.example/agents/b is not under .../agents/a, nor would .../agents/ab be
    const tb = await f.task({ agent: B })
    expect((await f.svc.token(cc(tb), client(B), dpop())).access_token).toBeTypeOf('string')
    f.clock.advance(61_000)
    expect(await active(a)).toBe(true)
    expect((await f.svc.token(cc(t), client(A), dpop())).access_token).toBeTypeOf('string')
  })

  it('is durable: a reopened broker still refuses what was revoked', async () => {
    const t = await f.task()
    const a = (await f.svc.token(cc(t), client(A), dpop())).access_token
    await f.svc.revokeAt({ kind: 'instance', value: A }, 'admin')
    const reopened = await f.reopen()
    expect((await reopened.introspect(a, client(RS))).active).toBe(false)
    expect((await reopened.listRevocations()).map((e) => [e.kind, e.value])).toEqual([['instance', A]])
  })
})

describe('revocation requests', () => {
  it('the same kind and value again returns the first entry; listeners hear each new entry once, in order', async () => {
    const heard: StoredRevocation[] = []
    f.svc.onRevocation((e) => heard.push(e))
    const one = await f.svc.revokeAt({ kind: 'instance', value: A, reason: 'anomaly' }, 'admin')
    const again = await f.svc.revokeAt({ kind: 'instance', value: A }, 'admin')
    const two = await f.svc.revokeAt({ kind: 'instance', value: B }, 'admin')
    expect(again).toMatchObject({ created: false, entry: { seq: one.entry.seq } })
    expect(two.entry.seq).toBeGreaterThan(one.entry.seq)
    expect(heard.map((e) => e.seq)).toEqual([one.entry.seq, two.entry.seq])
    expect(one.entry).toMatchObject({ reason: 'anomaly', createdBy: 'admin' })
    expect((await f.svc.listRevocations(one.entry.seq)).map((e) => e.value)).toEqual([B])
  })

  it('bad input is refused with ERR_REVOCATION_INVALID and writes nothing', async () => {
    const now = Math.floor(f.clock.now() / 1000)
    const cases = [
      { kind: 'everything', value: A },
      { kind: 'instance', value: '' },
      { kind: 'instance', value: 'not-a-spiffe-id' },
      { kind: 'prefix', value: 'spiffe://corp.example/agents', notAfter: now - 1 },
      { kind: 'instance', value: A, notAfter: now + 60 },
      { kind: 'token', value: 'no-such-jti' },
      { kind: 'chain', value: 'no-such-jti' },
      { kind: 'task', value: 'no-such-task' },
      { kind: 'instance', value: A, reason: 'x'.repeat(513) },
    ]
    for (const c of cases) await refused(() => f.svc.revokeAt(c as never, 'admin'), 'ERR_REVOCATION_INVALID')
    expect(await f.svc.listRevocations(0, true)).toEqual([])
  })

  it('a client that is not a revocation admin may not revoke; a revocation admin may', async () => {
    await refused(() => f.svc.revokeAt({ kind: 'instance', value: B }, client(A)), 'ERR_CLIENT_UNAUTHORIZED')
    expect(await f.svc.listRevocations()).toEqual([])
    expect((await f.svc.revokeAt({ kind: 'instance', value: B }, client(ADMIN))).entry.createdBy).toBe(ADMIN)
  })

  it('RFC 7009 revocation by the client is a token revocation in the feed', async () => {
    const t = await f.task()
    const a = (await f.svc.token(cc(t), client(A), dpop())).access_token
    await f.svc.revoke(a, client(A))
    expect((await f.svc.listRevocations()).map((e) => [e.kind, e.value, e.createdBy])).toEqual([['token', decodeJwt(a).jti, A]])
  })
})
