import 'reflect-metadata'
import { X509Certificate, createHash, webcrypto, type KeyObject } from 'node:crypto'
import * as x509 from '@peculiar/x509'
import { beforeAll, describe, expect, it } from 'vitest'
import type { IdentityError } from '../../../../src/errors/index.js'
import {
  MAX_EK_CERT_BYTES,
  certFingerprint,
  parseEkCertificate,
  parsePemCertificates,
  publicKeyHash,
  trustAnchorsFrom,
  unwrapEkCertificateBytes,
  verifyEk,
  verifyEkChain,
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

async function makeCa(
  name: string,
  issuer?: Ca,
  opts: { signingKey?: CryptoKey; notAfter?: number; ca?: boolean; extra?: x509.Extension[] } = {},
): Promise<Ca> {
  const keys = await webcrypto.subtle.generateKey(EC, true, ['sign', 'verify'])
  const exts: x509.Extension[] = [
    ...(opts.extra ?? []),
    new x509.BasicConstraintsExtension(opts.ca ?? true, undefined, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
  ]
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
    new x509.SubjectAlternativeNameExtension(
      [{ type: 'dn', value: '2.23.133.2.1=id:00001014, 2.23.133.2.2=swtpm, 2.23.133.2.3=id:20191023' } as unknown as x509.JsonGeneralName],
      true,
    ),
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
    {
      title: 'a certificate that does not chain',
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert: await makeEkCert(ek.publicKey, otherInter), anchors, now: NOW }),
      reason: NO_CHAIN,
    },
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
    {
      title: 'a certificate checked after it and its CAs expired',
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert, anchors, now: NOW + 400 * DAY }),
      reason: 'EK certificate is not valid at the current time',
    },
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
    {
      title: 'a chain missing its intermediate',
      params: async () => ({ ekPublicKey: ek.publicKey, ekCert, anchors: trustAnchorsFrom([node(root)]), now: NOW }),
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
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
      title: 'a certificate naming the trusted intermediate (issuer and AKI) but signed by another key',
      params: async () => ({
        ekPublicKey: ek.publicKey,
        ekCert: await makeEkCert(ek.publicKey, inter, { signingKey: otherInter.keys.privateKey }),
        anchors,
        now: NOW,
      }),
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
    {
      title: 'a certificate of the trusted intermediate with one bit of its signature flipped',
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
        return {
          ekPublicKey: ek.publicKey,
          ekCert: await makeEkCert(ek.publicKey, notCa),
          anchors: trustAnchorsFrom([node(root), node(inter), node(notCa)]),
          now: NOW,
        }
      },
      reason: NO_CHAIN,
      details: { depth: 0 },
    },
  ]
  it.each(rejects)('rejects $title', async ({ params, reason, details }) => {
    const p = await params()
    expect(() => verifyEk(p)).toThrow(
      expect.objectContaining({ ...FAILED, message: reason, ...(details ? { details: expect.objectContaining(details) } : {}) }),
    )
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

describe('EK certificate parsing and chain bounds', () => {
  /** Whole seconds: certificate times have second precision, so validity bounds are exact. */
  const T = Math.floor(NOW / 1000) * 1000
  let root: Ca, inter: Ca
  let ek: SoftKey
  let der: Uint8Array
  const invalid = (message: string) => expect.objectContaining({ code: 'ERR_TPM_PAYLOAD_INVALID', message })
  const failed = (message: string) => expect.objectContaining({ ...FAILED, message })

  async function leafWith(issuer: Ca, extensions: x509.Extension[], times: { notBefore?: number; notAfter?: number } = {}): Promise<Uint8Array> {
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '02',
      subject: 'CN=unknown',
      issuer: issuer.cert.subject,
      notBefore: new Date(times.notBefore ?? T - DAY),
      notAfter: new Date(times.notAfter ?? T + DAY),
      publicKey: await importRsa(ek.publicKey),
      signingKey: issuer.keys.privateKey,
      signingAlgorithm: EC,
      extensions: [await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey), ...extensions],
    })
    return new Uint8Array(cert.rawData)
  }

  beforeAll(async () => {
    root = await makeCa('CN=bounds-root')
    inter = await makeCa('CN=bounds-ca', root)
    ek = softRsaKey({ ek: true })
    der = await makeEkCert(ek.publicKey, inter)
  })

  it.each([
    { title: 'NV framing with a zero length', bytes: [0x10, 0x01, 0x00, 0x00, 0x00, 0x30, 0x00], message: 'EK certificate NV framing has an invalid length' },
    {
      title: 'NV framing one byte longer than its content',
      bytes: [0x10, 0x01, 0x00, 0x00, 0x03, 0x30, 0x00],
      message: 'EK certificate NV framing has an invalid length',
    },
    { title: 'five bytes that only look like NV framing', bytes: [0x10, 0x01, 0x00, 0x00, 0x00], message: 'EK certificate is not a DER SEQUENCE' },
    { title: 'NV framing around one byte', bytes: [0x10, 0x01, 0x00, 0x00, 0x01, 0x30], message: 'EK certificate is not a DER SEQUENCE' },
    { title: 'a lone SEQUENCE tag', bytes: [0x30], message: 'EK certificate is not a DER SEQUENCE' },
    { title: 'a SET', bytes: [0x31, 0x00], message: 'EK certificate is not a DER SEQUENCE' },
    { title: 'an indefinite length', bytes: [0x30, 0x80, 0x00, 0x00], message: 'EK certificate has an unsupported DER length' },
    { title: 'a four-byte length', bytes: [0x30, 0x84, 0x00, 0x00, 0x00, 0x01, 0x00], message: 'EK certificate has an unsupported DER length' },
    { title: 'a length cut short', bytes: [0x30, 0x82, 0x01], message: 'EK certificate has an unsupported DER length' },
    { title: 'a short-form length past the end', bytes: [0x30, 0x03, 0x01, 0x01], message: 'EK certificate is truncated' },
    { title: 'a long-form length past the end', bytes: [0x30, 0x81, 0x03, 0x01, 0x01], message: 'EK certificate is truncated' },
  ])('unwrapping refuses $title', ({ bytes, message }) => {
    expect(() => unwrapEkCertificateBytes(new Uint8Array(bytes))).toThrow(invalid(message))
  })

  it.each([
    { title: 'a short-form SEQUENCE with padding', bytes: [0x30, 0x03, 0x02, 0x01, 0x05, 0xff, 0xff], out: 5 },
    { title: 'a short-form SEQUENCE filling the input', bytes: [0x30, 0x01, 0x00], out: 3 },
    { title: 'an empty long-form SEQUENCE filling the input', bytes: [0x30, 0x81, 0x00], out: 3 },
    { title: 'a SEQUENCE whose first bytes are 30 01 00 (not NV framing)', bytes: [0x30, 0x01, 0x00, 0x00, 0x01, 0x30], out: 3 },
    { title: 'a SEQUENCE whose first bytes are 30 01 (not NV framing)', bytes: [0x30, 0x01, 0x05, 0x00, 0x01, 0x30], out: 3 },
    { title: 'a one-byte long-form length', bytes: [0x30, 0x81, 0x02, 0x05, 0x00, 0xff], out: 5 },
    { title: 'a three-byte long-form length', bytes: [0x30, 0x83, 0x00, 0x00, 0x01, 0x00, 0xff], out: 6 },
    { title: 'NV framing of exactly its content', bytes: [0x10, 0x01, 0x00, 0x00, 0x02, 0x30, 0x00, 0xff], out: 2 },
  ])('unwrapping keeps $title', ({ bytes, out }) => {
    expect(unwrapEkCertificateBytes(new Uint8Array(bytes))).toEqual(
      new Uint8Array(bytes).subarray(bytes[0] === 0x10 ? 5 : 0, (bytes[0] === 0x10 ? 5 : 0) + out),
    )
  })

  it('reads a two-byte long-form length (a real certificate) and takes padding up to the size limit', () => {
    expect(der[1]).toBe(0x82)
    const max = Buffer.concat([der, Buffer.alloc(MAX_EK_CERT_BYTES + 5 - der.length)])
    expect(parseEkCertificate(max).der).toEqual(der)
    expect(() => parseEkCertificate(Buffer.concat([max, Buffer.alloc(1)]))).toThrow(invalid('EK certificate too large'))
  })

  it('refuses a DER SEQUENCE that is not a certificate', () => {
    const err = (() => {
      try {
        parseEkCertificate(new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x05]))
      } catch (e) {
        return e as IdentityError
      }
    })()
    expect(err).toMatchObject({ code: 'ERR_TPM_PAYLOAD_INVALID', message: 'EK certificate could not be parsed' })
    expect(err?.cause).toBeInstanceOf(Error)
  })

  it('reads the TCG attributes from a directoryName among other general names, and accepts a certificate without SAN', async () => {
    const san = new x509.SubjectAlternativeNameExtension(
      [
        { type: 'dns', value: 'tpm.example' },
        { type: 'dn', value: '2.23.133.2.2=model-x, 2.5.4.3=ignored, 2.23.133.2.1=id:0000ABCD' } as unknown as x509.JsonGeneralName,
      ],
      true,
    )
    expect(parseEkCertificate(await leafWith(inter, [san])).tcg).toEqual({ manufacturer: 'id:0000ABCD', model: 'model-x' })
    expect(parseEkCertificate(await leafWith(inter, [])).tcg).toEqual({})
    const nonCritical = await leafWith(inter, [new x509.Extension('1.2.3.4.6', false, new Uint8Array([5, 0]))])
    expect(parseEkCertificate(nonCritical).cert).toBeInstanceOf(X509Certificate)
  })

  it.each([
    { title: 'a SAN that is not BER', value: [0xff], message: 'EK certificate SAN is not valid BER' },
    { title: 'a SAN that is not a GeneralNames', value: [0x02, 0x01, 0x01], message: 'EK certificate SAN is not a GeneralNames' },
  ])('refuses $title', async ({ value, message }) => {
    const cert = await leafWith(inter, [new x509.Extension('2.5.29.17', true, new Uint8Array(value))])
    expect(() => parseEkCertificate(cert)).toThrow(failed(message))
  })

  it('parses PEM bundles and names the source of a bad one', () => {
    const pem = [root, inter].map((c) => c.cert.toString('pem')).join('\n')
    expect(parsePemCertificates(pem).map((c) => c.subject)).toEqual(['CN=bounds-root', 'CN=bounds-ca'])
    expect(() => parsePemCertificates('nothing', 'ca.pem')).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG_INVALID', message: 'no certificate found in ca.pem' }),
    )
    expect(() => parsePemCertificates('nothing')).toThrow(expect.objectContaining({ message: 'no certificate found in PEM' }))
    const broken = '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----'
    expect(() => parsePemCertificates(broken, 'ca.pem')).toThrow(
      expect.objectContaining({ code: 'ERR_CONFIG_INVALID', message: 'invalid certificate in ca.pem', cause: expect.any(Error) }),
    )
  })

  it('accepts a certificate exactly at the bounds of its validity, and not 1 ms outside', async () => {
    const cert = parseEkCertificate(await leafWith(inter, [], { notBefore: T - 1000, notAfter: T + 1000 })).cert
    const anchors = trustAnchorsFrom([node(root), node(inter)])
    expect(verifyEkChain(cert, anchors, T - 1000)).toEqual([fp(inter), fp(root)])
    expect(verifyEkChain(cert, anchors, T + 1000)).toEqual([fp(inter), fp(root)])
    expect(() => verifyEkChain(cert, anchors, T - 1001)).toThrow(
      expect.objectContaining({
        ...FAILED,
        message: 'EK certificate is not valid at the current time',
        details: { validFrom: cert.validFrom, validTo: cert.validTo },
      }),
    )
    expect(() => verifyEkChain(cert, anchors, T + 1001)).toThrow(failed('EK certificate is not valid at the current time'))
  })

  it('refuses a chain with no root configured', () => {
    expect(() => verifyEkChain(parseEkCertificate(der).cert, { roots: [], intermediates: [node(inter)] }, NOW)).toThrow(failed('no EK root CA configured'))
  })

  it('accepts seven intermediates and refuses eight (chain depth bound)', async () => {
    const cas = [root]
    for (let i = 0; i < 8; i++) cas.push(await makeCa(`CN=depth-${i}`, cas[cas.length - 1]))
    const seven = parseEkCertificate(await makeEkCert(ek.publicKey, cas[7]!)).cert
    expect(verifyEkChain(seven, trustAnchorsFrom(cas.slice(0, 8).map(node)), NOW)).toHaveLength(8)
    const eight = parseEkCertificate(await makeEkCert(ek.publicKey, cas[8]!)).cert
    expect(() => verifyEkChain(eight, trustAnchorsFrom(cas.map(node)), NOW)).toThrow(failed('EK certificate chain is too long'))
  })

  it.each(['intermediate', 'root'] as const)('refuses an unhandled critical extension on the %s CA, and allows critical name constraints', async (which) => {
    const ext = (oid: string) => new x509.Extension(oid, true, oid === '2.5.29.30' ? new Uint8Array([0x30, 0x00]) : new Uint8Array([5, 0]))
    for (const [oid, ok] of [
      ['1.2.3.4.7', false],
      ['2.5.29.30', true],
    ] as const) {
      const r = which === 'root' ? await makeCa('CN=crit-root', undefined, { extra: [ext(oid)] }) : root
      const i = await makeCa('CN=crit-ca', r, which === 'intermediate' ? { extra: [ext(oid)] } : {})
      const cert = parseEkCertificate(await makeEkCert(ek.publicKey, i)).cert
      const run = () => verifyEkChain(cert, trustAnchorsFrom([node(r), node(i)]), NOW)
      if (ok) expect(run()).toHaveLength(2)
      else expect(run).toThrow(expect.objectContaining({ ...FAILED, message: 'EK CA certificate has an unhandled critical extension', details: { oid } }))
    }
  })

  it('falls back to the allow-list when there is no CA, or an empty certificate', () => {
    const hash = publicKeyHash(ek.publicKey)
    expect(verifyEk({ ekPublicKey: ek.publicKey, ekCert: der, allowList: [hash], now: NOW })).toEqual({
      ekHash: hash,
      caFingerprints: [],
      method: 'allow_list',
      tcg: parseEkCertificate(der).tcg,
    })
    expect(verifyEk({ ekPublicKey: ek.publicKey, ekCert: der, anchors: { roots: [], intermediates: [] }, allowList: [hash], now: NOW }).method).toBe(
      'allow_list',
    )
    expect(verifyEk({ ekPublicKey: ek.publicKey, ekCert: new Uint8Array(0), allowList: [hash], now: NOW })).toEqual({
      ekHash: hash,
      caFingerprints: [],
      method: 'allow_list',
      tcg: {},
    })
    expect(() => verifyEk({ ekPublicKey: ek.publicKey, ekCert: new Uint8Array(0), anchors: trustAnchorsFrom([node(root), node(inter)]), now: NOW })).toThrow(
      failed('no EK certificate and the EK is not allow-listed'),
    )
    expect(() => verifyEk({ ekPublicKey: ek.publicKey, ekCert: der, now: NOW })).toThrow(
      failed('EK certificate cannot be verified: no EK CA configured and the EK is not allow-listed'),
    )
  })

  it('hashes the EK public key and fingerprints certificates as SHA-256 hex of their DER', () => {
    expect(publicKeyHash(ek.publicKey)).toBe(
      createHash('sha256')
        .update(ek.publicKey.export({ format: 'der', type: 'spki' }))
        .digest('hex'),
    )
    expect(certFingerprint(node(root))).toBe(fp(root))
  })
})
