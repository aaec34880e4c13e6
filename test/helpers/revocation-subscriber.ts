/**
 * A resource-server process for end-to-end tests: subscribes to a broker's
 * revocation feed with its X.509-SVID (files read at every reconnect) and
 * verifies tokens with the token library against the broker's JWKS and the
 * feed. Line protocol: prints `{"synced":true}` once, `{"entry":{...},"at":ms}`
 * per revocation; reads a token per stdin line and prints
 * `{"token":n,"ok":bool,"code"?:...}`.
 *
 * argv: <issuer> <CA PEM file> <cert PEM file> <key PEM file> <audience>
 */
import https from 'node:https'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { RevocationFeed } from '../../src/resource-server/revocation-feed.js'
import { verifyAccessToken } from '../../src/tokens/access-token.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { revocableClaims } from '../../src/tokens/revocation.js'

const [issuer, caFile, certFile, keyFile, audience] = process.argv.slice(2) as [string, string, string, string, string]
const out = (o: unknown) => process.stdout.write(`${JSON.stringify(o)}\n`)
const tls = () => ({ ca: readFileSync(caFile), cert: readFileSync(certFile), key: readFileSync(keyFile) })
const getJson = (url: string) =>
  new Promise<unknown>((resolve, reject) => {
    https
      .get(url, { ...tls(), agent: false }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => {
          try {
            resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')))
          } catch (e) {
            reject(e instanceof Error ? e : new Error(String(e)))
          }
        })
      })
      .on('error', reject)
  })
const keys = new JwksCache({ fetchJwks: () => getJson(`${issuer}/jwks`) })
const feed = new RevocationFeed({
  url: `${issuer}/revocations/feed`,
  tls,
  backoffMs: { min: 100, max: 500 },
  onEntry: (e) => out({ entry: e, at: Date.now() }),
})
void feed.synced.then(() => out({ synced: true }))
let n = 0
for await (const line of createInterface({ input: process.stdin })) {
  const token = line.trim()
  if (!token) continue
  const i = ++n
  try {
    const now = Math.floor(Date.now() / 1000)
    const claims = await verifyAccessToken(token, { issuer, audience, keys, nowSec: now })
    const covered = feed.covering(revocableClaims(claims as unknown as Record<string, unknown>), now)
    out(covered ? { token: i, ok: false, code: 'revoked', seq: covered.seq } : { token: i, ok: true })
  } catch (err) {
    out({ token: i, ok: false, code: (err as { code?: string }).code ?? String(err) })
  }
}
feed.close()
