import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { nullLogger } from '../../../../src/common/log/logger.js'
import type { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { checkBundleEndpointUrl, fetchBundle, parseDocument, type FetchProfile } from '../../../../src/server/federation/client.js'
import { startBundleEndpoint, type BundleEndpoint, type ServerCredentials } from '../../../../src/server/federation/endpoint.js'
import { json, startTestServer } from './hostile-server.js'
import { bundleOf, makeRoot, pem, svidCredentials, webCredentials, type TestCa } from './pki.js'

const TD = TrustDomain.fromString('partner.test')
const ENDPOINT_ID = 'spiffe://partner.test/warrant/server'

describe('fetchBundle, https_spiffe', () => {
  let ca: TestCa
  let otherCa: TestCa
  let creds: ServerCredentials
  let bundle: SpiffeBundle
  let ep: BundleEndpoint
  const url = () => `https://127.0.0.1:${ep.port}/`

  beforeAll(async () => {
    ca = await makeRoot(TD.name)
    otherCa = await makeRoot(TD.name)
    bundle = bundleOf(TD.name, [ca], { sequence: 4, hint: 60 })
    creds = await svidCredentials(ca, ENDPOINT_ID)
    ep = await startBundleEndpoint({
      address: '127.0.0.1:0',
      profile: { kind: 'https_spiffe', getServerSvid: () => creds },
      getBundle: () => bundle,
      log: nullLogger,
    })
  })
  afterAll(() => ep.close())

  const profile = (id = ENDPOINT_ID, trust: TestCa[] = [ca]): FetchProfile => ({
    kind: 'https_spiffe',
    endpointSpiffeId: SpiffeId.fromString(id),
    trustBundle: bundleOf(TD.name, trust).x509Bundle(),
  })

  it('accepts an endpoint whose SVID is issued for the configured ID', async () => {
    const got = await fetchBundle({ trustDomain: TD, url: url(), profile: profile() })
    expect(got.equals(bundle)).toBe(true)
  })

  it.each([
    ['another SPIFFE ID', () => profile('spiffe://partner.test/other')],
    ['a CA not in the trust bundle', () => profile(ENDPOINT_ID, [otherCa])],
    ['an ID of another trust domain', () => profile('spiffe://elsewhere.test/warrant/server')],
  ])('rejects %s with ERR_X509_SVID_UNTRUSTED', async (_n, p) => {
    await expect(fetchBundle({ trustDomain: TD, url: url(), profile: p() })).rejects.toMatchObject({ code: 'ERR_X509_SVID_UNTRUSTED' })
  })

  it('rejects an expired SVID (time from `now`)', async () => {
    await expect(fetchBundle({ trustDomain: TD, url: url(), profile: profile(), now: () => new Date(Date.now() + 3 * 3600_000) })).rejects.toMatchObject({
      code: 'ERR_X509_SVID_UNTRUSTED',
    })
  })

  it('rejects a plain Web PKI certificate (not an SVID)', async () => {
    const web = await webCredentials(ca)
    const srv = await startTestServer(() => web, { '/': json(bundle.marshal()) })
    try {
      await expect(fetchBundle({ trustDomain: TD, url: `https://127.0.0.1:${srv.port}/`, profile: profile() })).rejects.toMatchObject({
        code: 'ERR_X509_SVID_UNTRUSTED',
      })
      expect(srv.hits.get('/') ?? 0).toBe(0) // verified before the request was sent
    } finally {
      await srv.close()
    }
  })

  it('re-applies the SVID check after a redirect', async () => {
    const impostor = await svidCredentials(ca, 'spiffe://partner.test/impostor')
    const bad = await startTestServer(() => impostor, { '/': json(bundle.marshal()) })
    const good = await startTestServer(() => creds, {
      '/moved': (_q, r) => r.writeHead(307, { Location: '/' }).end(),
      '/': json(bundle.marshal()),
      '/away': (_q, r) => r.writeHead(302, { Location: `https://127.0.0.1:${bad.port}/` }).end(),
    })
    try {
      const got = await fetchBundle({ trustDomain: TD, url: `https://127.0.0.1:${good.port}/moved`, profile: profile() })
      expect(got.sequenceNumber).toBe(4)
      await expect(fetchBundle({ trustDomain: TD, url: `https://127.0.0.1:${good.port}/away`, profile: profile() })).rejects.toMatchObject({
        code: 'ERR_X509_SVID_UNTRUSTED',
      })
      expect(bad.hits.get('/') ?? 0).toBe(0)
    } finally {
      await Promise.all([bad.close(), good.close()])
    }
  })
})

describe('fetchBundle, https_web', () => {
  let dir: string
  let webCa: TestCa
  let caFile: string
  let bundle: SpiffeBundle
  let srv: Awaited<ReturnType<typeof startTestServer>>
  let wrongName: Awaited<ReturnType<typeof startTestServer>>

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'w-fedc-'))
    webCa = await makeRoot('web-ca.test')
    caFile = join(dir, 'ca.pem')
    writeFileSync(caFile, pem(webCa.certificate))
    bundle = bundleOf(TD.name, [await makeRoot(TD.name)], { sequence: 9 })
    const good = await webCredentials(webCa)
    const other = await webCredentials(webCa, { dns: ['other.example'] })
    srv = await startTestServer(() => good, { '/': json(bundle.marshal()), '/r': (_q, r) => r.writeHead(302, { Location: 'http://127.0.0.1/' }).end() })
    wrongName = await startTestServer(() => other, { '/': json(bundle.marshal()) })
  })
  afterAll(async () => {
    await Promise.all([srv.close(), wrongName.close()])
    rmSync(dir, { recursive: true, force: true })
  })

  it('accepts a certificate from the CA file for the URL host', async () => {
    const got = await fetchBundle({ trustDomain: TD, url: `https://127.0.0.1:${srv.port}/`, profile: { kind: 'https_web', ca: readFileSync(caFile, 'utf8') } })
    expect(got.equals(bundle)).toBe(true)
  })

  it.each([
    ['a wrong hostname', () => ({ port: wrongName.port, profile: { kind: 'https_web' as const, ca: readFileSync(caFile, 'utf8') } })],
    ['a CA not in the system roots', () => ({ port: srv.port, profile: { kind: 'https_web' as const } })],
  ])('rejects %s with ERR_X509_SVID_UNTRUSTED', async (_n, t) => {
    const { port, profile } = t()
    await expect(fetchBundle({ trustDomain: TD, url: `https://127.0.0.1:${port}/`, profile })).rejects.toMatchObject({ code: 'ERR_X509_SVID_UNTRUSTED' })
  })

  it('rejects a redirect to http', async () => {
    await expect(
      fetchBundle({ trustDomain: TD, url: `https://127.0.0.1:${srv.port}/r`, profile: { kind: 'https_web', ca: readFileSync(caFile, 'utf8') } }),
    ).rejects.toMatchObject({
      code: 'ERR_INVALID_ARGUMENT',
    })
  })

  it('reports a closed port as ERR_UNAVAILABLE', async () => {
    await expect(
      fetchBundle({ trustDomain: TD, url: 'https://127.0.0.1:1/', profile: { kind: 'https_web', ca: readFileSync(caFile, 'utf8') } }),
    ).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })
})

