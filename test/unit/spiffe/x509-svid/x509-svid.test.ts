import { createPublicKey, generateKeyPairSync } from 'node:crypto'
import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import { IdentityError, isIdentityError, type ErrorCode } from '../../../../src/errors/index.js'
import { generateKeyPair, type KeyPairType } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { createX509Svid, parseCsr, parseLeafSpiffeId, X509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import { spkiOf } from '../../../../src/spiffe/x509-svid/spki.js'
import { HOUR, KU, makeIntermediate, makeRoot, NOW, peculiarLeaf, pem, type TestCa } from './pki.js'

const id = SpiffeId.fromString('spiffe://example.org/ns/web')
let root: TestCa
let inter: TestCa
const key = generateKeyPair('ec-p256')
let leaf: Uint8Array

function codeOf(fn: () => unknown): ErrorCode | 'ok' {
  try {
    fn()
    return 'ok'
  } catch (err) {
    if (isIdentityError(err)) return err.code
    throw err
  }
}

beforeAll(async () => {
  root = await makeRoot()
  inter = await makeIntermediate(root)
  leaf = await createX509Svid({
    spiffeId: id,
    publicKey: key.publicKey,
    signer: inter.signer,
    issuer: { certificate: inter.certificate },
    notAfter: new Date(NOW.getTime() + HOUR),
  })
})

describe('X509Svid.parse / fromChain', () => {
  it('parses PEM chain + PKCS#8 PEM key and round-trips', () => {
    const svid = X509Svid.parse(pem(leaf) + pem(inter.certificate), key.privateKey.export({ type: 'pkcs8', format: 'pem' }), { hint: 'internal' })
    expect(svid.id.equals(id)).toBe(true)
    expect(svid.hint).toBe('internal')
    expect(svid.certificates).toEqual([leaf, inter.certificate])
    expect(svid.notAfter.getTime()).toBeGreaterThan(svid.notBefore.getTime())
    const again = X509Svid.parse(svid.certificatesDer(), svid.privateKeyPkcs8Der())
    expect(again.certificatesPem()).toBe(svid.certificatesPem())
    expect(X509Svid.parse(svid.certificatesPem(), svid.privateKeyPem()).id.equals(id)).toBe(true)
    expect(again.withHint('x').hint).toBe('x')
  })

  it('accepts SEC1 and PKCS#1 PEM keys', async () => {
    expect(X509Svid.parse(pem(leaf), key.privateKey.export({ type: 'sec1', format: 'pem' }) as string).privateKey).toBeDefined()
    const rsa = generateKeyPair('rsa-2048')
    const rsaLeaf = await createX509Svid({
      spiffeId: id,
      publicKey: rsa.publicKey,
      signer: root.signer,
      issuer: { certificate: root.certificate },
      notAfter: new Date(NOW.getTime() + HOUR),
    })
    expect(X509Svid.parse(pem(rsaLeaf), rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }) as string).privateKey?.asymmetricKeyType).toBe('rsa')
  })

  it('works without a key', () => {
    const svid = X509Svid.fromChain([leaf])
    expect(svid.privateKey).toBeUndefined()
    expect(() => svid.privateKeyPkcs8Der()).toThrow(TypeError)
  })

  const bad: Array<[string, () => unknown, ErrorCode]> = [
    [
      'a mismatched private key',
      () => X509Svid.parse(pem(leaf), generateKeyPair('ec-p256').privateKey.export({ type: 'pkcs8', format: 'der' })),
      'ERR_KEY_INVALID',
    ],
    ['a mismatched KeyObject', () => X509Svid.fromChain([leaf], generateKeyPair('ec-p256').privateKey), 'ERR_KEY_INVALID'],
    ['an unparsable key', () => X509Svid.parse(pem(leaf), new Uint8Array([0x30, 1, 2])), 'ERR_KEY_INVALID'],
    [
      'an encrypted key',
      () => X509Svid.parse(pem(leaf), key.privateKey.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-128-cbc', passphrase: 'x' })),
      'ERR_KEY_INVALID',
    ],
    ['no certificates', () => X509Svid.parse('no pem here'), 'ERR_X509_SVID_INVALID'],
    ['a CA as leaf', () => X509Svid.fromChain([root.certificate]), 'ERR_X509_SVID_INVALID'],
    ['a leaf as intermediate', () => X509Svid.fromChain([leaf, leaf]), 'ERR_X509_SVID_INVALID'],
    ['malformed DER', () => X509Svid.parse(new Uint8Array([0x30, 0x82, 0xff])), 'ERR_X509_SVID_INVALID'],
    ['malformed PEM', () => X509Svid.parse('-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n'), 'ERR_X509_SVID_INVALID'],
  ]
  it.each(bad)('rejects %s with %s', (_name, fn, want) => {
    expect(codeOf(fn)).toBe(want)
  })

  it('rejects a leaf with two URI SANs', async () => {
    const two = await peculiarLeaf(root, key.publicKey, { uris: [id.toString(), 'spiffe://example.org/b'], keyUsage: KU.digitalSignature })
    expect(codeOf(() => X509Svid.fromChain([two]))).toBe('ERR_X509_SVID_INVALID')
  })
})

