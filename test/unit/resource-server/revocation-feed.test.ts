import https from 'node:https'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { RevocationFeed } from '../../../src/resource-server/revocation-feed.js'
import type { RevocationEntry } from '../../../src/tokens/revocation.js'
import { makeCa, makeSvid, pem, type Svid } from '../../helpers/broker-http-fixtures.js'

/**
 * The feed client against a scripted HTTPS server (real sockets and TLS): it
 * resumes with Last-Event-ID after a break, ignores comments and unknown
 * events, skips an unreadable entry without losing the stream, and backs off
 * when refused.
 */

let caPem: string
let server: Svid
let client: Svid
beforeAll(async () => {
  const ca = await makeCa('example.org')
  caPem = pem(ca.certificate)
  server = await makeSvid(ca, 'spiffe://example.org/broker', { dnsNames: ['localhost'] })
  client = await makeSvid(ca, 'spiffe://example.org/rs')
})

let srv: https.Server | undefined
let feed: RevocationFeed | undefined
afterEach(() => {
  feed?.close()
  srv?.closeAllConnections()
  srv?.close()
})

const entry = (seq: number) =>
  `id: ${seq}\nevent: revocation\ndata: ${JSON.stringify({ seq, kind: 'instance', value: `spiffe://example.org/a${seq}`, created_at: 1, expires_at: 2 ** 31 })}\n\n`

async function listen(handler: (req: IncomingMessage, res: ServerResponse, n: number) => void): Promise<string> {
  let n = 0
  srv = https.createServer({ cert: server.certPem, key: server.keyPem, ca: caPem, requestCert: true, rejectUnauthorized: true }, (req, res) =>
    handler(req, res, ++n),
  )
  await new Promise<void>((r) => srv!.listen(0, '127.0.0.1', () => r()))
  return `https://localhost:${(srv.address() as AddressInfo).port}/feed`
}

const until = async (what: string, cond: () => boolean) => {
  for (let i = 0; i < 300 && !cond(); i++) await new Promise((r) => setTimeout(r, 10))
  expect(cond(), what).toBe(true)
}

describe('RevocationFeed', () => {
  it('resumes after a break from the last seq it holds (Last-Event-ID), with its client certificate each time', async () => {
    const seen: { lastEventId: string | undefined; cert: boolean }[] = []
    const url = await listen((req, res, n) => {
      seen.push({
        lastEventId: req.headers['last-event-id'] as string | undefined,
        cert: (req.socket as import('node:tls').TLSSocket).getPeerCertificate().raw !== undefined,
      })
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      if (n === 1) {
        res.write(`: hello\n\n${entry(1)}${entry(2)}event: synced\ndata: {"seq":2}\n\n`)
        setTimeout(() => res.destroy(), 30)
      } else res.write(`${entry(3)}event: other\ndata: x\n\nevent: synced\ndata: {"seq":3}\n\n`)
    })
    const got: RevocationEntry[] = []
    feed = new RevocationFeed({
      url,
      tls: () => ({ ca: caPem, cert: client.certPem, key: client.keyPem }),
      backoffMs: { min: 20, max: 40 },
      onEntry: (e) => got.push(e),
    })
    await feed.synced
    await until('the entry after the break', () => got.length === 3)
    expect(got.map((e) => e.seq)).toEqual([1, 2, 3])
    expect(seen).toEqual([
      { lastEventId: undefined, cert: true },
      { lastEventId: '2', cert: true },
    ])
    expect(feed.set.lastSeq).toBe(3)
    expect(feed.covering({ jti: 'j', sub: 'spiffe://example.org/a3', actors: [] }, 100)?.seq).toBe(3)
  })

  it('skips an unreadable entry and keeps the stream; a refused subscription is retried with backoff', async () => {
    const url = await listen((_req, res, n) => {
      if (n === 1) {
        res.writeHead(401, { 'content-type': 'application/json' })
        res.end('{"error":"invalid_client"}')
        return
      }
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write(`event: revocation\ndata: {"seq":"x"}\n\n${entry(5)}event: synced\ndata: {"seq":5}\n\n`)
    })
    const got: RevocationEntry[] = []
    feed = new RevocationFeed({
      url,
      tls: () => ({ ca: caPem, cert: client.certPem, key: client.keyPem }),
      backoffMs: { min: 20, max: 40 },
      onEntry: (e) => got.push(e),
    })
    await feed.synced
    await until('the readable entry', () => got.length === 1)
    expect(got[0]!.seq).toBe(5)
    expect(feed.connected).toBe(true)
  })

  it('refuses a plain-http URL', () => {
    expect(() => new RevocationFeed({ url: 'http://localhost/feed', tls: () => ({ ca: caPem }) })).toThrow(TypeError)
  })
})
