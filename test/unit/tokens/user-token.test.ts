import { describe, expect, it } from 'vitest'
import { unverifiedIssuer, verifyUserToken } from '../../../src/tokens/user-token.js'
import { NOW, testIssuer } from './token-fixtures.js'

const IDP = 'https://idp.example.com'
const BROKER = 'https://broker.example.org'

async function setup() {
  const idp = await testIssuer('idp-1')
  const trust = { issuers: new Map([[IDP, idp.cache()]]), audience: BROKER }
  const mint = (claims: Record<string, unknown> = {}, header: Record<string, unknown> = {}) =>
    idp.mint({
      claims: { iss: IDP, aud: BROKER, sub: 'alice@example.com', scope: 'orders:read orders:refund', ...claims },
      header,
      omit: ['client_id', 'task_id', 'orchestration_id'],
    })
  return { idp, trust, mint }
}

const reason = async (p: Promise<unknown>): Promise<unknown> => {
  try {
    await p
  } catch (e) {
    const err = e as { code: string; details?: { reason?: unknown } }
    return `${err.code}:${String(err.details?.reason)}`
  }
  return 'ok'
}

describe('verifyUserToken', () => {
  it('accepts a user token of a trusted issuer for the broker and returns the user, scopes and expiry', async () => {
    const { trust, mint } = await setup()
    const u = await verifyUserToken(await mint(), trust, NOW)
    expect(u).toEqual({ iss: IDP, sub: 'alice@example.com', scopes: ['orders:read', 'orders:refund'], exp: NOW + 300 })
  })

  it.each([
    ['untrusted issuer', { iss: 'https://evil.example' }, {}, 'issuer_untrusted'],
    ['another audience', { aud: 'https://other' }, {}, 'aud'],
    ['expired', { exp: NOW - 100 }, {}, 'expired'],
    ['not yet valid', { nbf: NOW + 100 }, {}, 'not_yet_valid'],
    ['no sub', { sub: undefined }, {}, 'sub'],
    ['scope not a string', { scope: ['a'] }, {}, 'scope'],
    ['a DPoP proof typ', {}, { typ: 'dpop+jwt' }, 'typ'],
    ['an embedded key', {}, { jwk: { kty: 'EC' } }, 'header_key'],
    ['an unknown kid', {}, { kid: 'other' }, 'kid_unknown'],
  ])('refuses %s', async (_n, claims, header, why) => {
    const { trust, mint } = await setup()
    expect(await reason(verifyUserToken(await mint(claims, header), trust, NOW))).toBe(`ERR_GRANT_INVALID:${why}`)
  })

  it('refuses a token signed by another key under the trusted issuer’s name', async () => {
    const { trust } = await setup()
    const evil = await testIssuer('idp-1')
    const t = await evil.mint({ claims: { iss: IDP, aud: BROKER, sub: 'alice' } })
    expect(await reason(verifyUserToken(t, trust, NOW))).toBe('ERR_GRANT_INVALID:signature')
  })

  it('unverifiedIssuer reads iss for routing only', async () => {
    const { mint } = await setup()
    expect(unverifiedIssuer(await mint())).toBe(IDP)
    expect(unverifiedIssuer('garbage')).toBeUndefined()
  })
})
