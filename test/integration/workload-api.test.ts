/**
 * The Workload API over a real Unix socket, called by a client built only
 * from @grpc/proto-loader and our proto/ copy (so the wire paths are
 * /SpiffeWorkloadAPI/<Method>), with a fake WorkloadManager that grants
 * identities by selector and the real `unix` attestor.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { chmodSync, lstatSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest'
import { UnixWorkloadAttestor } from '../../attestors/workload/unix/unix-attestor.js'
import { attestWorkload } from '../../src/agent/workload/attest-workload.js'
import { parseProcCreds } from '../../src/agent/workload/proc-creds.js'
import type { StartTimeReader } from '../../src/agent/workload/peer.js'
import type { JwtSvidResult, ValidatedJwtSvid, WorkloadIdentity, WorkloadManager, WorkloadPeer, WorkloadUpdate } from '../../src/agent/workload-api/manager.js'
import { startWorkloadApi, type WorkloadApiServer } from '../../src/agent/workload-api/start-workload-api.js'
import { fromStruct } from '../../src/agent/workload-api/struct.js'
import { nullLogger } from '../../src/common/log/logger.js'
import { IdentityError } from '../../src/errors/index.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { tempDir } from '../helpers/temp.js'
import { foreignUserKit } from '../helpers/foreign-user.js'

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const PROTO_DIR = join(REPO, 'proto')
const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the Workload API tests as root (clients are spawned as uid 65534)')

const MY_UID = process.geteuid!()
const TD = 'spiffe://example.org'
const FED_TD = 'spiffe://partner.test'

function identity(path: string, hint: string): WorkloadIdentity {
  return { spiffeId: `${TD}${path}`, x509Svid: [randomBytes(40), randomBytes(30)], x509SvidKey: randomBytes(20), hint }
}

/** Grants identities by selector; pushes full state to subscribers on `publish()`. */
class FakeManager implements WorkloadManager {
  readonly grants = new Map<string, WorkloadIdentity[]>()
  readonly subs = new Set<{ selectors: string[]; cb: (u: WorkloadUpdate) => void }>()
  readonly attested: WorkloadPeer[] = []
  attestError: Error | undefined
  bundle = { x509: randomBytes(50), jwks: JSON.stringify({ keys: [{ kty: 'EC', kid: 'k1', crv: 'P-256', x: 'AA', y: 'BB' }] }) }
  federated = new Map([[FED_TD, { x509: randomBytes(33), jwks: JSON.stringify({ keys: [] }) }]])
  readonly attestor = new UnixWorkloadAttestor({ discoverWorkloadPath: false, workloadSizeLimit: -1, log: nullLogger })

  async attest(peer: WorkloadPeer, opts: { signal?: AbortSignal }): Promise<string[]> {
    this.attested.push(peer)
    if (this.attestError) throw this.attestError
    return attestWorkload(peer, [{ name: 'unix', attestor: this.attestor }], opts, nullLogger)
  }

  identitiesFor(selectors: string[]): WorkloadIdentity[] {
    return selectors.flatMap((s) => this.grants.get(s) ?? [])
  }

  state(selectors: string[]): WorkloadUpdate {
    const identities = this.identitiesFor(selectors)
    return { identities, trustDomainId: TD, bundle: this.bundle, federatedBundles: identities.length ? this.federated : new Map() }
  }

  subscribe(selectors: string[], cb: (u: WorkloadUpdate) => void): () => void {
    const sub = { selectors, cb }
    this.subs.add(sub)
    cb(this.state(selectors))
    return () => this.subs.delete(sub)
  }

  publish(): void {
    for (const s of this.subs) s.cb(this.state(s.selectors))
  }

  async fetchJwtSvids(selectors: string[], req: { audience: string[]; spiffeId?: string }): Promise<JwtSvidResult[]> {
    return this.identitiesFor(selectors)
      .filter((i) => req.spiffeId === undefined || i.spiffeId === req.spiffeId)
      .map((i) => ({ spiffeId: i.spiffeId, token: `jwt.${i.spiffeId}.${req.audience.join(',')}`, hint: i.hint }))
  }

