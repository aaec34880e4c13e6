import https from 'node:https'
import type { AddressInfo } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { httpsTransport, type X509SvidSource } from '../../../src/broker-client/transport.js'
import { X509Svid } from '../../../src/spiffe/x509-svid/x509-svid.js'
import { bundlesOf, makeCa, makeSvid, pem, type Ca } from '../../helpers/broker-http-fixtures.js'

/** The client's HTTPS: its SVID as client certificate, per-SVID keep-alive connections, server verification, limits. */

let ca: Ca
let other: Ca
let server: https.Server
let base: string
let svid1: X509Svid
let svid2: X509Svid

beforeAll(async () => {
  ca = await makeCa('example.org')
  other = await makeCa('other.org')
  const s = await makeSvid(ca, 'spiffe://example.org/rs', { dnsNames: ['localhost'] })
  const a1 = await makeSvid(ca, 'spiffe://example.org/agent')
  const a2 = await makeSvid(ca, 'spiffe://example.org/agent')
  svid1 = X509Svid.parse(a1.certPem, a1.keyPem)
  svid2 = X509Svid.parse(a2.certPem, a2.keyPem)
  server = https.createServer({ cert: s.certPem, key: s.keyPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
    const sock = req.socket as TLSSocket
    const peer = sock.getPeerCertificate()
    res.writeHead(200, { 'content-type': 'application/json', 'dpop-nonce': 'n1' })
    res.end(JSON.stringify({ port: sock.remotePort, cert: peer?.fingerprint256 ?? null, path: req.url, big: req.url === '/big' ? 'x'.repeat(4096) : '' }))
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
  base = `https://localhost:${(server.address() as AddressInfo).port}`
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise<void>((r) => server.close(() => r()))
})

const body = (b: Buffer) => JSON.parse(b.toString('utf8')) as { port: number; cert: string | null }

describe('httpsTransport', () => {
  it('presents the current SVID, keeps the connection alive, and opens a new one with the rotated SVID', async () => {
    let current = svid1
    const source: X509SvidSource = { getX509Svid: () => current }
    const t = httpsTransport({ source, ca: pem(ca.certificate) })
    try {
      const r1 = await t.request(`${base}/a`, { method: 'GET', headers: {} })
      expect(r1.status).toBe(200)
      expect(r1.headers['dpop-nonce']).toBe('n1')
      const r2 = await t.request(`${base}/b`, { method: 'GET', headers: {} })
      expect(body(r2.body).port).toBe(body(r1.body).port)
      expect(body(r2.body).cert).toBe(body(r1.body).cert)
      current = svid2
      const r3 = await t.request(`${base}/c`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' })
      expect(body(r3.body).cert).not.toBe(body(r1.body).cert)
      expect(body(r3.body).port).not.toBe(body(r1.body).port)
    } finally {
      t.close()
    }
  })

  it("verifies the server against the source's bundles when no CA is given, and refuses a server another CA vouches for", async () => {
    const withBundles = httpsTransport({ source: { getX509Svid: () => svid1, getBundles: () => bundlesOf([ca]) } })
    expect((await withBundles.request(`${base}/`, { method: 'GET', headers: {} })).status).toBe(200)
    withBundles.close()
    const wrong = httpsTransport({ source: { getX509Svid: () => svid1 }, ca: pem(other.certificate) })
    await expect(wrong.request(`${base}/`, { method: 'GET', headers: {} })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
    wrong.close()
    const wrongHost = httpsTransport({ source: { getX509Svid: () => svid1 }, ca: pem(ca.certificate) })
    await expect(wrongHost.request(base.replace('localhost', '127.0.0.1'), { method: 'GET', headers: {} })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
    wrongHost.close()
  })

  it('caps the response body and refuses non-http URLs', async () => {
    const t = httpsTransport({ source: { getX509Svid: () => svid1 }, ca: pem(ca.certificate), maxBytes: 1024 })
    await expect(t.request(`${base}/big`, { method: 'GET', headers: {} })).rejects.toMatchObject({ code: 'ERR_REQUEST_MALFORMED' })
    await expect(t.request('file:///etc/passwd', { method: 'GET', headers: {} })).rejects.toThrow(TypeError)
    t.close()
  })
})
