/** The gateway serves its rotated X.509-SVID to new connections (setSecureContext on every identity change). */
import { X509Certificate } from 'node:crypto'
import { connect } from 'node:tls'
import { afterAll, describe, expect, it } from 'vitest'
import { nullLogger } from '../../../src/common/log/logger.js'
import { startGatewayServer, type GatewayServer } from '../../../src/gateway/gateway-server.js'
import { ToolRegistry } from '../../../src/gateway/registry.js'
import { MemoryReplayCache } from '../../../src/tokens/dpop.js'
import { JwksCache } from '../../../src/tokens/jwks-cache.js'
import { bundlesOf, makeCa, makeSvid, pem } from '../../helpers/broker-http-fixtures.js'

function servedSerial(port: number, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'localhost', ca }, () => {
      const serial = s.getPeerX509Certificate()?.serialNumber ?? ''
      s.end()
      resolve(serial)
    })
    s.on('error', reject)
  })
}

describe('gateway identity rotation', () => {
  let gw: GatewayServer | undefined
  afterAll(async () => gw?.close())

  it('new connections get the rotated certificate', async () => {
    const ca = await makeCa('rot.test')
    const first = await makeSvid(ca, 'spiffe://rot.test/services/gateway', { dnsNames: ['localhost'] })
    const second = await makeSvid(ca, 'spiffe://rot.test/services/gateway', { dnsNames: ['localhost'] })
    let current = first
    const listeners = new Set<() => void>()
    const bundles = bundlesOf([ca])
    gw = await startGatewayServer({
      host: '127.0.0.1',
      port: 0,
      url: 'https://localhost:1',
      identity: {
        current: () => ({ certChainPem: current.certPem, keyPem: current.keyPem }),
        onChange: (fn) => (listeners.add(fn), () => listeners.delete(fn)),
      },
      trust: { localTrustDomain: () => ca.td, bundles: () => bundles, authoritiesPem: () => pem(ca.certificate) },
      federatedTrustDomains: [],
      registry: () => ToolRegistry.fromDocuments([]),
      ceilingFor: () => ({ scopes: [], resources: [], maxDelegationDepth: 5, mayDelegateTo: [], allowBearer: false, prefixes: [] }),
      broker: {
        issuer: 'https://broker',
        keys: new JwksCache({ fetchJwks: () => Promise.resolve({ keys: [] }) }),
        replay: new MemoryReplayCache(),
        allowBearer: false,
        txnToken: () => Promise.reject(new Error('unused')),
      },
      audit: { append: () => Promise.resolve({ seq: 1, leafIndex: 0, chainHash: '00', time: new Date().toISOString() }) },
      limits: { headerBytes: 16384, bodyBytes: 1024, requestTimeoutMs: 10_000, upstreamTimeoutMs: 5_000, maxConnectionsPerAddress: 100 },
      log: nullLogger,
    })
    const serial = (p: string) => new X509Certificate(p).serialNumber
    expect(await servedSerial(gw.port, pem(ca.certificate))).toBe(serial(first.certPem))
    current = second
    for (const l of listeners) l()
    expect(await servedSerial(gw.port, pem(ca.certificate))).toBe(serial(second.certPem))
  })
})
