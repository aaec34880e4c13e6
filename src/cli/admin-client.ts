import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../common/grpc/proto.js'

export const DEFAULT_ADMIN_SOCKET = './.warrant/server/private/admin.sock'

type Unary = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: unknown) => void) => void

/** A promise-based client for one admin service over the server's Unix socket. */
export function adminClient(service: 'Entries' | 'Agents' | 'Bundles' | 'Instances' | 'Revocations' | 'Federation' | 'Bounds', socketPath: string) {
  const file =
    service === 'Federation' ? 'warrant/admin/v1/federation.proto' : service === 'Bounds' ? 'warrant/admin/v1/bounds.proto' : 'warrant/admin/v1/admin.proto'
  const proto = loadProto(file) as unknown as { warrant: { admin: { v1: Record<string, grpc.ServiceClientConstructor> } } }
  const Ctor = proto.warrant.admin.v1[service]!
  const client = new Ctor(`unix:${socketPath}`, grpc.credentials.createInsecure())
  return {
    call<Res = Record<string, unknown>>(method: string, req: unknown, timeoutMs = 30_000): Promise<Res> {
      const fn = (client as unknown as Record<string, Unary>)[method]!.bind(client)
      return new Promise((resolve, reject) =>
        fn(req, new grpc.Metadata(), { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res as Res))),
      )
    },
    close: () => client.close(),
  }
}
