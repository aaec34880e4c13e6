/**
 * The transmitter's push client over real HTTPS: a SET reaches only an
 * endpoint that presents the stream owner's X.509-SVID; an endpoint with
 * another SPIFFE ID (same trust domain) is refused before anything is sent.
 */
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { httpsSetPushTransport } from '../../src/broker/http/ssf-push-client.js'
import { bundlesOf, makeCa, makeSvid, type Ca, type Svid } from '../helpers/broker-http-fixtures.js'

const OWNER = 'spiffe://example.org/secops/receiver'
const OTHER = 'spiffe://example.org/secops/impostor'
let ca: Ca
let client: Svid
const servers: https.Server[] = []
const received: { id: string; auth: string | undefined; body: string }[] = []

async function endpoint(id: string): Promise<string> {
  const svid = await makeSvid(ca, id, { dnsNames: ['localhost'] })
  const s = https.createServer({ cert: svid.certPem, key: svid.keyPem }, (req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      received.push({ id, auth: req.headers.authorization, body })
      res.writeHead(202).end()
    })
  })
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()))
  servers.push(s)
  return `https://localhost:${(s.address() as AddressInfo).port}/push`
}

beforeAll(async () => {
  ca = await makeCa('example.org')
  client = await makeSvid(ca, 'spiffe://example.org/warrant/broker')
})
afterAll(() => {
  for (const s of servers) s.close()
})

describe('SSF push client', () => {
  const transport = () => httpsSetPushTransport({ identity: () => ({ certChainPem: client.certPem, keyPem: client.keyPem }), bundles: () => bundlesOf([ca]) })

  it("pushes to the stream owner's endpoint with its Authorization header and the SET media type", async () => {
    const url = await endpoint(OWNER)
    const r = await transport().push(url, 'a.b.c', { receiver: OWNER, authorization: 'Bearer s3cret' })
    expect(r.status).toBe(202)
    expect(received.at(-1)).toEqual({ id: OWNER, auth: 'Bearer s3cret', body: 'a.b.c' })
  })

  it('refuses an endpoint that presents another SPIFFE ID, and sends it nothing', async () => {
    const url = await endpoint(OTHER)
    const before = received.length
    await expect(transport().push(url, 'a.b.c', { receiver: OWNER, authorization: 'Bearer s3cret' })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
    expect(received.length).toBe(before)
  })

  it('refuses a non-https endpoint', async () => {
    await expect(transport().push('http://localhost:1/push', 'a.b.c', { receiver: OWNER })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })
})
