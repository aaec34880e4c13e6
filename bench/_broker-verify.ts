/**
 * Part of `npm run bench -- broker` (bench/broker.ts): resource-side verification cost.
 *
 * token_verify_vs_jose: verifyResourceRequest of a DPoP-bound ES256 access
 * token with its ES256 proof (JWKS cache lookup, every RFC 9068 / 9449 check,
 * thumbprint, ath, replay cache) against two bare `jose.jwtVerify` calls on
 * the same inputs (the token with the issuer key, the proof with its embedded
 * jwk). Each iteration uses a fresh proof (a new jti), prepared beforehand, so
 * the replay cache accepts it. Target ratio (ours / jose ops/s) >= 0.8.
 *
 * delegated_verify_depth5_vs_depth0: verifyResourceRequest of a token with a
 * five-hop `act` chain against a direct one, µs per verification. Target
 * ratio <= 1.2. The two sides of each figure alternate in batches of 50.
 */
import { webcrypto } from 'node:crypto'
import { EmbeddedJWK, exportJWK, generateKeyPair, jwtVerify, SignJWT } from 'jose'
import { createDpopProof, jwkThumbprint, MemoryReplayCache } from '../src/tokens/dpop.js'
import { JwksCache } from '../src/tokens/jwks-cache.js'
import { verifyResourceRequest, type ResourceRequestOptions } from '../src/tokens/request.js'
import { report } from './lib.js'

const ISSUER = 'https://broker.example.org'
const AUDIENCE = 'https://rs.example.com'
const URL_ = `${AUDIENCE}/tools/search`

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const roundMs = quick ? 300 : 1500
  const rounds = quick ? 2 : 5

  const issuer = await generateKeyPair('ES256')
  const jwks = { keys: [{ ...(await exportJWK(issuer.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' }] }
  const holder = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
  const jkt = await jwkThumbprint(await exportJWK(holder.publicKey))
  const now = Math.floor(Date.now() / 1000)
  const mint = (act?: Record<string, unknown>) =>
    new SignJWT({
      iss: ISSUER,
      sub: 'spiffe://example.org/agent/o/t/i',
      aud: AUDIENCE,
      exp: now + 3600,
      iat: now,
      nbf: now,
      jti: webcrypto.randomUUID(),
      scope: 'tools:read tools:write',
      client_id: 'spiffe://example.org/agent/o/t/i',
      task_id: 't',
      orchestration_id: 'o',
      cnf: { jkt },
      ...(act ? { act } : {}),
    })
      .setProtectedHeader({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })
      .sign(issuer.privateKey)
  let act: Record<string, unknown> | undefined
  for (let i = 5; i >= 1; i--) act = { sub: `spiffe://example.org/agent/o/t/sub-${i}`, ...(act ? { act } : {}) }
  const direct = await mint()
  const delegated = await mint(act)

  // A pool of distinct proofs per token, reused with a fresh replay cache once exhausted.
  const poolSize = quick ? 2000 : 6000
  const proofsFor = async (token: string) =>
    Promise.all(Array.from({ length: poolSize }, () => createDpopProof(holder, { method: 'GET', url: URL_, accessToken: token, nowSec: now })))
  const directProofs = await proofsFor(direct)
  const delegatedProofs = await proofsFor(delegated)

  const keys = new JwksCache({ fetchJwks: async () => jwks })
  const opts = (): ResourceRequestOptions => ({
    issuer: ISSUER,
    audience: AUDIENCE,
    keys,
    requiredScopes: ['tools:read'],
    dpop: { replay: new MemoryReplayCache({ maxEntries: poolSize * 2 }) },
  })
  const ours = (token: string, proofs: string[]) => {
    let i = 0
    let o = opts()
    return () => {
      if (i === proofs.length) {
        i = 0
        o = opts()
      }
      return verifyResourceRequest({ authorization: `DPoP ${token}`, dpop: proofs[i++], method: 'GET', url: URL_ }, o)
    }
  }
  const jose = (token: string, proofs: string[]) => {
    let i = 0
    return async () => {
      if (i === proofs.length) i = 0
      await jwtVerify(token, issuer.publicKey, { issuer: ISSUER, audience: AUDIENCE, typ: 'at+jwt' })
      await jwtVerify(proofs[i++] as string, EmbeddedJWK, { typ: 'dpop+jwt' })
    }
  }
  // Both sides must accept before they are timed.
  await ours(direct, directProofs)()
  await ours(delegated, delegatedProofs)()
  await jose(direct, directProofs)()

  // The machine is shared: the two sides of each figure run in alternating small batches, so
  // a load change hits both alike; each side's rate is its operations over its own time.
  const paired = async (a: () => Promise<unknown>, b: () => Promise<unknown>): Promise<[number, number]> => {
    const batch = 50
    let ta = 0
    let tb = 0
    let n = 0
    for (let i = 0; i < batch * 4; i++) {
      await a()
      await b()
    }
    const end = performance.now() + roundMs * rounds * 2
    while (performance.now() < end) {
      let t = performance.now()
      for (let i = 0; i < batch; i++) await a()
      ta += performance.now() - t
      t = performance.now()
      for (let i = 0; i < batch; i++) await b()
      tb += performance.now() - t
      n += batch
    }
    return [(n * 1000) / ta, (n * 1000) / tb]
  }
  const [w, j] = await paired(ours(direct, directProofs), jose(direct, directProofs))
  const [d5, d0] = await paired(ours(delegated, delegatedProofs), ours(direct, directProofs))
  report('token_verify_vs_jose', w, j, 'ops/s', { alg: 'ES256', target_ratio: 0.8 })
  report('delegated_verify_depth5_vs_depth0', 1e6 / d5, 1e6 / d0, 'us/op', { target_ratio_max: 1.2 })
}
