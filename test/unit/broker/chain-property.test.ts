import fc from 'fast-check'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { A, API, B, C, cc, client, dpop, exchange, fixture, LEDGER, OTHER, type Fixture } from './fixture.js'

/**
 * No sequence of renewals and delegations widens anything: every token issued
 * from another has scope, resources and audience within its source's, never
 * expires later than its source may (a renewal: its lineage's cap; a
 * delegation: the delegating token's exp), stays inside the task, and its
 * depth never exceeds max_delegation_depth. Refusals are typed.
 */

interface Held {
  token: string
  holder: string
  key: ReturnType<typeof dpop>
}

const AGENTS = [A, B, C, 'spiffe://corp.example/agents/d', 'spiffe://corp.example/agents/e']
const SCOPES = ['read', 'write', 'admin']
const TARGETS = [API, LEDGER, OTHER]

const scopesArb = fc.option(fc.oneof({ weight: 4, arbitrary: fc.subarray(['read', 'write']) }, { weight: 1, arbitrary: fc.subarray(SCOPES) }), {
  nil: undefined,
})
const targetsArb = fc.oneof({ weight: 4, arbitrary: fc.subarray([API, LEDGER]) }, { weight: 1, arbitrary: fc.subarray(TARGETS) })

const op = fc.oneof(
  fc.record({ kind: fc.constant('renew' as const), i: fc.nat(), scopes: scopesArb, targets: targetsArb }),
  fc.record({ kind: fc.constant('delegate' as const), i: fc.nat(), to: fc.constantFrom(...AGENTS), scopes: scopesArb, targets: targetsArb }),
  fc.record({ kind: fc.constant('wait' as const), seconds: fc.integer({ min: 1, max: 400 }) }),
)

let f: Fixture
beforeAll(async () => {
  f = await fixture()
})
afterAll(async () => {
  await f.cleanup()
})

const subset = (a: readonly string[], b: readonly string[]) => a.every((x) => b.includes(x))
const auds = (c: { aud?: string | string[] }) => (c.aud === undefined ? [] : Array.isArray(c.aud) ? c.aud : [c.aud])

describe('delegation chains (property)', () => {
  it('renewals and delegations never widen scope, resources, audience or lifetime, nor exceed the depth', async () => {
    let run = 0
    const seen = { renew: 0, delegate: 0, depth2: 0, refused: 0 }
    await fc.assert(
      fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 12 }), async (ops) => {
        const taskId = await f.task({ taskId: `prop-${run++}`, scopes: ['read', 'write'], resources: [API, LEDGER], ttlSeconds: 900, maxRenewals: 3 })
        const task = await f.svc.getTask(taskId)
        const key = dpop()
        const first = await f.svc.token(cc(taskId), client(A), key)
        const held: Held[] = [{ token: first.access_token, holder: A, key }]
        for (const o of ops) {
          if (o.kind === 'wait') {
            f.clock.advance(o.seconds * 1000)
            continue
          }
          const src = held[o.i % held.length]!
          const before = decodeJwt(src.token)
          const srcRec = f.svc.store.getToken(before.jti as string)!
          const narrowing = { ...(o.scopes !== undefined ? { scopes: o.scopes } : {}), resources: o.targets }
          try {
            let issued: string
            let holder = src.holder
            let k = src.key
            if (o.kind === 'renew') {
              issued = (await f.svc.token(exchange(src.token, narrowing), client(src.holder), src.key)).access_token
              const c = decodeJwt(issued)
              expect(c.exp).toBeLessThanOrEqual(srcRec.maxExp)
              expect(c.act).toEqual(before.act)
            } else {
              const grant = (await f.svc.token(exchange(src.token, { ...narrowing, mayAct: o.to }), client(src.holder), src.key)).access_token
              expect(decodeJwt(grant).exp).toBeLessThanOrEqual(before.exp!)
              k = dpop()
              holder = o.to
              issued = (await f.svc.token(exchange(grant), client(o.to), k)).access_token
              const c = decodeJwt(issued)
              expect(c.exp).toBeLessThanOrEqual(before.exp!)
              expect((c.act as { sub: string }).sub).toBe(o.to)
            }
            const c = decodeJwt(issued)
            expect(c.sub).toBe(A)
            expect(c.task_id).toBe(taskId)
            expect(subset((c.scope as string).split(' '), (before.scope as string).split(' '))).toBe(true)
            expect(subset(auds(c as { aud?: string | string[] }), auds(before as { aud?: string | string[] }))).toBe(true)
            expect(c.exp).toBeLessThanOrEqual(task.expiresAt)
            const rec = f.svc.store.getToken(c.jti as string)!
            expect(rec.depth).toBeLessThanOrEqual(2)
            expect(subset(rec.resources, srcRec.resources)).toBe(true)
            held.push({ token: issued, holder, key: k })
            seen[o.kind]++
            if (rec.depth === 2) seen.depth2++
          } catch (err) {
            if (!(err instanceof IdentityError)) throw err
            seen.refused++
            expect([
              'ERR_GRANT_INVALID',
              'ERR_SCOPE_INVALID',
              'ERR_TARGET_INVALID',
              'ERR_DELEGATION_INVALID',
              'ERR_TASK_ENDED',
              'ERR_TOKEN_REQUEST_INVALID',
            ]).toContain(err.code)
          }
        }
      }),
      { numRuns: 200 },
    )
    // the property held over real chains, not only over refusals
    expect(seen.renew).toBeGreaterThan(5)
    expect(seen.delegate).toBeGreaterThan(5)
    expect(seen.depth2).toBeGreaterThan(0)
    expect(seen.refused).toBeGreaterThan(0)
  }, 120_000)
})
