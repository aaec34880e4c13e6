import { createPrivateKey, X509Certificate } from 'node:crypto'
import { request } from 'node:https'
import type { AddressInfo } from 'node:net'
import * as tls from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BoundsSet } from '../../../src/spiffe/bounds/bounds-set.js'
import { BundleSet } from '../../../src/spiffe/bundle/bundle-set.js'
import { X509Bundle } from '../../../src/spiffe/bundle/x509-bundle.js'
import { generateKeyPair, KeyObjectSigner } from '../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { verifyX509Svid } from '../../../src/spiffe/x509-svid/verify.js'
import {
  authorizeAll,
  authorizeAny,
  authorizeId,
  authorizeIf,
  authorizeMemberOf,
  authorizeOneOf,
  authorizePrefix,
  authorizeWithinBounds,
  connectMtls,
  createMtlsHttpsServer,
  createMtlsServer,
  mtlsAgent,
  peerOf,
  verifyPeerChain,
  X509Source,
  type Authorizer,
  type VerifiedPeer,
} from '../../../src/workload-client/index.js'
import { FakeWorkloadApi, HOUR, KU, makeIntermediate, makeLeaf, makeRoot, NOW, peculiarLeaf, x509Response, type TestCa } from './fake-workload-api.js'

const tdA = TrustDomain.fromString('a.test')
const tdB = TrustDomain.fromString('b.test')
let caA: TestCa
let caB: TestCa
let bundles: BundleSet

beforeAll(async () => {
  caA = await makeRoot('a.test')
  caB = await makeRoot('b.test')
  bundles = new BundleSet([new X509Bundle(tdA, [caA.certificate]), new X509Bundle(tdB, [caB.certificate])])
})

/** Outcome of our sync verifier and of src/spiffe's (pkijs) one on the same input: both must agree. */
async function both(chain: Uint8Array[], src = bundles): Promise<{ sync: string; pkijs: string }> {
  let sync = 'ok'
  let pkijs = 'ok'
  try {
    verifyPeerChain(chain, src)
  } catch (e) {
    sync = (e as { code?: string }).code ?? String(e)
  }
  try {
    await verifyX509Svid(chain, src)
  } catch (e) {
    pkijs = (e as { code?: string }).code ?? String(e)
  }
  return { sync, pkijs }
}

