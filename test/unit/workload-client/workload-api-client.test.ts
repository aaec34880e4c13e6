import * as grpc from '@grpc/grpc-js'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { mintJwtSvid } from '../../../src/spiffe/jwt-svid/index.js'
import { KeyObjectSigner, generateKeyPair } from '../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import { resolveWorkloadApiTarget, workloadApiTarget, WorkloadApiClient, type X509Context } from '../../../src/workload-client/index.js'
import { FakeWorkloadApi, makeLeaf, makeRoot, x509Response, type TestCa } from './fake-workload-api.js'

const A = 'spiffe://a.test/web'
let fake: FakeWorkloadApi
let caA: TestCa
let caB: TestCa
const clients: WorkloadApiClient[] = []
const client = (o: ConstructorParameters<typeof WorkloadApiClient>[0] = {}) => {
  const c = new WorkloadApiClient({ socketPath: `unix://${fake.socketPath}`, backoff: { initialMs: 10, maxMs: 40 }, ...o })
  clients.push(c)
  return c
}

beforeAll(async () => {
  fake = await FakeWorkloadApi.start()
  caA = await makeRoot('a.test')
  caB = await makeRoot('b.test')
})
afterAll(async () => fake.stop())
afterEach(() => {
  for (const c of clients.splice(0)) c.close()
  fake.x509Script.length = 0
})

