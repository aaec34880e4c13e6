/**
 * Child process of bench/revocation.ts: N node agents' server side, over real
 * gRPC and TLS. Each attests with its own join token (argv), then holds a Sync
 * stream as a running agent does. Prints `{"ready":N}` once every stream has
 * had its first full update, then, for every revoked value, once all N
 * streams carry it: `{"value":V,"arrivals":[ms since epoch, ...]}`.
 *
 * argv: <server address> <trust domain> <bundle PEM file> <token>...
 */
import { setMaxListeners } from 'node:events'
import { readFileSync } from 'node:fs'
import { joinTokenAgent } from '../attestors/node/join-token/agent.js'
import { attestNode } from '../src/agent/node-attestation.js'
import { GrpcServerClient } from '../src/agent/server-client.js'
import { newEcPrivateKey } from '../src/common/crypto/new-key.js'
import { nullLogger } from '../src/common/log/logger.js'
import { TrustDomain } from '../src/spiffe/trust-domain.js'
import { X509Svid } from '../src/spiffe/x509-svid/x509-svid.js'

const [address, tdName, bundleFile, ...tokens] = process.argv.slice(2) as [string, string, string, ...string[]]
const td = TrustDomain.fromString(tdName)
const rootsPem = readFileSync(bundleFile, 'utf8')
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const arrivals = new Map<string, number[]>()
const seen: Set<string>[] = []
const abort = new AbortController()
setMaxListeners(0, abort.signal) // one listener per stream
const clients: GrpcServerClient[] = []
let synced = 0
const n = tokens.length

for (const [i, token] of tokens.entries()) {
  const key = newEcPrivateKey('P-256')
  const boot = new GrpcServerClient({ address, trustDomain: td, credentials: { rootsPem } })
  const a = await attestNode({ client: boot, attestorName: 'join_token', attestor: joinTokenAgent(token), privateKey: key, trustDomain: td, log: nullLogger })
  boot.close()
  const svid = X509Svid.fromChain(a.svidChain, key)
  const client = new GrpcServerClient({
    address,
    trustDomain: td,
    credentials: { rootsPem, keyPem: key.export({ type: 'pkcs8', format: 'pem' }) as string, chainPem: svid.certificatesPem() },
  })
  clients.push(client)
  const mine = new Set<string>()
  seen[i] = mine
  let first = true
  void client.sync(
    (m) => {
      const t = Date.now()
      if (first && m.full) {
        first = false
        if (++synced === n) out({ ready: n })
      }
      for (const r of m.revocations ?? []) {
        if (mine.has(r.value)) continue
        mine.add(r.value)
        let got = arrivals.get(r.value)
        if (!got) arrivals.set(r.value, (got = []))
        got.push(t)
        if (got.length === n) {
          out({ value: r.value, arrivals: got })
          arrivals.delete(r.value)
        }
      }
    },
    { signal: abort.signal },
  )
}

process.stdin.resume()
process.stdin.on('end', () => {
  abort.abort()
  for (const c of clients) c.close()
  process.exit(0)
})
