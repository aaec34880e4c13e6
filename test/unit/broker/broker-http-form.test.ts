import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { isIdentityError } from '../../../src/errors/identity-error.js'
import { parseForm, parseTokenRequest } from '../../../src/broker/http/form.js'

const TE = 'urn:ietf:params:oauth:grant-type:token-exchange'
const JWT = 'urn:ietf:params:oauth:token-type:jwt'
const req = (body: string) => parseTokenRequest(parseForm(body))
const code = (fn: () => unknown): string | undefined => {
  try {
    fn()
    return undefined
  } catch (err) {
    return isIdentityError(err) ? err.code : `untyped: ${String(err)}`
  }
}

describe('parseForm', () => {
  it('keeps values in order, drops empty ones (RFC 6749 §3.1) and lets resource and audience repeat', () => {
    const f = parseForm('grant_type=client_credentials&scope=&resource=https%3A%2F%2Fa%2F&resource=https%3A%2F%2Fb%2F&audience=x&audience=y')
    expect(f.get('scope')).toBeUndefined()
    expect(f.get('resource')).toEqual(['https://a/', 'https://b/'])
    expect(f.get('audience')).toEqual(['x', 'y'])
  })

  it.each(['scope=a&scope=b', 'grant_type=a&grant_type=b', 'client_assertion=a&client_assertion=b', 'subject_token=a&subject_token=a', 'task_id=a&task_id=b'])(
    'refuses a repeated single-valued parameter: %s',
    (body) => {
      expect(code(() => parseForm(body))).toBe('ERR_TOKEN_REQUEST_INVALID')
    },
  )

  it('refuses too many parameters and nameless ones', () => {
    expect(code(() => parseForm(Array.from({ length: 65 }, (_, i) => `p${i}=1`).join('&')))).toBe('ERR_TOKEN_REQUEST_INVALID')
    expect(code(() => parseForm('=x'))).toBe('ERR_TOKEN_REQUEST_INVALID')
  })
})

describe('parseTokenRequest', () => {
  it('client_credentials with scopes (deduplicated), task and authorization details', () => {
    expect(req('grant_type=client_credentials&scope=b+a+b&task_id=t&authorization_details=%5B%7B%22type%22%3A%22tool%22%7D%5D')).toEqual({
      grantType: 'client_credentials',
      resources: [],
      audiences: [],
      scopes: ['b', 'a'],
      taskId: 't',
      authorizationDetails: [{ type: 'tool' }],
    })
  })

  it('token exchange with subject, actor, requested type, may_act', () => {
    expect(
      req(
        `grant_type=${encodeURIComponent(TE)}&subject_token=s&subject_token_type=${JWT}&actor_token=a&actor_token_type=${JWT}&requested_token_type=${JWT}&may_act=spiffe%3A%2F%2Fx%2Fy`,
      ),
    ).toMatchObject({
      grantType: TE,
      subjectToken: 's',
      subjectTokenType: JWT,
      actorToken: 'a',
      actorTokenType: JWT,
      requestedTokenType: JWT,
      mayAct: 'spiffe://x/y',
    })
  })

  const refusals: [string, string, string][] = [
    ['no grant_type', 'scope=a', 'ERR_TOKEN_REQUEST_INVALID'],
    ['exchange without subject_token', `grant_type=${TE}&subject_token_type=${JWT}`, 'ERR_TOKEN_REQUEST_INVALID'],
    ['exchange without subject_token_type', `grant_type=${TE}&subject_token=s`, 'ERR_TOKEN_REQUEST_INVALID'],
    ['actor_token without type', `grant_type=${TE}&subject_token=s&subject_token_type=${JWT}&actor_token=a`, 'ERR_TOKEN_REQUEST_INVALID'],
    ['actor_token_type without token', `grant_type=${TE}&subject_token=s&subject_token_type=${JWT}&actor_token_type=${JWT}`, 'ERR_TOKEN_REQUEST_INVALID'],
    ['subject_token on client_credentials', 'grant_type=client_credentials&subject_token=s', 'ERR_TOKEN_REQUEST_INVALID'],
    ['relative resource', 'grant_type=client_credentials&resource=%2Fapi', 'ERR_TARGET_INVALID'],
    ['resource with fragment', 'grant_type=client_credentials&resource=https%3A%2F%2Fa%2F%23f', 'ERR_TARGET_INVALID'],
    ['malformed scope token', 'grant_type=client_credentials&scope=a%22b', 'ERR_SCOPE_INVALID'],
    ['too many scopes', `grant_type=client_credentials&scope=${Array.from({ length: 65 }, (_, i) => `s${i}`).join('+')}`, 'ERR_TOKEN_REQUEST_INVALID'],
    ['authorization_details not JSON', 'grant_type=client_credentials&authorization_details=%5B', 'ERR_TOKEN_REQUEST_INVALID'],
    ['authorization_details empty', 'grant_type=client_credentials&authorization_details=%5B%5D', 'ERR_TOKEN_REQUEST_INVALID'],
    ['authorization detail without type', 'grant_type=client_credentials&authorization_details=%5B%7B%7D%5D', 'ERR_TOKEN_REQUEST_INVALID'],
    ['authorization detail not an object', 'grant_type=client_credentials&authorization_details=%5B1%5D', 'ERR_TOKEN_REQUEST_INVALID'],
  ]
  it.each(refusals)('refuses %s', (_name, body, c) => {
    expect(code(() => req(body))).toBe(c)
  })

  it('random bodies yield a request or a typed error, never anything else', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc
            .array(
              fc.tuple(
                fc.constantFrom(
                  'grant_type',
                  'scope',
                  'resource',
                  'audience',
                  'subject_token',
                  'subject_token_type',
                  'actor_token',
                  'actor_token_type',
                  'authorization_details',
                  'task_id',
                  'x',
                ),
                fc.string(),
              ),
            )
            .map((kv) => new URLSearchParams(kv).toString()),
        ),
        (body) => {
          const c = code(() => req(body))
          expect(c === undefined || !c.startsWith('untyped')).toBe(true)
        },
      ),
      { numRuns: 500 },
    )
  })
})

describe('Txn-Token request parameters', () => {
  const base = `grant_type=${encodeURIComponent(TE)}&subject_token=t&subject_token_type=${encodeURIComponent(JWT)}`
  it('request_details and request_context are JSON objects', () => {
    const r = req(`${base}&request_details=${encodeURIComponent('{"purpose":"refund"}')}&request_context=${encodeURIComponent('{"req_ip":"10.0.0.1"}')}`)
    expect([r.requestDetails, r.requestContext]).toEqual([{ purpose: 'refund' }, { req_ip: '10.0.0.1' }])
  })
  it.each([
    '[1]',
    '"x"',
    'null',
    '{bad',
    JSON.stringify({ a: 'x'.repeat(9000) }),
    JSON.stringify(Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i]))),
  ])('refuses request_details %#', (v) => {
    expect(code(() => req(`${base}&request_details=${encodeURIComponent(v)}`))).toBe('ERR_TOKEN_REQUEST_INVALID')
    expect(code(() => req(`${base}&request_context=${encodeURIComponent(v)}`))).toBe('ERR_TOKEN_REQUEST_INVALID')
  })
})
