/**
 * A scripted Workload API on a real Unix socket (real gRPC, our proto copy),
 * for unit tests of the client library: hands out X.509 contexts built from
 * test CAs, pushes updates to open streams, fails calls on demand.
 */
import * as grpc from '@grpc/grpc-js'
import { join } from 'node:path'
import { loadProto } from '../../../src/common/grpc/proto.js'
import { generateKeyPair } from '../../../src/spiffe/key-signer.js'
import { SpiffeId } from '../../../src/spiffe/spiffe-id.js'
import { createX509Svid } from '../../../src/spiffe/x509-svid/index.js'
import type { X509SvidResponseMsg } from '../../../src/workload-client/wire.js'
import { HOUR, makeRoot, NOW, type TestCa } from '../spiffe/x509-svid/pki.js'
import { tempDir } from '../../helpers/temp.js'

export { makeRoot, makeIntermediate, peculiarLeaf, KU, NOW, HOUR, type TestCa } from '../spiffe/x509-svid/pki.js'

export interface Leaf {
  chain: Uint8Array[]
  key: Buffer
  id: string
}

/** A leaf X.509-SVID for `id` signed by `ca` (chain: leaf, then `extra` certificates). */
export async function makeLeaf(ca: TestCa, id: string, o: { notAfter?: Date; extra?: Uint8Array[] } = {}): Promise<Leaf> {
  const kp = generateKeyPair('ec-p256')
  const der = await createX509Svid({
    spiffeId: SpiffeId.fromString(id),
    publicKey: kp.publicKey,
    signer: ca.signer,
    issuer: { certificate: ca.certificate },
    notBefore: new Date(NOW.getTime() - HOUR),
    notAfter: o.notAfter ?? new Date(NOW.getTime() + HOUR),
  })
  return { chain: [der, ...(o.extra ?? [])], key: kp.privateKey.export({ type: 'pkcs8', format: 'der' }), id }
}

export function x509Response(leaves: Leaf[], bundle: Uint8Array[], federated: Record<string, Uint8Array[]> = {}): X509SvidResponseMsg {
  return {
    svids: leaves.map((l) => ({ spiffe_id: l.id, x509_svid: Buffer.concat(l.chain), x509_svid_key: l.key, bundle: Buffer.concat(bundle), hint: '' })),
    federated_bundles: Object.fromEntries(Object.entries(federated).map(([k, v]) => [k, Buffer.concat(v)])),
  }
}

type Reply<T> = T | { code: number; details: string; trailerCode?: string }

function statusOf(r: { code: number; details: string; trailerCode?: string }): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata()
  if (r.trailerCode) metadata.set('x-error-code', r.trailerCode)
  return { code: r.code, details: r.details, metadata }
}

export class FakeWorkloadApi {
  readonly server = new grpc.Server()
  readonly socketPath: string
  readonly cleanup: () => void
  /** Answers to the next FetchX509SVID calls (shifted per call); when empty, `x509` is sent. */
  readonly x509Script: Reply<X509SvidResponseMsg>[] = []
  x509: X509SvidResponseMsg | undefined
  jwtBundles: Record<string, Buffer> = {}
  jwtSvids: Reply<{ svids: { spiffe_id: string; svid: string; hint: string }[] }> = { svids: [] }
  validate: Reply<{ spiffe_id: string; claims: unknown }> = { code: grpc.status.INVALID_ARGUMENT, details: 'no' }
  readonly open = new Set<grpc.ServerWritableStream<unknown, X509SvidResponseMsg>>()
  readonly headers: (string | undefined)[] = []
  readonly requests: unknown[] = []
  x509Calls = 0

  private constructor() {
    const t = tempDir('wc-')
    this.socketPath = join(t.dir, 'api.sock')
    this.cleanup = t.cleanup
  }

  static async start(): Promise<FakeWorkloadApi> {
    const f = new FakeWorkloadApi()
    const svc = (loadProto('spiffe/workload/workload.proto') as unknown as { SpiffeWorkloadAPI: grpc.ServiceClientConstructor }).SpiffeWorkloadAPI.service
    const header = (md: grpc.Metadata) => {
      const v = md.get('workload.spiffe.io')
      f.headers.push(v.length === 1 ? String(v[0]) : undefined)
      return v.length === 1 && v[0] === 'true'
    }
    f.server.addService(svc, {
      FetchX509SVID: (call: grpc.ServerWritableStream<unknown, X509SvidResponseMsg>) => {
        f.x509Calls++
        if (!header(call.metadata)) return call.emit('error', statusOf({ code: grpc.status.INVALID_ARGUMENT, details: 'security header missing from request' }))
        const next = f.x509Script.shift() ?? f.x509
        if (next && 'code' in next) return call.emit('error', statusOf(next))
        f.open.add(call)
        call.on('cancelled', () => f.open.delete(call))
        call.on('close', () => f.open.delete(call))
        if (next) call.write(next)
      },
      FetchX509Bundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        header(call.metadata)
        call.write({ bundles: f.x509?.federated_bundles ?? {} })
      },
      FetchJWTBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        header(call.metadata)
        call.write({ bundles: f.jwtBundles })
      },
      FetchJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        header(call.metadata)
        f.requests.push(call.request)
        const r = f.jwtSvids
        if ('code' in r) cb(statusOf(r))
        else cb(null, r)
      },
      ValidateJWTSVID: (call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        header(call.metadata)
        f.requests.push(call.request)
        const r = f.validate
        if ('code' in r) cb(statusOf(r))
        else cb(null, r)
      },
      FetchWITSVID: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', statusOf({ code: grpc.status.UNIMPLEMENTED, details: 'x' })),
      FetchWITBundles: (call: grpc.ServerWritableStream<unknown, unknown>) => call.emit('error', statusOf({ code: grpc.status.UNIMPLEMENTED, details: 'x' })),
    })
    await new Promise<void>((res, rej) =>
      f.server.bindAsync(`unix:${f.socketPath}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? rej(err) : res())),
    )
    return f
  }

  /** Sends `msg` on every open FetchX509SVID stream (and to later ones). */
  push(msg: X509SvidResponseMsg): void {
    this.x509 = msg
    for (const c of this.open) c.write(msg)
  }

  /** Ends every open FetchX509SVID stream with `code`. */
  fail(code: number, details: string): void {
    for (const c of this.open) c.emit('error', statusOf({ code, details }))
    this.open.clear()
  }

  async stop(): Promise<void> {
    this.server.forceShutdown()
    this.cleanup()
  }
}

export async function trustDomainPki(td: string): Promise<TestCa> {
  return makeRoot(td)
}
