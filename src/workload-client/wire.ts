/**
 * The Workload API wire: the service loaded from our copy of the SPIFFE proto
 * (no package line, so the paths are `/SpiffeWorkloadAPI/<Method>`) and the
 * message shapes proto-loader produces (keepCase). Internal to this room.
 */
import * as grpc from '@grpc/grpc-js'
import { loadProto } from '../common/grpc/proto.js'

export const SECURITY_HEADER = 'workload.spiffe.io'

export interface X509SvidMsg {
  spiffe_id: string
  x509_svid: Buffer
  x509_svid_key: Buffer
  bundle: Buffer
  hint: string
}
export interface X509SvidResponseMsg {
  svids: X509SvidMsg[]
  crl?: Buffer[]
  federated_bundles: Record<string, Buffer>
}
export interface X509BundlesResponseMsg {
  crl?: Buffer[]
  bundles: Record<string, Buffer>
}
export interface JwtSvidMsg {
  spiffe_id: string
  svid: string
  hint: string
}
export interface JwtSvidResponseMsg {
  svids: JwtSvidMsg[]
}
export interface JwtBundlesResponseMsg {
  bundles: Record<string, Buffer>
}
export interface ValidateJwtSvidResponseMsg {
  spiffe_id: string
  claims: { fields?: Record<string, unknown> } | null
}

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void

/** The generated client's methods, typed for this room. */
export interface WorkloadStub extends grpc.Client {
  FetchX509SVID(req: object, md: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<X509SvidResponseMsg>
  FetchX509Bundles(req: object, md: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<X509BundlesResponseMsg>
  FetchJWTBundles(req: object, md: grpc.Metadata, opts?: grpc.CallOptions): grpc.ClientReadableStream<JwtBundlesResponseMsg>
  FetchJWTSVID(
    req: { audience: string[]; spiffe_id?: string },
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: Callback<JwtSvidResponseMsg>,
  ): grpc.ClientUnaryCall
  ValidateJWTSVID(
    req: { audience: string; svid: string },
    md: grpc.Metadata,
    opts: grpc.CallOptions,
    cb: Callback<ValidateJwtSvidResponseMsg>,
  ): grpc.ClientUnaryCall
}

export function workloadStub(target: string, options: grpc.ChannelOptions = {}): WorkloadStub {
  const ctor = (loadProto('spiffe/workload/workload.proto') as unknown as { SpiffeWorkloadAPI: grpc.ServiceClientConstructor }).SpiffeWorkloadAPI
  return new ctor(target, grpc.credentials.createInsecure(), options) as unknown as WorkloadStub
}

/** Metadata carrying the security header every Workload API call needs. */
export function securityHeader(): grpc.Metadata {
  const md = new grpc.Metadata()
  md.set(SECURITY_HEADER, 'true')
  return md
}
