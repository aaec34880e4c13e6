import { X509Certificate, createPrivateKey } from 'node:crypto'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { MemoryKeyManager } from '../../../../src/keymanager/memory/index.js'
import { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { serverIdOf } from '../../../../src/server/registration/validate.js'
import { PushCertificateProvider } from '../../../../src/server/tls/push-certificate-provider.js'
import { ServerSvid, type ServerSvidPem } from '../../../../src/server/tls/server-svid.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'

const td = TrustDomain.fromString('example.org')
const TTL = 3_600_000

async function setup() {
  const clock = new FakeClock()
  const log = captureLogger()
  const ca = new CaManager({
    trustDomain: td,
    keyManager: new MemoryKeyManager(),
    ds: createMemoryDataStore({ clock }),
    clock,
    log,
    caTtlMs: 24 * TTL,
    caKeyType: 'ec-p256',
    jwtKeyType: 'ec-p256',
    refreshHintSeconds: 60,
  })
  await ca.init()
  const issued: ServerSvidPem[] = []
  const svid = new ServerSvid({ ca, spiffeId: serverIdOf(td), ttlMs: TTL, clock, log, onIssued: (p) => issued.push(p) })
  return { clock, log, ca, issued, svid }
}

afterEach(() => {
  vi.useRealTimers()
})

describe('ServerSvid', () => {
  it('issues the server ID with a fresh key per SVID and hands each to the certificate provider', async () => {
    const { issued, svid } = await setup()
    const tls = new PushCertificateProvider()
    const seen: Buffer[] = []
    tls.addIdentityCertificateListener((u) => seen.push(u!.certificate))
    await svid.renew()
    await svid.renew()
    svid.stop()
    expect(issued).toHaveLength(2)
    for (const p of issued) {
      const leaf = new X509Certificate(p.certChainPem)
      expect(leaf.subjectAltName).toBe('URI:spiffe://example.org/warrant/server')
      expect(leaf.checkPrivateKey(createPrivateKey(p.keyPem))).toBe(true)
      tls.setIdentity(p.certChainPem, p.keyPem)
    }
    expect(issued[0]!.keyPem).not.toBe(issued[1]!.keyPem)
    expect(svid.current).toBe(issued[1])
    expect(seen).toHaveLength(2)
  })

  it('renews at half-life, and not after stop()', async () => {
    vi.useFakeTimers()
    const { issued, svid, clock } = await setup()
    await svid.renew()
    clock.advance(TTL / 2 - 1000)
    await vi.advanceTimersByTimeAsync(TTL / 2 - 1000)
    expect(issued).toHaveLength(1)
    clock.advance(1000)
    await vi.advanceTimersByTimeAsync(1000)
    expect(issued).toHaveLength(2)
    svid.stop()
    await vi.advanceTimersByTimeAsync(TTL)
    expect(issued).toHaveLength(2)
  })

  it('a failed background renewal is logged and keeps the current SVID', async () => {
    const { svid, log, ca, issued } = await setup()
    await svid.renew()
    const before = svid.current
    vi.spyOn(ca, 'signX509Svid').mockRejectedValueOnce(new Error('HSM gone'))
    svid.renewInBackground()
    await vi.waitFor(() => expect(log.lines.some((l) => l.msg === 'Server SVID renewal failed')).toBe(true))
    expect(svid.current).toBe(before)
    expect(issued).toHaveLength(1)
    svid.stop()
  })
})
