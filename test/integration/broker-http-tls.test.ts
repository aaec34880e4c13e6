import tls from 'node:tls'
import { once } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { pem } from '../helpers/broker-http-fixtures.js'
import { A, startBrokerWire, type BrokerWire } from '../helpers/broker-wire.js'

/**
 * The broker reads a connection's client certificate once (it cannot change):
 * TLS renegotiation, the one way a TLS 1.2 client could present another
 * certificate on the same connection, is refused.
 */

let w: BrokerWire
beforeAll(async () => {
  w = await startBrokerWire()
}, 30_000)
afterAll(async () => {
  await w?.close()
})

describe('broker TLS', () => {
  it('refuses client-initiated renegotiation on a TLS 1.2 connection', async () => {
    const svid = w.svids[A]!
    const socket = tls.connect({
      host: '127.0.0.1',
      port: Number(new URL(w.issuer).port),
      servername: 'localhost',
      ca: pem(w.ca.certificate),
      cert: svid.certPem,
      key: svid.keyPem,
      maxVersion: 'TLSv1.2',
    })
    socket.on('error', () => undefined)
    await once(socket, 'secureConnect')
    expect(socket.getProtocol()).toBe('TLSv1.2')
    const outcome = await new Promise<string>((resolve) => {
      socket.once('close', () => resolve('closed'))
      setTimeout(() => resolve('pending'), 5000).unref()
      const started = socket.renegotiate({ rejectUnauthorized: true }, (err) => resolve(err ? 'error' : 'renegotiated'))
      if (!started) resolve('not started')
    })
    socket.destroy()
    expect(outcome).not.toBe('renegotiated')
    expect(['error', 'closed']).toContain(outcome)
  })
})
