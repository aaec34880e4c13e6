import { sign, verify, createPublicKey } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { newEcPrivateKey, newPrivateKeyAsync } from '../../../../src/common/crypto/new-key.js'

describe('fresh private keys imported from their PKCS#8 encoding', () => {
  const data = Buffer.from('payload')
  const usable = (k: ReturnType<typeof newEcPrivateKey>, hash: string) => verify(hash, data, createPublicKey(k), sign(hash, data, k))

  it.each([
    { curve: 'P-256' as const, named: 'prime256v1' },
    { curve: 'P-384' as const, named: 'secp384r1' },
  ])('newEcPrivateKey($curve) gives a distinct, usable private key on that curve', ({ curve, named }) => {
    const a = newEcPrivateKey(curve)
    const b = newEcPrivateKey(curve)
    expect(a.type).toBe('private')
    expect(a.asymmetricKeyDetails?.namedCurve).toBe(named)
    expect(usable(a, 'sha256')).toBe(true)
    expect(createPublicKey(a).export({ format: 'der', type: 'spki' })).not.toEqual(createPublicKey(b).export({ format: 'der', type: 'spki' }))
    // A JWK export (the call that could deadlock against a dying generation job) works on it.
    expect(createPublicKey(a).export({ format: 'jwk' }).crv).toBe(curve)
  })

  it('newPrivateKeyAsync makes EC and RSA keys', async () => {
    const ec = await newPrivateKeyAsync({ ec: 'P-384' })
    expect(ec.asymmetricKeyDetails?.namedCurve).toBe('secp384r1')
    const rsa = await newPrivateKeyAsync({ rsa: 2048 })
    expect(rsa.asymmetricKeyDetails?.modulusLength).toBe(2048)
    expect(usable(rsa, 'sha256')).toBe(true)
  })

  it('newPrivateKeyAsync rejects an impossible request', async () => {
    await expect(newPrivateKeyAsync({ rsa: 7 })).rejects.toBeInstanceOf(Error)
  })
})
