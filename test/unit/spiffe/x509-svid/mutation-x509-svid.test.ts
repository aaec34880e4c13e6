import { generateKeyPairSync } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { DerError } from '../../../../src/spiffe/x509-svid/der.js'
import { X509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import { toPem } from '../../../../src/spiffe/x509-svid/pem.js'
import { ca, HOUR, ID, leaf, LEAF_KEY, NOW, refusal } from './mutation-certs.js'

// x509-svid.ts: X509Svid.parse / fromChain refusals with their exact code,
// message and cause, the size and count limits at their boundaries, and the
// accessors (test/mutation-survivors.md, x509-svid). Titles stay plain:
// Stryker's vitest runner selects tests by name.

const root = ca('root')
const inter = ca('inter', root)
const leafDer = leaf(inter, { notBefore: new Date(NOW.getTime() - 2 * HOUR), notAfter: new Date(NOW.getTime() + 3 * HOUR) })
const pemOf = (label: string, der: Uint8Array) => `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64')}\n-----END ${label}-----\n`
const certPem = (der: Uint8Array) => pemOf('CERTIFICATE', der)
const pkcs8 = LEAF_KEY.privateKey.export({ type: 'pkcs8', format: 'der' })
const invalid = (message: string) => ({ code: 'ERR_X509_SVID_INVALID', message: `x509svid: ${message}` })
const keyInvalid = (message: string) => ({ code: 'ERR_KEY_INVALID', message: `x509svid: ${message}` })

describe('X509Svid.fromChain', () => {
  it('keeps copies of the certificates, the leaf dates, the id and an empty hint', () => {
    const input = new Uint8Array(leafDer)
    const svid = X509Svid.fromChain([input, inter.der])
    input[0] = 0
    expect(svid.leaf).toEqual(leafDer)
    expect(svid.certificates).toEqual([leafDer, inter.der])
    expect(Object.isFrozen(svid.certificates)).toBe(true)
    expect(svid.id.toString()).toBe(ID)
    expect(svid.hint).toBe('')
    expect(svid.privateKey).toBeUndefined()
    expect(svid.notBefore).toEqual(new Date(NOW.getTime() - 2 * HOUR))
    expect(svid.notAfter).toEqual(new Date(NOW.getTime() + 3 * HOUR))
  })

  it('TypeError for a chain that is not an array', () => {
    expect(() => X509Svid.fromChain('x' as never)).toThrow(new TypeError('chainDer must be an array of DER certificates'))
  })

  it('refuses an empty chain', () => {
    expect(refusal(() => X509Svid.fromChain([]))).toMatchObject(invalid('no certificates found'))
  })

  it('takes 16 certificates and refuses 17', () => {
    const sixteen = [leafDer, ...Array<Uint8Array>(15).fill(root.der)]
    expect(X509Svid.fromChain(sixteen).certificates).toHaveLength(16)
    expect(refusal(() => X509Svid.fromChain([...sixteen, root.der]))).toMatchObject(invalid('chain has more than 16 certificates'))
  })

  it('takes a hint of 1024 bytes and refuses 1025, counted in UTF-8 bytes', () => {
    expect(X509Svid.fromChain([leafDer], undefined, { hint: 'h'.repeat(1024) }).hint).toHaveLength(1024)
    expect(X509Svid.fromChain([leafDer], undefined, { hint: 'é'.repeat(512) }).hint).toHaveLength(512)
    const tooLong = new TypeError('hint must be a string of at most 1024 bytes')
    expect(() => X509Svid.fromChain([leafDer], undefined, { hint: 'h'.repeat(1025) })).toThrow(tooLong)
    expect(() => X509Svid.fromChain([leafDer], undefined, { hint: 'é'.repeat(513) })).toThrow(tooLong)
    expect(() => X509Svid.fromChain([leafDer], undefined, { hint: 7 as never })).toThrow(tooLong)
  })

  it('TypeError for a certificate that is not a Uint8Array', () => {
    expect(() => X509Svid.fromChain([leafDer, 'x' as never])).toThrow(new TypeError('certificates must be Uint8Array'))
  })

  it('names the certificate that cannot be parsed', () => {
    const junk = Uint8Array.of(0x30, 0x00)
    expect(refusal(() => X509Svid.fromChain([junk]))).toMatchObject(invalid('leaf certificate cannot be parsed'))
    expect(refusal(() => X509Svid.fromChain([leafDer, inter.der, junk]))).toMatchObject(invalid('certificate 2 cannot be parsed'))
  })

  it('checks the leaf rules and each signing certificate', () => {
    expect(refusal(() => X509Svid.fromChain([root.der]))).toMatchObject(invalid('certificate has no URI SAN'))
    expect(refusal(() => X509Svid.fromChain([leafDer, inter.der, leafDer]))).toMatchObject(invalid('signing certificate must have CA flag set to true'))
  })

  it('TypeError for a private key that is not a private KeyObject', () => {
    const err = new TypeError('privateKey must be a private KeyObject')
    expect(() => X509Svid.fromChain([leafDer], LEAF_KEY.publicKey)).toThrow(err)
    expect(() => X509Svid.fromChain([leafDer], null as never)).toThrow(err)
    expect(() => X509Svid.fromChain([leafDer], 'key' as never)).toThrow(err)
  })

  it('TypeError for a function posing as a private key', () => {
    expect(() => X509Svid.fromChain([leafDer], Object.assign(() => undefined, { type: 'private' }) as never)).toThrow(
      new TypeError('privateKey must be a private KeyObject'),
    )
  })

  it('refuses an object posing as a private KeyObject, with the cause', () => {
    const r = refusal(() => X509Svid.fromChain([leafDer], { type: 'private' } as never))
    expect(r).toMatchObject(keyInvalid('private key cannot be used'))
    expect(r.cause).toBeInstanceOf(Error)
  })

  it('refuses a private key of another certificate', () => {
    const r = refusal(() => X509Svid.fromChain([leafDer], generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey))
    expect(r).toMatchObject(keyInvalid('private key does not match certificate public key'))
    expect(r.cause).toBeUndefined()
  })

  it('keeps the matching private key, and withHint keeps key and chain', () => {
    const svid = X509Svid.fromChain([leafDer, inter.der], LEAF_KEY.privateKey, { hint: 'a' })
    expect(svid.privateKey).toBe(LEAF_KEY.privateKey)
    const again = svid.withHint('b')
    expect([again.hint, again.privateKey, again.certificates]).toEqual(['b', LEAF_KEY.privateKey, [leafDer, inter.der]])
  })
})

describe('X509Svid output forms', () => {
  const svid = X509Svid.fromChain([leafDer, inter.der], LEAF_KEY.privateKey)

  it('certificatesDer concatenates the chain', () => {
    expect(Buffer.from(svid.certificatesDer())).toEqual(Buffer.concat([leafDer, inter.der]))
  })

  it('certificatesPem writes 64-column CERTIFICATE blocks', () => {
    const text = svid.certificatesPem()
    const b64 = Buffer.from(leafDer).toString('base64')
    expect(text.startsWith(`-----BEGIN CERTIFICATE-----\n${b64.slice(0, 64)}\n${b64.slice(64, 128)}\n`)).toBe(true)
    expect(text.split('-----BEGIN CERTIFICATE-----')).toHaveLength(3)
    expect(text).toBe(toPem('CERTIFICATE', leafDer) + toPem('CERTIFICATE', inter.der))
    expect(X509Svid.parse(text).certificates).toEqual([leafDer, inter.der])
  })

  it('privateKeyPkcs8Der and privateKeyPem export the key', () => {
    expect(Buffer.from(svid.privateKeyPkcs8Der())).toEqual(pkcs8)
    expect(svid.privateKeyPem()).toBe(
      pemOf('PRIVATE KEY', pkcs8)
        .replace(/(.{64})/g, '$1\n')
        .replace(/\n\n/g, '\n'),
    )
  })

  it('TypeError when there is no key to export', () => {
    const bare = X509Svid.fromChain([leafDer])
    expect(() => bare.privateKeyPkcs8Der()).toThrow(new TypeError('this X509Svid holds no private key'))
    expect(() => bare.privateKeyPem()).toThrow(new TypeError('this X509Svid holds no private key'))
  })
})

describe('X509Svid.parse certificates', () => {
  it('reads PEM text, PEM bytes and concatenated DER', () => {
    const text = certPem(leafDer) + certPem(inter.der)
    expect(X509Svid.parse(text).certificates).toEqual([leafDer, inter.der])
    expect(X509Svid.parse(new Uint8Array(Buffer.from(text, 'latin1'))).certificates).toEqual([leafDer, inter.der])
    expect(X509Svid.parse(new Uint8Array(Buffer.concat([leafDer, inter.der]))).certificates).toEqual([leafDer, inter.der])
  })

  it('skips blocks of other labels', () => {
    const text = pemOf('PRIVATE KEY', pkcs8) + certPem(leafDer) + pemOf('X509 CRL', Uint8Array.of(1, 2, 3))
    expect(X509Svid.parse(text).certificates).toEqual([leafDer])
  })

  it('TypeError for input that is neither text nor bytes', () => {
    expect(() => X509Svid.parse(42 as never)).toThrow(new TypeError('certificates must be a string or Uint8Array'))
  })

  it('refuses text over 2 MiB and reads it at 2 MiB', () => {
    const limit = 2 * 16 * 65536
    expect(refusal(() => X509Svid.parse(' '.repeat(limit + 1)))).toMatchObject(invalid('certificate input exceeds 1048576 bytes'))
    expect(refusal(() => X509Svid.parse(' '.repeat(limit)))).toMatchObject(invalid('no certificates found'))
    expect(refusal(() => X509Svid.parse(new Uint8Array(limit + 1).fill(0x20)))).toMatchObject(invalid('certificate input exceeds 1048576 bytes'))
    expect(refusal(() => X509Svid.parse(new Uint8Array(limit).fill(0x20)))).toMatchObject(invalid('no certificates found'))
  })

  it('refuses malformed PEM and PEM without certificates', () => {
    expect(refusal(() => X509Svid.parse('-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n'))).toMatchObject(
      invalid('certificate PEM is malformed'),
    )
    expect(refusal(() => X509Svid.parse(pemOf('PRIVATE KEY', pkcs8)))).toMatchObject(invalid('no certificates found'))
    expect(refusal(() => X509Svid.parse(''))).toMatchObject(invalid('no certificates found'))
  })

  it('refuses DER with a trailing non-SEQUENCE element', () => {
    const r = refusal(() => X509Svid.parse(new Uint8Array(Buffer.concat([leafDer, Buffer.from([0x04, 0x00])]))))
    expect(r).toMatchObject(invalid('certificate DER is malformed'))
    expect((r.cause as Error).message).toBe('not a SEQUENCE')
  })

  it('refuses truncated DER with the DER error as cause', () => {
    const r = refusal(() => X509Svid.parse(leafDer.subarray(0, leafDer.length - 1)))
    expect(r).toMatchObject(invalid('certificate DER is malformed'))
    expect(r.cause).toBeInstanceOf(DerError)
    expect((r.cause as Error).message).toBe('truncated element')
  })

  it('splits 16 DER certificates and refuses 17', () => {
    const sixteen = Buffer.concat([leafDer, ...Array<Uint8Array>(15).fill(root.der)])
    expect(X509Svid.parse(new Uint8Array(sixteen)).certificates).toHaveLength(16)
    const r = refusal(() => X509Svid.parse(new Uint8Array(Buffer.concat([sixteen, root.der]))))
    expect(r).toMatchObject(invalid('certificate DER is malformed'))
    expect((r.cause as Error).message).toBe('too many certificates')
  })

  it('refuses 17 PEM certificates', () => {
    const text = certPem(leafDer) + certPem(root.der).repeat(16)
    expect(refusal(() => X509Svid.parse(text))).toMatchObject(invalid('chain has more than 16 certificates'))
  })
})

describe('X509Svid.parse private keys', () => {
  const ec = LEAF_KEY.privateKey
  it('reads PKCS#8 DER, PKCS#8, SEC1 PEM text and PEM bytes', () => {
    expect(X509Svid.parse(certPem(leafDer), new Uint8Array(pkcs8)).privateKey?.equals(ec)).toBe(true)
    for (const k of [ec.export({ type: 'pkcs8', format: 'pem' }) as string, ec.export({ type: 'sec1', format: 'pem' }) as string]) {
      expect(X509Svid.parse(certPem(leafDer), k).privateKey?.equals(ec)).toBe(true)
      expect(X509Svid.parse(certPem(leafDer), new Uint8Array(Buffer.from(k))).privateKey?.equals(ec)).toBe(true)
    }
  })

  it('reads a PKCS#1 RSA PEM key as PKCS#1', () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const rsaLeaf = leaf(root, { publicKey: rsa.publicKey })
    const svid = X509Svid.parse(certPem(rsaLeaf), rsa.privateKey.export({ type: 'pkcs1', format: 'pem' }))
    expect(svid.privateKey?.asymmetricKeyType).toBe('rsa')
    // The same bytes as DER are read as PKCS#8, which they are not.
    const r = refusal(() => X509Svid.parse(certPem(rsaLeaf), new Uint8Array(rsa.privateKey.export({ type: 'pkcs1', format: 'der' }))))
    expect(r).toMatchObject(keyInvalid('private key cannot be parsed'))
    expect(r.cause).toBeInstanceOf(Error)
  })

  it('TypeError for a key that is neither text nor bytes', () => {
    expect(() => X509Svid.parse(certPem(leafDer), 42 as never)).toThrow(new TypeError('key must be a string or Uint8Array'))
  })

  it('refuses key input over 64 KiB and reads it at 64 KiB', () => {
    expect(refusal(() => X509Svid.parse(certPem(leafDer), ' '.repeat(65537)))).toMatchObject(keyInvalid('key input exceeds 65536 bytes'))
    expect(refusal(() => X509Svid.parse(certPem(leafDer), new Uint8Array(65537).fill(0x20)))).toMatchObject(keyInvalid('key input exceeds 65536 bytes'))
    const one = 'expected exactly one unencrypted private key PEM block'
    expect(refusal(() => X509Svid.parse(certPem(leafDer), ' '.repeat(65536)))).toMatchObject(keyInvalid(one))
    expect(refusal(() => X509Svid.parse(certPem(leafDer), new Uint8Array(65536).fill(0x20)))).toMatchObject(keyInvalid(one))
  })

  it('wants exactly one key block', () => {
    const one = keyInvalid('expected exactly one unencrypted private key PEM block')
    const k = ec.export({ type: 'pkcs8', format: 'pem' }) as string
    expect(refusal(() => X509Svid.parse(certPem(leafDer), k + k))).toMatchObject(one)
    expect(refusal(() => X509Svid.parse(certPem(leafDer), certPem(leafDer)))).toMatchObject(one)
    expect(refusal(() => X509Svid.parse(certPem(leafDer), '-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n'))).toMatchObject(one)
    const enc = ec.export({ type: 'pkcs8', format: 'pem', cipher: 'aes-128-cbc', passphrase: 'x' }) as string
    expect(refusal(() => X509Svid.parse(certPem(leafDer), enc))).toMatchObject(one)
    // Another block beside the key is fine.
    expect(X509Svid.parse(certPem(leafDer), certPem(leafDer) + k).privateKey?.equals(ec)).toBe(true)
  })

  it('refuses a key block that does not hold a key of its label', () => {
    const r = refusal(() => X509Svid.parse(certPem(leafDer), pemOf('EC PRIVATE KEY', Uint8Array.of(0x30, 0x03, 0x02, 0x01, 0x01))))
    expect(r).toMatchObject(keyInvalid('private key cannot be parsed'))
    expect(r.cause).toBeInstanceOf(Error)
  })

  it('refuses key types other than EC and RSA', () => {
    const ed = generateKeyPairSync('ed25519').privateKey
    expect(refusal(() => X509Svid.parse(certPem(leafDer), ed.export({ type: 'pkcs8', format: 'pem' }) as string))).toMatchObject(
      keyInvalid('unsupported private key type ed25519'),
    )
  })

  it('refuses a key that does not match the leaf', () => {
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey
    expect(refusal(() => X509Svid.parse(certPem(leafDer), other.export({ type: 'pkcs8', format: 'pem' }) as string))).toMatchObject(
      keyInvalid('private key does not match certificate public key'),
    )
  })

  it('passes the hint through', () => {
    expect(X509Svid.parse(certPem(leafDer), undefined, { hint: 'x' }).hint).toBe('x')
    expect(X509Svid.parse(certPem(leafDer)).privateKey).toBeUndefined()
  })
})
