/**
 * Agent-side process of bench/sign.ts: attests with a join token over real
 * TLS, then, on request, sends BatchNewX509SVID calls of pre-generated CSRs
 * for its entries and reports how many SVIDs it got signed. Line protocol on
 * stdin/stdout (one JSON object per line).
 */
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { createCsr } from '../src/spiffe/x509-svid/csr.js'
import { newP256, TestAgentClient } from '../test/helpers/test-agent-client.js'

const [address, bundlePath, token, td] = process.argv.slice(2)
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const client = new TestAgentClient({ address: address!, bundlePem: readFileSync(bundlePath!, 'utf8'), trustDomain: td ?? 'example.org' })
const cred = await client.attestJoinToken(token!)
out({ agentId: cred.agentId })

let batch: { entryId: string; csr: Uint8Array }[] = []
const lines = createInterface({ input: process.stdin })
for await (const line of lines) {
  const msg = JSON.parse(line) as { entries?: string[]; round?: number; concurrency?: number; exit?: boolean }
  if (msg.entries) {
    batch = await Promise.all(msg.entries.map(async (entryId) => ({ entryId, csr: await createCsr({ privateKey: newP256().privateKey }) })))
    // warm-up call: checks every item is signed
    const r = await client.batchNewX509Svid(batch)
    const failed = r.filter((x) => x.status.code !== 0)
    if (failed.length > 0) throw new Error(`batch item failed: ${failed[0]!.status.error_code} ${failed[0]!.status.message}`)
    out({ ready: true, batch: batch.length })
  } else if (msg.round) {
    const conc = msg.concurrency ?? 1
    const start = performance.now()
    const end = start + msg.round
    let signed = 0
    const worker = async () => {
      while (performance.now() < end) {
        const r = await client.batchNewX509Svid(batch)
        for (const x of r) if (x.status.code === 0) signed++
      }
    }
    await Promise.all(Array.from({ length: conc }, worker))
    out({ signed, ms: performance.now() - start })
  } else if (msg.exit) {
    break
  }
}
client.close()
process.exit(0)
