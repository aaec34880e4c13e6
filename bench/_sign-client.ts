/**
 * Agent-side process of bench/sign.ts: attests with a join token over real
 * TLS, then, on request, sends BatchNewX509SVID calls of pre-generated CSRs
 * for its entries through the agent's own server client (GrpcServerClient,
 * mutual TLS with the agent SVID) and reports how many SVIDs it got signed.
 * Line protocol on stdin/stdout (one JSON object per line).
 */
import { readdirSync, readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { GrpcServerClient } from '../src/agent/server-client.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { createCsr } from '../src/spiffe/x509-svid/csr.js'
import { newP256, pemOf, TestAgentClient } from '../test/helpers/test-agent-client.js'

const [address, bundlePath, token, td] = process.argv.slice(2)
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const bundlePem = readFileSync(bundlePath!, 'utf8')
const attester = new TestAgentClient({ address: address!, bundlePem, trustDomain: td ?? 'example.org' })
const cred = await attester.attestJoinToken(token!)
attester.close()
const client = new GrpcServerClient({
  address: address!,
  trustDomain: TrustDomain.fromString(td ?? 'example.org'),
  credentials: {
    rootsPem: bundlePem,
    keyPem: cred.key.export({ format: 'pem', type: 'pkcs8' }) as string,
    chainPem: cred.chain.map((c) => pemOf('CERTIFICATE', c)).join(''),
  },
})
out({ agentId: cred.agentId })

let batch: { entryId: string; csr: Uint8Array }[] = []
const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const msg = JSON.parse(line) as { entries?: string[]; round?: number; concurrency?: number; exit?: boolean }
  if (msg.entries) {
    batch = await Promise.all(msg.entries.map(async (entryId) => ({ entryId, csr: await createCsr({ privateKey: newP256().privateKey }) })))
    // warm-up call: checks every item is signed
    const r = await client.batchNewX509Svid(batch)
    const failed = r.find((x) => x.error !== undefined || x.svidChain.length === 0)
    if (failed) throw new Error(`batch item failed: ${failed.error?.code} ${failed.error?.message}`)
    out({ ready: true, batch: batch.length })
  } else if (msg.round) {
    const conc = msg.concurrency ?? 1
    const t0 = threadCpu()
    const start = performance.now()
    const end = start + msg.round
    let signed = 0
    const worker = async () => {
      while (performance.now() < end) {
        const r = await client.batchNewX509Svid(batch)
        for (const x of r) if (x.error === undefined && x.svidChain.length > 0) signed++
      }
    }
    await Promise.all(Array.from({ length: conc }, worker))
    const t1 = threadCpu()
    const ms = performance.now() - start
    const deltas = [...t1].map(([tid, v]) => [tid, v - (t0.get(tid) ?? 0)] as const).filter(([, d]) => d > 0)
    out({ signed, ms, threads: Object.fromEntries(deltas) })
  } else if (msg.exit) {
    break
  }
}
client.close()
process.exit(0)

function threadCpu(): Map<string, number> {
  const m = new Map<string, number>()
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const st = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8')
      const f = st.slice(st.lastIndexOf(')') + 2).split(' ')
      m.set(tid === String(process.pid) ? 'main' : tid, (Number(f[11]) + Number(f[12])) * 10000)
    } catch {
      // the thread ended between the listing and the read
    }
  }
  return m
}
