import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/index.js'
import { TPM_ALG, parseTpmtSignature, type TpmtPublic } from '../../../../src/tpm/structures.js'
import { parseOrFail, verificationFailed, verifyTpmSignature } from '../../../../src/tpm/verify/signature.js'
import { softEccKey, softRsaKey, softSign } from './soft-tpm.js'

const FAILED = { code: 'ERR_TPM_VERIFICATION_FAILED' }
const catching = (fn: () => unknown): unknown => {
  try {
    fn()
  } catch (e) {
    return e
  }
  throw new Error('did not throw')
}

describe('verificationFailed', () => {
  it('carries details and cause only when given', () => {
    const bare = catching(() => verificationFailed('nope')) as IdentityError
    expect(bare).toMatchObject({ ...FAILED, message: 'nope', details: undefined })
    expect('cause' in bare).toBe(false)
    const cause = new Error('inner')
    const full = catching(() => verificationFailed('nope', { a: 1 }, cause)) as IdentityError
    expect(full).toMatchObject({ details: { a: 1 } })
    expect(full.cause).toBe(cause)
  })
})

describe('parseOrFail', () => {
  it.each([
    { title: 'an IdentityError', err: new IdentityError('ERR_TPM_PAYLOAD_INVALID', 'short') },
    { title: 'a RangeError', err: new RangeError('out of range') },
    { title: 'a TypeError', err: new TypeError('wrong type') },
  ])('turns $title into a verification failure', ({ err }) => {
    const e = catching(() =>
      parseOrFail('thing', () => {
        throw err
      }),
    ) as IdentityError
    expect(e).toMatchObject({ ...FAILED, message: 'thing is malformed' })
    expect(e.cause).toBe(err)
  })

  it('passes other errors through and returns the value', () => {
    const other = new Error('bug')
    expect(
      catching(() =>
        parseOrFail('thing', () => {
          throw other
        }),
      ),
    ).toBe(other)
    expect(parseOrFail('thing', () => 42)).toBe(42)
  })
})

describe('verifyTpmSignature', () => {
  const msg = new Uint8Array(randomBytes(64))
  const ecc = softEccKey()
  const rsa = softRsaKey()
  const signer = (k: typeof ecc) => ({ public: k.public, key: k.publicKey })
  const nullScheme = (k: typeof ecc) => ({
    public: { ...k.public, parameters: { ...k.public.parameters, scheme: { scheme: TPM_ALG.NULL } } } as TpmtPublic,
    key: k.publicKey,
  })

  it('accepts a decoded signature and returns it', () => {
    const sig = parseTpmtSignature(softSign(ecc, msg))
    expect(verifyTpmSignature(signer(ecc), msg, sig, 'x')).toBe(sig)
  })

  it('accepts any strong scheme from a key without a scheme of its own', () => {
    expect(verifyTpmSignature(nullScheme(rsa), msg, softSign(rsa, msg, { sigAlg: TPM_ALG.RSAPSS }), 'x').sigAlg).toBe(TPM_ALG.RSAPSS)
    expect(verifyTpmSignature(nullScheme(ecc), msg, softSign(ecc, msg, { hash: TPM_ALG.SHA384 }), 'x').hash).toBe(TPM_ALG.SHA384)
  })

  it.each([
    {
      title: 'a hash other than the key scheme',
      run: () => verifyTpmSignature(signer(ecc), msg, softSign(ecc, msg, { hash: TPM_ALG.SHA384 }), 'x'),
      reason: "x signature scheme does not match the signing key's scheme",
      details: { sigAlg: TPM_ALG.ECDSA, keyScheme: TPM_ALG.ECDSA },
    },
    {
      title: 'a scheme other than the key scheme',
      run: () => verifyTpmSignature(signer(rsa), msg, softSign(rsa, msg, { sigAlg: TPM_ALG.RSAPSS }), 'x'),
      reason: "x signature scheme does not match the signing key's scheme",
      details: { sigAlg: TPM_ALG.RSAPSS, keyScheme: TPM_ALG.RSASSA },
    },
    {
      title: 'an ECDSA signature from an RSA key',
      run: () => verifyTpmSignature(nullScheme(rsa), msg, softSign(ecc, msg), 'x'),
      reason: 'x ECDSA signature from a non-ECC key',
    },
    {
      title: 'an RSA signature from an ECC key',
      run: () => verifyTpmSignature(nullScheme(ecc), msg, softSign(rsa, msg), 'x'),
      reason: 'x RSA signature from a non-RSA key',
    },
    {
      title: 'a SHA-1 signature',
      run: () => verifyTpmSignature(nullScheme(rsa), msg, softSign(rsa, msg, { hash: TPM_ALG.SHA1 }), 'x'),
      reason: 'x signature uses a weak or unsupported hash',
      details: { hash: TPM_ALG.SHA1 },
    },
    {
      title: 'an RSA signature of the wrong length',
      run: () => verifyTpmSignature(signer(rsa), msg, { ...parseTpmtSignature(softSign(rsa, msg)), sig: new Uint8Array(7) } as never, 'x'),
      reason: 'x signature is invalid',
    },
    {
      title: 'bytes that are not a signature',
      run: () => verifyTpmSignature(signer(rsa), msg, new Uint8Array([0, 0x14]), 'x'),
      reason: 'x signature is malformed',
    },
  ])('rejects $title, with the reason', ({ run, reason, details }) => {
    expect(run).toThrow(expect.objectContaining({ ...FAILED, message: reason, ...(details ? { details } : {}) }))
  })

  it('reports a signature the crypto library cannot process as unverifiable', () => {
    const sig = parseTpmtSignature(softSign(ecc, msg))
    const ed = generateKeyPairSync('ed25519').publicKey
    const e = catching(() => verifyTpmSignature({ public: ecc.public, key: ed }, msg, sig, 'x')) as IdentityError
    expect(e).toMatchObject({ ...FAILED, message: 'x signature could not be verified' })
    expect(e.cause).toBeInstanceOf(Error)
  })
})
