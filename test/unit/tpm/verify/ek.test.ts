import 'reflect-metadata'
import { X509Certificate, createHash, webcrypto, type KeyObject } from 'node:crypto'
import * as x509 from '@peculiar/x509'
import { beforeAll, describe, expect, it } from 'vitest'
import {
  parseEkCertificate,
  publicKeyHash,
  trustAnchorsFrom,
  unwrapEkCertificateBytes,
  verifyEk,
  type EkTrustAnchors,
} from '../../../../src/tpm/verify/ek.js'
import { softRsaKey, type SoftKey } from './soft-tpm.js'

type CryptoKey = webcrypto.CryptoKey
type CryptoKeyPair = webcrypto.CryptoKeyPair
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

const FAILED = { code: 'ERR_TPM_VERIFICATION_FAILED' }
const EC = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' }
const DAY = 86_400_000
const NOW = Date.now()

interface Ca {
  cert: x509.X509Certificate
  keys: CryptoKeyPair
}

async function makeCa(name: string, issuer?: Ca, opts: { signingKey?: CryptoKey; notAfter?: number; ca?: boolean } = {}): Promise<Ca> {
  const keys = (await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])) as CryptoKeyPair
  const exts = [new x509.BasicConstraintsExtension(opts.ca ?? true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true), await x509.SubjectKeyIdentifierExtension.create(keys.publicKey)]
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '0a',
    subject: name,
    issuer: issuer ? issuer.cert.subject : name,
    notBefore: new Date(NOW - DAY),
    notAfter: new Date(opts.notAfter ?? NOW + 365 * DAY),
    publicKey: keys.publicKey,
    signingKey: opts.signingKey ?? (issuer ?? { keys }).keys.privateKey,
    signingAlgorithm: EC,
    extensions: issuer ? [...exts, await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey)] : exts,
  })
  return { cert, keys }
}

async function importRsa(key: KeyObject): Promise<CryptoKey> {
  return webcrypto.subtle.importKey('spki', key.export({ format: 'der', type: 'spki' }), { name: 'RSA-OAEP', hash: 'SHA-256' }, true, ['encrypt'])
}

async function makeEkCert(ek: KeyObject, issuer: Ca, opts: { notAfter?: number; extraCritical?: boolean; signingKey?: CryptoKey } = {}): Promise<Uint8Array> {
  const exts: x509.Extension[] = [
    new x509.SubjectAlternativeNameExtension([{ type: 'dn', value: '2.23.133.2.1=id:00001014, 2.23.133.2.2=swtpm, 2.23.133.2.3=id:20191023' } as unknown as x509.JsonGeneralName], true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyEncipherment, true),
    new x509.ExtendedKeyUsageExtension(['2.23.133.8.1']),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey),
  ]
  if (opts.extraCritical) exts.push(new x509.Extension('1.2.3.4.5', true, new Uint8Array([5, 0])))
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: 'CN=unknown',
    issuer: issuer.cert.subject,
    notBefore: new Date(NOW - DAY),
    notAfter: new Date(opts.notAfter ?? NOW + 365 * DAY),
    publicKey: await importRsa(ek),
    signingKey: opts.signingKey ?? issuer.keys.privateKey,
    signingAlgorithm: EC,
    extensions: exts,
  })
  return new Uint8Array(cert.rawData)
}

/** The certificate with one bit of its signature value (the DER's last byte, inside the ECDSA s) flipped. */
function flipSignature(der: Uint8Array | ArrayBuffer): Uint8Array {
  const out = new Uint8Array(der.slice(0))
  out[out.length - 1]! ^= 0x01
  return out
}

const node = (c: Ca): X509Certificate => new X509Certificate(Buffer.from(c.cert.rawData))
const fp = (c: Ca): string => createHash('sha256').update(Buffer.from(c.cert.rawData)).digest('hex')

