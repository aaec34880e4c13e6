import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from 'node:tls'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { nullLogger } from '../../../../src/common/log/logger.js'
import { SpiffeBundle } from '../../../../src/spiffe/bundle/spiffe-bundle.js'
import { SpiffeId } from '../../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { fetchBundle } from '../../../../src/server/federation/client.js'
import { parseAddress, startBundleEndpoint, type BundleEndpoint, type ServerCredentials } from '../../../../src/server/federation/endpoint.js'
import { bundleOf, makeRoot, pem, svidCredentials, webCredentials, type TestCa } from './pki.js'

const VECTORS = '/work/shared/vectors/spire-bundles'
const TD = TrustDomain.fromString('domain1.test')

interface RawResponse {
  status: number
  headers: Record<string, string | string[] | undefined>
  body: string
}

function rawRequest(port: number, method: string, path: string, opts: { servername?: string } = {}): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, method, path, rejectUnauthorized: false, agent: false, ...(opts.servername ? { servername: opts.servername } : {}) },
      (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c: Buffer) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }))
      },
    )
    req.on('error', reject)
    req.end()
  })
}

/** The PEM of the certificate the server presents. */
function peerCertPem(port: number, servername?: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...(servername ? { servername } : {}) }, () => {
      const raw = s.getPeerCertificate().raw
      s.destroy()
      resolve(pem(new Uint8Array(raw)))
    })
    s.on('error', reject)
  })
}

describe('bundle endpoint (https_spiffe)', () => {
  let ca: TestCa
  let creds: ServerCredentials
  let bundle: SpiffeBundle
  let ep: BundleEndpoint

  beforeAll(async () => {
    ca = await makeRoot(TD.name)
    creds = await svidCredentials(ca, 'spiffe://domain1.test/warrant/server')
    bundle = bundleOf(TD.name, [ca], { sequence: 7 })
    ep = await startBundleEndpoint({
      address: '127.0.0.1:0',
      profile: { kind: 'https_spiffe', getServerSvid: () => creds },
      getBundle: () => bundle,
      log: nullLogger,
    })
  })
  afterAll(() => ep.close())

  it('GET / serves the bundle as application/json with sequence and default refresh hint', async () => {
    const r = await rawRequest(ep.port, 'GET', '/')
    expect(r.status).toBe(200)
    expect(r.headers['content-type']).toBe('application/json')
    const doc = JSON.parse(r.body) as Record<string, unknown>
    expect(doc.spiffe_sequence).toBe(7)
    expect(doc.spiffe_refresh_hint).toBe(300)
    expect(SpiffeBundle.parse(TD, r.body).x509Authorities).toEqual([ca.certificate])
  })

  it.each([
    ['POST', '/', 405],
    ['PUT', '/', 405],
    ['DELETE', '/', 405],
    ['HEAD', '/', 405],
    ['GET', '/bundle', 404],
    ['GET', '/.well-known/spiffe', 404],
    ['GET', '//', 404],
  ])('%s %s answers %i', async (method, path, status) => {
    const r = await rawRequest(ep.port, method, path)
    expect(r.status).toBe(status)
    if (status === 405) expect(r.headers.allow).toBe('GET')
  })

  it('accepts a query string on /', async () => {
    expect((await rawRequest(ep.port, 'GET', '/?x=1')).status).toBe(200)
  })

  it('a go-spiffe style client (our fetchBundle, https_spiffe) accepts it', async () => {
    const got = await fetchBundle({
      trustDomain: TD,
      url: `https://127.0.0.1:${ep.port}/`,
      profile: { kind: 'https_spiffe', endpointSpiffeId: SpiffeId.fromString('spiffe://domain1.test/warrant/server'), trustBundle: bundle.x509Bundle() },
    })
    expect(got.sequenceNumber).toBe(7)
    expect(got.x509Authorities).toEqual(bundle.x509Authorities)
  })

  it('serves a rotated server SVID without a restart (with and without SNI)', async () => {
    const before = await peerCertPem(ep.port)
    expect(before).toBe(creds.certChainPem)
    const rotated = await svidCredentials(ca, 'spiffe://domain1.test/warrant/server')
    creds = rotated
    expect(await peerCertPem(ep.port)).toBe(rotated.certChainPem)
    expect(await peerCertPem(ep.port, 'bundle.domain1.test')).toBe(rotated.certChainPem)
  })

  it.each([
    ['TLSv1', 'TLSv1'],
    ['TLSv1.1', 'TLSv1.1'],
  ] as const)('refuses a %s client', async (_name, v) => {
    const err = await new Promise<Error | undefined>((resolve) => {
      const s = connect({ host: '127.0.0.1', port: ep.port, rejectUnauthorized: false, minVersion: v, maxVersion: v, ciphers: 'DEFAULT@SECLEVEL=0' }, () => {
        s.destroy()
        resolve(undefined)
      })
      s.on('error', resolve)
    })
    expect(err).toBeInstanceOf(Error)
    expect((err as NodeJS.ErrnoException).code).toBe('ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION') // the server's alert, not a client-side refusal
  })

  it('negotiates TLS 1.2 and 1.3 without a client certificate', async () => {
    for (const v of ['TLSv1.2', 'TLSv1.3'] as const) {
      const proto = await new Promise<string | null>((resolve, reject) => {
        const s = connect({ host: '127.0.0.1', port: ep.port, rejectUnauthorized: false, minVersion: v, maxVersion: v }, () => {
          const p = s.getProtocol()
          s.destroy()
          resolve(p)
        })
        s.on('error', reject)
      })
      expect(proto).toBe(v)
    }
  })

  it('serves documents of the same shape as SPIRE (vectors)', async () => {
    for (const f of ['ca.spiffe', 'ca2.spiffe']) {
      const text = readFileSync(join(VECTORS, f), 'utf8')
      const td = TrustDomain.fromString(f === 'ca.spiffe' ? 'domain1.test' : 'domain2.test')
      const vec = SpiffeBundle.parse(td, text)
      const vep = await startBundleEndpoint({
        address: '127.0.0.1:0',
        profile: { kind: 'https_spiffe', getServerSvid: () => creds },
        getBundle: () => vec.withSequence(3),
        refreshHintSeconds: 60,
        log: nullLogger,
      })
      try {
        const r = await rawRequest(vep.port, 'GET', '/')
        const served = JSON.parse(r.body) as { keys: Record<string, unknown>[] }
        const expected = JSON.parse(text) as { keys: Record<string, unknown>[] }
        expect(Object.keys(served)).toEqual(['keys', 'spiffe_sequence', 'spiffe_refresh_hint'])
        expect(served.keys).toEqual(expected.keys)
        // Same member order as SPIRE writes, key by key.
        expect(served.keys.map((k) => Object.keys(k))).toEqual(expected.keys.map((k) => Object.keys(k)))
        expect(SpiffeBundle.parse(td, r.body).equals(vec.withSequence(3).withRefreshHint(60))).toBe(true)
      } finally {
        await vep.close()
      }
    }
  })

  it('answers 500 and keeps serving when the bundle cannot be produced', async () => {
    let fail = true
    const e = await startBundleEndpoint({
      address: '127.0.0.1:0',
      profile: { kind: 'https_spiffe', getServerSvid: () => creds },
      getBundle: () => {
        if (fail) throw new Error('datastore down')
        return bundle
      },
      log: nullLogger,
    })
    try {
      expect((await rawRequest(e.port, 'GET', '/')).status).toBe(500)
      fail = false
      expect((await rawRequest(e.port, 'GET', '/')).status).toBe(200)
    } finally {
      await e.close()
    }
  })
})

