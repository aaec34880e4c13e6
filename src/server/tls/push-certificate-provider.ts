import type * as grpc from '@grpc/grpc-js'

/**
 * A grpc-js CertificateProvider fed by the server itself: the server SVID and
 * the trust bundle rotate in place, without restarting the listener.
 */
export class PushCertificateProvider implements grpc.experimental.CertificateProvider {
  #ca: grpc.experimental.CaCertificateUpdate | null = null
  #id: grpc.experimental.IdentityCertificateUpdate | null = null
  readonly #caL = new Set<grpc.experimental.CaCertificateUpdateListener>()
  readonly #idL = new Set<grpc.experimental.IdentityCertificateUpdateListener>()

  setCa(pem: string): void {
    this.#ca = { caCertificate: Buffer.from(pem) }
    for (const l of this.#caL) l(this.#ca)
  }

  setIdentity(certPem: string, keyPem: string): void {
    this.#id = { certificate: Buffer.from(certPem), privateKey: Buffer.from(keyPem) }
    for (const l of this.#idL) l(this.#id)
  }

  addCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener): void {
    this.#caL.add(l)
    if (this.#ca) l(this.#ca)
  }

  removeCaCertificateListener(l: grpc.experimental.CaCertificateUpdateListener): void {
    this.#caL.delete(l)
  }

  addIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.#idL.add(l)
    if (this.#id) l(this.#id)
  }

  removeIdentityCertificateListener(l: grpc.experimental.IdentityCertificateUpdateListener): void {
    this.#idL.delete(l)
  }

  /**
   * Re-sends the current CA and identity to every listener. grpc-js (1.14)
   * subscribes to the provider inside `_addWatcher` before it adds the
   * server's watcher, so the first (synchronous) update never reaches the
   * server and every TLS connection is dropped as "unloaded credentials"
   * until the next update: call this once after bindAsync.
   */
  republish(): void {
    if (this.#ca) for (const l of this.#caL) l(this.#ca)
    if (this.#id) for (const l of this.#idL) l(this.#id)
  }
}
