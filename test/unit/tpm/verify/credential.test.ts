import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { TPM_ALG, encodeTpm2bPublic } from '../../../../src/tpm/structures.js'
import { ecPublicKeyObject, makeCredential } from '../../../../src/tpm/verify/credential.js'
import { ekTargetFromPublic } from '../../../../src/tpm/verify/public-key.js'
import { softActivateCredential, softEccKey, softRsaKey } from './soft-tpm.js'

const eks = [
  { title: 'RSA-2048 EK, SHA-256, AES-128', ek: () => softRsaKey({ ek: true }) },
  { title: 'RSA-2048 EK, SHA-384 nameAlg', ek: () => softRsaKey({ ek: true, nameAlg: TPM_ALG.SHA384 }) },
  { title: 'ECC P-256 EK, SHA-256, AES-128', ek: () => softEccKey({ ek: true }) },
  { title: 'ECC P-384 EK, SHA-384, AES-256 (swtpm high range)', ek: () => softEccKey({ ek: true, curve: 'P-384', nameAlg: TPM_ALG.SHA384, symBits: 256 }) },
]

describe('makeCredential', () => {
  it.each(eks)('round-trips through a software ActivateCredential ($title)', ({ ek }) => {
    const key = ek()
    const ak = softEccKey()
    const secret = randomBytes(32)
    const { credentialBlob, encryptedSecret } = makeCredential({ ekPublic: key.bytes, akName: ak.name, secret })
    expect(Buffer.from(softActivateCredential(key, ak.name, credentialBlob, encryptedSecret)).equals(secret)).toBe(true)
  })

  it.each(eks)('fails the integrity check when activated for another AK ($title)', ({ ek }) => {
    const key = ek()
    const ak = softEccKey()
    const other = softEccKey()
    const { credentialBlob, encryptedSecret } = makeCredential({ ekPublic: key.public, akName: ak.name, secret: randomBytes(16) })
    expect(() => softActivateCredential(key, other.name, credentialBlob, encryptedSecret)).toThrow('TPM_RC_INTEGRITY')
  })

  it('accepts TPM2B_PUBLIC bytes and a prepared target alike', () => {
    const key = softRsaKey({ ek: true })
    const ak = softRsaKey()
    const secret = randomBytes(32)
    for (const ekPublic of [encodeTpm2bPublic(key.bytes), ekTargetFromPublic(key.bytes)]) {
      const c = makeCredential({ ekPublic, akName: ak.name, secret })
      expect(Buffer.from(softActivateCredential(key, ak.name, c.credentialBlob, c.encryptedSecret)).equals(secret)).toBe(true)
    }
  })

  it('uses a fresh seed each time', () => {
    const key = softRsaKey({ ek: true })
    const ak = softRsaKey()
    const secret = randomBytes(32)
    const a = makeCredential({ ekPublic: key.bytes, akName: ak.name, secret })
    const b = makeCredential({ ekPublic: key.bytes, akName: ak.name, secret })
    expect(Buffer.from(a.credentialBlob).equals(b.credentialBlob)).toBe(false)
  })

  it.each([
    { title: 'empty secret', secret: new Uint8Array(0) },
    { title: 'secret longer than the digest', secret: new Uint8Array(33) },
  ])('rejects $title', ({ secret }) => {
    const key = softRsaKey({ ek: true })
    expect(() => makeCredential({ ekPublic: key.bytes, akName: softEccKey().name, secret })).toThrow(RangeError)
  })

  it('rejects an EK without AES-CFB (not a storage key)', () => {
    const ak = softRsaKey()
    expect(() => makeCredential({ ekPublic: ak.bytes, akName: ak.name, secret: randomBytes(32) })).toThrow(
      expect.objectContaining({ code: 'ERR_TPM_VERIFICATION_FAILED' }),
    )
  })
})

describe('makeCredential bounds', () => {
  const rsaEk = softRsaKey({ ek: true })
  const ak = softEccKey()

  it('names the allowed credential size', () => {
    expect(() => makeCredential({ ekPublic: rsaEk.bytes, akName: ak.name, secret: new Uint8Array(33) })).toThrow(
      new RangeError('credential must be 1..32 bytes'),
    )
  })

  it('refuses an AK name shorter than its algorithm ID, and takes one of two bytes', () => {
    expect(() => makeCredential({ ekPublic: rsaEk.bytes, akName: new Uint8Array(1), secret: new Uint8Array(8) })).toThrow(new RangeError('AK name too short'))
    const c = makeCredential({ ekPublic: rsaEk.bytes, akName: new Uint8Array([0, 0x0b]), secret: new Uint8Array(8).fill(7) })
    expect(Buffer.from(softActivateCredential(rsaEk, new Uint8Array([0, 0x0b]), c.credentialBlob, c.encryptedSecret))).toEqual(Buffer.alloc(8, 7))
  })

  it.each([128, 192, 256])('takes a %i-bit EK symmetric key', (bits) => {
    const target = { ...ekTargetFromPublic(rsaEk.bytes), symKeyBits: bits }
    expect(makeCredential({ ekPublic: target, akName: ak.name, secret: new Uint8Array(16) }).credentialBlob.length).toBeGreaterThan(16)
  })

  it.each([64, 129, 512])('refuses a %i-bit EK symmetric key', (bits) => {
    const target = { ...ekTargetFromPublic(rsaEk.bytes), symKeyBits: bits }
    expect(() => makeCredential({ ekPublic: target, akName: ak.name, secret: new Uint8Array(16) })).toThrow(
      new RangeError(`unsupported EK symmetric key size ${bits}`),
    )
  })

  it('is deterministic given the randomness (ECC ephemeral key and seed)', () => {
    const ecc = softEccKey({ ek: true })
    let n = 0
    const random = (size: number) => new Uint8Array(size).fill((++n % 200) + 1)
    const a = makeCredential({ ekPublic: ecc.bytes, akName: ak.name, secret: new Uint8Array(16), random })
    n = 0
    const b = makeCredential({ ekPublic: ecc.bytes, akName: ak.name, secret: new Uint8Array(16), random })
    expect(Buffer.from(a.encryptedSecret).equals(b.encryptedSecret)).toBe(true)
    expect(Buffer.from(a.credentialBlob).equals(b.credentialBlob)).toBe(true)
  })
})

describe('ecPublicKeyObject', () => {
  it('left-pads short coordinates and refuses long ones', () => {
    const k = softEccKey()
    const { x, y } = k.public.unique as { x: Uint8Array; y: Uint8Array }
    expect(ecPublicKeyObject('P-256', x, y).equals(k.publicKey)).toBe(true)
    const stripped = x[0] === 0 ? x.subarray(1) : x
    expect(ecPublicKeyObject('P-256', stripped, y).asymmetricKeyDetails?.namedCurve).toBe('prime256v1')
    expect(() => ecPublicKeyObject('P-256', new Uint8Array(33), y)).toThrow(new RangeError('EC coordinate larger than the curve size'))
  })
})
