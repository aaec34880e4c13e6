/**
 * Receive limits of the server's agent API (`warrant.agent.v1.Node`) against a
 * real `warrant server run` process, with raw HTTP/2 clients that present no
 * certificate: an oversized message is refused at its 5-byte prefix
 * (RESOURCE_EXHAUSTED) before any of it is buffered, concurrent attestations
 * are capped (per source address and in all), unauthenticated calls of other
 * methods are refused before their request is read, a truncated message is
 * INVALID_ARGUMENT, and authenticated agents keep the large limit their batch
 * calls need. Memory is the server process's own (/proc/<pid>/status).
 */
import { status as Status } from '@grpc/grpc-js'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { adminClient } from '../../src/cli/admin-client.js'
import { protoTypes } from '../../src/common/grpc/direct-codec.js'
import { ATTEST_MAX_MESSAGE_BYTES } from '../../src/server/api/call-limits.js'
import { MAX_MESSAGE_BYTES as TPM_MAX_MESSAGE_BYTES } from '../../attestors/node/tpm/payload.js'
import { MAX_CSR_BYTES } from '../../src/spiffe/x509-svid/csr.js'
import { waitFor } from '../helpers/e2e-cluster.js'
import { grpcFrame, RawGrpcSession, type RawCall, type RawStatus } from '../helpers/raw-grpc.js'
import { ServerProcess } from '../helpers/server-process.js'
import { pemOf, TestAgentClient } from '../helpers/test-agent-client.js'

const ATTEST = '/warrant.agent.v1.Node/Attest'
const BATCH = '/warrant.agent.v1.Node/BatchNewX509SVID'
const MIB = 1024 * 1024
const GLOBAL_LIMIT = 8
const PER_ADDRESS_LIMIT = 4
/** Growth of the server's peak RSS that the hostile phases may cause (before the limits: +400 to +650 MB). */
const RSS_TOLERANCE = 64 * MIB

const types = protoTypes('warrant/agent/v1/node.proto')
const AttestRequest = types.lookupType('warrant.agent.v1.AttestRequest')
const BatchRequest = types.lookupType('warrant.agent.v1.BatchNewX509SVIDRequest')
const attestParams = (payloadBytes: number) =>
  Buffer.from(
    AttestRequest.encode(
      AttestRequest.create({ params: { attestor: 'join_token', payload: Buffer.alloc(payloadBytes, 0x61), csr: Buffer.alloc(0) } }),
    ).finish(),
  )

/** VmRSS and VmHWM of a process, in bytes. */
function memory(pid: number): { rss: number; hwm: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(s)?.[1] ?? NaN) * 1024
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') }
}

/** Resets the process's peak RSS to its current RSS (Linux 4.0+: clear_refs 5); false if not permitted. */
function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    return true
  } catch {
    return false
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port
      s.close(() => resolve(p))
    })
  })
}

