import https from 'node:https'
import { decodeJwt } from 'jose'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { RevocationFeed } from '../../src/resource-server/revocation-feed.js'
import { createDpopProof, MemoryReplayCache } from '../../src/tokens/dpop.js'
import { JwksCache } from '../../src/tokens/jwks-cache.js'
import { verifyResourceRequest } from '../../src/tokens/request.js'
import { verifyRevocationList, type RevocationEntry } from '../../src/tokens/revocation.js'
import { pem, request } from '../helpers/broker-http-fixtures.js'
import { A, API, B, C, RS, TOOL, newKey, startBrokerWire, type BrokerWire, type KeyPair } from '../helpers/broker-wire.js'

/**
 * The revocation feed over real HTTPS and mutual TLS: a resource server's
 * RevocationFeed receives an entry the moment the broker records it and the
 * request verifier refuses the covered token from then on; the feed resumes
 * from Last-Event-ID; subscribers must authenticate; the signed list verifies
 * offline from the JWKS alone.
 */

let w: BrokerWire
let caPem: string
beforeAll(async () => {
  w = await startBrokerWire()
  caPem = pem(w.ca.certificate)
}, 30_000)
afterAll(async () => {
  await w?.close()
})

const keys = () => new JwksCache({ fetchJwks: () => w.svc.jwks() })
const rsTls = () => ({ ca: caPem, cert: w.svids[RS]!.certPem, key: w.svids[RS]!.keyPem })

/** A resource request for `token` bound to `key`, checked with `revocations`. */
async function call(token: string, key: KeyPair, revocations: RevocationFeed) {
  const url = `${API}/tools`
  return verifyResourceRequest(
    { authorization: `DPoP ${token}`, dpop: await createDpopProof(key, { method: 'GET', url, accessToken: token }), method: 'GET', url },
    { issuer: w.issuer, audience: API, keys: keys(), dpop: { replay: new MemoryReplayCache() }, revocations },
  )
}

/** Reads the raw feed until `synced`; the ids and kinds seen. */
function readFeed(headers: Record<string, string>, opts: { client?: boolean } = {}): Promise<{ status: number; events: { id?: string; event: string }[] }> {
  return new Promise((resolve, reject) => {
    const req = https.request(
      `${w.issuer}/revocations/feed`,
      { method: 'GET', headers, agent: false, ca: caPem, ...(opts.client === false ? {} : { cert: w.svids[RS]!.certPem, key: w.svids[RS]!.keyPem }) },
      (res) => {
        if (res.statusCode !== 200) {
          res.resume()
          resolve({ status: res.statusCode ?? 0, events: [] })
          return
        }
        let buf = ''
        const events: { id?: string; event: string }[] = []
        res.setEncoding('utf8')
        res.on('data', (c: string) => {
          buf += c
          let i: number
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i)
            buf = buf.slice(i + 2)
            const id = /^id: (.*)$/m.exec(block)?.[1]
            const event = /^event: (.*)$/m.exec(block)?.[1]
            if (event === undefined) continue
            events.push({ ...(id !== undefined ? { id } : {}), event })
            if (event === 'synced') {
              req.destroy()
              resolve({ status: 200, events })
            }
          }
        })
      },
    )
    req.on('error', (e) => (e.message.includes('socket hang up') ? undefined : reject(e)))
    req.end()
  })
}