describe('verifyPeerChain', () => {
  it('accepts an SVID chaining to its own trust domain, directly or through an intermediate', async () => {
    const leaf = await makeLeaf(caA, 'spiffe://a.test/web')
    const peer = verifyPeerChain(leaf.chain, bundles)
    expect(peer.id.toString()).toBe('spiffe://a.test/web')
    expect(peer.verifiedChain).toEqual([leaf.chain[0], caA.certificate])
    const mid = await makeIntermediate(caA, 'a.test')
    const viaMid = await makeLeaf(mid, 'spiffe://a.test/api', { extra: [mid.certificate] })
    expect(verifyPeerChain(viaMid.chain, bundles).verifiedChain).toHaveLength(3)
    expect(await both(viaMid.chain)).toEqual({ sync: 'ok', pkijs: 'ok' })
  })

  it('refuses a certificate of trust domain A that chains to the bundle of trust domain B (both trusted)', async () => {
    const leaf = await makeLeaf(caB, 'spiffe://a.test/impostor')
    expect(() => verifyPeerChain(leaf.chain, bundles)).toThrow(expect.objectContaining({ code: 'ERR_X509_SVID_UNTRUSTED' }))
    expect(await both(leaf.chain)).toEqual({ sync: 'ERR_X509_SVID_UNTRUSTED', pkijs: 'ERR_X509_SVID_UNTRUSTED' })
  })

  it('refuses a peer of a trust domain without a bundle', async () => {
    const caC = await makeRoot('c.test')
    const leaf = await makeLeaf(caC, 'spiffe://c.test/x')
    expect(() => verifyPeerChain(leaf.chain, bundles)).toThrow(
      expect.objectContaining({ code: 'ERR_X509_SVID_UNTRUSTED', cause: expect.objectContaining({ code: 'ERR_BUNDLE_NOT_FOUND' }) }),
    )
  })

  it('refuses leaves that are not X.509-SVIDs, expired, tampered, or signed by a non-CA', async () => {
    const k = generateKeyPair('ec-p256').publicKey
    const cases: [string, Uint8Array[], string][] = [
      [
        'two URI SANs',
        [await peculiarLeaf(caA, k, { uris: ['spiffe://a.test/x', 'spiffe://a.test/y'], keyUsage: KU.digitalSignature })],
        'ERR_X509_SVID_INVALID',
      ],
      ['no URI SAN', [await peculiarLeaf(caA, k, { dnsNames: ['x.a.test'], keyUsage: KU.digitalSignature })], 'ERR_X509_SVID_INVALID'],
      [
        'CA leaf',
        [await peculiarLeaf(caA, k, { uris: ['spiffe://a.test/x'], ca: true, keyUsage: KU.digitalSignature | KU.keyCertSign })],
        'ERR_X509_SVID_INVALID',
      ],
      ['trust-domain ID', [await peculiarLeaf(caA, k, { uris: ['spiffe://a.test'], keyUsage: KU.digitalSignature })], 'ERR_X509_SVID_INVALID'],
      [
        'expired',
        [
          await peculiarLeaf(caA, k, {
            uris: ['spiffe://a.test/x'],
            keyUsage: KU.digitalSignature,
            notBefore: new Date(NOW.getTime() - 3 * HOUR),
            notAfter: new Date(NOW.getTime() - HOUR),
          }),
        ],
        'ERR_X509_SVID_INVALID',
      ],
    ]
    const good = await makeLeaf(caA, 'spiffe://a.test/x')
    const tampered = new Uint8Array(good.chain[0]!)
    tampered[tampered.length - 1]! ^= 1
    cases.push(['tampered signature', [tampered], 'ERR_X509_SVID_UNTRUSTED'])
    // a leaf "issued" by another leaf (not a CA) that chains to the bundle
    const leafKey = createPrivateKey({ key: good.key, format: 'der', type: 'pkcs8' })
    const underLeaf = await peculiarLeaf({ certificate: good.chain[0]!, privateKey: leafKey, publicKey: k, signer: new KeyObjectSigner(leafKey) }, k, {
      uris: ['spiffe://a.test/y'],
      keyUsage: KU.digitalSignature,
    })
    cases.push(['issued by a non-CA', [underLeaf, good.chain[0]!], 'ERR_X509_SVID_UNTRUSTED'])
    for (const [what, chain, code] of cases) {
      expect(() => verifyPeerChain(chain, bundles), what).toThrow(expect.objectContaining({ code }))
      expect((await both(chain)).pkijs, `pkijs agrees: ${what}`).not.toBe('ok')
    }
    expect(() => verifyPeerChain([], bundles)).toThrow(expect.objectContaining({ code: 'ERR_X509_SVID_UNTRUSTED' }))
  })

  it("honours an intermediate's path length constraint", async () => {
    const mid0 = await makeIntermediate(caA, 'a.test', 'ec-p256', { maxPathLength: 0 })
    const mid1 = await makeIntermediate(mid0, 'a.test')
    const leaf = await makeLeaf(mid1, 'spiffe://a.test/deep', { extra: [mid1.certificate, mid0.certificate] })
    expect(() => verifyPeerChain(leaf.chain, bundles)).toThrow(expect.objectContaining({ code: 'ERR_X509_SVID_UNTRUSTED' }))
    expect((await both(leaf.chain)).pkijs).not.toBe('ok')
  })
})

