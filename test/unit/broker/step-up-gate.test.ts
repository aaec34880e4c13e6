/**
 * The broker's token endpoint under a step-up (src/broker/step-ups.ts): every
 * plain grant for a stepped-up agent is refused with ERR_STEP_UP_REQUIRED
 * (`interaction_required`, telling it to go through /bc-authorize), a token an
 * intent was approved for is still issued, and once the step-up is satisfied
 * tokens come again. Without the check these tests fail.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { STEP_UP_DESCRIPTION } from '../../../src/broker/service.js'
import { StepUps } from '../../../src/broker/step-ups.js'
import { codeForOAuthError } from '../../../src/broker-client/errors.js'
import { oauthWireError } from '../../../src/errors/oauth.js'
import { GRANT_TYPE, TOKEN_TYPE } from '../../../src/tokens/claims.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { A, API, B, cc, client, dpop, exchange, fixture, refused, type Fixture } from './fixture.js'

let f: Fixture
let stepUps: StepUps
beforeEach(async () => {
  stepUps = new StepUps({ log: captureLogger() })
  f = await fixture({ stepUps })
})
afterEach(async () => {
  await f.cleanup()
})

const SIGNAL = { issuer: 'https://idp.example', jti: 'jti-9', eventType: 'credential-change' }
const stepUp = (value = A, target: 'instance' | 'prefix' = 'instance') =>
  stepUps.add({ target, value, clearOnApproval: true, signal: SIGNAL, reason: 'signal credential-change jti-9 from https://idp.example (rule 0)' })

/** Refused with ERR_STEP_UP_REQUIRED and the fixed description, nothing stored, the step-up logged (never told to the agent). */
async function steppedUp(fn: () => Promise<unknown>): Promise<void> {
  const before = f.svc.store.countTokens()
  const lines = f.log.lines.length
  const err = await refused(fn, 'ERR_STEP_UP_REQUIRED')
  expect(err.message).toBe(STEP_UP_DESCRIPTION)
  expect(err.message).not.toContain('jti-9')
  expect(f.svc.store.countTokens()).toBe(before)
  expect(f.log.lines.slice(lines)).toContainEqual(
    expect.objectContaining({
      level: 'warn',
      fields: expect.objectContaining({ error_code: 'ERR_STEP_UP_REQUIRED', reason: expect.stringContaining('jti-9') }),
    }),
  )
}

describe('step-up at the token endpoint', () => {
  it('refuses every plain grant of a stepped-up agent: client credentials, JWT-SVID exchange, renewal, delegation', async () => {
    const t = await f.task()
    const key = dpop()
    const held = (await f.svc.token(cc(t), client(A), key)).access_token
    const s = stepUp()
    await steppedUp(() => f.svc.token(cc(t), client(A), dpop()))
    await steppedUp(async () => f.svc.token(exchange(await f.jwtSvid(A), { subjectTokenType: TOKEN_TYPE.jwtSvid, taskId: t }), client(A), dpop()))
    await steppedUp(() => f.svc.token(exchange(held), client(A), key))
    await steppedUp(() => f.svc.token(exchange(held, { mayAct: B }), client(A), key))
    // another agent is not held
    const tb = await f.task({ agent: B })
    expect((await f.svc.token(cc(tb), client(B), dpop())).access_token).toBeTruthy()
    // satisfied (a human approved an intent that named it): tokens again, and the token held before renews
    stepUps.satisfy(A, [s.id], { intentId: 'int-1', approver: 'cli:0' })
    expect((await f.svc.token(cc(t), client(A), dpop())).access_token).toBeTruthy()
    expect((await f.svc.token(exchange(held), client(A), key)).access_token).toBeTruthy()
  })

  it("covers the subject and the actors of the token to be issued: a sub-agent redeeming a stepped-up agent's grant is refused", async () => {
    const t = await f.task()
    const key = dpop()
    const held = (await f.svc.token(cc(t), client(A), key)).access_token
    const grant = (await f.svc.token(exchange(held, { mayAct: B }), client(A), key)).access_token
    stepUp()
    await steppedUp(() => f.svc.token(exchange(grant, { subjectTokenType: TOKEN_TYPE.jwt }), client(B), dpop()))
  })

  it('a prefix step-up holds every agent under it; a token for an approved intent is issued whatever stands', async () => {
    const t = await f.task()
    stepUp('spiffe://corp.example/agents', 'prefix')
    await steppedUp(() => f.svc.token(cc(t), client(A), dpop()))
    await steppedUp(async () => f.svc.token(cc(await f.task({ agent: B })), client(B), dpop()))
    const r = await f.svc.issueActionToken(
      {
        sub: A,
        taskId: t,
        audience: API,
        scopes: ['write'],
        detail: { type: 'warrant_intent', actions: ['write'], locations: [`${API}/x`], params_digest: 'd', intent_id: 'int-1' },
        ttlSeconds: 60,
        grantType: 'urn:openid:params:grant-type:ciba',
        claim: () => undefined,
        durability: 'process',
      },
      client(A),
      dpop(),
    )
    expect(r.access_token).toBeTruthy()
  })

  it('refuses a Txn-Token to a stepped-up agent too (it is issued no token but for an approved intent)', async () => {
    await f.cleanup()
    f = await fixture({ stepUps, trustDomain: 'spiffe://corp.example' })
    const t = await f.task()
    const key = dpop()
    const held = (await f.svc.token(cc(t), client(A), key)).access_token
    const txn = (subjectToken: string) =>
      f.svc.token(
        {
          grantType: GRANT_TYPE.tokenExchange,
          subjectToken,
          subjectTokenType: TOKEN_TYPE.accessToken,
          requestedTokenType: TOKEN_TYPE.txnToken,
          resources: [],
          audiences: [],
        },
        client(A),
        key,
      )
    expect((await txn(held)).issued_token_type).toBe(TOKEN_TYPE.txnToken)
    stepUp()
    await refused(() => txn(held), 'ERR_STEP_UP_REQUIRED')
  })

  it('is `interaction_required` (400) on the wire, which broker-client reads back as ERR_STEP_UP_REQUIRED', () => {
    expect(oauthWireError('ERR_STEP_UP_REQUIRED')).toEqual({ error: 'interaction_required', status: 400 })
    expect(codeForOAuthError('interaction_required')).toBe('ERR_STEP_UP_REQUIRED')
    expect(STEP_UP_DESCRIPTION).toContain('/bc-authorize')
  })
})