describe('spkiOf builds the same SPKI as OpenSSL', () => {
  const types: KeyPairType[] = ['ec-p256', 'ec-p384', 'ec-p521', 'rsa-2048']
  it.each(types)('%s', (type) => {
    for (let i = 0; i < 5; i++) {
      const pub = createPublicKey(generateKeyPair(type).privateKey)
      expect(spkiOf(pub)).toEqual(pub.export({ type: 'spki', format: 'der' }))
    }
  })
  it('rejects other key types', () => {
    expect(() => spkiOf(generateKeyPairSync('ed25519').publicKey)).toThrow(TypeError)
  })
})

describe('properties: parsers only ever throw IdentityError', () => {
  const onlyIdentityErrors = (fn: () => unknown): boolean => {
    try {
      fn()
    } catch (err) {
      if (!(err instanceof IdentityError)) throw err
    }
    return true
  }
  // Bytes that look like DER more often than uniform noise.
  const derish = fc.oneof(
    fc.uint8Array({ maxLength: 600 }),
    fc.uint8Array({ maxLength: 600 }).map((b) => Uint8Array.of(0x30, 0x82, b.length >> 8, b.length & 0xff, ...b)),
  )
  const mutatedLeaf = fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
    const b = new Uint8Array(leaf)
    const at = i % b.length
    b[at] = b[at]! ^ x
    return b
  })
  const truncatedLeaf = fc.nat().map((n) => leaf.subarray(0, n % leaf.length))

  it('X509Svid.parse on bytes and strings', () => {
    fc.assert(
      fc.property(fc.oneof(derish, mutatedLeaf, truncatedLeaf), (b) => onlyIdentityErrors(() => X509Svid.parse(b))),
      { numRuns: 500 },
    )
    fc.assert(
      fc.property(fc.string({ maxLength: 400 }), (s) => onlyIdentityErrors(() => X509Svid.parse(s))),
      { numRuns: 300 },
    )
    fc.assert(
      fc.property(fc.base64String({ maxLength: 400 }), (s) =>
        onlyIdentityErrors(() => X509Svid.parse(`-----BEGIN CERTIFICATE-----\n${s}\n-----END CERTIFICATE-----\n`)),
      ),
      { numRuns: 300 },
    )
    fc.assert(
      fc.property(derish, (b) => onlyIdentityErrors(() => X509Svid.parse(pem(leaf), b))),
      { numRuns: 200 },
    )
  })

  it('parseLeafSpiffeId', () => {
    fc.assert(
      fc.property(fc.oneof(derish, mutatedLeaf, truncatedLeaf), (b) => onlyIdentityErrors(() => parseLeafSpiffeId(b))),
      { numRuns: 1000 },
    )
  })

  it('parseCsr', async () => {
    const { createCsr } = await import('../../../../src/spiffe/x509-svid/index.js')
    const csr = await createCsr({ privateKey: key.privateKey, spiffeId: id })
    const mutated = fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })).map(([i, x]) => {
      const b = new Uint8Array(csr)
      b[i % b.length] = b[i % b.length]! ^ x
      return b
    })
    fc.assert(
      fc.property(fc.oneof(derish, mutated), (b) => onlyIdentityErrors(() => parseCsr(b))),
      { numRuns: 1000 },
    )
  })
})