describe('authorizers', () => {
  const peer = (id: string): VerifiedPeer => ({ id: SpiffeId.fromString(id), svid: undefined as never, verifiedChain: [] })
  const allows = (a: Authorizer, id: string) => {
    try {
      a(peer(id))
      return true
    } catch (e) {
      expect(e).toMatchObject({ code: 'ERR_ID_NOT_AUTHORIZED' })
      return false
    }
  }
  it.each<[string, Authorizer, string, boolean]>([
    ['any', authorizeAny(), 'spiffe://b.test/x', true],
    ['id same', authorizeId('spiffe://a.test/web'), 'spiffe://a.test/web', true],
    ['id other', authorizeId('spiffe://a.test/web'), 'spiffe://a.test/web2', false],
    ['id other td', authorizeId('spiffe://a.test/web'), 'spiffe://b.test/web', false],
    ['oneOf in', authorizeOneOf(['spiffe://a.test/x', 'spiffe://a.test/y']), 'spiffe://a.test/y', true],
    ['oneOf out', authorizeOneOf(['spiffe://a.test/x', 'spiffe://a.test/y']), 'spiffe://a.test/z', false],
    ['memberOf in', authorizeMemberOf('a.test'), 'spiffe://a.test/z', true],
    ['memberOf out', authorizeMemberOf(tdA), 'spiffe://b.test/z', false],
    ['prefix equal', authorizePrefix('spiffe://a.test/a/b'), 'spiffe://a.test/a/b', true],
    ['prefix below', authorizePrefix('spiffe://a.test/a/b'), 'spiffe://a.test/a/b/c', true],
    ['prefix not a segment', authorizePrefix('spiffe://a.test/a/b'), 'spiffe://a.test/a/bc', false],
    ['prefix above', authorizePrefix('spiffe://a.test/a/b'), 'spiffe://a.test/a', false],
    ['prefix other td', authorizePrefix('spiffe://a.test/a/b'), 'spiffe://b.test/a/b/c', false],
    ['predicate true', authorizeIf((p) => p.id.path.endsWith('/ok')), 'spiffe://a.test/ok', true],
    ['predicate false', authorizeIf((p) => p.id.path.endsWith('/ok')), 'spiffe://a.test/no', false],
    ['predicate truthy non-true', authorizeIf(() => 1 as unknown as boolean), 'spiffe://a.test/no', false],
    ['all', authorizeAll(authorizeMemberOf('a.test'), authorizePrefix('spiffe://a.test/agents')), 'spiffe://a.test/web', false],
  ])('%s', (_n, a, id, ok) => expect(allows(a, id)).toBe(ok))

  it('bounds: the peer SVID must lie within its bounds, and the predicate decides on them', async () => {
    const set = BoundsSet.parse(tdA, { '/agents': { x509_svid_ttl: 3 * 3600 }, '/agents/short': { x509_svid_ttl: 600 } })
    const long = verifyPeerChain((await makeLeaf(caA, 'spiffe://a.test/agents/bot')).chain, bundles)
    const short = verifyPeerChain((await makeLeaf(caA, 'spiffe://a.test/agents/short/bot')).chain, bundles)
    const unbounded = verifyPeerChain((await makeLeaf(caA, 'spiffe://a.test/web')).chain, bundles)
    const foreign = verifyPeerChain((await makeLeaf(caB, 'spiffe://b.test/agents/bot')).chain, bundles)
    const run = (a: Authorizer, p: VerifiedPeer) => {
      try {
        a(p)
        return 'ok'
      } catch (e) {
        return (e as { code: string }).code
      }
    }
    expect(run(authorizeWithinBounds(set), long)).toBe('ok')
    expect(run(authorizeWithinBounds(set), short)).toBe('ERR_ID_NOT_AUTHORIZED') // 2 h SVID under a 10 min bound
    expect(run(authorizeWithinBounds(set), unbounded)).toBe('ok')
    expect(run(authorizeWithinBounds(set, { requireBounds: true }), unbounded)).toBe('ERR_ID_NOT_AUTHORIZED')
    expect(run(authorizeWithinBounds(set), foreign)).toBe('ERR_ID_NOT_AUTHORIZED')
    const onlyAgents = authorizeWithinBounds(set, { predicate: (b) => b?.prefixes.includes('/agents') === true })
    expect(run(onlyAgents, long)).toBe('ok')
    expect(run(onlyAgents, unbounded)).toBe('ERR_ID_NOT_AUTHORIZED')
  })
})

