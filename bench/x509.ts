/**
 * x509_svid_sign_vs_node_crypto: X.509-SVIDs built and signed per second with
 * an in-memory P-256 CA key (KeyObjectSigner + createX509Svid, a fresh SPIFFE
 * ID per certificate, pre-generated leaf public keys reused round-robin),
 * against a raw `crypto.sign('sha256', tbs, key)` loop over a TBS of the same
 * size. Target ratio >= 0.5.
 */
import { sign } from 'node:crypto'
import { opsPerSecond, opsPerSecondSync, report } from './lib.js'
import { generateKeyPair, KeyObjectSigner } from '../src/spiffe/key-signer.js'
import { SpiffeId } from '../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { createCaCertificate, createX509Svid } from '../src/spiffe/x509-svid/index.js'

export async function run(_args: string[]): Promise<void> {
  const td = TrustDomain.fromString('bench.example.org')
  const ca = generateKeyPair('ec-p256')
  const signer = new KeyObjectSigner(ca.privateKey)
  const now = Date.now()
  const caCert = await createCaCertificate({
    trustDomain: td,
    publicKey: ca.publicKey,
    signer,
    notBefore: new Date(now - 60_000),
    notAfter: new Date(now + 24 * 3600_000),
  })
  const leafKeys = Array.from({ length: 64 }, () => generateKeyPair('ec-p256').publicKey)
  const issuer = { certificate: caCert }
  let n = 0
  const one = async (): Promise<Uint8Array> => {
    const i = n++
    return createX509Svid({
      spiffeId: SpiffeId.fromPath(td, `/ns/prod/agent/worker-${i}`),
      publicKey: leafKeys[i % leafKeys.length]!,
      signer,
      issuer,
      notAfter: new Date(now + 3600_000),
    })
  }
  // A TBS of the same size as a leaf's: the certificate minus its signature wrapper (~80 bytes).
  const sample = await one()
  const tbs = Buffer.alloc(sample.length - 80, 0x5a)
  // Interleaved rounds, median of each side: on a shared, loaded machine a
  // single long run of each would mostly measure the load drifting between them.
  const rounds = 7
  const ms = 600
  const base: number[] = []
  const ours: number[] = []
  for (let r = 0; r < rounds; r++) {
    base.push(opsPerSecondSync(() => sign('sha256', tbs, ca.privateKey), { ms, warmupMs: 100 }))
    ours.push(await opsPerSecond(one, { ms, warmupMs: 100 }))
  }
  const baseline = median(base)
  const value = median(ours)
  report('x509_svid_sign_vs_node_crypto', value, baseline, 'ops/s', { leaf_bytes: sample.length, tbs_bytes: tbs.length })
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}
