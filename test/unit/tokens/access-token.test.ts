import { generateKeyPair } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { requireScopes, scopesOf, verifyAccessToken, type VerifyAccessTokenOptions } from '../../../src/tokens/access-token.js'
import { actChain, AGENT, AUDIENCE, ISSUER, NOW, testIssuer, type TestIssuer } from './token-fixtures.js'

let iss: TestIssuer
const JKT = 'A'.repeat(43)

beforeAll(async () => {
  iss = await testIssuer()
})

function opts(over: Partial<VerifyAccessTokenOptions> = {}): VerifyAccessTokenOptions {
  return { issuer: ISSUER, audience: AUDIENCE, keys: iss.cache(), nowSec: NOW, ...over }
}

async function why(p: Promise<unknown>): Promise<{ code: string; reason: unknown }> {
  try {
    await p
  } catch (err) {
    if (!(err instanceof IdentityError)) throw err
    return { code: err.code, reason: err.details?.['reason'] }
  }
  throw new Error('expected a rejection')
}
const bad = (reason: string) => ({ code: 'ERR_ACCESS_TOKEN_INVALID', reason })

describe('verifyAccessToken accepts', () => {
  it('a valid token and returns its claims', async () => {
    const t = await iss.mint({ claims: { cnf: { jkt: JKT }, authorization_details: [{ type: 'tool', name: 'search' }] } })
    const c = await verifyAccessToken(t, opts({ requiredScopes: ['tools:read'] }))
    expect(c.sub).toBe(AGENT)
    expect(c.cnf).toEqual({ jkt: JKT })
    expect(scopesOf(c)).toEqual(['tools:read', 'tools:write'])
  })

  it('typ application/at+jwt, an aud array containing ours, no audience option, the skew edges', async () => {
    await expect(verifyAccessToken(await iss.mint({ header: { typ: 'application/at+jwt' } }), opts())).resolves.toBeDefined()
    await expect(verifyAccessToken(await iss.mint({ claims: { aud: ['https://other', AUDIENCE] } }), opts())).resolves.toBeDefined()
    await expect(verifyAccessToken(await iss.mint({ claims: { aud: 'https://other' } }), opts({ audience: undefined as never }))).resolves.toBeDefined()
    await expect(verifyAccessToken(await iss.mint({ claims: { exp: NOW - 29 } }), opts())).resolves.toBeDefined()
    await expect(verifyAccessToken(await iss.mint({ claims: { nbf: NOW + 30, iat: NOW + 30 } }), opts())).resolves.toBeDefined()
  })

  it('a delegation chain of the maximum depth', async () => {
    const c = await verifyAccessToken(await iss.mint({ claims: { act: actChain(5) } }), opts())
    expect(c.act?.sub).toBe('spiffe://example.org/agent/sub-1')
    await expect(verifyAccessToken(await iss.mint({ claims: { act: actChain(2) } }), opts({ maxDelegationDepth: 2 }))).resolves.toBeDefined()
  })
})

