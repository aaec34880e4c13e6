import { createPrivateKey } from 'node:crypto'
import { pemCertificates } from '../../common/crypto/pem.js'
import { IdentityError } from '../../errors/identity-error.js'
import { KeyObjectSigner } from '../../spiffe/key-signer.js'
import type { UpstreamAuthority } from './manager.js'

/** The upstream authority's files as read by the CLI (`server.upstream_authority`). */
export interface UpstreamAuthorityPem {
  /** The upstream CA certificate, then its intermediates. */
  certPem: string
  keyPem: string
  /** Roots to publish; default: the last certificate of `certPem`. */
  bundlePem: string | undefined
}

/**
 * Builds the CA's upstream authority from PEM values: the certificate must be
 * a CA and match the key. Throws ERR_CONFIG_INVALID (the key's bytes are
 * never part of the message).
 */
export function upstreamAuthorityFromPem(p: UpstreamAuthorityPem): UpstreamAuthority {
  try {
    const certs = pemCertificates(p.certPem)
    if (certs.length === 0) throw new Error('cert_file holds no certificate')
    const key = createPrivateKey(p.keyPem)
    const cert = certs[0]!
    if (!cert.checkPrivateKey(key)) throw new Error('key_file does not match cert_file')
    if (!cert.ca) throw new Error('upstream certificate is not a CA')
    const roots = p.bundlePem !== undefined ? pemCertificates(p.bundlePem) : [certs[certs.length - 1]!]
    return {
      certificate: new Uint8Array(cert.raw),
      signer: new KeyObjectSigner(key),
      roots: roots.map((c) => new Uint8Array(c.raw)),
      intermediates: certs.slice(1).map((c) => new Uint8Array(c.raw)),
    }
  } catch (cause) {
    throw new IdentityError('ERR_CONFIG_INVALID', `upstream_authority: ${(cause as Error).message}`, { cause })
  }
}
