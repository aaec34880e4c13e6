/**
 * What minting a workload X.509-SVID takes on the agent side, shared by the
 * X.509 cache and the instance lifecycles: a fresh P-256 key (in memory
 * only) with its CSR, and the expiry of what the server signed.
 */
import { X509Certificate } from 'node:crypto'
import { newEcPrivateKey } from '../../common/crypto/new-key.js'
import { createCsr } from '../../spiffe/x509-svid/csr.js'
import type { X509SvidResultItem } from './ports.js'

/** A new key (PKCS#8 DER) and its CSR. */
export async function newKeyAndCsr(): Promise<{ key: Uint8Array; csr: Uint8Array }> {
  const privateKey = newEcPrivateKey('P-256')
  const csr = await createCsr({ privateKey })
  return { key: privateKey.export({ type: 'pkcs8', format: 'der' }), csr }
}

/** Epoch ms; tolerates seconds from a server that sends them (the contract is epoch ms). */
export function toMs(v: number): number {
  return v > 0 && v < 1e11 ? v * 1000 : v
}

/** The expiry of a signed SVID: as the server stated it, else the leaf's notAfter; undefined when unreadable. */
export function expiryOf(r: X509SvidResultItem): number | undefined {
  const expiresAt = toMs(r.expiresAt)
  if (expiresAt > 0) return expiresAt
  try {
    return Date.parse(new X509Certificate(r.svidChain[0]!).validTo)
  } catch {
    return undefined
  }
}
