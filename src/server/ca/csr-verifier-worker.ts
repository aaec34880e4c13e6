/**
 * Worker-thread side of `CsrVerifierPool`: verifies CSRs with `verifyCsr`
 * and answers with plain data; for a signing job it also builds and signs
 * each checked CSR's leaf with the CA it was given (a software key, posted as
 * a KeyObject; no key bytes cross the thread boundary).
 */
import { parentPort } from 'node:worker_threads'
import { IdentityError } from '../../errors/identity-error.js'
import { KeyObjectSigner } from '../../spiffe/key-signer.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { verifyCsr } from '../../spiffe/x509-svid/csr.js'
import { createX509Svid } from '../../spiffe/x509-svid/certificate-builder.js'
import type { CsrJobResult, CsrOutcome, WireSignItem, WorkerMessage } from './csr-verifier.js'
import { nativeEcdsa } from './native-ecdsa.js'

const ecdsa = nativeEcdsa()
const options = ecdsa ? { ecdsa } : {}

function failure(err: unknown, what: string): CsrOutcome & { ok: false } {
  if (err instanceof IdentityError) return { ok: false, code: err.code, message: err.message }
  if (err instanceof TypeError) return { ok: false, code: 'ERR_CSR_INVALID', message: 'invalid CSR: not DER bytes' }
  return { ok: false, code: 'ERR_INTERNAL', message: `${what} failed unexpectedly` }
}

function check(der: Uint8Array): CsrOutcome {
  try {
    const c = verifyCsr(der, options)
    return { ok: true, spki: c.spki, spiffeId: c.spiffeId, dnsNames: c.dnsNames }
  } catch (err) {
    return failure(err, 'CSR verification')
  }
}

/** The CA this worker signs with, by generation (the pool sends a new one after each rotation). */
let ca: Ca | undefined
/** SPIFFE IDs parsed once (the server validated them); cleared when large. */
const ids = new Map<string, SpiffeId>()

type Ca = { gen: number; certificate: Uint8Array; signer: KeyObjectSigner }

async function signOne(item: WireSignItem, c: Ca | undefined, gen: number): Promise<CsrOutcome> {
  let spki: Uint8Array
  try {
    spki = verifyCsr(item.csr, options).spki
  } catch (err) {
    return failure(err, 'CSR verification')
  }
  if (c === undefined || c.gen !== gen) return { ok: false, code: 'ERR_UNAVAILABLE', message: 'CA changed while signing; retry' }
  try {
    let id = ids.get(item.spiffeId)
    if (id === undefined) {
      if (ids.size >= 10_000) ids.clear()
      ids.set(item.spiffeId, (id = SpiffeId.fromString(item.spiffeId)))
    }
    const leaf = await createX509Svid({
      spiffeId: id,
      publicKey: { spki },
      signer: c.signer,
      issuer: { certificate: c.certificate },
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
      for (const item of m.sign) results.push(await signOne(item, c, m.gen))
      const reply: CsrJobResult = { id: m.id, results }
      port.postMessage(reply)
    })
    return
  }
  const reply: CsrJobResult = { id: m.id, results: m.csrs.map(check), ...(m.id === 0 ? { native: ecdsa !== undefined } : {}) }
  port.postMessage(reply)
})
