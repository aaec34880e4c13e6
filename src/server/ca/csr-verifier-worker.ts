/**
 * Worker-thread side of `CsrVerifierPool`: checks CSRs and, for a signing
 * job, builds and signs each checked CSR's leaf with the CA it was given (a
 * software key, posted as a KeyObject; no key bytes cross the thread
 * boundary). The work itself is in csr-jobs.ts.
 */
import { parentPort } from 'node:worker_threads'
import { KeyObjectSigner } from '../../spiffe/key-signer.js'
import { checkJob, signJob } from './csr-jobs.js'
import type { CsrJobResult, CsrOutcome, WorkerMessage } from './csr-verifier.js'
import { nativeEcdsa } from './native-ecdsa.js'

const ecdsa = nativeEcdsa()
const options = ecdsa ? { ecdsa } : {}

type Ca = { gen: number; certificate: Uint8Array; signer: KeyObjectSigner }
/** The CA this worker signs with, by generation (the pool sends a new one after each rotation). */
let ca: Ca | undefined

const port = parentPort
if (!port) throw new Error('csr-verifier-worker must run in a worker thread')
// Signing jobs run one after another; each signs with the CA in place when it arrived (messages keep their order).
let queue: Promise<void> = Promise.resolve()
port.on('message', (m: WorkerMessage) => {
  if ('ca' in m) {
    ca = { gen: m.ca.gen, certificate: m.ca.certificate, signer: new KeyObjectSigner(m.ca.privateKey) }
    return
  }
  if ('sign' in m) {
    const c = ca
    queue = queue.then(async () => {
      const results: CsrOutcome[] = []
      for (const item of m.sign) {
        results.push(c === undefined || c.gen !== m.gen ? { ok: false, code: 'ERR_UNAVAILABLE', message: 'CA changed while signing; retry' } : await signJob(item, c, options))
      }
      const reply: CsrJobResult = { id: m.id, results }
      port.postMessage(reply)
    })
    return
  }
  const reply: CsrJobResult = { id: m.id, results: m.csrs.map((der) => checkJob(der, options)), ...(m.id === 0 ? { native: ecdsa !== undefined } : {}) }
  port.postMessage(reply)
})
