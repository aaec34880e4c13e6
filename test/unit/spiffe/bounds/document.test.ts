import { describe, expect, it } from 'vitest'
import { BOUNDS_DOCUMENT_TYPE, BoundsSet, signBoundsDocument, verifyBoundsDocument } from '../../../../src/spiffe/bounds/index.js'
import { JwtBundle } from '../../../../src/spiffe/bundle/jwt-bundle.js'
import { generateKeyPair, KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

const td = TrustDomain.fromString('corp.example')
const NOW = new Date(Date.UTC(2026, 0, 1))
const kp = generateKeyPair('ec-p256')
const signer = new KeyObjectSigner(kp.privateKey)
const bundle = new JwtBundle(td, [['k1', kp.publicKey.export({ format: 'jwk' })]])
const set = BoundsSet.parse(td, { '/agents/payments': { jwt_svid_ttl: 300, jwt_audiences: ['https://payments.corp.example'], dns_suffixes: [] } })
const sign = (o: Partial<Parameters<typeof signBoundsDocument>[0]> = {}) => signBoundsDocument({ set, sequence: 7, issuedAt: NOW, signer, kid: 'k1', ...o })

const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url')
const part = (doc: string, i: number) => JSON.parse(Buffer.from(doc.split('.')[i]!, 'base64url').toString()) as Record<string, unknown>

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p
  } catch (err) {
    return (err as { code: string }).code
  }
  return 'OK'
}

describe('signed bounds document', () => {
  it('is a compact JWS with the documented header and payload', async () => {
    const doc = await sign()
    expect(part(doc, 0)).toEqual({ alg: 'ES256', kid: 'k1', typ: BOUNDS_DOCUMENT_TYPE })
    expect(part(doc, 1)).toEqual({ trust_domain: 'corp.example', sequence: 7, issued_at: NOW.getTime() / 1000, bounds: set.toJSON() })
    const v = await verifyBoundsDocument(doc, bundle, { trustDomain: td, now: NOW, maxAgeSeconds: 60 })
    expect(v.sequence).toBe(7)
    expect(v.kid).toBe('k1')
    expect(v.issuedAt).toEqual(NOW)
    expect(v.set.toJSON()).toEqual(set.toJSON())
  })

  it('verifies RSA-signed documents too', async () => {
    const rsa = generateKeyPair('rsa-2048')
    const doc = await sign({ signer: new KeyObjectSigner(rsa.privateKey), kid: 'r1' })
    const b = new JwtBundle(td, [['r1', rsa.publicKey.export({ format: 'jwk' })]])
    expect((await verifyBoundsDocument(doc, b)).set.size).toBe(1)
  })

  const other = generateKeyPair('ec-p256')
  it.each<[string, () => Promise<string>, Parameters<typeof verifyBoundsDocument>[2], string]>([
    ['signed by a key outside the bundle', () => sign({ signer: new KeyObjectSigner(other.privateKey) }), {}, 'ERR_BOUNDS_UNTRUSTED'],
    ['an unknown kid', () => sign({ kid: 'nope' }), {}, 'ERR_BOUNDS_UNTRUSTED'],
    ['another trust domain expected', () => sign(), { trustDomain: TrustDomain.fromString('partner.example') }, 'ERR_BOUNDS_UNTRUSTED'],
    ['too old', () => sign(), { now: new Date(NOW.getTime() + 3_600_000), maxAgeSeconds: 60 }, 'ERR_BOUNDS_UNTRUSTED'],
    ['issued in the future', () => sign(), { now: new Date(NOW.getTime() - 3_600_000) }, 'ERR_BOUNDS_UNTRUSTED'],
    ['rolled back', () => sign(), { minSequence: 8 }, 'ERR_BOUNDS_UNTRUSTED'],
    ['not a JWS', async () => 'abc', {}, 'ERR_BOUNDS_INVALID'],
    [
      'a JWT-SVID typ',
      async () => {
        const d = await sign()
        return [b64({ alg: 'ES256', kid: 'k1', typ: 'JWT' }), ...d.split('.').slice(1)].join('.')
      },
      {},
      'ERR_BOUNDS_INVALID',
    ],
    [
      'an extra header',
      async () => {
        const d = await sign()
        return [b64({ alg: 'ES256', kid: 'k1', typ: BOUNDS_DOCUMENT_TYPE, jku: 'x' }), ...d.split('.').slice(1)].join('.')
      },
      {},
      'ERR_BOUNDS_INVALID',
    ],
    [
      'alg none',
      async () => {
        const d = await sign()
        return [b64({ alg: 'none', kid: 'k1', typ: BOUNDS_DOCUMENT_TYPE }), d.split('.')[1], ''].join('.')
      },
      {},
      'ERR_BOUNDS_INVALID',
    ],
    [
      'a tampered payload',
      async () => {
        const d = await sign()
        const p = part(d, 1)
        p.bounds = []
        return [d.split('.')[0], b64(p), d.split('.')[2]].join('.')
      },
      {},
      'ERR_BOUNDS_UNTRUSTED',
    ],
  ])('refuses %s', async (_t, mk, opts, want) => {
    expect(await code(verifyBoundsDocument(await mk(), bundle, opts))).toBe(want)
  })

  it('refuses a validly signed document whose bounds widen a parent', async () => {
    const h = b64({ alg: 'ES256', kid: 'k1', typ: BOUNDS_DOCUMENT_TYPE })
    const p = b64({
      trust_domain: 'corp.example',
      sequence: 1,
      issued_at: 1,
      bounds: [
        { prefix: '/a', jwt_svid_ttl: 60 },
        { prefix: '/a/b', jwt_svid_ttl: 120 },
      ],
    })
    const sig = Buffer.from(await signer.sign(Buffer.from(`${h}.${p}`), 'ES256')).toString('base64url')
    expect(await code(verifyBoundsDocument(`${h}.${p}.${sig}`, bundle))).toBe('ERR_BOUNDS_INVALID')
  })

  it('refuses bad options', async () => {
    await expect(sign({ sequence: -1 })).rejects.toThrow(RangeError)
    await expect(sign({ kid: '' })).rejects.toThrow(TypeError)
  })
})