  async validateJwtSvid(_selectors: string[], req: { token: string; audience: string }): Promise<ValidatedJwtSvid> {
    if (req.token !== 'good.token.sig') throw new IdentityError('ERR_JWT_SVID_UNTRUSTED', 'token signed by an unknown key')
    return {
      spiffeId: `${TD}/web`,
      claims: { sub: `${TD}/web`, aud: req.audience, exp: 1_900_000_000, nested: { list: [1, true, null, 'x'] } },
    }
  }
}

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>

function makeClient(socketPath: string, options: grpc.ClientOptions = {}): Client {
  const def = loadSync('spiffe/workload/workload.proto', {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [PROTO_DIR],
  })
  const Ctor = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI as unknown as new (
    addr: string,
    creds: grpc.ChannelCredentials,
    o: grpc.ClientOptions,
  ) => Client
  return new Ctor(`unix://${socketPath}`, grpc.credentials.createInsecure(), options)
}

function healthClient(socketPath: string): Client {
  const def = loadSync('grpc/health/v1/health.proto', { keepCase: true, enums: String, defaults: true, includeDirs: [PROTO_DIR] })
  const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { health: { v1: { Health: new (a: string, c: grpc.ChannelCredentials) => Client } } } }
  return new pkg.grpc.health.v1.Health(`unix://${socketPath}`, grpc.credentials.createInsecure())
}

function header(value: string | string[] | null = 'true'): grpc.Metadata {
  const md = new grpc.Metadata()
  for (const v of value === null ? [] : Array.isArray(value) ? value : [value]) md.add('workload.spiffe.io', v)
  return md
}

function callUnary<T = Record<string, unknown>>(client: Client, method: string, req: object, md: grpc.Metadata): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method]!(req, md, (err: grpc.ServiceError | null, res: T) => (err ? reject(err) : resolve(res)))
  })
}

/** Collects messages of a server stream; `next()` resolves with the next one, rejects on error/end. */
function openStream(client: Client, method: string, md: grpc.Metadata) {
  const call = client[method]!({}, md) as grpc.ClientReadableStream<Record<string, unknown>>
  const queue: Record<string, unknown>[] = []
  const waiters: { resolve: (m: Record<string, unknown>) => void; reject: (e: unknown) => void }[] = []
  let failure: unknown
  call.on('data', (m: Record<string, unknown>) => {
    const w = waiters.shift()
    if (w) w.resolve(m)
    else queue.push(m)
  })
  const fail = (e: unknown) => {
    failure ??= e
    for (const w of waiters.splice(0)) w.reject(failure)
  }
  call.on('error', fail)
  call.on('end', () => fail(new Error('stream ended')))
  return {
    call,
    next: () =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const m = queue.shift()
        if (m) resolve(m)
        else if (failure) reject(failure)
        else waiters.push({ resolve, reject })
      }),
  }
}

/** Runs a Workload API client as uid/gid 65534 in a child process and returns its JSON result. */
async function runAsNobody(socketPath: string, method: 'FetchX509SVID' | 'FetchJWTSVID'): Promise<{ ok?: unknown; code?: number; details?: string }> {
  // The repository may not be readable by uid 65534 (CI clones into a 0700 dir): use the bundled kit.
  const kit = await foreignUserKit()
  const script = `
    const { grpc, protoLoader: pl } = require(process.argv[4])
    const [sock, protoDir, method] = process.argv.slice(1)
    const def = pl.loadSync('spiffe/workload/workload.proto', { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir] })
    const C = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI
    const c = new C('unix://' + sock, grpc.credentials.createInsecure())
    const md = new grpc.Metadata(); md.set('workload.spiffe.io', 'true')
    const done = (r) => { process.stdout.write(JSON.stringify(r)); process.exit(0) }
    if (method === 'FetchJWTSVID') {
      c.FetchJWTSVID({ audience: ['svc'] }, md, (err, res) => done(err ? { code: err.code, details: err.details } : { ok: res.svids.map((s) => s.spiffe_id) }))
    } else {
      const s = c.FetchX509SVID({}, md)
      s.on('data', (m) => done({ ok: m.svids.map((x) => x.spiffe_id) }))
      s.on('error', (err) => done({ code: err.code, details: err.details }))
    }`
  return await new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', script, socketPath, kit.protoDir, method, kit.grpc], {
      cwd: kit.dir,
      uid: 65534,
      gid: 65534,
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    let errOut = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (errOut += d.toString()))
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`client exited ${code}: ${errOut}`))))
  })
}

