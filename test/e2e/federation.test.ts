/**
 * Federation end to end: trust domains a.example and b.example, each with a
 * server and an agent process. A serves its bundle endpoint with
 * `https_spiffe`, B with `https_web` (a certificate from a test CA that A
 * trusts through `web_ca_file`). B federates with A through the CLI
 * (`bundle set` bootstrap + `federation create`), A with B through its config
 * file; both with a 5 s refresh (the shortest the
 * refresher allows). Checked: a JWT-SVID minted in B validates in
 * A's Workload API; A's workload receives B's CA as a federated bundle and B's
 * X.509-SVID verifies against it; B's CA rotation (ca_ttl = 1m prepares the
 * next key 30 s after B starts) reaches A within a few refresh intervals; the
 * SPIRE bundle vectors have the key shapes B's endpoint serves. Runtime ≈ 40 s.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { request } from 'node:https'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BundleSet } from '../../src/spiffe/bundle/bundle-set.js'
import { SpiffeBundle } from '../../src/spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../src/spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../src/spiffe/trust-domain.js'
import { verifyX509Svid } from '../../src/spiffe/x509-svid/verify.js'
import { E2eAgent, E2eServer, fetchX509Until, waitFor, warrantJson } from '../helpers/e2e-cluster.js'
import { REPO_ROOT } from '../helpers/server-process.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const A = 'a.example'
const B = 'b.example'
const VECTORS = join(REPO_ROOT, '..', 'shared', 'vectors', 'spire-bundles')

type Jwk = Record<string, unknown> & { use?: string; x5c?: string[]; kid?: string }
type BundleShow = { trust_domain: string; sequence: number; bundle: { keys: Jwk[] } }

const derOfPem = (pem: string): Uint8Array[] =>
  (pem.match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ?? []).map(
    (b) => new Uint8Array(Buffer.from(b.replace(/-----[^-]+-----|\s/g, ''), 'base64')),
  )
const b64 = (d: Uint8Array) => Buffer.from(d).toString('base64')
const x509Of = (keys: Jwk[]) =>
  keys
    .filter((k) => k.use === 'x509-svid')
    .map((k) => k.x5c![0]!)
    .sort()

/** A test CA and a serving certificate for 127.0.0.1 / localhost, made with openssl. */
function webPki(dir: string): { caFile: string; certFile: string; keyFile: string } {
  const f = (n: string) => join(dir, n)
  const ossl = (args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' })
  ossl([
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-nodes',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.pem'),
    '-days',
    '1',
    '-subj',
    '/CN=warrant e2e web CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  ])
  ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', f('ep.key'), '-out', f('ep.csr'), '-subj', '/CN=localhost'])
  writeFileSync(
    f('ep.ext'),
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n',
  )
  ossl([
    'x509',
    '-req',
    '-in',
    f('ep.csr'),
    '-CA',
    f('ca.pem'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-out',
    f('ep.pem'),
    '-days',
    '1',
    '-extfile',
    f('ep.ext'),
  ])
  return { caFile: f('ca.pem'), certFile: f('ep.pem'), keyFile: f('ep.key') }
}

/** GET on B's https_web bundle endpoint, trusting the test CA. */
function getBundle(url: string, ca: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request(url, { ca, method: 'GET' }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => (body += c.toString()))
      res.on('end', () => (res.statusCode === 200 ? resolve(body) : reject(new Error(`HTTP ${res.statusCode}`))))
    })
    req.on('error', reject)
    req.end()
  })
}

