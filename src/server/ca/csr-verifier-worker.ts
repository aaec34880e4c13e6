/**
 * Worker-thread side of `CsrVerifierPool`: checks CSRs and, for a signing
 * job, builds and signs each checked CSR's leaf with the CA it was given (a
 * software key, posted as a KeyObject; no key bytes cross the thread
 * boundary), through the native signer when it takes the key. A signing
 * batch arrives on shared memory: the worker claims runs of it from the
 * batch's counter, as the calling thread does, until none is left, and
 * answers once with what it signed, packed. The work itself is in
 * csr-jobs.ts.
 */
import { parentPort } from 'node:worker_threads'
import { KeyObjectSigner } from '../../spiffe/key-signer.js'
import type { SyncSigner } from '../../spiffe/x509-svid/certificate-builder.js'
import { checkJob, claimRuns, leafJobAt, packLeafOutcomes, signJob, type LeafOutcome } from './csr-jobs.js'
import type { CsrJobResult, WorkerMessage } from './csr-verifier.js'
import { nativeEcSigner } from './native-ec-signer.js'
import { nativeEcdsa } from './native-ecdsa.js'

const ecdsa = nativeEcdsa()
const options = ecdsa ? { ecdsa } : {}

type Ca = { gen: number; certificate: Uint8Array; signer: SyncSigner }
/** The CA this worker signs with, by generation (the pool sends a new one after each rotation). */
let ca: Ca | undefined

const port = parentPort
if (!port) throw new Error('csr-verifier-worker must run in a worker thread')
// Jobs run one at a time, in order; each signs with the CA in place when it arrived (messages keep their order).
port.on('message', (m: WorkerMessage) => {
  if ('ca' in m) {
    ca = { gen: m.ca.gen, certificate: m.ca.certificate, signer: nativeEcSigner(m.ca.privateKey) ?? new KeyObjectSigner(m.ca.privateKey) }
    return
  }
  if ('batch' in m) {
    const c = ca
    const p = m.batch
    const outcomes: LeafOutcome[] = []
    const sign =
      c === undefined || c.gen !== m.gen
        ? () => outcomes.push({ code: 'ERR_UNAVAILABLE', message: 'CA changed while signing; retry' })
        : (i: number) => outcomes.push(signJob(leafJobAt(p, i), c, options))
    const runs = claimRuns(m.claim, p.ends.length, m.chunk, sign)
    const { packed, transfer } = packLeafOutcomes(outcomes)
    const reply: CsrJobResult = { id: m.id, leaves: packed, runs }
    port.postMessage(reply, transfer)
    return
  }
  const reply: CsrJobResult = { id: m.id, results: m.csrs.map((der) => checkJob(der, options)), ...(m.id === 0 ? { native: ecdsa !== undefined } : {}) }
  port.postMessage(reply)
})
