/**
 * `npm run bench -- jwt`: JWT-SVID validation throughput.
 *
 * jwt_svid_validate_vs_jose: validateJwtSvid (JwtBundle lookup, all JWT-SVID
 * rules, jose signature check) against a bare `jose.jwtVerify(token, key,
 * {audience})` of the same ES256 token and key, measured in the same run.
 * Target ratio >= 0.8. Rounds alternate between the two to cancel drift.
 */
import { generateKeyPairSync, sign } from 'node:crypto'
import { jwtVerify } from 'jose'
import { JwtBundle } from '../src/spiffe/bundle/jwt-bundle.js'
import { mintJwtSvid, validateJwtSvid } from '../src/spiffe/jwt-svid/index.js'
import type { SignatureAlgorithm, Signer } from '../src/spiffe/signer.js'
import { SpiffeId } from '../src/spiffe/spiffe-id.js'
import { opsPerSecond, report } from './lib.js'

export async function run(args: string[]): Promise<void> {
  const quick = args.includes('--quick')
  const roundMs = quick ? 300 : 1500
  const rounds = quick ? 2 : 5

  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const signer: Signer = {
    publicKey,
    sign: async (data: Uint8Array, alg: SignatureAlgorithm) => {
      if (alg !== 'ES256') throw new TypeError('bench signer is ES256 only')
      return sign('sha256', data, { key: privateKey, dsaEncoding: 'ieee-p1363' })
    },
  }
  const id = SpiffeId.fromString('spiffe://example.org/agents/bench')
  const bundle = new JwtBundle(id.trustDomain, new Map([['k1', publicKey.export({ format: 'jwk' })]]))
  const token = await mintJwtSvid({ spiffeId: id, audience: ['svc'], expiresAt: new Date(Date.now() + 3_600_000), signer, kid: 'k1' })
  const key = bundle.findKey('k1')
  if (!key) throw new Error('bench key missing')

  // Both paths must accept the token before they are timed.
  await validateJwtSvid(token, bundle, { audience: 'svc' })
  await jwtVerify(token, key, { audience: 'svc' })

  let ours = 0
  let base = 0
  for (let i = 0; i < rounds; i++) {
    base += await opsPerSecond(() => jwtVerify(token, key, { audience: 'svc' }), { ms: roundMs, warmupMs: 200 })
    ours += await opsPerSecond(() => validateJwtSvid(token, bundle, { audience: 'svc' }), { ms: roundMs, warmupMs: 200 })
  }
  report('jwt_svid_validate_vs_jose', ours / rounds, base / rounds, 'ops/s', { alg: 'ES256', target_ratio: 0.8 })
}
