/**
 * The work of one CSR-pool item, shared by the pool's worker threads and its
 * calling thread (which takes queued chunks when it is idle): check a CSR,
 * or check it and sign its X.509-SVID leaf. Answers are plain data.
 */
import { IdentityError } from '../../errors/identity-error.js'
import type { Signer } from '../../spiffe/signer.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { createX509Svid } from '../../spiffe/x509-svid/certificate-builder.js'
import { verifyCsr, type VerifyCsrOptions } from '../../spiffe/x509-svid/csr.js'
import type { CsrOutcome, WireSignItem } from './csr-verifier.js'

function failure(err: unknown, what: string): CsrOutcome {
  if (err instanceof IdentityError) return { ok: false, code: err.code, message: err.message }
  if (err instanceof TypeError) return { ok: false, code: 'ERR_CSR_INVALID', message: 'invalid CSR: not DER bytes' }
  return { ok: false, code: 'ERR_INTERNAL', message: `${what} failed unexpectedly` }
}

/** Checks one CSR (`verifyCsr`). */
export function checkJob(der: Uint8Array, options: VerifyCsrOptions): CsrOutcome {
  try {
    const c = verifyCsr(der, options)
    return { ok: true, spki: c.spki, spiffeId: c.spiffeId, dnsNames: c.dnsNames }
  } catch (err) {
    return failure(err, 'CSR verification')
  }
}

/** SPIFFE IDs parsed once per thread (the server validated them when written); cleared when large. */
const ids = new Map<string, SpiffeId>()

/** Checks one CSR and signs its leaf with `ca` (the item's ID, validity and DNS names; only the CSR's key). */
export async function signJob(item: WireSignItem, ca: { certificate: Uint8Array; signer: Signer }, options: VerifyCsrOptions): Promise<CsrOutcome> {
  let spki: Uint8Array
  try {
    spki = verifyCsr(item.csr, options).spki
  } catch (err) {
    return failure(err, 'CSR verification')
  }
  try {
    let id = ids.get(item.spiffeId)
    if (id === undefined) {
      if (ids.size >= 10_000) ids.clear()
      ids.set(item.spiffeId, (id = SpiffeId.fromString(item.spiffeId)))
    }
    const leaf = await createX509Svid({
      spiffeId: id,
      publicKey: { spki },
      signer: ca.signer,
      issuer: { certificate: ca.certificate },
      notBefore: new Date(item.notBefore),
      notAfter: new Date(item.notAfter),
      ...(item.dnsNames.length > 0 ? { dnsNames: item.dnsNames } : {}),
    })
    return { ok: true, leaf }
  } catch (err) {
    if (err instanceof IdentityError) return { ok: false, code: err.code, message: err.message }
    return { ok: false, code: 'ERR_INTERNAL', message: 'X.509-SVID signing failed unexpectedly' }
  }
}