describe('Workload API over a Unix socket', () => {
  let tmp: ReturnType<typeof tempDir>
  let manager: FakeManager
  let server: WorkloadApiServer
  let client: Client
  let socketPath: string
  const log = captureLogger()
  const web = identity('/web', 'web')
  const batch = identity('/batch', 'batch')
  const nobody = identity('/nobody', '')

  beforeAll(async () => {
    tmp = tempDir('wapi-')
    chmodSync(tmp.dir, 0o755) // uid 65534 must traverse to the socket
    socketPath = join(tmp.dir, 'public', 'api.sock')
    manager = new FakeManager()
    server = await startWorkloadApi({ socketPath, manager, log })
    client = makeClient(socketPath)
  })
  afterAll(async () => {
    client.close()
    await server.close()
    tmp.cleanup()
  })
  beforeEach(() => {
    manager.grants.clear()
    manager.grants.set(`unix:uid:${MY_UID}`, [web, batch])
    manager.grants.set('unix:uid:65534', [nobody])
    manager.attestError = undefined
  })

  it('serves on a 0777 socket in a 0755 directory', () => {
    expect(lstatSync(socketPath).isSocket()).toBe(true)
    expect(lstatSync(socketPath).mode & 0o777).toBe(0o777)
    expect(lstatSync(dirname(socketPath)).mode & 0o777).toBe(0o755)
  })

  describe('security header', () => {
    const headers = [
      { title: 'missing', value: null },
      { title: 'false', value: 'false' },
      { title: 'wrong case', value: 'TRUE' },
      { title: 'two values', value: ['true', 'true'] },
    ]
    const rpcs = [
      { method: 'FetchX509SVID', stream: true },
      { method: 'FetchX509Bundles', stream: true },
      { method: 'FetchJWTBundles', stream: true },
      { method: 'FetchJWTSVID', stream: false, req: { audience: ['a'] } },
      { method: 'ValidateJWTSVID', stream: false, req: { audience: 'a', svid: 'good.token.sig' } },
    ]
    const cases = headers.flatMap((h) => rpcs.map((r) => ({ ...h, ...r, label: `${r.method} / ${h.title}` })))
    it.each(cases)('InvalidArgument "security header missing from request": $label', async ({ method, stream, req, value }) => {
      const p = stream ? openStream(client, method, header(value)).next() : callUnary(client, method, req ?? {}, header(value))
      await expect(p).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' })
    })
  })

  it('FetchX509SVID sends every SVID with chain, key and bundles at once', async () => {
    const s = openStream(client, 'FetchX509SVID', header())
    const m = await s.next()
    s.call.cancel()
    const svids = m.svids as Record<string, Buffer | string>[]
    expect(svids.map((x) => x.spiffe_id)).toEqual([web.spiffeId, batch.spiffeId])
    expect(svids[0]!.x509_svid).toEqual(Buffer.concat(web.x509Svid))
    expect(svids[0]!.x509_svid_key).toEqual(Buffer.from(web.x509SvidKey))
    expect(svids[0]!.bundle).toEqual(manager.bundle.x509)
    expect(svids.map((x) => x.hint)).toEqual(['web', 'batch'])
    expect(m.federated_bundles).toEqual({ [FED_TD]: manager.federated.get(FED_TD)!.x509 })
    expect(m.crl).toEqual([])
    // Supplementary groups as the kernel recorded them at connect (SO_PEERGROUPS): this process's.
    const groups = parseProcCreds(readFileSync('/proc/self/status'))!.groups
    expect(manager.attested.at(-1)).toEqual({ pid: process.pid, uid: MY_UID, gid: process.getegid!(), groups })
  })

  it('FetchX509Bundles and FetchJWTBundles send the local and federated bundles (JWKS for JWT)', async () => {
    const x = openStream(client, 'FetchX509Bundles', header())
    const xm = await x.next()
    x.call.cancel()
    expect(xm.bundles).toEqual({ [TD]: manager.bundle.x509, [FED_TD]: manager.federated.get(FED_TD)!.x509 })
    const j = openStream(client, 'FetchJWTBundles', header())
    const jm = await j.next()
    j.call.cancel()
    const bundles = jm.bundles as Record<string, Buffer>
    expect(Object.keys(bundles).sort()).toEqual([FED_TD, TD].sort())
    expect(JSON.parse(bundles[TD]!.toString('utf8'))).toEqual(JSON.parse(manager.bundle.jwks))
  })

  it('streams push the full state on every change and unsubscribe on cancel', async () => {
    const s = openStream(client, 'FetchX509SVID', header())
    const first = await s.next()
    expect((first.svids as unknown[]).length).toBe(2)
    await vi.waitFor(() => expect(manager.subs.size).toBe(1)) // earlier tests' cancelled streams may still be unwinding
    const rotated = identity('/web', 'web')
    manager.grants.set(`unix:uid:${MY_UID}`, [rotated])
    manager.publish()
    const second = await s.next()
    expect((second.svids as Record<string, unknown>[]).map((x) => x.x509_svid)).toEqual([Buffer.concat(rotated.x509Svid)])
    s.call.cancel()
    await vi.waitFor(() => expect(manager.subs.size).toBe(0))
  })

  it('a stream ends with PermissionDenied when the identities go away', async () => {
    const s = openStream(client, 'FetchX509SVID', header())
    await s.next()
    manager.grants.clear()
    manager.publish()
    await expect(s.next()).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' })
    await vi.waitFor(() => expect(manager.subs.size).toBe(0))
  })

  describe('no identity for the caller', () => {
    it.each([
      { method: 'FetchX509SVID', stream: true },
      { method: 'FetchX509Bundles', stream: true },
      { method: 'FetchJWTBundles', stream: true },
      { method: 'FetchJWTSVID', stream: false, req: { audience: ['a'] } },
      { method: 'ValidateJWTSVID', stream: false, req: { audience: 'a', svid: 'good.token.sig' } },
    ])('$method → PermissionDenied "no identity issued"', async ({ method, stream, req }) => {
      manager.grants.clear()
      const p = stream ? openStream(client, method, header()).next() : callUnary(client, method, req ?? {}, header())
      await expect(p).rejects.toMatchObject({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' })
    })
  })

  it('attestation failure → Unavailable "workload attestation failed"; the reason is only logged', async () => {
    manager.attestError = new Error('docker socket unreachable')
    await expect(callUnary(client, 'FetchJWTSVID', { audience: ['a'] }, header())).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
      details: 'workload attestation failed',
    })
    expect(JSON.stringify(log.lines.at(-1))).toContain('docker socket unreachable')
  })

  describe('FetchJWTSVID', () => {
    it.each([
      { title: 'all identities', req: { audience: ['svc-a', 'svc-b'] }, ids: [web.spiffeId, batch.spiffeId] },
      { title: 'one SPIFFE ID', req: { audience: ['svc-a'], spiffe_id: batch.spiffeId }, ids: [batch.spiffeId] },
    ])('returns JWT-SVIDs: $title', async ({ req, ids }) => {
      const res = await callUnary<{ svids: { spiffe_id: string; svid: string; hint: string }[] }>(client, 'FetchJWTSVID', req, header())
      expect(res.svids.map((s) => s.spiffe_id)).toEqual(ids)
      expect(res.svids[0]!.svid).toBe(`jwt.${ids[0]}.${req.audience.join(',')}`)
    })

    it.each([
      { title: 'empty audience', req: { audience: [] }, code: grpc.status.INVALID_ARGUMENT, details: 'audience must be specified' },
      { title: 'invalid spiffe_id', req: { audience: ['a'], spiffe_id: 'http://x' }, code: grpc.status.INVALID_ARGUMENT },
      { title: 'unknown spiffe_id', req: { audience: ['a'], spiffe_id: `${TD}/other` }, code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' },
    ])('$title', async ({ req, code, details }) => {
      await expect(callUnary(client, 'FetchJWTSVID', req, header())).rejects.toMatchObject({ code, ...(details ? { details } : {}) })
    })
  })

  describe('ValidateJWTSVID', () => {
    it('returns the SPIFFE ID and the claims as a Struct, aud always an array', async () => {
      const res = await callUnary<{ spiffe_id: string; claims: { fields: Record<string, unknown> } }>(
        client,
        'ValidateJWTSVID',
        { audience: 'svc', svid: 'good.token.sig' },
        header(),
      )
      expect(res.spiffe_id).toBe(`${TD}/web`)
      expect(fromStruct(res.claims)).toEqual({ sub: `${TD}/web`, aud: ['svc'], exp: 1_900_000_000, nested: { list: [1, true, null, 'x'] } })
    })

    it.each([
      { title: 'empty audience', req: { audience: '', svid: 'good.token.sig' }, details: 'audience must be specified' },
      { title: 'empty svid', req: { audience: 'a', svid: '' }, details: 'svid must be specified' },
      { title: 'untrusted token', req: { audience: 'a', svid: 'bad.token.sig' }, details: 'token signed by an unknown key' },
    ])('InvalidArgument: $title', async ({ req, details }) => {
      await expect(callUnary(client, 'ValidateJWTSVID', req, header())).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details })
    })
  })

  it.each(['FetchWITSVID', 'FetchWITBundles'])('%s → Unimplemented', async (method) => {
    await expect(openStream(client, method, header()).next()).rejects.toMatchObject({ code: grpc.status.UNIMPLEMENTED })
  })

  it('grpc.health.v1.Health Check and Watch on the same socket', async () => {
    const h = healthClient(socketPath)
    try {
      expect(await callUnary(h, 'Check', { service: '' }, new grpc.Metadata())).toEqual({ status: 'SERVING' })
      expect(await callUnary(h, 'Check', { service: 'SpiffeWorkloadAPI' }, new grpc.Metadata())).toEqual({ status: 'SERVING' })
      await expect(callUnary(h, 'Check', { service: 'nope' }, new grpc.Metadata())).rejects.toMatchObject({ code: grpc.status.NOT_FOUND })
      const w = h.Watch!({ service: 'nope' }) as grpc.ClientReadableStream<{ status: string }>
      const first = await new Promise<{ status: string }>((resolve, reject) => {
        w.once('data', resolve)
        w.once('error', reject)
      })
      expect(first).toEqual({ status: 'SERVICE_UNKNOWN' })
      w.cancel()
    } finally {
      h.close()
    }
  })

  describe.runIf(isRoot)('caller running as uid 65534', () => {
    it.each(['FetchX509SVID', 'FetchJWTSVID'] as const)('%s: gets only what unix:uid:65534 grants', async (method) => {
      const r = await runAsNobody(socketPath, method)
      expect(r).toEqual({ ok: [nobody.spiffeId] })
      expect(manager.attested.at(-1)).toMatchObject({ uid: 65534, gid: 65534 })
    })

    it.each(['FetchX509SVID', 'FetchJWTSVID'] as const)('%s: PermissionDenied when nothing matches', async (method) => {
      manager.grants.delete('unix:uid:65534')
      const r = await runAsNobody(socketPath, method)
      expect(r).toEqual({ code: grpc.status.PERMISSION_DENIED, details: 'no identity issued' })
    })
  })
})

