/** Random input to the three verifiers yields only IdentityErrors with known codes (never a TypeError, never a pass). */
import fc from 'fast-check'
import { SignJWT } from 'jose'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError } from '../../../src/errors/index.js'
import { verifyAccessToken } from '../../../src/tokens/access-token.js'
import { MemoryReplayCache, verifyDpopProof } from '../../../src/tokens/dpop.js'
import { verifyResourceRequest } from '../../../src/tokens/request.js'
import { AUDIENCE, dpopKey, ISSUER, NOW, testIssuer, type CryptoKeyPair, type TestIssuer } from './token-fixtures.js'

const KNOWN = new Set(['ERR_DPOP_PROOF_INVALID', 'ERR_DPOP_NONCE_REQUIRED', 'ERR_ACCESS_TOKEN_INVALID', 'ERR_SCOPE_INSUFFICIENT', 'ERR_REQUEST_MALFORMED'])
let iss: TestIssuer
let holder: { keys: CryptoKeyPair; jkt: string }

beforeAll(async () => {
  iss = await testIssuer()
  holder = await dpopKey()
})

async function onlyKnown(p: Promise<unknown>): Promise<void> {
  try {
    await p
  } catch (err) {
    expect(err).toBeInstanceOf(IdentityError)
    expect(KNOWN.has((err as IdentityError).code)).toBe(true)
    return
  }
  throw new Error('random input was accepted')
}

const b64 = (v: unknown) => Buffer.from(typeof v === 'string' ? v : (JSON.stringify(v) ?? 'null')).toString('base64url')
/** Compact-JWS-shaped strings with random JSON in header and payload, and random other strings. */
const jwsLike = fc.oneof(
  fc.string(),
  fc
    .tuple(fc.jsonValue(), fc.jsonValue(), fc.base64String())
    .map(([h, p, s]) => `${b64(h)}.${b64(p)}.${s.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')}`),
  fc
    .tuple(fc.dictionary(fc.constantFrom('alg', 'typ', 'jwk', 'kid', 'crit', 'b64'), fc.jsonValue()), fc.jsonValue())
    .map(([h, p]) => `${b64(h)}.${b64(p)}.AAAA`),
)
/** Claims sets close to valid, with random values in random places, really signed. */
const claimsLike = fc.dictionary(
  fc.constantFrom('iss', 'sub', 'aud', 'exp', 'iat', 'nbf', 'jti', 'scope', 'client_id', 'act', 'cnf', 'htm', 'htu', 'ath', 'nonce', 'authorization_details'),
  fc.jsonValue(),
  { maxKeys: 8 },
)

describe('fuzz', () => {
  it('verifyDpopProof: random proofs', async () => {
    await fc.assert(
      fc.asyncProperty(jwsLike, async (p) => onlyKnown(verifyDpopProof(p, { method: 'GET', url: AUDIENCE, nowSec: NOW, replay: new MemoryReplayCache() }))),
      { numRuns: 300 },
    )
  })

  it('verifyDpopProof: signed proofs with random claims and headers', async () => {
    const { exportJWK } = await import('jose')
    const jwk = await exportJWK(holder.keys.publicKey)
    await fc.assert(
      fc.asyncProperty(
        claimsLike,
        fc.constantFrom('dpop+jwt', 'JWT', undefined),
        fc.constantFrom<unknown>(jwk, {}, 'x', { ...jwk, d: 'AA' }),
        async (claims, typ, hjwk) => {
          const proof = await new SignJWT(claims)
            .setProtectedHeader({ alg: 'ES256', ...(typ === undefined ? {} : { typ }), jwk: hjwk } as never)
            .sign(holder.keys.privateKey)
          await onlyKnown(verifyDpopProof(proof, { method: 'GET', url: AUDIENCE, nowSec: NOW, replay: new MemoryReplayCache(), accessToken: 'x' }))
        },
      ),
      { numRuns: 150 },
    )
  })

  it('verifyAccessToken: random tokens and signed tokens with random claims', async () => {
    const keys = iss.cache()
    await fc.assert(
      fc.asyncProperty(jwsLike, async (t) => onlyKnown(verifyAccessToken(t, { issuer: ISSUER, audience: AUDIENCE, keys, nowSec: NOW }))),
      { numRuns: 300 },
    )
    await fc.assert(
      fc.asyncProperty(claimsLike, async (claims) => {
        const t = await new SignJWT(claims).setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: iss.kid }).sign(iss.privateKey)
        await onlyKnown(verifyAccessToken(t, { issuer: ISSUER, audience: AUDIENCE, keys, nowSec: NOW }))
      }),
      { numRuns: 150 },
    )
  })

  it('verifyResourceRequest: random headers', async () => {
    const keys = iss.cache()
    const token = await iss.mint({ claims: { cnf: { jkt: holder.jkt } } })
    const authz = fc.oneof(
      fc.string(),
      jwsLike.map((t) => `DPoP ${t}`),
      jwsLike.map((t) => `Bearer ${t}`),
      fc.constant(`DPoP ${token}`),
    )
    const dpop = fc.oneof(fc.constant(undefined), jwsLike, fc.array(jwsLike, { maxLength: 3 }))
    await fc.assert(
      fc.asyncProperty(authz, dpop, fc.constantFrom('GET', 'POST', 'get'), async (authorization, proof, method) => {
        await onlyKnown(
          verifyResourceRequest(
            { authorization, dpop: proof, method, url: `${AUDIENCE}/x` },
            { issuer: ISSUER, audience: AUDIENCE, keys, nowSec: NOW, allowBearer: true, dpop: { replay: new MemoryReplayCache() } },
          ),
        )
      }),
      { numRuns: 300 },
    )
  })

  it('property: a request passes the scope check exactly when every required scope was granted', async () => {
    const keys = iss.cache()
    const universe = ['a', 'b', 'c', 'tools:read', 'tools:write']
    await fc.assert(
      fc.asyncProperty(fc.subarray(universe), fc.subarray(universe), async (granted, required) => {
        const token = await iss.mint({ claims: { scope: granted.join(' ') } })
        const run = verifyAccessToken(token, { issuer: ISSUER, audience: AUDIENCE, keys, nowSec: NOW, requiredScopes: required })
        if (required.every((r) => granted.includes(r))) await expect(run).resolves.toBeDefined()
        else await expect(run).rejects.toMatchObject({ code: 'ERR_SCOPE_INSUFFICIENT' })
      }),
      { numRuns: 100 },
    )
  })
})
