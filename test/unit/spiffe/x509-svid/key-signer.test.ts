import { constants, createPublicKey, generateKeyPairSync, verify } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { defaultAlgorithmFor, generateKeyPair, KeyObjectSigner, type KeyPairType } from '../../../../src/spiffe/key-signer.js'
import type { SignatureAlgorithm } from '../../../../src/spiffe/signer.js'

const data = Buffer.from('to be signed')

describe('defaultAlgorithmFor / generateKeyPair', () => {
  const cases: Array<[KeyPairType, SignatureAlgorithm]> = [
    ['ec-p256', 'ES256'],
    ['ec-p384', 'ES384'],
    ['ec-p521', 'ES512'],
    ['rsa-2048', 'RS256'],
  ]
  it.each(cases)('%s → %s', (type, alg) => {
    const kp = generateKeyPair(type)
    expect(kp.privateKey.type).toBe('private')
    expect(defaultAlgorithmFor(kp.publicKey)).toBe(alg)
    expect(new KeyObjectSigner(kp.privateKey).defaultAlgorithm).toBe(alg)
  })

  it('rejects unsupported keys and types', () => {
    expect(() => defaultAlgorithmFor(generateKeyPairSync('ed25519').publicKey)).toThrow(TypeError)
    expect(() => defaultAlgorithmFor(generateKeyPairSync('ec', { namedCurve: 'secp256k1' }).publicKey)).toThrow(TypeError)
    expect(() => generateKeyPair('dsa' as KeyPairType)).toThrow(TypeError)
    expect(() => new KeyObjectSigner(generateKeyPair('ec-p256').publicKey)).toThrow(TypeError)
  })
})

describe('KeyObjectSigner', () => {
  const p256 = generateKeyPair('ec-p256')
  const p384 = generateKeyPair('ec-p384')
  const rsa = generateKeyPair('rsa-2048')

  const good: Array<[string, typeof p256, SignatureAlgorithm, (sig: Uint8Array) => boolean]> = [
    ['ES256 is raw r||s', p256, 'ES256', (s) => s.length === 64 && verify('sha256', data, { key: p256.publicKey, dsaEncoding: 'ieee-p1363' }, s)],
    ['ES384 is raw r||s', p384, 'ES384', (s) => s.length === 96 && verify('sha384', data, { key: p384.publicKey, dsaEncoding: 'ieee-p1363' }, s)],
    ['RS256 is PKCS#1 v1.5', rsa, 'RS256', (s) => verify('sha256', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PADDING }, s)],
    ['RS512 is PKCS#1 v1.5', rsa, 'RS512', (s) => verify('sha512', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PADDING }, s)],
    [
      'PS256 is PSS with salt = 32',
      rsa,
      'PS256',
      (s) => verify('sha256', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 32 }, s),
    ],
    [
      'PS384 is PSS with salt = 48',
      rsa,
      'PS384',
      (s) => verify('sha384', data, { key: rsa.publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }, s),
    ],
  ]
  it.each(good)('%s (async and sync)', async (_name, kp, alg, check) => {
    const signer = new KeyObjectSigner(kp.privateKey)
    expect(signer.publicKey.export({ type: 'spki', format: 'der' })).toEqual(kp.publicKey.export({ type: 'spki', format: 'der' }))
    expect(check(await signer.sign(data, alg))).toBe(true)
    expect(check(signer.signSync(data, alg))).toBe(true)
  })

  const mismatched: Array<[string, typeof p256, SignatureAlgorithm]> = [
    ['ES384 with a P-256 key', p256, 'ES384'],
    ['ES256 with a P-384 key', p384, 'ES256'],
    ['RS256 with an EC key', p256, 'RS256'],
    ['PS256 with an EC key', p256, 'PS256'],
    ['ES256 with an RSA key', rsa, 'ES256'],
    ['an unknown algorithm', p256, 'HS256' as SignatureAlgorithm],
  ]
  it.each(mismatched)('rejects %s with TypeError', async (_name, kp, alg) => {
    const signer = new KeyObjectSigner(kp.privateKey)
    await expect(signer.sign(data, alg)).rejects.toThrow(TypeError)
    expect(() => signer.signSync(data, alg)).toThrow(TypeError)
  })

  it('exposes only the public key', () => {
    const signer = new KeyObjectSigner(p256.privateKey)
    expect(signer.publicKey.type).toBe('public')
    expect(Object.keys(signer)).not.toContain('privateKey')
    expect(createPublicKey(p256.privateKey).equals(signer.publicKey)).toBe(true)
  })
})
