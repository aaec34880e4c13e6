import { createHmac, type JsonWebKey, type KeyObject } from 'node:crypto'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import type { JwtBundleSource } from '../../../../src/spiffe/bundle/sources.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { KeySigner, signSync } from './key-signer.js'

/** Shared keys, bundles and a hand-rolled token builder for the JWT-SVID tests. */
export const TD = TrustDomain.fromString('example.org')
export const OTHER_TD = TrustDomain.fromString('other.org')
export const ID = SpiffeId.fromString('spiffe://example.org/agents/bot-1')
export const NOW = new Date('2026-06-01T00:00:00Z')
export const NOW_S = NOW.getTime() / 1000

export const keys = {
  es256: KeySigner.generate('P-256'),
  es384: KeySigner.generate('P-384'),
  es512: KeySigner.generate('P-521'),
  rsa: KeySigner.generate('rsa'),
  other: KeySigner.generate('P-256'),
  ed25519: KeySigner.generate('ed25519'),
}

const jwk = (k: KeyObject): JsonWebKey => k.export({ format: 'jwk' })

export const bundle = new JwtBundle(
  TD,
  new Map([
    ['k-es256', jwk(keys.es256.publicKey)],
    ['k-es384', jwk(keys.es384.publicKey)],
    ['k-es512', jwk(keys.es512.publicKey)],
    ['k-rsa', jwk(keys.rsa.publicKey)],
  ]),
)
export const otherBundle = new JwtBundle(OTHER_TD, new Map([['k-other', jwk(keys.other.publicKey)]]))

/** A source over several trust domains (the production JwtBundleSet belongs to another module). */
export const bundles: JwtBundleSource = {
  getJwtBundleForTrustDomain(td: TrustDomain): JwtBundle {
    for (const b of [bundle, otherBundle]) if (b.trustDomain.equals(td)) return b
    throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no JWT bundle for trust domain "${td.name}"`)
  },
}

export const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

export const baseClaims = (): Record<string, unknown> => ({ sub: ID.toString(), aud: ['svc'], exp: NOW_S + 300, iat: NOW_S })

/** Builds a compact JWS with any header and payload, signed with `key` as `alg` (or HMAC / none). */
export function forge(
  header: Record<string, unknown>,
  payload: Record<string, unknown>,
  signWith: { key: KeyObject; alg: string } | { hmac: Uint8Array } | 'none' = { key: keys.es256.privateKey, alg: 'ES256' },
): string {
  const input = `${b64(header)}.${b64(payload)}`
  if (signWith === 'none') return `${input}.`
  if ('hmac' in signWith) return `${input}.${createHmac('sha256', signWith.hmac).update(input).digest('base64url')}`
  return `${input}.${Buffer.from(signSync(signWith.key, Buffer.from(input), signWith.alg)).toString('base64url')}`
}