describe.runIf(requireTools('openssl'))('federation e2e: two trust domains, servers and agents as processes', () => {
  const tmp = tempDir('wfed-')
  const uid = process.getuid!()
  const wlA = `spiffe://${A}/workload/caller`
  const wlB = `spiffe://${B}/workload/service`
  let pki: { caFile: string; certFile: string; keyFile: string }
  let serverA: E2eServer
  let serverB: E2eServer
  let agentA: E2eAgent
  let agentB: E2eAgent
  let bStartedAt = 0
  let bFirstCas: string[] = []

  beforeAll(async () => {
    pki = webPki(tmp.dir)
    bStartedAt = Date.now()
    serverB = await E2eServer.start({
      dir: join(tmp.dir, 'sb'),
      trustDomain: B,
      serverExtra: ['ca_ttl = "1m"', 'rotation_check_interval = "1s"', 'default_x509_svid_ttl = "1m"', 'default_jwt_svid_ttl = "1m"', 'agent_ttl = "1m"'],
      bundleEndpoint: { profile: 'https_web', certFile: pki.certFile, keyFile: pki.keyFile, refreshHint: '5s' },
    })
    bFirstCas = derOfPem(readFileSync(serverB.bundlePemPath, 'utf8')).map(b64)
    serverA = await E2eServer.start({
      dir: join(tmp.dir, 'sa'),
      trustDomain: A,
      bundleEndpoint: { profile: 'https_spiffe', refreshHint: '5s' },
      serverTables: [
        `[server.federation.federates_with."${B}"]`,
        `bundle_endpoint_url = "https://127.0.0.1:${serverB.bundleEndpointAddress.split(':').pop()}"`,
        'bundle_endpoint_profile = "https_web"',
        `web_ca_file = "${pki.caFile}"`,
        'refresh_hint = "5s"',
      ].join('\n'),
    })
    const [tokA, tokB] = await Promise.all([serverA.joinToken(), serverB.joinToken()])
    agentA = E2eAgent.start({ dir: join(tmp.dir, 'aa'), server: serverA, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${tokA}"\n` })
    agentB = E2eAgent.start({ dir: join(tmp.dir, 'ab'), server: serverB, nodeAttestor: `[plugins.node_attestor.join_token]\ntoken = "${tokB}"\n` })
    const [idA, idB] = await Promise.all([agentA.attested(), agentB.attested()])

    // B federates with A: bootstrap A's bundle (https_spiffe needs it), then the relationship.
    const set = await serverB.cli(['bundle', 'set', '--trust-domain', A, '--format', 'spiffe', '--path', serverA.bundleSpiffePath])
    expect(set.code, set.stderr).toBe(0)
    const created = await serverB.cli([
      'federation',
      'create',
      '--trust-domain',
      A,
      '--url',
      `https://${serverA.bundleEndpointAddress}`,
      '--profile',
      'https_spiffe',
      '--endpoint-spiffe-id',
      `spiffe://${A}/warrant/server`,
      '--refresh-hint',
      '5',
    ])
    expect(created.code, created.stderr).toBe(0)

    const mk = async (s: E2eServer, id: string, parent: string, other: string) => {
      const r = await s.cli(['entry', 'create', '--spiffe-id', id, '--parent-id', parent, '--selector', `unix:uid:${uid}`, '--federates-with', other])
      expect(r.code, r.stderr).toBe(0)
    }
    await mk(serverA, wlA, idA, B)
    await mk(serverB, wlB, idB, A)
  }, 120_000)

  afterAll(async () => {
    for (const p of [agentA, agentB]) await p?.stop('SIGKILL')
    for (const s of [serverA, serverB]) await s?.stop('SIGKILL')
    tmp.cleanup()
  })

  it('both relationships refresh successfully', async () => {
    type Rel = { trust_domain: string; profile: string; last_success_at: string | null; refresh_hint_seconds: number }
    const [relA, relB] = await waitFor(
      'both relationships to have refreshed',
      async () => {
        const ra = await serverA.cliJson<Rel[]>(['federation', 'list'])
        const rb = await serverB.cliJson<Rel[]>(['federation', 'list'])
        return ra[0]?.last_success_at && rb[0]?.last_success_at ? [ra, rb] : undefined
      },
      { hint: () => `${serverA.output()}\n${serverB.output()}` },
    )
    expect(relA).toEqual([expect.objectContaining({ trust_domain: B, profile: 'https_web', refresh_hint_seconds: 5 })])
    expect(relB).toEqual([expect.objectContaining({ trust_domain: A, profile: 'https_spiffe', refresh_hint_seconds: 5 })])
    // B's CA rotates every minute here (its next authority joins its bundle before use): A holds B's current bundle
    // within one refresh (hint 5 s) of each change, so compare until they agree rather than at one instant
    const agreed = await waitFor(
      "A to hold B's current X.509 authorities",
      async () => {
        const inA = x509Of((await serverA.cliJson<BundleShow>(['bundle', 'show', '--trust-domain', B])).bundle.keys)
        const ofB = derOfPem(readFileSync(serverB.bundlePemPath, 'utf8')).map(b64).sort()
        return JSON.stringify(inA) === JSON.stringify(ofB) ? { inA, ofB } : undefined
      },
      { timeoutMs: 30_000, hint: () => `${serverA.output()}\n${serverB.output()}` },
    )
    expect(agreed.inA.length).toBeGreaterThan(0)
    expect(agreed.inA).toEqual(agreed.ofB)
  })

  it("a JWT-SVID minted in B validates through A's Workload API", async () => {
    const jwt = await waitFor(
      'a JWT-SVID from B',
      () => warrantJson<{ svids: { spiffe_id: string; token: string }[] }>(['api', 'fetch', 'jwt', '--audience', wlA, '--socket', agentB.socketPath]),
      { hint: () => agentB.output() },
    )
    expect(jwt.svids[0]!.spiffe_id).toBe(wlB)
    const v = await waitFor(
      "A to validate B's JWT-SVID",
      () =>
        warrantJson<{ valid: boolean; spiffe_id: string }>([
          'api',
          'validate',
          'jwt',
          '--audience',
          wlA,
          '--svid',
          jwt.svids[0]!.token,
          '--socket',
          agentA.socketPath,
        ]),
      { hint: () => agentA.output() },
    )
    expect(v).toMatchObject({ valid: true, spiffe_id: wlB })
  })

  it("A's workload gets B's CA as a federated bundle, and B's X.509-SVID verifies against it", async () => {
    await fetchX509Until(agentA, wlA, { accept: (j) => j.federated_bundles.some((f) => f.trust_domain === `spiffe://${B}`) })
    const dirA = join(tmp.dir, 'outa')
    const dirB = join(tmp.dir, 'outb')
    expect((await agentA.api(['fetch', 'x509', '--write', dirA])).code).toBe(0)
    await fetchX509Until(agentB, wlB)
    expect((await agentB.api(['fetch', 'x509', '--write', dirB])).code).toBe(0)

    const fedPem = readFileSync(join(dirA, 'federated_bundle.0.0.pem'), 'utf8')
    const bCas = derOfPem(readFileSync(serverB.bundlePemPath, 'utf8')).map(b64).sort()
    expect(derOfPem(fedPem).map(b64).sort()).toEqual(bCas)

    const chainB = derOfPem(readFileSync(join(dirB, 'svid.0.pem'), 'utf8'))
    const set = new BundleSet([X509Bundle.parsePem(TrustDomain.fromString(B), fedPem)])
    const verified = await verifyX509Svid(chainB, set)
    expect(verified.id.toString()).toBe(wlB)
    // A's own bundle does not vouch for B's SVID.
    const own = new BundleSet([X509Bundle.parsePem(TrustDomain.fromString(A), readFileSync(join(dirA, 'bundle.0.pem'), 'utf8'))])
    await expect(verifyX509Svid(chainB, own)).rejects.toMatchObject({ code: expect.stringMatching(/^ERR_/) })
  })

  it("the SPIRE bundle vectors parse and have the key shapes B's endpoint serves", async () => {
    const served = JSON.parse(await getBundle(`https://${serverB.bundleEndpointAddress}`, readFileSync(pki.caFile, 'utf8'))) as { keys: Jwk[] }
    const shape = (keys: Jwk[], use: string) => [...new Set(keys.filter((k) => k.use === use).map((k) => Object.keys(k).sort().join(',')))]
    const vectors = ['ca.spiffe', 'ca2.spiffe'].map((f) => readFileSync(join(VECTORS, f), 'utf8'))
    const spireKeys = vectors.flatMap((v) => (JSON.parse(v) as { keys: Jwk[] }).keys)
    for (const v of vectors) expect(SpiffeBundle.parse(TrustDomain.fromString('domain1.test'), v).x509Authorities.length).toBeGreaterThan(0)
    expect(shape(served.keys, 'x509-svid')).toEqual(shape(spireKeys, 'x509-svid'))
    expect(shape(served.keys, 'jwt-svid')).toEqual(shape(spireKeys, 'jwt-svid'))
  })

  it("a CA rotation in B reaches A within a few refresh intervals, and A's workload sees it", async () => {
    expect(bFirstCas).toHaveLength(1)
    // ca_ttl = 1m: B prepares (and publishes) its next CA 30 s after it started.
    const inB = await waitFor(
      'B to publish its next CA',
      () => {
        const keys = (JSON.parse(readFileSync(serverB.bundleSpiffePath, 'utf8')) as { keys: Jwk[] }).keys
        return x509Of(keys).length === 2 ? x509Of(keys) : undefined
      },
      { timeoutMs: Math.max(10_000, bStartedAt + 45_000 - Date.now()), intervalMs: 100, hint: () => serverB.output() },
    )
    expect(inB).toEqual(expect.arrayContaining(bFirstCas))
    // A must hold it within ~2 refresh intervals (5 s each) of B writing it, plus CLI round trips.
    const publishedAt = statSync(serverB.bundleSpiffePath).mtimeMs
    const inA = await waitFor(
      "A to fetch B's rotated bundle",
      async () => {
        const keys = x509Of((await serverA.cliJson<BundleShow>(['bundle', 'show', '--trust-domain', B])).bundle.keys)
        return keys.length === 2 ? keys : undefined
      },
      { timeoutMs: Math.max(1, publishedAt + 12_000 - Date.now()), intervalMs: 100, hint: () => serverA.output() },
    )
    expect(inA).toEqual(inB)
    const j = await fetchX509Until(agentA, wlA, {
      accept: (x) => x.federated_bundles.find((f) => f.trust_domain === `spiffe://${B}`)?.authorities.length === 2,
    })
    expect(j.federated_bundles.find((f) => f.trust_domain === `spiffe://${B}`)!.authorities).toHaveLength(2)
  }, 90_000)
})