describe('PID-reuse guard', () => {
  let tmp: ReturnType<typeof tempDir>
  let server: WorkloadApiServer | undefined
  let client: Client | undefined
  beforeEach(() => {
    tmp = tempDir('wpid-')
  })
  afterEach(async () => {
    client?.close()
    await server?.close()
    tmp.cleanup()
  })

  it.each([
    { title: 'start time unchanged: served', after: (t: string) => t, code: undefined },
    { title: 'pid now belongs to a newer process', after: (t: string) => String(Number(t) + 1), code: grpc.status.UNAVAILABLE },
    { title: 'process exited during attestation', after: () => undefined, code: grpc.status.UNAVAILABLE },
  ])('$title', async ({ after, code }) => {
    const manager = new FakeManager()
    manager.grants.set(`unix:uid:${MY_UID}`, [identity('/web', '')])
    let reads = 0
    const readStartTime: StartTimeReader = () => (reads++ === 0 ? '5000' : after('5000'))
    const socketPath = join(tmp.dir, 'api.sock')
    server = await startWorkloadApi({ socketPath, manager, log: nullLogger, readStartTime })
    client = makeClient(socketPath)
    const p = callUnary(client, 'FetchJWTSVID', { audience: ['a'] }, header())
    if (code === undefined) await expect(p).resolves.toMatchObject({ svids: [expect.anything()] })
    else await expect(p).rejects.toMatchObject({ code, details: 'workload attestation failed' })
    expect(reads).toBe(2) // once at accept, once after attestation
  })
})

