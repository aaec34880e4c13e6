/**
 * Subscriber process of bench/revocation.ts: N RevocationFeed subscriptions
 * (each its own mutual-TLS connection, as N verifiers would hold) to one feed
 * URL. Prints `{"ready":N}` when all have synced, then for every seq, once
 * all N hold it, `{"seq":S,"arrivals":[ms since epoch, ...]}`.
 *
 * argv: <feed URL> <CA PEM file> <cert PEM file> <key PEM file> <N>
 */
import { readFileSync } from 'node:fs'
import { RevocationFeed } from '../src/resource-server/revocation-feed.js'

const [url, caFile, certFile, keyFile, nArg] = process.argv.slice(2) as [string, string, string, string, string]
const n = Number(nArg)
const tls = { ca: readFileSync(caFile), cert: readFileSync(certFile), key: readFileSync(keyFile) }
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const arrivals = new Map<number, number[]>()
const feeds: RevocationFeed[] = []
for (let i = 0; i < n; i++) {
  feeds.push(
    new RevocationFeed({
      url,
      tls: () => tls,
      onEntry: (e) => {
        const t = Date.now()
        let a = arrivals.get(e.seq)
        if (!a) arrivals.set(e.seq, (a = []))
        a.push(t)
        if (a.length === n) {
          out({ seq: e.seq, arrivals: a })
          arrivals.delete(e.seq)
        }
      },
    }),
  )
  // connect in small groups so the handshakes do not all land at once
  if (i % 50 === 49) await new Promise((r) => setTimeout(r, 20))
}
await Promise.all(feeds.map((f) => f.synced))
out({ ready: n })
process.stdin.resume()
process.stdin.on('end', () => {
  for (const f of feeds) f.close()
  process.exit(0)
})
