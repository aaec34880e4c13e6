import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import * as asn1js from 'asn1js'
import * as pkijs from 'pkijs'
import { X509Certificate, type KeyObject } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { requireTools } from '../../../helpers/tools.js'
import { tempDir } from '../../../helpers/temp.js'
import { X509Bundle } from '../../../../src/spiffe/bundle/x509-bundle.js'
import { generateKeyPair, KeyObjectSigner, type KeyPairType } from '../../../../src/spiffe/key-signer.js'
import type { SignatureAlgorithm, Signer } from '../../../../src/spiffe/signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid, verifyX509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import { DAY, HOUR, makeIntermediate, makeRoot, NOW, openssl, writePem, type TestCa } from './pki.js'

const td = TrustDomain.fromString('example.org')
const id = SpiffeId.fromString('spiffe://example.org/ns/prod/agent/planner-7')

function leafOf(issuer: TestCa, key: KeyObject, extra: Partial<Parameters<typeof createX509Svid>[0]> = {}): Promise<Uint8Array> {
  return createX509Svid({
    spiffeId: id,
    publicKey: key,
    signer: issuer.signer,
    issuer: { certificate: issuer.certificate },
    notAfter: new Date(NOW.getTime() + HOUR),
    ...extra,
  })
}

describe('createCaCertificate / createX509Svid: structure (node, @peculiar/x509 and pkijs parse it)', () => {
  const issuerTypes: Array<[KeyPairType, string]> = [
    ['ec-p256', '1.2.840.10045.4.3.2'],
    ['ec-p384', '1.2.840.10045.4.3.3'],
    ['ec-p521', '1.2.840.10045.4.3.4'],
    ['rsa-2048', '1.2.840.113549.1.1.11'],
  ]
  it.each(issuerTypes)('issuer %s signs with %s', async (type, sigOid) => {
    const root = await makeRoot('example.org', type)
    const leafKey = generateKeyPair('ec-p256')
    const leaf = await leafOf(root, leafKey.publicKey, { dnsNames: ['planner.example.org', 'alt.example.org'] })
    const nodeCert = new X509Certificate(leaf)
    expect(nodeCert.verify(root.publicKey)).toBe(true)
    expect(nodeCert.checkIssued(new X509Certificate(root.certificate))).toBe(true)
    expect(nodeCert.subjectAltName).toBe('URI:spiffe://example.org/ns/prod/agent/planner-7, DNS:planner.example.org, DNS:alt.example.org')
    expect(nodeCert.ca).toBe(false)
    const p = new x509.X509Certificate(leaf)
    expect(p.signatureAlgorithm).toBeDefined()
    const pk = new pkijs.Certificate({ schema: asn1js.fromBER(new Uint8Array(leaf)).result })
    expect(pk.signatureAlgorithm.algorithmId).toBe(sigOid)
    expect(pk.version).toBe(2)
    const ku = p.getExtension(x509.KeyUsagesExtension)!
    expect(ku.critical).toBe(true)
    expect(ku.usages).toBe(x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.keyAgreement)
    const bc = p.getExtension(x509.BasicConstraintsExtension)!
    expect([bc.ca, bc.critical]).toEqual([false, true])
    expect(p.getExtension(x509.ExtendedKeyUsageExtension)!.usages).toEqual(['1.3.6.1.5.5.7.3.1', '1.3.6.1.5.5.7.3.2'])
    const ski = p.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId
    expect(ski).toBe(
      (await x509.SubjectKeyIdentifierExtension.create(leafKey.publicKey.export({ type: 'spki', format: 'der' }) as never, false, webcryptoProvider())).keyId,
    )
    const rootSki = new x509.X509Certificate(root.certificate).getExtension(x509.SubjectKeyIdentifierExtension)!.keyId
    expect(p.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(rootSki)
    expect(p.subjectName.getField('CN')).toEqual(['planner.example.org'])
    expect(p.subjectName.getField('O')).toEqual(['warrant'])
    expect(BigInt(`0x${nodeCert.serialNumber}`) > 0n).toBe(true)
  })

  it('writes the documented SPIRE-like defaults: notBefore backdated 10 s, O=warrant and a unique serialNumber', async () => {
    const root = await makeRoot()
    const before = Date.now()
    const a = new x509.X509Certificate(await leafOf(root, generateKeyPair('ec-p256').publicKey))
    const b = new x509.X509Certificate(await leafOf(root, generateKeyPair('ec-p256').publicKey))
    expect(a.notBefore.getTime()).toBeLessThanOrEqual(before - 9_000)
    expect(a.notBefore.getTime()).toBeGreaterThanOrEqual(before - 12_000)
    expect(a.serialNumber).not.toBe(b.serialNumber)
    expect(a.subject).not.toBe(b.subject)
    expect(a.subjectName.getField('O')).toEqual(['warrant'])
  })

  it('marks the URI SAN critical only when the subject is empty', async () => {
    const root = await makeRoot()
    const key = generateKeyPair('ec-p256').publicKey
    const empty = new x509.X509Certificate(await leafOf(root, key, { subject: {} }))
    expect(empty.subject).toBe('')
    expect(empty.getExtension(x509.SubjectAlternativeNameExtension)!.critical).toBe(true)
    const named = new x509.X509Certificate(await leafOf(root, key, { subject: { organization: 'acme', commonName: 'x' } }))
    expect(named.subject).toBe('O=acme, CN=x')
    expect(named.getExtension(x509.SubjectAlternativeNameExtension)!.critical).toBe(false)
  })

  it('clamps the leaf notAfter to the issuer notAfter', async () => {
    const root = await makeRoot('example.org', 'ec-p256', { notAfter: new Date(NOW.getTime() + 2 * HOUR) })
    const leaf = new X509Certificate(await leafOf(root, generateKeyPair('ec-p256').publicKey, { notAfter: new Date(NOW.getTime() + 10 * DAY) }))
    expect(new Date(leaf.validTo).getTime()).toBe(new Date(new X509Certificate(root.certificate).validTo).getTime())
  })

  it('writes GeneralizedTime after 2049', async () => {
    const kp = generateKeyPair('ec-p256')
    const signer = new KeyObjectSigner(kp.privateKey)
    const ca = await createCaCertificate({ trustDomain: td, publicKey: kp.publicKey, signer, notBefore: NOW, notAfter: new Date(Date.UTC(2060, 0, 1)) })
    expect(new x509.X509Certificate(ca).notAfter.toISOString()).toBe('2060-01-01T00:00:00.000Z')
  })

  it('builds CAs: self-signed root without AKI, intermediates with AKI and pathLen', async () => {
    const root = await makeRoot()
    const r = new x509.X509Certificate(root.certificate)
    expect(await r.isSelfSigned(webcryptoProvider())).toBe(true)
    expect(r.getExtension(x509.AuthorityKeyIdentifierExtension)).toBeNull()
    expect(r.getExtension(x509.SubjectAlternativeNameExtension)!.names.items.map((n) => n.value)).toEqual(['spiffe://example.org'])
    const ku = r.getExtension(x509.KeyUsagesExtension)!
    expect([ku.critical, ku.usages]).toEqual([true, x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature])
    const inter = await makeIntermediate(root, 'example.org', 'ec-p256', { maxPathLength: 0 })
    const i = new x509.X509Certificate(inter.certificate)
    const bc = i.getExtension(x509.BasicConstraintsExtension)!
    expect([bc.ca, bc.pathLength, bc.critical]).toEqual([true, 0, true])
    expect(i.getExtension(x509.AuthorityKeyIdentifierExtension)!.keyId).toBe(r.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId)
    expect(await i.verify({ publicKey: r.publicKey }, webcryptoProvider())).toBe(true)
  })

  const misuse: Array<[string, () => Promise<unknown>, ErrorConstructor | TypeErrorConstructor | RangeErrorConstructor]> = [
    ['a trust-domain ID as leaf ID', async () => leafOf(await makeRoot(), generateKeyPair('ec-p256').publicKey, { spiffeId: td.id() }), TypeError],
    ['a private key as leaf public key', async () => leafOf(await makeRoot(), generateKeyPair('ec-p256').privateKey), TypeError],
    [
      'a signer that does not match the issuer',
      async () => {
        const root = await makeRoot()
        const other = await makeRoot()
        return leafOf({ ...root, signer: other.signer }, generateKeyPair('ec-p256').publicKey)
      },
      TypeError,
    ],
    [
      'a leaf as issuer',
      async () => {
        const root = await makeRoot()
        const k = generateKeyPair('ec-p256')
        const leaf = await leafOf(root, k.publicKey)
        return leafOf({ certificate: leaf, signer: new KeyObjectSigner(k.privateKey), ...k }, generateKeyPair('ec-p256').publicKey)
      },
      TypeError,
    ],
    [
      'garbage as issuer',
      async () => leafOf({ ...(await makeRoot()), certificate: new Uint8Array([1, 2, 3]) }, generateKeyPair('ec-p256').publicKey),
      TypeError,
    ],
    ['an invalid DNS name', async () => leafOf(await makeRoot(), generateKeyPair('ec-p256').publicKey, { dnsNames: ['bad name'] }), TypeError],
    [
      'notAfter before notBefore',
      async () => leafOf(await makeRoot(), generateKeyPair('ec-p256').publicKey, { notBefore: NOW, notAfter: new Date(NOW.getTime() - 1000) }),
      RangeError,
    ],
    [
      'a root whose signer holds another key',
      async () => {
        const a = generateKeyPair('ec-p256')
        const b = generateKeyPair('ec-p256')
        return createCaCertificate({
          trustDomain: td,
          publicKey: a.publicKey,
          signer: new KeyObjectSigner(b.privateKey),
          notBefore: NOW,
          notAfter: new Date(NOW.getTime() + DAY),
        })
      },
      TypeError,
    ],
  ]
  it.each(misuse)('rejects %s', async (_name, fn, errType) => {
    await expect(fn()).rejects.toThrow(errType)
  })
})

describe('Signer interface: no private key needed', () => {
  it('builds and verifies a CA and a leaf through a wrapper exposing only publicKey and sign', async () => {
    const caKeys = generateKeyPair('ec-p384')
    const inner = new KeyObjectSigner(caKeys.privateKey)
    const calls: SignatureAlgorithm[] = []
    const remote: Signer = Object.freeze({
      publicKey: caKeys.publicKey,
      sign: async (data: Uint8Array, alg: SignatureAlgorithm) => {
        calls.push(alg)
        return inner.sign(data, alg)
      },
    })
    expect(Object.keys(remote).sort()).toEqual(['publicKey', 'sign'])
    const root = await createCaCertificate({
      trustDomain: td,
      publicKey: caKeys.publicKey,
      signer: remote,
      notBefore: new Date(NOW.getTime() - HOUR),
      notAfter: new Date(NOW.getTime() + DAY),
    })
    const leaf = await createX509Svid({
      spiffeId: id,
      publicKey: generateKeyPair('ec-p256').publicKey,
      signer: remote,
      issuer: { certificate: root },
      notAfter: new Date(NOW.getTime() + HOUR),
    })
    expect(calls).toEqual(['ES384', 'ES384'])
    const r = await verifyX509Svid([leaf], new X509Bundle(td, [root]), { now: NOW })
    expect(r.id.equals(id)).toBe(true)
  })

  it('reports a signer that returns a malformed ECDSA signature', async () => {
    const root = await makeRoot()
    const broken: Signer = { publicKey: root.publicKey, sign: async () => new Uint8Array(63) }
    await expect(
      createX509Svid({
        spiffeId: id,
        publicKey: generateKeyPair('ec-p256').publicKey,
        signer: broken,
        issuer: { certificate: root.certificate },
        notAfter: new Date(NOW.getTime() + HOUR),
      }),
    ).rejects.toMatchObject({ code: 'ERR_INTERNAL' })
  })
})

describe.runIf(requireTools('openssl'))('openssl agrees', () => {
  let dir: string
  let cleanup: () => void
  beforeAll(() => ({ dir, cleanup } = tempDir('x5-')))
  afterAll(() => cleanup())

  it('shows the expected extensions and verifies root → leaf and root → intermediate → leaf', async () => {
    const root = await makeRoot('example.org', 'ec-p256')
    const inter = await makeIntermediate(root, 'example.org', 'rsa-2048')
    const direct = await leafOf(root, generateKeyPair('ec-p256').publicKey, { dnsNames: ['planner.example.org'] })
    const chained = await leafOf(inter, generateKeyPair('rsa-2048').publicKey)
    const rootPem = writePem(dir, 'root.pem', [root.certificate])
    const interPem = writePem(dir, 'inter.pem', [inter.certificate])
    const directPem = writePem(dir, 'direct.pem', [direct])
    const chainedPem = writePem(dir, 'chained.pem', [chained])
    const text = openssl(['x509', '-in', directPem, '-text', '-noout'])
    expect(text).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Key Encipherment, Key Agreement/)
    expect(text).toMatch(/X509v3 Extended Key Usage:\s*\n\s+TLS Web Server Authentication, TLS Web Client Authentication/)
    expect(text).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/)
    expect(text).toMatch(/X509v3 Subject Alternative Name:\s*\n\s+URI:spiffe:\/\/example.org\/ns\/prod\/agent\/planner-7, DNS:planner.example.org/)
    expect(text).toMatch(/X509v3 Subject Key Identifier/)
    expect(text).toMatch(/X509v3 Authority Key Identifier/)
    expect(text).toMatch(/Signature Algorithm: ecdsa-with-SHA256/)
    const caText = openssl(['x509', '-in', interPem, '-text', '-noout'])
    expect(caText).toMatch(/X509v3 Basic Constraints: critical\s+CA:TRUE/)
    expect(caText).toMatch(/X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign/)
    expect(caText).toMatch(/URI:spiffe:\/\/example.org\n/)
    expect(openssl(['verify', '-x509_strict', '-CAfile', rootPem, directPem])).toContain(`${directPem}: OK`)
    expect(openssl(['verify', '-x509_strict', '-CAfile', rootPem, '-untrusted', interPem, chainedPem])).toContain(`${chainedPem}: OK`)
    expect(openssl(['verify', '-x509_strict', '-CAfile', rootPem, interPem])).toContain(`${interPem}: OK`)
    const emptySubject = writePem(dir, 'empty.pem', [await leafOf(root, generateKeyPair('ec-p256').publicKey, { subject: {} })])
    expect(openssl(['verify', '-x509_strict', '-CAfile', rootPem, emptySubject])).toContain('OK')
    expect(openssl(['x509', '-in', emptySubject, '-text', '-noout'])).toMatch(/Subject Alternative Name: critical/)
  })

  it('rejects a leaf from an untrusted CA', async () => {
    const root = await makeRoot()
    const other = await makeRoot()
    const leafPem = writePem(dir, 'untrusted.pem', [await leafOf(other, generateKeyPair('ec-p256').publicKey)])
    const rootPem = writePem(dir, 'root2.pem', [root.certificate])
    expect(() => openssl(['verify', '-CAfile', rootPem, leafPem])).toThrow()
  })
})

function webcryptoProvider(): Parameters<typeof x509.cryptoProvider.set>[0] {
  return globalThis.crypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]
}
