import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { webcrypto } from 'node:crypto'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { generateKeyPair } from '../../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createX509Svid } from '../../../../src/spiffe/x509-svid/index.js'
import type { ServerCredentials } from '../../../../src/server/federation/endpoint.js'
import { HOUR, makeRoot, NOW, peculiarCrypto, pem, type TestCa } from '../../spiffe/x509-svid/pki.js'

export { makeRoot, pem, type TestCa }

/** An X.509-SVID for `id` issued by `ca`, as PEM server credentials. */
export async function svidCredentials(ca: TestCa, id: string, opts: { notAfter?: Date } = {}): Promise<ServerCredentials> {
  const kp = generateKeyPair('ec-p256')
  const leaf = await createX509Svid({
    spiffeId: SpiffeId.fromString(id),
    publicKey: kp.publicKey,
    signer: ca.signer,
    issuer: { certificate: ca.certificate },
    notAfter: opts.notAfter ?? new Date(NOW.getTime() + 2 * HOUR),
  })
  return { certChainPem: pem(leaf), keyPem: kp.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
}

/** A Web PKI server certificate (SAN DNS localhost, IP 127.0.0.1) issued by `ca`. */
export async function webCredentials(
  ca: TestCa,
  names: { dns?: string[]; ips?: string[] } = { dns: ['localhost'], ips: ['127.0.0.1'] },
): Promise<ServerCredentials> {
  const kp = generateKeyPair('ec-p256')
  const alg = { name: 'ECDSA', namedCurve: 'P-256' }
  const signingKey = await webcrypto.subtle.importKey('pkcs8', ca.privateKey.export({ type: 'pkcs8', format: 'der' }), alg, false, ['sign'])
  const publicKey = await webcrypto.subtle.importKey('spki', kp.publicKey.export({ type: 'spki', format: 'der' }), alg, true, ['verify'])
  const sans = [...(names.dns ?? []).map((value) => ({ type: 'dns' as const, value })), ...(names.ips ?? []).map((value) => ({ type: 'ip' as const, value }))]
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber:
        '01' +
        Math.floor(Math.random() * 1e12)
          .toString(16)
          .padStart(12, '0'),
      subject: 'CN=bundle-endpoint.test',
      issuer: new x509.X509Certificate(ca.certificate).subjectName,
      notBefore: new Date(NOW.getTime() - HOUR),
      notAfter: new Date(NOW.getTime() + HOUR),
      publicKey,
      signingKey,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension(sans),
      ],
    },
    peculiarCrypto,
  )
  return { certChainPem: pem(new Uint8Array(cert.rawData)), keyPem: kp.privateKey.export({ type: 'pkcs8', format: 'pem' }) as string }
}

export function bundleOf(td: string, cas: TestCa[], opts: { sequence?: number; hint?: number } = {}): SpiffeBundle {
  return SpiffeBundle.from({
    trustDomain: TrustDomain.fromString(td),
    x509Authorities: cas.map((c) => c.certificate),
    sequenceNumber: opts.sequence,
    refreshHintSeconds: opts.hint,
  })
}
