/** Test issuer for the token tests: an ES256 key with kid, its JWKS, and a minter of access tokens with any header and claims. */
import { randomUUID, webcrypto, type JsonWebKey } from 'node:crypto'
import { exportJWK, generateKeyPair, SignJWT } from 'jose'
import { jwkThumbprint } from '../../../src/tokens/dpop.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'

export type CryptoKey = webcrypto.CryptoKey
export type CryptoKeyPair = webcrypto.CryptoKeyPair

export const ISSUER = 'https://broker.example.org'
export const AUDIENCE = 'https://rs.example.com'
export const AGENT = 'spiffe://example.org/agent/orch-1/task-1/i-1'
export const NOW = 1_800_000_000

export interface TestIssuer {
  kid: string
  privateKey: CryptoKey
  publicJwk: JsonWebKey
  jwks: { keys: Record<string, unknown>[] }
  cache(opts?: { nowSec?: () => number }): JwksCache
  /** Signs `claims` (merged over a valid default set) with `header` merged over {alg, typ, kid}. */
  mint(opts?: { claims?: Record<string, unknown>; header?: Record<string, unknown>; omit?: string[]; signer?: CryptoKey | Uint8Array }): Promise<string>
}

export async function testIssuer(kid = 'k1'): Promise<TestIssuer> {
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const publicJwk = (await exportJWK(publicKey)) as JsonWebKey
  const jwks = { keys: [{ ...publicJwk, kid, alg: 'ES256', use: 'sig' }] }
  return {
    kid,
    privateKey,
    publicJwk,
    jwks,
    cache: (o = {}) => new JwksCache({ fetchJwks: async () => jwks, nowSec: o.nowSec ?? (() => NOW) }),
    async mint(o = {}) {
      const claims: Record<string, unknown> = {
        iss: ISSUER,
        sub: AGENT,
        aud: AUDIENCE,
        exp: NOW + 300,
        iat: NOW,
        nbf: NOW,
        jti: randomUUID(),
        scope: 'tools:read tools:write',
        client_id: AGENT,
        task_id: 'task-1',
        orchestration_id: 'orch-1',
        ...o.claims,
      }
      for (const k of o.omit ?? []) delete claims[k]
      for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k]
      const header: Record<string, unknown> = { alg: 'ES256', typ: 'at+jwt', kid, ...o.header }
      for (const [k, v] of Object.entries(header)) if (v === undefined) delete header[k]
      return new SignJWT(claims).setProtectedHeader(header as never).sign(o.signer ?? privateKey)
    },
  }
}

/** A DPoP key pair (non-extractable private key) and its thumbprint. */
export async function dpopKey(): Promise<{ keys: CryptoKeyPair; jkt: string }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign', 'verify'])
  return { keys, jkt: await jwkThumbprint(await exportJWK(keys.publicKey)) }
}

/** A nested act claim of `depth` hops (outermost first). */
export function actChain(depth: number): Record<string, unknown> | undefined {
  let act: Record<string, unknown> | undefined
  for (let i = depth; i >= 1; i--) act = { sub: `spiffe://example.org/agent/sub-${i}`, ...(act === undefined ? {} : { act }) }
  return act
}
