/**
 * The console's adapter over a real broker service (cli/console-composition.ts):
 * live instances and their tokens from the store (never a token value, the
 * delegation chain kept), revocation with the operator in the reason and its
 * effect on the list, the approval queue passed through, and the token
 * endpoint's decisions counted.
 */
import { join } from 'node:path'
import type { AuditEventInput } from '../../../src/audit/index.js'
import { decodeJwt } from 'jose'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { brokerConsoleBackend, observeTokenEndpoint, RateCounter } from '../../../src/cli/console-composition.js'
import { A, API, B, cc, client, dpop, exchange, fixture, RS, type Fixture } from '../broker/fixture.js'
import { demoIntent, MemoryApprovalQueue } from './demo-backend.js'

let f: Fixture
beforeEach(async () => {
  f = await fixture()
})
afterEach(async () => {
  await f.cleanup()
})

describe('brokerConsoleBackend', () => {
  it('a console revocation’s audit event names the operator and the sign-in method; an admin-socket one says admin', async () => {
    const events: AuditEventInput[] = []
    const g = await fixture({
      audit: {
        append: async (e) => {
          events.push(e)
          return { seq: events.length } as never
        },
      },
    })
    const backend = brokerConsoleBackend({ service: g.svc, storePath: join(g.dir, 'broker.db'), rates: new RateCounter(), now: () => g.clock.now() })
    try {
      await backend.revoke({ level: 'instance', value: B, reason: 'host compromised' }, { id: 'alice', method: 'webauthn' })
      await g.svc.revokeAt({ kind: 'instance', value: A, reason: 'cli' }, 'admin')
      const revoked = events.filter((e) => e.type === 'token.revoked')
      expect(revoked.map((e) => [e.subject, e.attributes])).toEqual([
        [B, { level: 'instance', seq: 1, tokens: 0, by: 'operator', operator: 'alice', method: 'console-webauthn' }],
        [A, { level: 'instance', seq: 2, tokens: 0, by: 'admin' }],
      ])
    } finally {
      backend.close()
      await g.cleanup()
    }
  })

  it('lists live instances with their tokens by jti (never a token), keeps the delegation chain, revokes with the operator in the reason', async () => {
    const t = await f.task({ scopes: ['read'], resources: [API] })
    const aKey = dpop()
    const a = (await f.svc.token(cc(t), client(A), aKey)).access_token
    const g = (await f.svc.token(exchange(a, { mayAct: B }), client(A), aKey)).access_token
    const b = (await f.svc.token(exchange(g), client(B), dpop())).access_token
    const approvals = new MemoryApprovalQueue()
    approvals.add(demoIntent('i1'))
    const backend = brokerConsoleBackend({ service: f.svc, storePath: join(f.dir, 'broker.db'), rates: new RateCounter(), approvals, now: () => f.clock.now() })
    try {
      expect(backend.approvals).toBe(approvals)
      const list = await backend.instances()
      expect(list.map((i) => i.spiffeId)).toEqual([A, B])
      const bTok = list.find((i) => i.spiffeId === B)!.tokens
      expect(bTok).toHaveLength(1)
      expect(bTok[0]).toMatchObject({
        jti: decodeJwt(b).jti,
        sub: A,
        clientId: B,
        actors: [B],
        binding: 'dpop',
        taskId: t,
        scopes: ['read'],
        parentJti: decodeJwt(g).jti,
      })
      expect(
        list
          .find((i) => i.spiffeId === A)!
          .tokens.map((x) => x.kind)
          .sort(),
      ).toEqual(['access', 'grant'])
      const text = JSON.stringify(list)
      for (const tok of [a, g, b]) expect(text).not.toContain(tok)

      const r = await backend.revoke({ level: 'instance', value: B, reason: 'host compromised' }, { id: 'alice', method: 'webauthn' })
      expect(r.created).toBe(true)
      expect((await backend.revocations()).map((x) => [x.kind, x.value, x.reason])).toEqual([['instance', B, 'console alice (webauthn): host compromised']])
      expect((await f.svc.introspect(b, client(RS))).active).toBe(false)
      expect((await f.svc.introspect(a, client(RS))).active).toBe(true)
      expect((await backend.instances()).map((i) => i.spiffeId)).toEqual([A])
      await expect(backend.revoke({ level: 'task', value: 'no-such-task', reason: 'x' }, { id: 'alice', method: 'totp' })).rejects.toMatchObject({
        code: 'ERR_REVOCATION_INVALID',
      })
    } finally {
      backend.close()
    }
  })

  it('observeTokenEndpoint counts issued and refused token requests and passes everything else through', async () => {
    const rates = new RateCounter({ now: () => f.clock.now() })
    const svc = observeTokenEndpoint(f.svc, rates)
    const t = await f.task()
    await svc.token(cc(t), client(A), dpop())
    await svc.token(cc(t), client(A), dpop())
    await expect(svc.token(cc('no-such-task'), client(A), dpop())).rejects.toMatchObject({ code: 'ERR_TASK_NOT_FOUND' })
    expect(svc.issuer).toBe(f.svc.issuer)
    expect((await svc.jwks()).keys.length).toBeGreaterThan(0)
    const buckets = rates.buckets()
    expect(buckets).toHaveLength(60)
    expect(buckets.at(-1)).toMatchObject({ issued: 2, refused: 1 })
    f.clock.advance(61_000)
    expect(rates.buckets().at(-1)).toMatchObject({ issued: 0, refused: 0 })
    expect(rates.buckets().at(-2)).toMatchObject({ issued: 2, refused: 1 })
  })
})