describe('the revocation feed', () => {
  it('a subscribed verifier refuses a revoked token as soon as the entry arrives; other tokens pass', async () => {
    const arrived: RevocationEntry[] = []
    const feed = new RevocationFeed({ url: `${w.issuer}/revocations/feed`, tls: rsTls, onEntry: (e) => arrived.push(e) })
    try {
      await feed.synced
      const aKey = await newKey()
      const bKey = await newKey()
      const aToken = await w.rootToken(aKey)
      const bToken = await w.rootToken(bKey, { client: B })
      await expect(call(aToken, aKey, feed)).resolves.toMatchObject({ claims: { sub: A } })
      const before = arrived.length
      const r = await w.svc.revokeAt({ kind: 'instance', value: A, reason: 'test' }, 'admin')
      // pushed, not polled: wait for the entry (bounded), then the verifier refuses
      for (let i = 0; i < 200 && arrived.length === before; i++) await new Promise((res) => setTimeout(res, 10))
      expect(arrived.at(-1)).toMatchObject({ seq: r.entry.seq, kind: 'instance', value: A })
      await expect(call(aToken, aKey, feed)).rejects.toMatchObject({ code: 'ERR_ACCESS_TOKEN_INVALID', status: 401, details: { reason: 'revoked' } })
      await expect(call(bToken, bKey, feed)).resolves.toMatchObject({ claims: { sub: B } })
      expect(feed.connected).toBe(true)
    } finally {
      feed.close()
    }
  })

  it('resumes from Last-Event-ID (only later entries, then synced); refuses a bad seq and an unauthenticated subscriber', async () => {
    const t = decodeJwt(await w.rootToken(await newKey(), { client: C })).jti!
    const one = await w.svc.revokeAt({ kind: 'token', value: t }, 'admin')
    const two = await w.svc.revokeAt({ kind: 'prefix', value: 'spiffe://example.org/tools', notAfter: Math.floor(Date.now() / 1000) + 600 }, 'admin')
    const all = await readFeed({})
    expect(all.events.filter((e) => e.event === 'revocation').map((e) => Number(e.id))).toEqual(expect.arrayContaining([one.entry.seq, two.entry.seq]))
    const resumed = await readFeed({ 'last-event-id': String(one.entry.seq) })
    expect(resumed.events).toEqual([{ id: String(two.entry.seq), event: 'revocation' }, { event: 'synced' }])
    expect((await readFeed({ 'last-event-id': 'x1' })).status).toBe(400)
    const anon = await request(`${w.issuer}/revocations/feed`, { ca: caPem })
    expect({ status: anon.status, error: anon.json().error }).toEqual({ status: 401, error: 'invalid_client' })
  })

  it('the signed list verifies with the JWKS alone and carries every unexpired entry; a forged or stale one is refused', async () => {
    const t = decodeJwt(await w.rootToken(await newKey(), { client: C })).jti!
    const r = await w.svc.revokeAt({ kind: 'token', value: t }, 'admin')
    const res = await request(`${w.issuer}/revocations/list`, { client: w.svids[RS]!, ca: caPem })
    expect(res.status).toBe(200)
    expect(res.headers['content-type']).toMatch(/^application\/jwt/)
    const list = await verifyRevocationList(res.body, { issuer: w.issuer, keys: keys() })
    expect(list.seq).toBeGreaterThanOrEqual(r.entry.seq)
    expect(list.entries.find((e) => e.seq === r.entry.seq)).toMatchObject({ kind: 'token', jtis: [t] })
    const [h, p, s] = res.body.split('.') as [string, string, string]
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...decodeJwt(res.body), revocations: [] })).toString('base64url')}.${s}`
    await expect(verifyRevocationList(forged, { issuer: w.issuer, keys: keys() })).rejects.toMatchObject({ code: 'ERR_REVOCATION_INVALID' })
    await expect(verifyRevocationList(`${h}.${p}.${s}`, { issuer: 'https://other', keys: keys() })).rejects.toMatchObject({ code: 'ERR_REVOCATION_INVALID' })
    await expect(verifyRevocationList(res.body, { issuer: w.issuer, keys: keys(), nowSec: Math.floor(Date.now() / 1000) + 301 })).rejects.toMatchObject({
      code: 'ERR_REVOCATION_INVALID',
    })
    const anon = await request(`${w.issuer}/revocations/list`, { ca: caPem })
    expect(anon.status).toBe(401)
  })

  it('revocation admins revoke over HTTPS (JSON, mutual TLS); anyone else is refused and nothing is recorded', async () => {
    const post = (as: string, body: string, type = 'application/json') =>
      request(`${w.issuer}/revocations`, { method: 'POST', headers: { 'content-type': type }, body, client: w.svids[as]!, ca: caPem })
    const before = (await w.svc.listRevocations(0, true)).length
    const denied = await post(RS, JSON.stringify({ kind: 'instance', value: 'spiffe://example.org/agents/z' }))
    expect({ status: denied.status, body: denied.json() }).toEqual({ status: 403, body: { error: 'unauthorized_client' } })
    const bad = await post(TOOL, JSON.stringify({ kind: 'instance', value: 'not-an-id' }))
    expect({ status: bad.status, error: bad.json().error }).toEqual({ status: 400, error: 'invalid_request' })
    const form = await post(TOOL, 'kind=instance', 'application/x-www-form-urlencoded')
    expect(form.status).toBe(400)
    expect((await w.svc.listRevocations(0, true)).length).toBe(before)
    const ok = await post(TOOL, JSON.stringify({ kind: 'instance', value: 'spiffe://example.org/agents/z', reason: 'anomaly' }))
    expect(ok.status).toBe(201)
    expect(ok.json()).toMatchObject({ kind: 'instance', value: 'spiffe://example.org/agents/z', created: true })
    const again = await post(TOOL, JSON.stringify({ kind: 'instance', value: 'spiffe://example.org/agents/z' }))
    expect({ status: again.status, created: again.json().created }).toEqual({ status: 200, created: false })
  })
})
