/** Test transmitter for the signals tests: an ES256 key with kid, its JWKS cache, and a signer of SETs with any header and claims. */
import { randomUUID, type webcrypto } from 'node:crypto'
import { CompactSign, exportJWK, generateKeyPair } from 'jose'
import { EVENT_TYPES } from '../../../src/signals/event-types.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'

export const TRANSMITTER = 'https://tx.example.org'
export const RECEIVER = 'https://rx.example.com/'
export const AGENT = 'spiffe://example.org/agents/ci/i-1'
export const NOW = 1_800_000_000

export interface TestTransmitter {
  kid: string
  jwks: { keys: Record<string, unknown>[] }
  cache(nowSec?: () => number): JwksCache
  /** Signs `claims` (merged over a valid credential-compromise SET about AGENT; `undefined` values removed) with `header` merged over {alg, typ, kid}. */
  sign(opts?: { claims?: Record<string, unknown>; header?: Record<string, unknown>; key?: webcrypto.CryptoKey | Uint8Array; raw?: string }): Promise<string>
}

export async function testTransmitter(kid = 'tx-1'): Promise<TestTransmitter> {
  const { privateKey, publicKey } = await generateKeyPair('ES256')
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }] }
  return {
    kid,
    jwks,
    cache: (nowSec = () => NOW) => new JwksCache({ fetchJwks: async () => jwks, nowSec }),
    async sign(o = {}) {
      const claims: Record<string, unknown> = {
        iss: TRANSMITTER,
        aud: RECEIVER,
        iat: NOW,
        jti: randomUUID(),
        sub_id: { format: 'uri', uri: AGENT },
        events: { [EVENT_TYPES.credentialCompromise]: { credential_type: 'x509', event_timestamp: NOW - 5 } },
        ...o.claims,
      }
      for (const [k, v] of Object.entries(claims)) if (v === undefined) delete claims[k]
      const header: Record<string, unknown> = { alg: 'ES256', typ: 'secevent+jwt', kid, ...o.header }
      for (const [k, v] of Object.entries(header)) if (v === undefined) delete header[k]
      return new CompactSign(new TextEncoder().encode(o.raw ?? JSON.stringify(claims))).setProtectedHeader(header as never).sign(o.key ?? privateKey)
    },
  }
}
