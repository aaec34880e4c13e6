import { decodeJwt, decodeProtectedHeader } from 'jose'
import { inspect } from 'node:util'
import { describe, expect, it } from 'vitest'
import { DpopKey } from '../../../src/broker-client/dpop-key.js'
import { accessTokenHash, createDpopNonces, jwkThumbprint, MemoryReplayCache, verifyDpopProof } from '../../../src/tokens/dpop.js'

describe('DpopKey', () => {
  it('holds a non-extractable ES256 key whose thumbprint is the cnf.jkt', async () => {
    const key = await DpopKey.generate()
    expect(key.extractable).toBe(false)
    await expect(key.exportPrivateJwk()).rejects.toThrow(TypeError)
    expect(key.publicJwk).toEqual({ kty: 'EC', crv: 'P-256', x: expect.any(String), y: expect.any(String) })
    expect(key.thumbprint).toBe(await jwkThumbprint(key.publicJwk as Parameters<typeof jwkThumbprint>[0]))
    expect(JSON.stringify(key)).toBe(JSON.stringify({ jkt: key.thumbprint }))
  })

  it('proof shape (RFC 9449 §4.2): typ dpop+jwt, ES256, public jwk only, jti/htm/htu/iat; ath and nonce when given', async () => {
    const key = await DpopKey.generate()
    const proof = await key.proof({
      method: 'post',
      url: 'https://RS.example:443/tools/search?q=1#f',
      accessToken: 'the-token',
      nonce: 'n-1',
      nowSec: 1_800_000_000,
    })
    const h = decodeProtectedHeader(proof)
    expect(h).toEqual({ alg: 'ES256', typ: 'dpop+jwt', jwk: key.publicJwk })
    expect(h.jwk).not.toHaveProperty('d')
    const c = decodeJwt(proof)
    expect(c).toEqual({
      jti: expect.stringMatching(/^[0-9a-f-]{36}$/),
      htm: 'POST',
      htu: 'https://rs.example/tools/search',
      iat: 1_800_000_000,
      ath: accessTokenHash('the-token'),
      nonce: 'n-1',
    })
    const bare = decodeJwt(await key.proof({ method: 'GET', url: 'https://rs.example/' }))
    expect(Object.keys(bare).sort()).toEqual(['htm', 'htu', 'iat', 'jti'])
    const two = decodeJwt(await key.proof({ method: 'GET', url: 'https://rs.example/' }))
    expect(two.jti).not.toBe(bare.jti)
  })

  it('its proofs pass the verification library, nonce, ath and key included', async () => {
    const key = await DpopKey.generate()
    const nonces = createDpopNonces({ windowSec: 300 })
    const now = Math.floor(Date.now() / 1000)
    const nonce = nonces.issue(now)
    const proof = await key.proof({ method: 'GET', url: 'https://rs.example/x', accessToken: 'at', nonce, nowSec: now })
    const v = await verifyDpopProof(proof, {
      method: 'GET',
      url: 'https://rs.example/x',
      nowSec: now,
      accessToken: 'at',
      expectedJkt: key.thumbprint,
      nonces,
      replay: new MemoryReplayCache(),
    })
    expect(v.jkt).toBe(key.thumbprint)
  })

  it('a CLI key file round trip: generated extractable, exported, imported back as non-extractable with the same thumbprint', async () => {
    const k = await DpopKey.generate({ extractable: true })
    const jwk = await k.exportPrivateJwk()
    expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', d: expect.any(String) })
    const back = await DpopKey.importPrivateJwk(jwk)
    expect(back.extractable).toBe(false)
    expect(back.thumbprint).toBe(k.thumbprint)
    expect(inspect(back)).not.toContain(jwk.d!)
  })

  it.each([
    ['not an object', null],
    ['an RSA key', { kty: 'RSA', n: 'x', e: 'AQAB', d: 'y' }],
    ['a public key', { kty: 'EC', crv: 'P-256', x: 'a', y: 'b' }],
    ['garbage coordinates', { kty: 'EC', crv: 'P-256', x: 'a', y: 'b', d: 'c' }],
  ])('refuses to import %s: ERR_KEY_INVALID', async (_t, jwk) => {
    await expect(DpopKey.importPrivateJwk(jwk as never)).rejects.toMatchObject({ code: 'ERR_KEY_INVALID' })
  })
})