describe('attestation reuse per connection', () => {
  let tmp: ReturnType<typeof tempDir>
  let server: WorkloadApiServer | undefined
  const clients: Client[] = []
  beforeEach(() => {
    tmp = tempDir('wreuse-')
  })
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close()
    await server?.close()
    tmp.cleanup()
  })

  async function start(reuseMs: number | undefined, readStartTime: StartTimeReader, clock: { t: number }) {
    const manager = new FakeManager()
    manager.grants.set(`unix:uid:${MY_UID}`, [identity('/web', '')])
    const socketPath = join(tmp.dir, 'api.sock')
    server = await startWorkloadApi({
      socketPath,
      manager,
      log: nullLogger,
      readStartTime,
      now: () => clock.t,
      ...(reuseMs !== undefined ? { attestationReuseMs: reuseMs } : {}),
    })
    const client = () => {
      // Each its own connection (grpc-js shares subchannels between clients of one target otherwise).
      const c = makeClient(socketPath, { 'grpc.use_local_subchannel_pool': 1 })
      clients.push(c)
      return c
    }
    return { manager, client }
  }
  const fetchJwt = (c: Client) => callUnary(c, 'FetchJWTSVID', { audience: ['a'] }, header())

  it('reuses a connection attestation within the window and re-checks the caller on every call', async () => {
    let reads = 0
    const clock = { t: 1_000 }
    const { manager, client } = await start(500, () => (reads++, '5000'), clock)
    const c = client()
    await fetchJwt(c)
    clock.t += 499
    await fetchJwt(c)
    expect(manager.attested).toHaveLength(1)
    expect(reads).toBe(3) // accept, then one re-check per call, reused or not
    clock.t += 1 // the window is over: attest again
    await fetchJwt(c)
    expect(manager.attested).toHaveLength(2)
  })

  it('never reuses across connections', async () => {
    const clock = { t: 0 }
    const { manager, client } = await start(60_000, () => '5000', clock)
    await fetchJwt(client())
    await fetchJwt(client())
    expect(manager.attested).toHaveLength(2)
  })

  it('a reused attestation is still refused when the re-check fails (pid now another process)', async () => {
    let reads = 0
    const clock = { t: 0 }
    const { manager, client } = await start(60_000, () => (reads++ < 2 ? '5000' : '5001'), clock)
    const c = client()
    await expect(fetchJwt(c)).resolves.toMatchObject({ svids: [expect.anything()] })
    await expect(fetchJwt(c)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE, details: 'workload attestation failed' })
    expect(manager.attested).toHaveLength(1) // the second call reused it, and the re-check refused it
  })

  it('without a reuse window every call attests', async () => {
    const clock = { t: 0 }
    const { manager, client } = await start(undefined, () => '5000', clock)
    const c = client()
    await fetchJwt(c)
    await fetchJwt(c)
    expect(manager.attested).toHaveLength(2)
  })

  it('a failed attestation is not reused', async () => {
    const clock = { t: 0 }
    const { manager, client } = await start(60_000, () => '5000', clock)
    const c = client()
    manager.attestError = new Error('transient')
    await expect(fetchJwt(c)).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE })
    manager.attestError = undefined
    await expect(fetchJwt(c)).resolves.toMatchObject({ svids: [expect.anything()] })
    expect(manager.attested).toHaveLength(2)
  })
})

describe('shutdown', () => {
  it('close() ends open streams, unsubscribes and removes the socket', async () => {
    const tmp = tempDir('wclose-')
    const manager = new FakeManager()
    manager.grants.set(`unix:uid:${MY_UID}`, [identity('/web', '')])
    const socketPath = join(tmp.dir, 'api.sock')
    const server = await startWorkloadApi({ socketPath, manager, log: nullLogger })
    const client = makeClient(socketPath)
    try {
      const s = openStream(client, 'FetchX509SVID', header())
      await s.next()
      expect(server.connectionCount).toBe(1)
      await server.close()
      await expect(s.next()).rejects.toBeDefined()
      await vi.waitFor(() => expect(manager.subs.size).toBe(0))
      expect(() => lstatSync(socketPath)).toThrow()
    } finally {
      client.close()
      tmp.cleanup()
    }
  })
})