describe('checkBundleEndpointUrl', () => {
  it.each(['https://bundle.example/', 'https://127.0.0.1:8443/path?x=1', 'https://[::1]:443/'])('accepts %s', (u) => {
    expect(checkBundleEndpointUrl(u).protocol).toBe('https:')
  })
  it.each([
    'http://bundle.example/',
    'https://user:pw@bundle.example/',
    'https://user@bundle.example/',
    'https://bundle.example/#frag',
    'ftp://x/',
    'not a url',
    '',
  ])('rejects %j', (u) => {
    expect(() => checkBundleEndpointUrl(u)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARGUMENT' }))
  })
})

describe('parseDocument', () => {
  it('rejects a document whose authority names another trust domain', async () => {
    const foreign = bundleOf('other.test', [await makeRoot('other.test')])
    expect(() => parseDocument(TD, Buffer.from(foreign.marshal()))).toThrow(expect.objectContaining({ code: 'ERR_BUNDLE_INVALID' }))
  })
  it('accepts the SPIRE vector for its own trust domain', async () => {
    const { readFileSync } = await import('node:fs')
    const doc = readFileSync('/work/shared/vectors/spire-bundles/ca.spiffe')
    expect(parseDocument(TrustDomain.fromString('domain1.test'), doc).x509Authorities).toHaveLength(1)
    expect(() => parseDocument(TrustDomain.fromString('domain2.test'), doc)).toThrow(expect.objectContaining({ code: 'ERR_BUNDLE_INVALID' }))
  })
})