describe('mutual TLS over sockets', () => {
  const SERVER = 'spiffe://a.test/server'
  const CLIENT = 'spiffe://a.test/client'
  let fs: FakeWorkloadApi
  let fc: FakeWorkloadApi
  let server: X509Source
  let client: X509Source
  const open: { close(): void }[] = []

  beforeAll(async () => {
    fs = await FakeWorkloadApi.start()
    fc = await FakeWorkloadApi.start()
    fs.x509 = x509Response([await makeLeaf(caA, SERVER)], [caA.certificate], { 'spiffe://b.test': [caB.certificate] })
    fc.x509 = x509Response([await makeLeaf(caA, CLIENT)], [caA.certificate], { 'spiffe://b.test': [caB.certificate] })
    server = await X509Source.create({ socketPath: fs.socketPath })
    client = await X509Source.create({ socketPath: fc.socketPath })
  })
  afterAll(async () => {
    for (const o of open) o.close()
    await server.close()
    await client.close()
    await fs.stop()
    await fc.stop()
  })

  async function listen(s: tls.Server): Promise<number> {
    open.push(s)
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
    return (s.address() as AddressInfo).port
  }

  it('both sides authenticate each other by SPIFFE ID; the peer is known on both sockets', async () => {
    const seen: string[] = []
    const srv = createMtlsServer(server, authorizeId(CLIENT), (sock) => {
      seen.push(peerOf(sock)!.id.toString())
      sock.end('hello')
    })
    const port = await listen(srv)
    const sock = await connectMtls(client, authorizeId(SERVER), { host: '127.0.0.1', port })
    expect(peerOf(sock)!.id.toString()).toBe(SERVER)
    const data = await new Promise<string>((r) => {
      let d = ''
      sock.on('data', (c: Buffer) => (d += c.toString()))
      sock.on('end', () => r(d))
    })
    expect(data).toBe('hello')
    expect(seen).toEqual([CLIENT])
  })

  it('the client refuses a server with another ID: the handshake fails before any data', async () => {
    const srv = createMtlsServer(server, authorizeAny(), (sock) => sock.end('secret'))
    const port = await listen(srv)
    await expect(connectMtls(client, authorizeId('spiffe://a.test/other'), { host: '127.0.0.1', port })).rejects.toMatchObject({
      code: 'ERR_ID_NOT_AUTHORIZED',
    })
  })

  it('the server refuses a client its authorizer does not allow: the HTTP handler never runs, the refusal is logged', async () => {
    let handled = 0
    const refused: string[] = []
    const srv = createMtlsHttpsServer(server, authorizePrefix('spiffe://a.test/agents'), (_req, res) => (handled++, res.end('ok')), {
      onRefused: (e) => refused.push((e as { code: string }).code),
    })
    const port = await listen(srv)
    const agent = mtlsAgent(client, authorizeId(SERVER))
    const err = await new Promise<Error | undefined>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/', agent }, (res) => {
        res.resume()
        resolve(undefined)
      })
      req.on('error', resolve)
      req.end()
    })
    agent.destroy()
    expect(err).toBeInstanceOf(Error)
    expect(handled).toBe(0)
    expect(refused).toEqual(['ERR_ID_NOT_AUTHORIZED'])
  })

  it('the server refuses a client whose SVID of trust domain A chains to trust domain B (both trusted)', async () => {
    const fi = await FakeWorkloadApi.start()
    fi.x509 = x509Response([await makeLeaf(caB, 'spiffe://a.test/impostor')], [caA.certificate], { 'spiffe://b.test': [caB.certificate] })
    // The response itself is consistent (its own chain is not the source's to judge), so the impostor gets a source.
    const impostor = await X509Source.create({ socketPath: fi.socketPath })
    try {
      let handled = 0
      const refused: string[] = []
      const srv = createMtlsServer(server, authorizeAny(), () => handled++, { onRefused: (e) => refused.push((e as { code: string }).code) })
      const port = await listen(srv)
      const outcome = await connectMtls(impostor, authorizeAny(), { host: '127.0.0.1', port }).then(
        (s) => new Promise<string>((r) => s.on('close', () => r('closed')).on('data', () => r('data'))),
        (e: Error) => e.message,
      )
      expect(outcome).not.toBe('data')
      expect(handled).toBe(0)
      expect(refused).toEqual(['ERR_X509_SVID_UNTRUSTED'])
    } finally {
      await impostor.close()
      await fi.stop()
    }
  })

  it('a server follows rotation: new connections see the new SVID', async () => {
    const serials: string[] = []
    const srv = createMtlsServer(server, authorizeAny(), (s) => s.end())
    const port = await listen(srv)
    const serialOf = async () => {
      const s = await connectMtls(client, authorizeId(SERVER), { host: '127.0.0.1', port })
      const serial = s.getPeerCertificate().serialNumber
      s.destroy()
      return serial
    }
    serials.push(await serialOf())
    const updated = new Promise((r) => server.once('update', r))
    fs.push(x509Response([await makeLeaf(caA, SERVER)], [caA.certificate]))
    await updated
    serials.push(await serialOf())
    expect(serials[1]).not.toBe(serials[0])
    expect(serials[1]).toBe(new X509Certificate(server.getX509Svid().leaf).serialNumber)
  })
})
