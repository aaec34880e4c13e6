import { X509Certificate } from 'node:crypto'

/** Parses every CERTIFICATE block of a PEM text (non-certificate blocks are skipped). */
export function pemCertificates(pem: string): X509Certificate[] {
  const out: X509Certificate[] = []
  const re = /-----BEGIN CERTIFICATE-----([\s\S]*?)-----END CERTIFICATE-----/g
  let m: RegExpExecArray | null
  while ((m = re.exec(pem)) !== null) out.push(new X509Certificate(Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64')))
  return out
}

/** DER → PEM with 64-column lines. */
export function toPemBlock(label: string, der: Uint8Array): string {
  return `-----BEGIN ${label}-----\n${Buffer.from(der)
    .toString('base64')
    .replace(/.{1,64}/g, '$&\n')}-----END ${label}-----\n`
}
