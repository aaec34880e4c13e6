/**
 * Worker-thread side of `CsrVerifierPool`: verifies CSRs with `verifyCsr`
 * and answers with plain data (no KeyObject crosses the thread boundary).
 */
import { parentPort } from 'node:worker_threads'
import { IdentityError } from '../../errors/identity-error.js'
import { verifyCsr } from '../../spiffe/x509-svid/csr.js'
import type { CsrJob, CsrJobResult, CsrOutcome } from './csr-verifier.js'
import { nativeEcdsa } from './native-ecdsa.js'

const ecdsa = nativeEcdsa()
const options = ecdsa ? { ecdsa } : {}

function check(der: Uint8Array): CsrOutcome {
  try {
    const c = verifyCsr(der, options)
    return { ok: true, spki: c.spki, spiffeId: c.spiffeId, dnsNames: c.dnsNames }
  } catch (err) {
    if (err instanceof IdentityError) return { ok: false, code: err.code, message: err.message }
    if (err instanceof TypeError) return { ok: false, code: 'ERR_CSR_INVALID', message: 'invalid CSR: not DER bytes' }
    return { ok: false, code: 'ERR_INTERNAL', message: 'CSR verification failed unexpectedly' }
  }
}

const port = parentPort
if (!port) throw new Error('csr-verifier-worker must run in a worker thread')
port.on('message', (job: CsrJob) => {
  const reply: CsrJobResult = { id: job.id, results: job.csrs.map(check), ...(job.id === 0 ? { native: ecdsa !== undefined } : {}) }
  port.postMessage(reply)
})