describe('verifyAccessToken rejects, saying why', () => {
  it('an empty, oversized or malformed token', async () => {
    expect(await why(verifyAccessToken('', opts()))).toEqual(bad('missing'))
    expect(await why(verifyAccessToken('a'.repeat(20000), opts()))).toEqual(bad('too_large'))
    expect(await why(verifyAccessToken('a.b', opts()))).toEqual(bad('malformed'))
    expect(await why(verifyAccessToken('a.b.c d', opts()))).toEqual(bad('malformed'))
    expect(await why(verifyAccessToken('bm9wZQ.e30.c2ln', opts()))).toEqual(bad('malformed'))
  })

  it('a wrong typ (a JWT-SVID, an ID token, a DPoP proof)', async () => {
    for (const typ of [undefined, 'JWT', 'dpop+jwt', 'at+jwt+x']) {
      expect(await why(verifyAccessToken(await iss.mint({ header: { typ } }), opts()))).toEqual(bad('typ'))
    }
  })

  it('alg none, HMAC, or one outside the list; a programmer list with HS256 is a TypeError', async () => {
    const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
    const none = `${enc({ alg: 'none', typ: 'at+jwt', kid: 'k1' })}.${enc({ iss: ISSUER })}.AA`
    expect(await why(verifyAccessToken(none, opts()))).toEqual(bad('alg'))
    expect(await why(verifyAccessToken(await iss.mint({ header: { alg: 'HS256' }, signer: new Uint8Array(32) }), opts()))).toEqual(bad('alg'))
    expect(await why(verifyAccessToken(await iss.mint(), opts({ algorithms: ['PS256'] })))).toEqual(bad('alg'))
    await expect(verifyAccessToken(await iss.mint(), opts({ algorithms: ['HS256'] }))).rejects.toThrow(TypeError)
  })

  it('no kid, an unknown kid, or a key carried in the header', async () => {
    expect(await why(verifyAccessToken(await iss.mint({ header: { kid: undefined } }), opts()))).toEqual(bad('kid'))
    expect(await why(verifyAccessToken(await iss.mint({ header: { kid: 'nope' } }), opts()))).toEqual(bad('kid_unknown'))
    for (const h of [{ jwk: iss.publicJwk }, { jku: 'https://evil/jwks' }, { x5u: 'https://evil/c' }, { x5c: ['AAAA'] }]) {
      expect(await why(verifyAccessToken(await iss.mint({ header: h }), opts()))).toEqual(bad('header_key'))
    }
  })

  it('a signature by another key, or a tampered payload', async () => {
    const other = await generateKeyPair('ES256')
    expect(await why(verifyAccessToken(await iss.mint({ signer: other.privateKey }), opts()))).toEqual(bad('signature'))
    const [h, , s] = (await iss.mint()).split('.')
    const forged = Buffer.from(JSON.stringify({ iss: ISSUER, scope: 'admin' })).toString('base64url')
    expect(await why(verifyAccessToken(`${h}.${forged}.${s}`, opts()))).toEqual(bad('signature'))
  })

  it('a wrong issuer or audience', async () => {
    expect(await why(verifyAccessToken(await iss.mint({ claims: { iss: 'https://evil' } }), opts()))).toEqual(bad('iss'))
    expect(await why(verifyAccessToken(await iss.mint({ omit: ['iss'] }), opts()))).toEqual(bad('iss'))
    for (const aud of ['https://other', ['https://other'], [], [AUDIENCE, 5], 7, undefined]) {
      expect(await why(verifyAccessToken(await iss.mint({ claims: { aud } }), opts()))).toEqual(bad('aud'))
    }
  })

  it('expired, not yet valid, issued in the future', async () => {
    expect(await why(verifyAccessToken(await iss.mint({ claims: { exp: NOW - 30 } }), opts()))).toMatchObject(bad('expired'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { exp: NOW } }), opts({ clockSkewSec: 0 })))).toMatchObject(bad('expired'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { nbf: NOW + 31 } }), opts()))).toEqual(bad('not_yet_valid'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { iat: NOW + 31 } }), opts()))).toEqual(bad('iat_future'))
  })

  it('each required claim missing or ill-typed', async () => {
    for (const c of ['exp', 'iat', 'nbf', 'jti', 'sub', 'scope', 'client_id']) {
      expect(await why(verifyAccessToken(await iss.mint({ omit: [c] }), opts()))).toEqual(bad(c))
    }
    const wrong: Record<string, unknown> = {
      exp: String(NOW + 300),
      iat: -1,
      nbf: null,
      jti: '',
      sub: 'not-a-spiffe-id',
      scope: ['tools:read'],
      client_id: 42,
      task_id: 5,
      orchestration_id: '',
    }
    for (const [c, v] of Object.entries(wrong)) {
      expect(await why(verifyAccessToken(await iss.mint({ claims: { [c]: v } }), opts()))).toEqual(bad(c))
    }
    expect(await why(verifyAccessToken(await iss.mint({ claims: { sub: 'spiffe://example.org/../x' } }), opts()))).toEqual(bad('sub'))
  })

  it('malformed authorization_details', async () => {
    for (const ad of [{ type: 'x' }, [{}], [{ type: 3 }], ['x']]) {
      expect(await why(verifyAccessToken(await iss.mint({ claims: { authorization_details: ad } }), opts()))).toEqual(bad('authorization_details'))
    }
  })

  it('a delegation chain too deep, or with a hop that is not a SPIFFE ID', async () => {
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: actChain(6) } }), opts()))).toEqual(bad('act_depth'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: actChain(3) } }), opts({ maxDelegationDepth: 2 })))).toEqual(bad('act_depth'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: { sub: 'spiffe://example.org/a', act: { sub: 'bob' } } } }), opts()))).toEqual(
      bad('act_sub'),
    )
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: { act: { sub: AGENT } } } }), opts()))).toEqual(bad('act_sub'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: 'spiffe://example.org/a' } }), opts()))).toEqual(bad('act'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: { sub: AGENT, act: [1] } } }), opts()))).toEqual(bad('act'))
    expect(await why(verifyAccessToken(await iss.mint({ claims: { act: { sub: AGENT, iss: 5 } } }), opts()))).toEqual(bad('act'))
  })

  it('a cnf that binds to nothing usable', async () => {
    for (const cnf of [{}, 'x', { jkt: 'short' }, { jkt: 5 }, { 'x5t#S256': `${JKT}=` }, { jwk: {} }]) {
      expect(await why(verifyAccessToken(await iss.mint({ claims: { cnf } }), opts()))).toEqual(bad('cnf'))
    }
  })

  it('a valid token without a required scope is ERR_SCOPE_INSUFFICIENT', async () => {
    const t = await iss.mint({ claims: { scope: 'tools:read' } })
    expect(await why(verifyAccessToken(t, opts({ requiredScopes: ['tools:read', 'tools:admin'] })))).toEqual({
      code: 'ERR_SCOPE_INSUFFICIENT',
      reason: 'scope',
    })
    const c = await verifyAccessToken(t, opts())
    expect(() => requireScopes(c, ['tools:rea'])).toThrow(IdentityError)
    expect(() => requireScopes(c, [])).not.toThrow()
  })
})