describe('agent API receive limits (server process, raw HTTP/2 clients without a certificate)', () => {
  let srv: ServerProcess
  let caPem: string
  let metricsPort: number
  const sessions: RawGrpcSession[] = []
  const clients: TestAgentClient[] = []

  const session = async (localAddress?: string, cert?: { certPem: string; keyPem: string }) => {
    const s = await RawGrpcSession.open({ address: srv.address, caPem, ...(localAddress ? { localAddress } : {}), ...cert })
    sessions.push(s)
    return s
  }
  const metric = async (name: string, labels = ''): Promise<number> => {
    const body = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text()
    const line = body.split('\n').find((l) => l.startsWith(`${name}${labels} `) || (labels === '' && l.startsWith(`${name} `)))
    return line === undefined ? 0 : Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  const token = async () => {
    const agents = adminClient('Agents', srv.socketPath)
    try {
      return (await agents.call<{ token: string }>('CreateJoinToken', { ttl: 0, spiffe_id: '' })).token
    } finally {
      agents.close()
    }
  }
  /** Peak RSS growth of the server while `fn` runs (peak reset first when the kernel lets us). */
  const peakGrowth = async (fn: () => Promise<void>): Promise<{ growth: number; before: number; after: { rss: number; hwm: number } }> => {
    const pid = srv.pid!
    const reset = resetPeak(pid)
    const before = memory(pid)
    await fn()
    const after = memory(pid)
    return { growth: after.hwm - (reset ? before.rss : before.hwm), before: before.rss, after }
  }

  beforeAll(async () => {
    metricsPort = await freePort()
    srv = await ServerProcess.start({
      logLevel: 'info',
      serverExtra: [
        `max_concurrent_attestations = ${GLOBAL_LIMIT}`,
        `max_concurrent_attestations_per_address = ${PER_ADDRESS_LIMIT}`,
        '[server.metrics]',
        `bind_address = "127.0.0.1:${metricsPort}"`,
      ].join('\n'),
    })
    caPem = srv.bundlePem()
    // Warm the server's TLS and gRPC paths once, so the baselines below are not its first connection.
    const c = new TestAgentClient({ address: srv.address, bundlePem: caPem })
    clients.push(c)
    await c.attestJoinToken(await token())
  })
  afterAll(async () => {
    for (const s of sessions) await s.close()
    for (const c of clients) c.close()
    await srv?.dispose()
  })

  it('sizes the Attest limit above what every attestor accepts', () => {
    // x509pop payloads are capped at 64 KiB, tpm messages at 32 KiB, CSRs at 16 KiB; field tags and the attestor name fit in 1 KiB.
    expect(ATTEST_MAX_MESSAGE_BYTES).toBeGreaterThanOrEqual(Math.max(64 * 1024, TPM_MAX_MESSAGE_BYTES) + MAX_CSR_BYTES + 1024)
    expect(ATTEST_MAX_MESSAGE_BYTES).toBeLessThanOrEqual(256 * 1024)
  })

  it('refuses 24 concurrent 15 MiB Attest messages with RESOURCE_EXHAUSTED, and 15 MiB unauthenticated batch calls with UNAUTHENTICATED, without growing the server', async () => {
    const big = grpcFrame(attestParams(15 * MIB))
    const batch = grpcFrame(Buffer.from(BatchRequest.encode(BatchRequest.create({ params: [{ entry_id: 'x', csr: Buffer.alloc(15 * MIB, 1) }] })).finish()))
    const statuses: RawStatus[] = []
    let hostileBytes = 0
    const m = await peakGrowth(async () => {
      const s = await session()
      const s2 = await session('127.0.0.2')
      // Four of them, on a connection of their own, ignore the refusal and try to send all of their 15 MiB anyway:
      // the server resets each stream after its status (RST_STREAM NO_ERROR), so the rest never leaves the client.
      const h4 = await session('127.0.0.4')
      const hostile = Array.from({ length: 4 }, () => h4.open(ATTEST, { keepSending: true }))
      const sent = hostile.map((h) => new Promise<void>((r) => h.stream.end(big, () => r())))
      const calls = [
        ...hostile.map((h) => h.status),
        ...Array.from({ length: 20 }, (_, i) => (i % 2 ? s : s2).call(ATTEST, big)),
        ...Array.from({ length: 4 }, () => s.call(BATCH, batch)),
      ]
      statuses.push(...(await Promise.all(calls)))
      await Promise.all(sent)
      hostileBytes = h4.session.socket.bytesWritten
    })
    console.log(`oversized flood: server RSS ${(m.before / MIB).toFixed(0)} MiB before, peak +${(m.growth / MIB).toFixed(1)} MiB`)
    for (const st of statuses.slice(0, 24)) expect(st.code, st.message).toBe(Status.RESOURCE_EXHAUSTED)
    expect(hostileBytes, 'the server read the refused bodies to their end').toBeLessThan(8 * MIB)
    for (const st of statuses.slice(24)) {
      expect(st.code, st.message).toBe(Status.UNAUTHENTICATED)
      expect(st.errorCode).toBe('ERR_UNAUTHENTICATED')
    }
    expect(m.growth).toBeLessThan(RSS_TOLERANCE)
  })

  it('caps concurrent attestations per source address and in all (RESOURCE_EXHAUSTED, metric), then serves a real agent once they end', async () => {
    const refusedBefore = await metric('warrant_server_attestations_refused_total', '{reason="per_address"}')
    const globalBefore = await metric('warrant_server_attestations_refused_total', '{reason="global"}')
    const held: RawCall[] = []
    // Streams that open Attest and send nothing hold their slot until they go.
    const a = await session('127.0.0.1')
    for (let i = 0; i < PER_ADDRESS_LIMIT; i++) held.push(a.open(ATTEST))
    await waitFor('the per-address slots to fill', async () => (await metric('warrant_server_attestations_in_flight')) === PER_ADDRESS_LIMIT, {
      timeoutMs: 20_000,
    })
    const extra = await a.call(ATTEST, grpcFrame(attestParams(16)))
    expect(extra.code, extra.message).toBe(Status.RESOURCE_EXHAUSTED)
    expect(extra.errorCode).toBe('ERR_RESOURCE_EXHAUSTED')
    expect(await metric('warrant_server_attestations_refused_total', '{reason="per_address"}')).toBe(refusedBefore + 1)

    const b = await session('127.0.0.2')
    for (let i = 0; i < GLOBAL_LIMIT - PER_ADDRESS_LIMIT; i++) held.push(b.open(ATTEST))
    await waitFor('every slot to fill', async () => (await metric('warrant_server_attestations_in_flight')) === GLOBAL_LIMIT, { timeoutMs: 20_000 })
    const c = await session('127.0.0.3')
    const third = await c.call(ATTEST, grpcFrame(attestParams(16)))
    expect(third.code, third.message).toBe(Status.RESOURCE_EXHAUSTED)
    expect(await metric('warrant_server_attestations_refused_total', '{reason="global"}')).toBe(globalBefore + 1)

    for (const h of held) h.cancel()
    await waitFor('the slots to be released', async () => (await metric('warrant_server_attestations_in_flight')) === 0, { timeoutMs: 20_000 })
    const agent = new TestAgentClient({ address: srv.address, bundlePem: caPem })
    clients.push(agent)
    const cred = await agent.attestJoinToken(await token())
    expect(cred.agentId).toMatch(/^spiffe:\/\/example\.org\/warrant\/agent\/join_token\//)
  })

  it('a flood of 400 half-sent attestations holds at most the cap, and memory stays flat', async () => {
    const statuses: Promise<RawStatus>[] = []
    const calls: RawCall[] = []
    // Each declares a message just under the limit and sends most of it, then stalls.
    const partial = grpcFrame(attestParams(ATTEST_MAX_MESSAGE_BYTES - 64)).subarray(0, ATTEST_MAX_MESSAGE_BYTES - 8 * 1024)
    const m = await peakGrowth(async () => {
      for (let k = 0; k < 8; k++) {
        const s = await session(`127.0.1.${k + 1}`)
        for (let i = 0; i < 50; i++) {
          const call = s.open(ATTEST)
          calls.push(call)
          statuses.push(call.status)
          void call.write(partial)
        }
      }
      await waitFor(
        'all but the admitted streams to be refused',
        async () => {
          const settled = await Promise.all(statuses.map((p) => Promise.race([p.then(() => 1), new Promise<number>((r) => setImmediate(() => r(0)))])))
          return settled.reduce((a, b) => a + b, 0) >= 400 - GLOBAL_LIMIT
        },
        { timeoutMs: 60_000 },
      )
    })
    expect(await metric('warrant_server_attestations_in_flight')).toBeLessThanOrEqual(GLOBAL_LIMIT)
    for (const c of calls) c.cancel()
    const done = await Promise.all(statuses.map((p) => p.catch(() => undefined)))
    const refused = done.filter((s) => s?.code === Status.RESOURCE_EXHAUSTED).length
    expect(refused).toBeGreaterThanOrEqual(400 - GLOBAL_LIMIT)
    console.log(`attestation flood: ${refused}/400 refused, server RSS ${(m.before / MIB).toFixed(0)} MiB before, peak +${(m.growth / MIB).toFixed(1)} MiB`)
    expect(m.growth).toBeLessThan(RSS_TOLERANCE)
    await waitFor('the slots to be released', async () => (await metric('warrant_server_attestations_in_flight')) === 0, { timeoutMs: 20_000 })
  })

  it('answers a truncated Attest message with INVALID_ARGUMENT ERR_REQUEST_MALFORMED', async () => {
    const whole = attestParams(300)
    const cut = whole.subarray(0, whole.length - 100)
    const s = await session()
    const st = await s.call(ATTEST, grpcFrame(cut))
    expect(st.code, st.message).toBe(Status.INVALID_ARGUMENT)
    expect(st.errorCode).toBe('ERR_REQUEST_MALFORMED')
    // The stream ends inside the message: its frame announces the whole message, only part of it is sent.
    const half = await s.call(ATTEST, grpcFrame(cut, whole.length))
    expect(half.code, half.message).toBe(Status.INVALID_ARGUMENT)
    expect(half.errorCode).toBe('ERR_REQUEST_MALFORMED')
    // A stream that ends before any message.
    const none = await s.call(ATTEST, new Uint8Array(0))
    expect(none.code, none.message).toBe(Status.INVALID_ARGUMENT)
    expect(none.errorCode).toBe('ERR_REQUEST_MALFORMED')
  })

  it('keeps the large limit for authenticated agents: a 1 MiB batch is answered, a truncated one is INVALID_ARGUMENT', async () => {
    const agent = new TestAgentClient({ address: srv.address, bundlePem: caPem })
    clients.push(agent)
    const cred = await agent.attestJoinToken(await token())
    const params = Array.from({ length: 500 }, (_, i) => ({ entryId: `no-such-entry-${i}`, csr: new Uint8Array(2048).fill(7) }))
    const results = await agent.batchNewX509Svid(params)
    expect(results).toHaveLength(500)
    for (const r of results) expect(r.status.code).toBe(Status.PERMISSION_DENIED)

    const certPem = cred.chain.map((d) => pemOf('CERTIFICATE', d)).join('')
    const keyPem = cred.key.export({ type: 'pkcs8', format: 'pem' }) as string
    const s = await session(undefined, { certPem, keyPem })
    const whole = Buffer.from(
      BatchRequest.encode(BatchRequest.create({ params: params.map((p) => ({ entry_id: p.entryId, csr: Buffer.from(p.csr) })) })).finish(),
    )
    expect(whole.length).toBeGreaterThan(ATTEST_MAX_MESSAGE_BYTES)
    const st = await s.call(BATCH, grpcFrame(whole.subarray(0, whole.length - 1000)))
    expect(st.code, st.message).toBe(Status.INVALID_ARGUMENT)
    expect(st.errorCode).toBe('ERR_REQUEST_MALFORMED')
  })
})
