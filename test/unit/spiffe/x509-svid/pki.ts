import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { execFileSync } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { webcrypto, type KeyObject } from 'node:crypto'
import { generateKeyPair, KeyObjectSigner, type KeyPairType } from '../../../../src/spiffe/key-signer.js'
import { createCaCertificate } from '../../../../src/spiffe/x509-svid/index.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'

/** Test PKI helpers: CAs from our builder, and deliberately bad leaves from @peculiar/x509's generator. */

type PeculiarCrypto = Parameters<typeof x509.cryptoProvider.set>[0]
export const peculiarCrypto = webcrypto as unknown as PeculiarCrypto

export const NOW = new Date()
export const HOUR = 3600_000
export const DAY = 24 * HOUR

export interface TestCa {
  certificate: Uint8Array
  privateKey: KeyObject
  publicKey: KeyObject
  signer: KeyObjectSigner
}

export async function makeRoot(td = 'example.org', type: KeyPairType = 'ec-p256', opts: { notAfter?: Date } = {}): Promise<TestCa> {
  const kp = generateKeyPair(type)
  const signer = new KeyObjectSigner(kp.privateKey)
  const certificate = await createCaCertificate({
    trustDomain: TrustDomain.fromString(td),
    publicKey: kp.publicKey,
    signer,
    notBefore: new Date(NOW.getTime() - HOUR),
    notAfter: opts.notAfter ?? new Date(NOW.getTime() + 30 * DAY),
  })
  return { certificate, signer, ...kp }
}

export async function makeIntermediate(
  parent: TestCa,
  td = 'example.org',
  type: KeyPairType = 'ec-p256',
  opts: { maxPathLength?: number } = {},
): Promise<TestCa> {
  const kp = generateKeyPair(type)
  const certificate = await createCaCertificate({
    trustDomain: TrustDomain.fromString(td),
    publicKey: kp.publicKey,
    signer: parent.signer,
    issuer: { certificate: parent.certificate },
    notBefore: new Date(NOW.getTime() - HOUR),
    notAfter: new Date(NOW.getTime() + 10 * DAY),
    ...(opts.maxPathLength === undefined ? {} : { maxPathLength: opts.maxPathLength }),
  })
  return { certificate, signer: new KeyObjectSigner(kp.privateKey), ...kp }
}

async function cryptoKeys(ca: TestCa, leafPublic: KeyObject): Promise<{ signingKey: webcrypto.CryptoKey; publicKey: webcrypto.CryptoKey }> {
  const ec = ca.privateKey.asymmetricKeyType === 'ec'
  const alg = ec
    ? { name: 'ECDSA', namedCurve: ca.privateKey.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'P-384' : 'P-256' }
    : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' }
  const signingKey = await webcrypto.subtle.importKey('pkcs8', ca.privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign'])
  const leafAlg = { name: 'ECDSA', namedCurve: leafPublic.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 'P-384' : 'P-256' }
  const publicKey = await webcrypto.subtle.importKey('spki', leafPublic.export({ type: 'spki', format: 'der' }), leafAlg, true, ['verify'])
  return { signingKey, publicKey }
}

export interface PeculiarLeafOptions {
  uris?: string[]
  dnsNames?: string[]
  ca?: boolean | undefined
  keyUsage?: number | undefined
  sanCritical?: boolean
  subject?: string
  notBefore?: Date
  notAfter?: Date
}

/** A leaf built by @peculiar/x509 (not our builder), so each SVID rule can be broken on purpose. */
export async function peculiarLeaf(issuer: TestCa, leafPublic: KeyObject, o: PeculiarLeafOptions): Promise<Uint8Array> {
  const { signingKey, publicKey } = await cryptoKeys(issuer, leafPublic)
  const issuerName = new x509.X509Certificate(issuer.certificate).subjectName
  const extensions: x509.Extension[] = []
  if (o.ca !== undefined) extensions.push(new x509.BasicConstraintsExtension(o.ca, undefined, true))
  if (o.keyUsage !== undefined) extensions.push(new x509.KeyUsagesExtension(o.keyUsage, true))
  const names = [...(o.uris ?? []).map((value) => ({ type: 'url' as const, value })), ...(o.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value }))]
  if (names.length > 0) extensions.push(new x509.SubjectAlternativeNameExtension(names, o.sanCritical ?? false))
  const ec = issuer.privateKey.asymmetricKeyType === 'ec'
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber:
        '01' +
        Math.floor(Math.random() * 1e12)
          .toString(16)
          .padStart(12, '0'),
      subject: o.subject ?? 'O=test',
      issuer: issuerName,
      notBefore: o.notBefore ?? new Date(NOW.getTime() - HOUR),
      notAfter: o.notAfter ?? new Date(NOW.getTime() + HOUR),
      publicKey,
      signingKey,
      signingAlgorithm: ec ? { name: 'ECDSA', hash: 'SHA-256' } : { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      extensions,
    },
    peculiarCrypto,
  )
  return new Uint8Array(cert.rawData)
}

export const KU = x509.KeyUsageFlags

export function pem(der: Uint8Array): string {
  const b64 = Buffer.from(der)
    .toString('base64')
    .replace(/(.{64})/g, '$1\n')
  return `-----BEGIN CERTIFICATE-----\n${b64}${b64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`
}

/** Runs openssl and returns stdout (throws with stderr on failure). */
export function openssl(args: string[]): string {
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
}

export function writePem(dir: string, name: string, ders: Uint8Array[]): string {
  const p = join(dir, name)
  writeFileSync(p, ders.map(pem).join(''))
  return p
}