describe('workload API address', () => {
  it.each([
    ['unix:///run/api.sock', 'unix:/run/api.sock'],
    ['unix:/run/api.sock', 'unix:/run/api.sock'],
    ['/run/api.sock', 'unix:/run/api.sock'],
    ['tcp://127.0.0.1:8443', 'ipv4:127.0.0.1:8443'],
    ['tcp://[::1]:8443', 'ipv6:[::1]:8443'],
  ])('%s → %s', (addr, target) => expect(workloadApiTarget(addr)).toBe(target))

  it.each([
    ['', 'empty'],
    ['relative/api.sock', 'relative path'],
    ['unix://host/run/api.sock', 'unix with authority'],
    ['unix:///run/api.sock?x=1', 'query'],
    ['unix:///run/api.sock#f', 'fragment'],
    ['tcp://localhost:8443', 'tcp host name'],
    ['tcp://127.0.0.1:8443/path', 'tcp with path'],
    ['tcp://127.0.0.1', 'tcp without port'],
    ['http://127.0.0.1:80', 'other scheme'],
    ['tcp://u:p@127.0.0.1:1', 'user info'],
  ])('refuses %s (%s)', (addr) => expect(() => workloadApiTarget(addr)).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' })))

  it('takes SPIFFE_ENDPOINT_SOCKET when no path is given, and says so when neither is set', () => {
    expect(resolveWorkloadApiTarget(undefined, { SPIFFE_ENDPOINT_SOCKET: 'unix:///x/y.sock' })).toBe('unix:/x/y.sock')
    expect(resolveWorkloadApiTarget('/p.sock', { SPIFFE_ENDPOINT_SOCKET: 'unix:///x/y.sock' })).toBe('unix:/p.sock')
    expect(() => resolveWorkloadApiTarget(undefined, {})).toThrow(expect.objectContaining({ code: 'ERR_NOT_CONFIGURED' }))
  })
})

describe('WorkloadApiClient', () => {
  it('fetches the X.509 context with the security header: SVIDs with keys, local and federated bundles by trust domain', async () => {
    const leaf = await makeLeaf(caA, A)
    fake.x509 = x509Response([leaf], [caA.certificate], { 'spiffe://b.test': [caB.certificate] })
    const before = fake.headers.length
    const ctx = await client().fetchX509Context()
    expect(fake.headers.slice(before)).toEqual(['true'])
    expect(ctx.svids.map((s) => s.id.toString())).toEqual([A])
    expect(ctx.svids[0]!.privateKey?.type).toBe('private')
    expect(ctx.bundles.trustDomains().map((t) => t.name)).toEqual(['a.test', 'b.test'])
    expect(ctx.bundles.getX509BundleForTrustDomain(TrustDomain.fromString('b.test')).authorities).toEqual([caB.certificate])
  })

  it('refuses a response whose key does not match the leaf, or whose announced ID differs, or with no SVIDs', async () => {
    const leaf = await makeLeaf(caA, A)
    const other = await makeLeaf(caA, A)
    fake.x509Script.push(x509Response([{ ...leaf, key: other.key }], [caA.certificate]))
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_KEY_INVALID' })
    fake.x509Script.push(x509Response([{ ...leaf, id: 'spiffe://a.test/other' }], [caA.certificate]))
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_X509_SVID_INVALID' })
    fake.x509Script.push(x509Response([], [caA.certificate]))
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_X509_SVID_INVALID' })
    fake.x509Script.push(x509Response([leaf], [caA.certificate], { 'not a td!': [caB.certificate] }))
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_BUNDLE_INVALID' })
  })

  it('maps statuses to typed errors, preferring the agent trailer code', async () => {
    fake.x509Script.push({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' })
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_NO_IDENTITY_ISSUED', details: { grpc_code: grpc.status.PERMISSION_DENIED } })
    fake.x509Script.push({ code: grpc.status.UNAVAILABLE, details: 'workload attestation failed', trailerCode: 'ERR_WORKLOAD_ATTESTATION_FAILED' })
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_WORKLOAD_ATTESTATION_FAILED' })
    fake.x509Script.push({ code: grpc.status.UNAVAILABLE, details: 'x', trailerCode: 'NOT_OURS' })
    await expect(client().fetchX509Context()).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })

  it('a missing socket is ERR_UNAVAILABLE', async () => {
    const c = client({ socketPath: '/nonexistent/dir/api.sock' })
    await expect(c.fetchX509Context({ timeoutMs: 2000 })).rejects.toMatchObject({ code: 'ERR_UNAVAILABLE' })
  })

  it('watch: reports errors, retries PermissionDenied and Unavailable with backoff, delivers updates, ends on abort', async () => {
    const l1 = await makeLeaf(caA, A)
    const l2 = await makeLeaf(caA, A)
    fake.x509 = x509Response([l1], [caA.certificate])
    fake.x509Script.push({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' }, { code: grpc.status.UNAVAILABLE, details: 'down' })
    const updates: X509Context[] = []
    const errors: string[] = []
    const ac = new AbortController()
    let gotTwo!: () => void
    const two = new Promise<void>((r) => (gotTwo = r))
    const w = client().watchX509Context(
      { onUpdate: (c) => (updates.push(c), updates.length === 2 && gotTwo()), onError: (e) => errors.push(e.code) },
      { signal: ac.signal },
    )
    await waitUntil(() => updates.length === 1)
    fake.push(x509Response([l2], [caA.certificate]))
    await two
    expect(errors).toEqual(['ERR_NO_IDENTITY_ISSUED', 'ERR_UNAVAILABLE'])
    expect(Buffer.compare(updates[1]!.svids[0]!.leaf, l2.chain[0]!)).toBe(0)
    // the stream breaks: the watch reconnects and gets the current state again
    fake.fail(grpc.status.UNAVAILABLE, 'agent restarting')
    await waitUntil(() => updates.length === 3)
    expect(errors.at(-1)).toBe('ERR_UNAVAILABLE')
    ac.abort()
    await expect(w).resolves.toBeUndefined()
  })

  it('watch: a malformed update is reported and skipped, the stream stays', async () => {
    const l1 = await makeLeaf(caA, A)
    fake.x509 = x509Response([l1], [caA.certificate])
    const updates: X509Context[] = []
    const errors: string[] = []
    const ac = new AbortController()
    const w = client().watchX509Context({ onUpdate: (c) => updates.push(c), onError: (e) => errors.push(e.code) }, { signal: ac.signal })
    await waitUntil(() => updates.length === 1)
    const calls = fake.x509Calls
    fake.push(x509Response([], [caA.certificate]))
    await waitUntil(() => errors.length === 1)
    fake.push(x509Response([l1], [caA.certificate]))
    await waitUntil(() => updates.length === 2)
    expect(errors).toEqual(['ERR_X509_SVID_INVALID'])
    expect(fake.x509Calls).toBe(calls)
    ac.abort()
    await w
  })

  it.each([
    [grpc.status.INVALID_ARGUMENT, 'ERR_INVALID_ARGUMENT'],
    [grpc.status.UNIMPLEMENTED, 'ERR_UNSUPPORTED'],
  ])('watch: status %i is final (rejects with %s, no retry)', async (code, errCode) => {
    fake.x509Script.push({ code, details: 'final' })
    const calls = fake.x509Calls
    const errors: string[] = []
    await expect(
      client().watchX509Context({ onUpdate: () => {}, onError: (e) => errors.push(e.code) }, { signal: new AbortController().signal }),
    ).rejects.toMatchObject({ code: errCode })
    expect(fake.x509Calls).toBe(calls + 1)
    expect(errors).toEqual([errCode])
  })

  it('fetches JWT-SVIDs (audience and ID sent, token checked) and JWT bundles; validates through the agent', async () => {
    const kp = generateKeyPair('ec-p256')
    const token = await mintJwtSvid({
      spiffeId: SpiffeId.fromString(A),
      audience: ['svc'],
      signer: new KeyObjectSigner(kp.privateKey),
      kid: 'k1',
      expiresAt: new Date(Date.now() + 600_000),
    })
    fake.jwtSvids = { svids: [{ spiffe_id: A, svid: token, hint: 'h' }] }
    const svid = await client().fetchJwtSvid({ audience: 'svc', spiffeId: A })
    expect(svid.id.toString()).toBe(A)
    expect(svid.hint).toBe('h')
    expect(fake.requests.at(-1)).toMatchObject({ audience: ['svc'], spiffe_id: A })
    // a token for another audience than asked is refused
    await expect(client().fetchJwtSvid({ audience: 'other' })).rejects.toMatchObject({ code: 'ERR_JWT_AUDIENCE_MISMATCH' })
    // a token whose subject is not the announced ID is refused
    fake.jwtSvids = { svids: [{ spiffe_id: 'spiffe://a.test/else', svid: token, hint: '' }] }
    await expect(client().fetchJwtSvid({ audience: 'svc' })).rejects.toMatchObject({ code: 'ERR_JWT_SVID_INVALID' })
    fake.jwtSvids = { code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' }
    await expect(client().fetchJwtSvid({ audience: 'svc' })).rejects.toMatchObject({ code: 'ERR_NO_IDENTITY_ISSUED' })
    await expect(client().fetchJwtSvid({ audience: [] })).rejects.toThrow(TypeError)

    fake.jwtBundles = { 'spiffe://a.test': Buffer.from(JSON.stringify({ keys: [{ ...kp.publicKey.export({ format: 'jwk' }), kid: 'k1' }] })) }
    const bundles = await client().fetchJwtBundles()
    expect(bundles.getJwtBundleForTrustDomain(TrustDomain.fromString('a.test')).findKey('k1')).toBeDefined()

    fake.validate = {
      spiffe_id: A,
      claims: {
        fields: {
          sub: { kind: 'stringValue', stringValue: A },
          aud: { kind: 'listValue', listValue: { values: [{ kind: 'stringValue', stringValue: 'svc' }] } },
        },
      },
    }
    const v = await client().validateJwtSvid(token, 'svc')
    expect(v.svid.id.toString()).toBe(A)
    expect(v.claims).toEqual({ sub: A, aud: ['svc'] })
    expect(fake.requests.at(-1)).toEqual({ audience: 'svc', svid: token })
    fake.validate = { code: grpc.status.INVALID_ARGUMENT, details: 'token has expired', trailerCode: 'ERR_JWT_SVID_EXPIRED' }
    await expect(client().validateJwtSvid(token, 'svc')).rejects.toMatchObject({ code: 'ERR_JWT_SVID_EXPIRED' })
    // the agent saying valid for another ID than the token's subject is refused
    fake.validate = { spiffe_id: 'spiffe://a.test/else', claims: null }
    await expect(client().validateJwtSvid(token, 'svc')).rejects.toMatchObject({ code: 'ERR_JWT_SVID_INVALID' })
  })

  it('an aborted call rejects with the abort reason', async () => {
    const ac = new AbortController()
    ac.abort(new Error('stop'))
    await expect(client().fetchX509Context({ signal: ac.signal })).rejects.toThrow('stop')
  })
})

async function waitUntil(cond: () => boolean, timeoutMs = 5000): Promise<void> {
  const end = Date.now() + timeoutMs
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}