describe('EK verification', () => {
  let root: Ca, inter: Ca, otherRoot: Ca, otherInter: Ca
  let ek: SoftKey, otherEk: SoftKey
  let ekCert: Uint8Array, anchors: EkTrustAnchors
  beforeAll(async () => {
    root = await makeCa('CN=test-rootca')
    inter = await makeCa('CN=test-ca', root)
    otherRoot = await makeCa('CN=test-rootca')
    otherInter = await makeCa('CN=test-ca', otherRoot)
    ek = softRsaKey({ ek: true })
    otherEk = softRsaKey({ ek: true })
    ekCert = await makeEkCert(ek.publicKey, inter)
    anchors = trustAnchorsFrom([node(root), node(inter)])
  })

  it('splits CA certificates into roots and intermediates', () => {
    expect(anchors.roots.length).toBe(1)
    expect(anchors.intermediates.length).toBe(1)
  })

  it('accepts an EK certificate chaining to a configured root and reports the chain', () => {
    const v = verifyEk({ ekPublicKey: ek.publicKey, ekCert, anchors, now: NOW })
    expect(v.method).toBe('chain')
    expect(v.caFingerprints).toEqual([fp(inter), fp(root)])
    expect(v.ekHash).toBe(publicKeyHash(ek.publicKey))
    expect(v.tcg).toEqual({ manufacturer: 'id:00001014', model: 'swtpm', version: 'id:20191023' })
  })

  it('accepts raw NV bytes with the PC Client prefix and trailing padding', () => {
    const nv = Buffer.concat([Buffer.from([0x10, 0x01, 0x00, ekCert.length >> 8, ekCert.length & 0xff]), ekCert, Buffer.alloc(40, 0xff)])
    expect(Buffer.from(unwrapEkCertificateBytes(nv)).equals(ekCert)).toBe(true)
    expect(verifyEk({ ekPublicKey: ek.publicKey, ekCert: nv, anchors, now: NOW }).method).toBe('chain')
    const padded = Buffer.concat([ekCert, Buffer.alloc(64)])
    expect(parseEkCertificate(padded).der.length).toBe(ekCert.length)
  })

  it('accepts an allow-listed EK without a certificate', () => {
    const v = verifyEk({ ekPublicKey: ek.publicKey, allowList: [publicKeyHash(ek.publicKey).toUpperCase()], now: NOW })
    expect(v).toMatchObject({ method: 'allow_list', caFingerprints: [] })
  })

  it('accepts an allow-listed EK whose certificate does not chain', async () => {
    const cert = await makeEkCert(ek.publicKey, otherInter)
    expect(verifyEk({ ekPublicKey: ek.publicKey, ekCert: cert, anchors, allowList: [publicKeyHash(ek.publicKey)], now: NOW }).method).toBe('allow_list')
  })

  const NO_CHAIN = 'EK certificate does not chain to a configured CA'
  const rejects: { title: string; params: () => Promise<Parameters<typeof verifyEk>[0]>; reason: string; details?: Record<string, unknown> }[] = [
    { title: 'a certificate that does not chain', params: async () => ({ ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, otherInter), anchors, now: NOW }), reason: NO_CHAIN },
    {
      title: 'a certificate whose key is not the EK',
      params: async () => ({ ekPublicKey: otherEk.publicKey, ekCert, anchors, now: NOW }),
      reason: 'EK certificate public key does not match the EK public area',
    },
    {
      title: 'a certificate whose key is not the EK, even when allow-listed',
      params: async () => ({ ekPublicKey: otherEk.publicKey, ekCert, anchors, allowList: [publicKeyHash(otherEk.publicKey)], now: NOW }),
      reason: 'EK certificate public key does not match the EK public area',
    },
    {
      title: 'an expired certificate',
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, inter, { notAfter: NOW - 1000 }), anchors, now: NOW }),
      reason: 'EK certificate is not valid at the current time',
    },
    { title: 'a certificate checked after it and its CAs expired', params: async () => ({ ekPublicKey: ek.publicKey, ekCert, anchors, now: NOW + 400 * DAY }), reason: 'EK certificate is not valid at the current time' },
    {
      title: 'a valid certificate whose intermediate CA expired',
      params: async () => {
        const old = await makeCa('CN=test-ca-expired', root, { notAfter: NOW - 1000 })
        return { ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, old), anchors: trustAnchorsFrom([node(root), node(old)]), now: NOW }
      },
      reason: 'EK CA certificate is not valid at the current time',
    },
    {
      title: 'an unknown critical extension',
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, inter, { extraCritical: true }), anchors, now: NOW }),
      reason: 'EK certificate has an unhandled critical extension',
      details: { oid: '1.2.3.4.5' },
    },
    { title: 'a chain missing its intermediate', params: async () => ({ ekPublicKey: ek.publicKey, ekCert, anchors: trustAnchorsFrom([node(root)]), now: NOW }), reason: NO_CHAIN, details: { depth: 0 } },
    {
      title: 'an intermediate configured as the only CA (no root)',
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert, anchors: trustAnchorsFrom([node(inter)]), now: NOW }),
      reason: 'EK certificate cannot be verified: no EK CA configured and the EK is not allow-listed',
    },
    {
      title: 'no certificate and no allow-list entry',
      params: async () => ({ ekPublicKey: ek.publicKey, anchors, allowList: [publicKeyHash(otherEk.publicKey)], now: NOW }),
      reason: 'no EK certificate and the EK is not allow-listed',
    },
    // Forgeries: issuer name and authority key identifier name the trusted CA,
    // so only the signature check of the chain step can refuse them.
    {
      title: "a certificate naming the trusted intermediate (issuer and AKI) but signed by another key",
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, inter, { signingKey: otherInter.keys.privateKey }), anchors, now: NOW }),
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
    {
      title: "a certificate of the trusted intermediate with one bit of its signature flipped",
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert: flipSignature(ekCert), anchors, now: NOW }),
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
    {
      title: 'an intermediate naming the trusted root (issuer and AKI) but signed by another key',
      params: async () => {
        const forged = await makeCa('CN=test-ca', root, { signingKey: otherRoot.keys.privateKey })
        return { ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, forged), anchors: trustAnchorsFrom([node(root), node(forged)]), now: NOW }
      },
      reason: NO_CHAIN,
      details: { depth: 1 },
    },
    {
      title: 'a configured intermediate with one bit of its signature flipped',
      params: async () => ({
        ekPublicKey: ek.publicKey,
        ekCert,
        anchors: trustAnchorsFrom([node(root), new X509Certificate(flipSignature(inter.cert.rawData))]),
        now: NOW,
      }),
      reason: NO_CHAIN,
      details: { depth: 1 },
    },
    {
      title: "a certificate signed by the intermediate's key under another issuer name",
      params: async () => {
        const renamed = await makeCa('CN=test-ca-renamed', root)
        // Issuer name of another CA; AKI and signature of the trusted intermediate.
        const cert = await makeEkCert(ek.publicKey, { cert: renamed.cert, keys: inter.keys })
        return { ekPublicKey: ek.publicKey, ekCert: cert, anchors, now: NOW }
      },
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
    {
      title: 'a certificate issued by a configured certificate that is not a CA',
      params: async () => {
        const notCa = await makeCa('CN=test-not-ca', root, { ca: false })
        return { ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, notCa), anchors: trustAnchorsFrom([node(root), node(inter), node(notCa)]), now: NOW }
      },
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
  ]
  it.each(rejects)('rejects $title', async ({ params, reason, details }) => {
    const p = await params()
    expect(() => verifyEk(p)).toThrow(expect.objectContaining({ ...FAILED, message: reason, ...(details ? { details: expect.objectContaining(details) } : {}) }))
  })

  it('does not take a self-signed certificate with a forged signature for a root', () => {
    const forged = new X509Certificate(flipSignature(root.cert.rawData))
    expect(forged.subject).toBe(forged.issuer)
    expect(trustAnchorsFrom([forged])).toMatchObject({ roots: [], intermediates: [forged] })
  })

  it.each([
    { title: 'garbage', bytes: new Uint8Array([1, 2, 3, 4]) },
    { title: 'a truncated certificate', bytes: new Uint8Array([0x30, 0x82, 0x04, 0x00, 0x01]) },
    { title: 'NV framing with a bad length', bytes: new Uint8Array([0x10, 0x01, 0x00, 0xff, 0xff, 0x30, 0x00]) },
  ])('rejects $title as an invalid payload', ({ bytes }) => {
    expect(() => parseEkCertificate(bytes)).toThrow(expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID' }))
  })
})
