/**
 * Hostile HTTP/2 connections against the Workload API (real Unix socket, real
 * SO_PEERCRED and pidfds, hostile clients in child processes): after each
 * sequence the agent's descriptors and memory return to their baseline, and a
 * normal client gets its SVID during and after. See
 * src/common/net/connection-guard.ts for the Node behaviour this defends
 * against (a session nghttp2 terminated is never closed).
 */
import { randomBytes } from 'node:crypto'
import { chmodSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import * as grpc from '@grpc/grpc-js'
import { loadSync } from '@grpc/proto-loader'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { WorkloadIdentity, WorkloadManager, WorkloadPeer, WorkloadUpdate } from '../../src/agent/workload-api/manager.js'
import { startWorkloadApi, type WorkloadApiServer } from '../../src/agent/workload-api/start-workload-api.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { runHostile, startFlood, writeHostileClient, type HostileKind } from '../helpers/hostile-h2.js'
import { tempDir } from '../helpers/temp.js'
import { Registry } from 'prom-client'

const REPO = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const isRoot = process.getuid?.() === 0
if (process.env.CI === 'true' && !isRoot) throw new Error('CI must run the hostile-connection tests as root (the flood runs as uid 65534)')

const TD = 'spiffe://example.org'

/** Grants every caller one identity named after its uid. */
class GrantAll implements WorkloadManager {
  readonly ids = new Map<number, WorkloadIdentity>()
  async attest(peer: WorkloadPeer): Promise<string[]> {
    return [`unix:uid:${peer.uid}`]
  }
  #identity(selectors: string[]): WorkloadIdentity[] {
    const uid = Number(selectors[0]!.split(':')[2])
    let id = this.ids.get(uid)
    if (id === undefined) {
      id = { spiffeId: `${TD}/uid/${uid}`, x509Svid: [randomBytes(40)], x509SvidKey: randomBytes(20), hint: '' }
      this.ids.set(uid, id)
    }
    return [id]
  }
  subscribe(selectors: string[], cb: (u: WorkloadUpdate) => void): () => void {
    cb({ identities: this.#identity(selectors), trustDomainId: TD, bundle: { x509: randomBytes(30), jwks: '{"keys":[]}' }, federatedBundles: new Map() })
    return () => {}
  }
  async fetchJwtSvids(): Promise<never> {
    throw new Error('not used')
  }
  async validateJwtSvid(): Promise<never> {
    throw new Error('not used')
  }
  async fetchJwtBundles(): Promise<never> {
    throw new Error('not used')
  }
}

type Client = grpc.Client & Record<string, (...args: unknown[]) => unknown>

function makeClient(socketPath: string): Client {
  const def = loadSync('spiffe/workload/workload.proto', {
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
    includeDirs: [join(REPO, 'proto')],
  })
  const Ctor = grpc.loadPackageDefinition(def).SpiffeWorkloadAPI as unknown as new (addr: string, creds: grpc.ChannelCredentials) => Client
  return new Ctor(`unix://${socketPath}`, grpc.credentials.createInsecure())
}

/** One FetchX509SVID on a fresh channel: the SPIFFE ID of the first message. */
async function fetchSvid(socketPath: string): Promise<string> {
  const c = makeClient(socketPath)
  try {
    return await new Promise<string>((resolve, reject) => {
      const md = new grpc.Metadata()
      md.set('workload.spiffe.io', 'true')
      const call = c.FetchX509SVID!({}, md, { deadline: Date.now() + 20_000 }) as grpc.ClientReadableStream<{ svids: { spiffe_id: string }[] }>
      call.on('data', (m) => {
        resolve(m.svids[0]!.spiffe_id)
        call.cancel()
      })
      call.on('error', (e: grpc.ServiceError) => {
        if (e.code !== grpc.status.CANCELLED) reject(e)
      })
    })
  } finally {
    c.close()
  }
}

const fdCount = () => readdirSync('/proc/self/fd').length

/** Polls `pred` every 100 ms until it holds or `ms` passed; returns whether it held. */
async function until(pred: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!pred()) {
    if (Date.now() > end) return false
    await new Promise((r) => setTimeout(r, 100))
  }
  return true
}

/** The idle timeout is long here, so that only the guard's probes and handshake timeout can end the hostile connections in time. */
const LIMITS = { maxPerPeer: 40, handshakeTimeoutMs: 1_500, idleTimeoutMs: 120_000, graceMs: 500 }
/** Descriptors the test process may hold beyond its baseline (vitest, grpc-js client internals). */
const FD_TOLERANCE = 3

describe('Workload API under hostile HTTP/2 connections', () => {
  let tmp: ReturnType<typeof tempDir>
  let api: WorkloadApiServer
  let socketPath: string
  let script: string
  const log = captureLogger()
  const registry = new Registry()
  const myUid = process.getuid!()

  beforeAll(async () => {
    tmp = tempDir('wh-')
    chmodSync(tmp.dir, 0o755)
    socketPath = join(tmp.dir, 'api.sock')
    script = writeHostileClient(tmp.dir)
    api = await startWorkloadApi({ socketPath, manager: new GrantAll(), log, connectionLimits: LIMITS, registry })
    // Warm up: the first call loads protos and allocates grpc-js's pools.
    expect(await fetchSvid(socketPath)).toBe(`${TD}/uid/${myUid}`)
  })
  afterAll(async () => {
    await api?.close()
    tmp?.cleanup()
  })

  async function settledBaseline(): Promise<number> {
    await until(() => api.connectionCount === 0, 10_000)
    return fdCount()
  }

  /** Runs `count` connections of `kind` while a normal client keeps fetching; then descriptors and memory return. */
  async function hostileRound(kind: HostileKind, count: number, extra: { interval?: number; waitMs?: number; concurrency?: number } = {}) {
    const base = await settledBaseline()
    const rss0 = process.memoryUsage().rss
    const hostile = runHostile(script, { kind, count, path: socketPath, ...extra })
    // During: a normal client still gets its SVID.
    expect(await fetchSvid(socketPath)).toBe(`${TD}/uid/${myUid}`)
    const stats = await hostile
    expect(stats.opened).toBe(count)
    // After: every hostile connection is gone on our side, descriptors back to the baseline.
    const back = await until(() => api.connectionCount === 0 && fdCount() <= base + FD_TOLERANCE, 15_000)
    expect({ connections: api.connectionCount, fds: fdCount(), base, back }).toMatchObject({ connections: 0, back: true })
    expect(await fetchSvid(socketPath)).toBe(`${TD}/uid/${myUid}`)
    expect(process.memoryUsage().rss - rss0).toBeLessThan(64 * 1024 * 1024)
    return stats
  }

  it('oversized frame header (GOAWAY FRAME_SIZE_ERROR): every connection is destroyed after the client closes', async () => {
    await hostileRound('oversized', 200)
  }, 60_000)

  it('oversized frame header on a connection with a call open: destroyed too (its stream never ends by itself)', async () => {
    await hostileRound('stream-oversized', 50)
  }, 60_000)

  it('garbage HPACK (GOAWAY COMPRESSION_ERROR): every connection is destroyed', async () => {
    await hostileRound('hpack', 200)
  }, 60_000)

  it('bad client preface: every connection is destroyed', async () => {
    await hostileRound('badpreface', 200)
  }, 60_000)

  it('slow preface (one byte a second): closed by the server after the handshake timeout', async () => {
    const stats = await hostileRound('slowpreface', 20, { interval: 1000, waitMs: 20_000 })
    // The server, not the client's 20 s give-up, ended every one of them.
    expect(stats.serverClosed).toBe(20)
    expect(stats.maxOpenMs).toBeLessThan(LIMITS.handshakeTimeoutMs + 5_000)
  }, 60_000)

  it('preface then a frame trickled a byte a second: closed by the server', async () => {
    const stats = await hostileRound('trickle', 20, { interval: 1000, waitMs: 20_000 })
    expect(stats.serverClosed).toBe(20)
    expect(stats.maxOpenMs).toBeLessThan(10_000)
  }, 60_000)

  it.skipIf(!isRoot)(
    'flood from one uid: capped per uid (metric, log line); another uid keeps getting its SVID; all released after',
    async () => {
      const base = await settledBaseline()
      const rejected = async () => (await registry.getSingleMetric('warrant_connections_rejected_total')!.get()).values.reduce((a, v) => a + v.value, 0)
      const rejected0 = await rejected()
      const flood = await startFlood(script, { count: LIMITS.maxPerPeer + 30, path: socketPath, waitMs: 60_000 }, { uid: 65534, gid: 65534 })
      let refused = 0
      const end = Date.now() + 10_000
      while ((refused = (await rejected()) - rejected0) < 30 && Date.now() < end) await new Promise((r) => setTimeout(r, 100))
      // The cap holds: the flooding uid keeps at most maxPerPeer connections, the rest are refused, counted and logged.
      expect(refused).toBe(30)
      expect(api.connectionCount).toBe(LIMITS.maxPerPeer)
      expect(log.lines.some((l) => l.msg === 'Connection limit per peer reached; refusing connections' && l.fields.uid === 65534)).toBe(true)
      // Our uid is not affected by the other uid's flood.
      expect(await fetchSvid(socketPath)).toBe(`${TD}/uid/${myUid}`)
      const stats = await flood.stop()
      expect(stats.serverClosed).toBeGreaterThanOrEqual(30)
      expect(await until(() => api.connectionCount === 0 && fdCount() <= base + FD_TOLERANCE, 15_000)).toBe(true)
    },
    60_000,
  )

  it('a held connection without streams is closed after the idle timeout', async () => {
    const base = await settledBaseline()
    const idlePath = join(tmp.dir, 'idle.sock')
    const idleApi = await startWorkloadApi({ socketPath: idlePath, manager: new GrantAll(), log, connectionLimits: { ...LIMITS, idleTimeoutMs: 3_000 } })
    try {
      const flood = await startFlood(script, { count: 5, path: idlePath, waitMs: 30_000 })
      expect(flood.stats.opened).toBe(5)
      // The flood answers PINGs, so only the idle timeout ends these.
      expect(await until(() => idleApi.connectionCount === 0, 15_000)).toBe(true)
      const stats = await flood.stop()
      expect(stats.serverClosed).toBe(5)
    } finally {
      await idleApi.close()
    }
    expect(await until(() => fdCount() <= base + FD_TOLERANCE, 10_000)).toBe(true)
  }, 60_000)
})
