import { createPublicKey, generateKeyPairSync, verify, X509Certificate, type KeyObject } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { findNativeAddon, requireNativeAddon } from '../../../../src/common/native/addon.js'
import { nativeEcSigner, nativeEcSignerError } from '../../../../src/server/ca/native-ec-signer.js'
import { KeyObjectSigner } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509SvidSync, type SyncSigner } from '../../../../src/spiffe/x509-svid/certificate-builder.js'

function signerFor(privateKey: KeyObject): SyncSigner {
  const s = nativeEcSigner(privateKey)
  // npm ci builds the addon (binding.gyp); a missing addon is a broken install, not a reason to skip.
  if (!s) throw new Error(`native ecsign addon did not take the key: ${String(nativeEcSignerError())}`)
  return s
}

interface Addon {
  importKey(pkcs8: unknown): object
  sign(handle: unknown, hash: unknown, data: unknown): Uint8Array
}

function addon(): Addon {
  const path = findNativeAddon('ecsign')
  if (!path) throw new Error('build/Release/ecsign.node is missing')
  return requireNativeAddon(path) as Addon
}

describe('native EC signer (ecsign addon)', () => {
  const data = Buffer.from('to be signed: a TBSCertificate')

  for (const [curve, alg, hash, len] of [
    ['P-256', 'ES256', 'sha256', 64],
    ['P-384', 'ES384', 'sha384', 96],
  ] as const) {
    it(`${curve}: P1363 signatures node:crypto verifies, with a fresh nonce each time; the public key is the key's`, async () => {
      const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: curve })
      const s = signerFor(privateKey)
      expect(s.publicKey.export({ format: 'jwk' })).toEqual(publicKey.export({ format: 'jwk' }))
      const a = s.signSync(data, alg)
      const b = await s.sign(data, alg)
      expect(a.length).toBe(len)
      expect(Buffer.from(a).equals(Buffer.from(b))).toBe(false)
      for (const sig of [a, b]) expect(verify(hash, data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig)).toBe(true)
      expect(verify(hash, Buffer.from('other data'), { key: publicKey, dsaEncoding: 'ieee-p1363' }, a)).toBe(false)
    })
  }

  it('signs only with the algorithm of its curve', () => {
    const s = signerFor(generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey)
    expect(() => s.signSync(data, 'ES384')).toThrow(TypeError)
    expect(() => s.signSync(data, 'RS256')).toThrow(TypeError)
  })

  it('declines what it does not take: RSA, P-521, a public key', () => {
    expect(nativeEcSigner(generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey)).toBeUndefined()
    expect(nativeEcSigner(generateKeyPairSync('ec', { namedCurve: 'P-521' }).privateKey)).toBeUndefined()
    expect(nativeEcSigner(generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey)).toBeUndefined()
  })

  it('a leaf signed natively is the certificate KeyObjectSigner would make, and verifies under the CA', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
    const certificate = await createCaCertificate({
      trustDomain: TrustDomain.fromString('example.org'),
      publicKey,
      signer: new KeyObjectSigner(privateKey),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
    })
    const spki = generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ format: 'der', type: 'spki' })
    const leaf = createX509SvidSync({
      spiffeId: SpiffeId.fromString('spiffe://example.org/w'),
      publicKey: { spki },
      signer: signerFor(privateKey),
      issuer: { certificate },
      notAfter: new Date(Date.now() + 600_000),
    })
    const cert = new X509Certificate(leaf)
    expect(cert.verify(createPublicKey(privateKey))).toBe(true)
    expect(cert.checkIssued(new X509Certificate(certificate))).toBe(true)
    expect(cert.subjectAltName).toBe('URI:spiffe://example.org/w')
  })

  it('the addon refuses bad arguments with a TypeError: not PKCS#8, an RSA key, a forged handle, a bad hash, data not bytes', () => {
    const a = addon()
    expect(() => a.importKey(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]))).toThrow(TypeError)
    expect(() => a.importKey('key')).toThrow(TypeError)
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'der', type: 'pkcs8' })
    expect(() => a.importKey(rsa)).toThrow(/not an EC key/)
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'der', type: 'pkcs8' })
    expect(() => a.importKey(Buffer.concat([ec, Buffer.from([0])]))).toThrow(TypeError)
    const h = a.importKey(ec)
    expect(() => a.sign({}, 0, data)).toThrow(/not a key from importKey/)
    expect(() => a.sign(h, 3, data)).toThrow(TypeError)
    expect(() => a.sign(h, 0, 'data')).toThrow(TypeError)
    expect(a.sign(h, 0, data).length).toBe(64)
  })
})
