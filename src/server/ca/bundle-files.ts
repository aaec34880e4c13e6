import { join } from 'node:path'
import { writeFileAtomic } from '../../common/fs/write-atomic.js'
import { X509Bundle } from '../../spiffe/bundle/x509-bundle.js'
import type { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'

/**
 * Publishes the trust bundle beside the server's state for operators and
 * agents bootstrapping from a file: `bundle.pem` (X.509 authorities) and
 * `bundle.spiffe` (the SPIFFE bundle document), each replaced atomically.
 * Returns the PEM (the TLS listeners trust the same roots).
 */
export function publishBundleFiles(dataDir: string, bundle: SpiffeBundle): string {
  const pem = new X509Bundle(bundle.trustDomain, bundle.x509Authorities).toPem()
  writeFileAtomic(join(dataDir, 'bundle.pem'), pem)
  writeFileAtomic(join(dataDir, 'bundle.spiffe'), bundle.marshal({ indent: 2 }))
  return pem
}

/** The signed bounds document (a JWS), beside the bundle. */
export function publishBoundsDocument(dataDir: string, jws: string): void {
  writeFileAtomic(join(dataDir, 'bounds.jws'), `${jws}\n`)
}