describe('bundle endpoint (https_web)', () => {
  let dir: string
  let webCa: TestCa
  let ep: BundleEndpoint
  let bundle: SpiffeBundle
  let certFile: string
  let keyFile: string

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'w-fed-'))
    webCa = await makeRoot('web-ca.test')
    const tdCa = await makeRoot(TD.name)
    bundle = bundleOf(TD.name, [tdCa], { sequence: 1, hint: 30 })
    const c = await webCredentials(webCa)
    certFile = join(dir, 'cert.pem')
    keyFile = join(dir, 'key.pem')
    writeFileSync(certFile, c.certChainPem)
    writeFileSync(keyFile, c.keyPem)
    writeFileSync(join(dir, 'ca.pem'), pem(webCa.certificate))
    ep = await startBundleEndpoint({
      address: '127.0.0.1:0',
      profile: { kind: 'https_web', loadCredentials: () => ({ certChainPem: readFileSync(certFile, 'utf8'), keyPem: readFileSync(keyFile, 'utf8') }) },
      getBundle: () => bundle,
      log: nullLogger,
    })
  })
  afterAll(async () => {
    await ep.close()
    rmSync(dir, { recursive: true, force: true })
  })

  it('is accepted by an https_web client with the CA file, keeping the bundle refresh hint', async () => {
    const got = await fetchBundle({
      trustDomain: TD,
      url: `https://127.0.0.1:${ep.port}/`,
      profile: { kind: 'https_web', ca: readFileSync(join(dir, 'ca.pem'), 'utf8') },
    })
    expect(got.equals(bundle)).toBe(true)
    expect(got.refreshHintSeconds).toBe(30)
  })

  it('serves replaced certificate files without a restart', async () => {
    const c2 = await webCredentials(webCa)
    writeFileSync(certFile, c2.certChainPem)
    writeFileSync(keyFile, c2.keyPem)
    expect(await peerCertPem(ep.port)).toBe(c2.certChainPem)
  })

  it('405 / 404 as for https_spiffe', async () => {
    expect((await rawRequest(ep.port, 'POST', '/')).status).toBe(405)
    expect((await rawRequest(ep.port, 'GET', '/x')).status).toBe(404)
  })
})

describe('parseAddress', () => {
  it.each([
    ['127.0.0.1:8443', { host: '127.0.0.1', port: 8443 }],
    ['[::1]:443', { host: '::1', port: 443 }],
    ['0.0.0.0:0', { host: '0.0.0.0', port: 0 }],
    ['bundle.example:443', { host: 'bundle.example', port: 443 }],
    [':8443', { host: '0.0.0.0', port: 8443 }],
  ])('%s', (a, want) => expect(parseAddress(a)).toEqual(want))

  it.each(['127.0.0.1', '127.0.0.1:70000', '::1:443', 'host:port'])('rejects %s', (a) => {
    expect(() => parseAddress(a)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })
})
