/**
 * The Attest handler of the agent API over real gRPC (in-process server on a
 * Unix socket, raw-bytes client): an Attest call holds one of the few
 * attestation slots, so a client that never sends its params, or never
 * answers a challenge, is ended after a timeout; a challenge answer that does
 * not decode is INVALID_ARGUMENT ERR_REQUEST_MALFORMED (the caller's fault),
 * not a denial. The attestation service is the real one, with a test node
 * attestor that issues one challenge.
 */
import * as grpc from '@grpc/grpc-js'
import { generateKeyPairSync } from 'node:crypto'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { protoTypes } from '../../../../src/common/grpc/direct-codec.js'
import type { ServerNodeAttestor } from '../../../../src/plugin/contracts.js'
import { nodeService, nodeServiceDefinition } from '../../../../src/server/api/node-service.js'
import { NodeAttestationService } from '../../../../src/server/attestation/service.js'
import type { CaManager } from '../../../../src/server/ca/manager.js'
import { createMemoryDataStore } from '../../../../src/server/datastore/memory/index.js'
import { createServerMetrics } from '../../../../src/server/metrics.js'
import type { RegistrationService } from '../../../../src/server/registration/service.js'
import { TrustDomain } from '../../../../src/spiffe/trust-domain.js'
import { createCsr } from '../../../../src/spiffe/x509-svid/csr.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { FakeClock } from '../../../helpers/fake-clock.js'
import { tempDir } from '../../../helpers/temp.js'

const td = TrustDomain.fromString('example.org')
const AttestRequest = protoTypes('warrant/agent/v1/node.proto').lookupType('warrant.agent.v1.AttestRequest')
const TIMEOUTS = { params: 300, challenge: 300 }

describe('Node/Attest handler (in-process gRPC)', () => {
  const tmp = tempDir('wna-')
  const socket = join(tmp.dir, 'node.sock')
  let server: grpc.Server
  let client: grpc.Client
  const attests: string[] = []

  beforeAll(async () => {
    const clock = new FakeClock()
    const log = captureLogger()
    // A node attestor that sends one challenge and accepts any answer it is given.
    const challenger: ServerNodeAttestor = {
      async attest(payload, challenge) {
        const name = Buffer.from(payload).toString()
        attests.push(name)
        // 'slow' takes its time before its challenge (as a TPM does), so what a client sends meanwhile waits unread.
        if (name === 'slow') await new Promise((r) => setTimeout(r, 1000))
        await challenge(new Uint8Array([1, 2, 3]))
        throw new Error('test attestor never admits a node')
      },
    }
    const attestation = new NodeAttestationService({
      trustDomain: td,
      ds: createMemoryDataStore({ clock }),
      ca: {} as CaManager,
      registration: {} as RegistrationService,
      attestors: new Map([['challenger', challenger]]),
      clock,
      log,
      agentTtlMs: 600_000,
    })
    server = new grpc.Server()
    server.addService(
      nodeServiceDefinition(),
      nodeService({
        attestation,
        x509: {} as never,
        jwt: {} as never,
        sync: {} as never,
        entries: {} as never,
        ca: {} as never,
        log,
        metrics: createServerMetrics(),
        bounds: {} as never,
        instances: {} as never,
        attestTimeoutsMs: TIMEOUTS,
      }),
    )
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix:${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
    )
    client = new grpc.Client(`unix:${socket}`, grpc.credentials.createInsecure())
  })
  afterAll(async () => {
    client?.close()
    await new Promise<void>((r) => (server ? server.tryShutdown(() => r()) : r()))
    tmp.cleanup()
  })

  /** Opens Attest with raw-bytes codecs; resolves with the messages received and the final status. */
  const attest = (
    send: (call: grpc.ClientDuplexStream<Buffer, Buffer>, received: Buffer[]) => void,
  ): Promise<{ received: Buffer[]; err: grpc.ServiceError | undefined; ms: number }> =>
    new Promise((resolve) => {
      const t0 = performance.now()
      const call = client.makeBidiStreamRequest<Buffer, Buffer>(
        '/warrant.agent.v1.Node/Attest',
        (b) => b,
        (b) => b,
        new grpc.Metadata(),
        { deadline: Date.now() + 30_000 },
      )
      const received: Buffer[] = []
      let err: grpc.ServiceError | undefined
      call.on('data', (m: Buffer) => {
        received.push(m)
        send(call, received)
      })
      call.on('error', (e: grpc.ServiceError) => (err = e))
      call.on('status', () => resolve({ received, err, ms: performance.now() - t0 }))
      send(call, received)
    })
  const params = async (payload: string) => {
    const csr = await createCsr({ privateKey: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey })
    return Buffer.from(
      AttestRequest.encode(AttestRequest.create({ params: { attestor: 'challenger', payload: Buffer.from(payload), csr: Buffer.from(csr) } })).finish(),
    )
  }

  it('ends a call that never sends its params (PERMISSION_DENIED after the params timeout)', async () => {
    const r = await attest(() => undefined)
    expect(r.err?.code, r.err?.details).toBe(grpc.status.PERMISSION_DENIED)
    expect(r.err?.metadata.get('x-error-code')).toEqual(['ERR_NODE_ATTESTATION_FAILED'])
    expect(r.ms).toBeGreaterThanOrEqual(TIMEOUTS.params - 50)
  })

  it('ends a call that never answers its challenge (PERMISSION_DENIED after the challenge timeout)', async () => {
    const p = await params('silent')
    const r = await attest((call, received) => {
      if (received.length === 0) call.write(p)
    })
    expect(attests).toContain('silent')
    expect(r.received).toHaveLength(1)
    expect(r.err?.code, r.err?.details).toBe(grpc.status.PERMISSION_DENIED)
    expect(r.err?.metadata.get('x-error-code')).toEqual(['ERR_NODE_ATTESTATION_FAILED'])
  })

  it('ends a call that sends messages ahead of its challenge (INVALID_ARGUMENT ERR_REQUEST_MALFORMED), not waiting for the attestor', async () => {
    const p = await params('slow')
    const answer = Buffer.from(AttestRequest.encode(AttestRequest.create({ challenge_response: Buffer.alloc(64 * 1024, 1) })).finish())
    const r = await attest((call, received) => {
      if (received.length > 0) return
      call.write(p)
      for (let i = 0; i < 4; i++) call.write(answer)
    })
    expect(attests).toContain('slow')
    expect(r.received).toHaveLength(0)
    expect(r.err?.code, r.err?.details).toBe(grpc.status.INVALID_ARGUMENT)
    expect(r.err?.metadata.get('x-error-code')).toEqual(['ERR_REQUEST_MALFORMED'])
  })

  it('answers a challenge answer that does not decode with INVALID_ARGUMENT ERR_REQUEST_MALFORMED', async () => {
    const p = await params('garbled')
    const r = await attest((call, received) => {
      if (received.length === 0) call.write(p)
      // field 2 (challenge_response), length 5, but one byte follows
      else call.write(Buffer.from([0x12, 0x05, 0x01]))
    })
    expect(attests).toContain('garbled')
    expect(r.err?.code, r.err?.details).toBe(grpc.status.INVALID_ARGUMENT)
    expect(r.err?.metadata.get('x-error-code')).toEqual(['ERR_REQUEST_MALFORMED'])
  })
})
