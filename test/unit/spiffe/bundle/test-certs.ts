import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { generateKeyPairSync, webcrypto, type JsonWebKey } from 'node:crypto'

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0])

export type TestKeyType = 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'ed25519'

const ALGS: Record<TestKeyType, { name: string } & Record<string, unknown>> = {
  'ec-p256': { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' },
  'ec-p384': { name: 'ECDSA', namedCurve: 'P-384', hash: 'SHA-384' },
  'rsa-2048': { name: 'RSASSA-PKCS1-v1_5', modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' },
  ed25519: { name: 'Ed25519' },
}

let serial = 1

/** A self-signed CA certificate (DER) for the trust domain, as a SPIRE root CA would look. */
export async function makeCaCert(type: TestKeyType = 'ec-p256', td = 'domain.test'): Promise<Uint8Array> {
  const alg = ALGS[type]
  const keys = await webcrypto.subtle.generateKey(alg as never, true, ['sign', 'verify'])
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: (serial++).toString(16).padStart(2, '0'),
    name: 'O=SPIFFE',
    notBefore: new Date(Date.UTC(2026, 0, 1)),
    notAfter: new Date(Date.UTC(2027, 0, 1)),
    keys,
    signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: `spiffe://${td}` }]),
    ],
  })
  return new Uint8Array(cert.rawData)
}

/** A fresh public JWK of the given type (no kid/use), plus its private counterpart. */
export function makeJwk(type: 'ec-p256' | 'ec-p384' | 'rsa-2048' | 'ed25519' = 'ec-p256'): { pub: JsonWebKey; priv: JsonWebKey } {
  const kp =
    type === 'rsa-2048'
      ? generateKeyPairSync('rsa', { modulusLength: 2048 })
      : type === 'ed25519'
        ? generateKeyPairSync('ed25519')
        : generateKeyPairSync('ec', { namedCurve: type === 'ec-p256' ? 'P-256' : 'P-384' })
  return { pub: kp.publicKey.export({ format: 'jwk' }), priv: kp.privateKey.export({ format: 'jwk' }) }
}
