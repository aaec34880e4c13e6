/**
 * Client of the server's agent API (`warrant.agent.v1.Node`) over TCP+TLS.
 *
 * The server presents an X.509-SVID for `spiffe://<td>/warrant/server` (URI
 * SAN only): the client trusts the given roots and checks that URI SAN itself
 * (the host name does not matter: any server of the trust domain is trusted
 * alike). Every RPC but Attest presents the agent's SVID as client
 * certificate; `setCredentials` and `setAddress` build a new channel, so a
 * renewed SVID, a new bundle or another server (failover) is used from the
 * next call on.
 */
import * as grpc from '@grpc/grpc-js'
import type { PeerCertificate } from 'node:tls'
import { directClientConstructor, int64, protoTypes } from '../common/grpc/direct-codec.js'
import { loadProto } from '../common/grpc/proto.js'
import { ERROR_CODES, type ErrorCode } from '../errors/codes.js'
import { IdentityError } from '../errors/identity-error.js'
import type { NodeClient } from '../gen/warrant/agent/v1/Node.js'
import type { SyncResponse__Output } from '../gen/warrant/agent/v1/SyncResponse.js'
import type { Entry__Output } from '../gen/warrant/types/v1/Entry.js'
import type { Bundle__Output } from '../gen/warrant/types/v1/Bundle.js'
import type { CallOpts } from '../plugin/contracts.js'
import type { TrustDomain } from '../spiffe/trust-domain.js'
import {
  MAX_X509_BATCH,
  type AgentEntry,
  type BundleDoc,
  type InstanceClient,
  type JwtSvidMint,
  type RegisteredInstance,
  type SvidSigner,
  type SyncMessage,
  type X509SvidParam,
  type X509SvidResultItem,
} from './manager/ports.js'

export type {
  AgentEntry,
  BundleDoc,
  InstanceClient,
  JwtSvidMint,
  RegisteredInstance,
  SvidSigner,
  SyncMessage,
  X509SvidParam,
  X509SvidResultItem,
} from './manager/ports.js'
export { MAX_X509_BATCH } from './manager/ports.js'

export interface AttestOutcome {
  agentId: string
  /** DER, leaf first. */
  svidChain: Uint8Array[]
  bundle: BundleDoc | undefined
}

/** The whole agent API. */
export interface ServerClient extends SvidSigner, InstanceClient {
  attest(
    params: { attestor: string; payload: Uint8Array; csr: Uint8Array },
    answer: (challenge: Uint8Array) => Promise<Uint8Array>,
    opts?: CallOpts,
  ): Promise<AttestOutcome>
  renewAgent(csr: Uint8Array, opts?: CallOpts): Promise<Uint8Array[]>
  /** Follows the Sync stream until it ends (rejects with the error) or `signal` aborts (resolves). */
  sync(onMessage: (m: SyncMessage) => void, opts?: CallOpts): Promise<void>
}

export interface ClientCredentials {
  /** PEM of the trusted roots; undefined only for the insecure bootstrap (no chain verification). */
  rootsPem: string | undefined
  /** The agent SVID (PEM key and chain); undefined for attestation without a client certificate. */
  keyPem?: string | undefined
  chainPem?: string | undefined
}

/** Methods whose messages skip proto-loader's object conversion (common/grpc/direct-codec.ts); the server does the same. */
const DIRECT_METHODS = ['BatchNewX509SVID'] as const
const UNARY_DEADLINE_MS = 30_000
/** Entries one Sync update may bring in pages (a server that never ends its pages cannot fill the agent's memory). */
export const MAX_SYNC_ENTRIES = 1_000_000

/**
 * Puts the pages of a Sync update back together: a message with `more` starts
 * (or continues) an update, the next message without it ends it. Returns the
 * whole update when it is complete, else undefined. More than `maxEntries`
 * entries in one update end the stream (ERR_INTERNAL).
 */
export class SyncPages {
  readonly #max: number
  #open: SyncResponse__Output | undefined

  constructor(maxEntries = MAX_SYNC_ENTRIES) {
    this.#max = maxEntries
  }

  accept(m: SyncResponse__Output): SyncResponse__Output | undefined {
    let whole: SyncResponse__Output
    if (this.#open) {
      for (const e of m.entries ?? []) this.#open.entries.push(e)
      whole = this.#open
    } else whole = m.more ? { ...m, entries: [...(m.entries ?? [])] } : m
    if ((whole.entries?.length ?? 0) > this.#max) throw new IdentityError('ERR_INTERNAL', `sync: more than ${this.#max} entries in one update`)
    if (m.more) {
      this.#open = whole
      return undefined
    }
    this.#open = undefined
    return whole
  }
}
const FLOW_CONTROL_WINDOW = 4 * 1024 * 1024

/** The server's SPIFFE ID for a trust domain. */
export function serverSpiffeId(td: TrustDomain): string {
  return `${td.idString()}/warrant/server`
}

/** Turns a gRPC client error into an IdentityError (code from `x-error-code`, else from the status). */
export function fromGrpcError(err: unknown, what: string): IdentityError {
  if (err instanceof IdentityError) return err
  const e = err as Partial<grpc.ServiceError>
  if (typeof e?.code !== 'number') return new IdentityError('ERR_INTERNAL', `${what}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
  const trailer = e.metadata?.get('x-error-code')?.[0]
  const named = typeof trailer === 'string' && Object.hasOwn(ERROR_CODES, trailer) ? (trailer as ErrorCode) : undefined
  const byStatus: Partial<Record<number, ErrorCode>> = {
    [grpc.status.UNAVAILABLE]: 'ERR_UNAVAILABLE',
    [grpc.status.DEADLINE_EXCEEDED]: 'ERR_UNAVAILABLE',
    [grpc.status.CANCELLED]: 'ERR_UNAVAILABLE',
    [grpc.status.UNAUTHENTICATED]: 'ERR_UNAUTHENTICATED',
    [grpc.status.PERMISSION_DENIED]: 'ERR_AGENT_EVICTED',
    [grpc.status.INVALID_ARGUMENT]: 'ERR_INVALID_ARGUMENT',
    [grpc.status.NOT_FOUND]: 'ERR_NOT_FOUND',
    [grpc.status.UNIMPLEMENTED]: 'ERR_UNSUPPORTED',
  }
  const code = named ?? byStatus[e.code] ?? 'ERR_INTERNAL'
  return new IdentityError(code, `${what}: ${e.details ?? e.message ?? 'failed'}`, { cause: err, details: { grpc_code: e.code } })
}

/** True for errors that mean "this agent is not (or no longer) accepted": re-attest or give up. */
export function isAgentRejected(err: unknown): boolean {
  if (!(err instanceof IdentityError)) return false
  const g = err.details?.grpc_code
  if (g === grpc.status.PERMISSION_DENIED || g === grpc.status.UNAUTHENTICATED) return true
  return err.code === 'ERR_AGENT_EVICTED' || err.code === 'ERR_AGENT_BANNED' || err.code === 'ERR_UNAUTHENTICATED'
}

function num(v: string | number | undefined | null): number {
  const n = Number(v ?? 0)
  return Number.isFinite(n) ? n : 0
}

export function entryFromMsg(m: Entry__Output): AgentEntry {
  return {
    id: m.id,
    spiffeId: m.spiffe_id,
    parentId: m.parent_id,
    selectors: (m.selectors ?? []).map((s) => `${s.type}:${s.value}`),
    x509SvidTtl: m.x509_svid_ttl ?? 0,
    jwtSvidTtl: m.jwt_svid_ttl ?? 0,
    dnsNames: m.dns_names ?? [],
    federatesWith: m.federates_with ?? [],
    hint: m.hint ?? '',
    revision: num(m.revision),
  }
}

function bundleFromMsg(b: Bundle__Output | null | undefined): BundleDoc | undefined {
  if (!b || !b.document) return undefined
  return { trustDomain: b.trust_domain, document: b.document, sequence: num(b.sequence) }
}

export function syncFromMsg(m: SyncResponse__Output): SyncMessage {
  return {
    full: !!m.full,
    entries: (m.entries ?? []).map(entryFromMsg),
    deletedEntryIds: m.deleted_entry_ids ?? [],
    bundle: bundleFromMsg(m.bundle),
    federatedBundles: m.federated_bundles_changed ? (m.federated_bundles ?? []).map((b) => bundleFromMsg(b)!).filter(Boolean) : undefined,
    revocations: m.revocations_changed
      ? (m.revocations ?? [])
          .filter((r) => r.kind === 'instance' || r.kind === 'prefix')
          .map((r) => ({ id: num(r.id), kind: r.kind as 'instance' | 'prefix', value: r.value, expiresAt: num(r.expires_at) }))
      : undefined,
  }
}

type NodeCtor = new (address: string, creds: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => NodeClient

/** The gRPC implementation of ServerClient. */
export class GrpcServerClient implements ServerClient {
  #address: string
  #credentials: ClientCredentials
  readonly #serverId: string
  readonly #td: TrustDomain
  #client: NodeClient
  readonly #ctor: NodeCtor

  constructor(opts: { address: string; trustDomain: TrustDomain; credentials: ClientCredentials }) {
    this.#address = opts.address
    this.#credentials = opts.credentials
    this.#td = opts.trustDomain
    this.#serverId = serverSpiffeId(opts.trustDomain)
    const pkg = loadProto('warrant/agent/v1/node.proto') as unknown as { warrant: { agent: { v1: { Node: grpc.ServiceClientConstructor } } } }
    this.#ctor = directClientConstructor(
      pkg.warrant.agent.v1.Node.service,
      protoTypes('warrant/agent/v1/node.proto'),
      DIRECT_METHODS,
      'warrant.agent.v1.Node',
    ) as unknown as NodeCtor
    this.#client = this.#build(opts.credentials)
  }

  /** Replaces the channel (new client certificate or trusted roots). Calls in flight finish on the old one. */
  setCredentials(c: ClientCredentials): void {
    this.#credentials = c
    const old = this.#client
    this.#client = this.#build(c)
    old.close()
  }

  /** The server address calls go to. */
  get address(): string {
    return this.#address
  }

  /** Moves to another server (failover): a new channel with the same credentials. Calls in flight finish on the old one. */
  setAddress(address: string): void {
    if (address === this.#address) return
    this.#address = address
    this.setCredentials(this.#credentials)
  }

  close(): void {
    this.#client.close()
  }

  #build(c: ClientCredentials): NodeClient {
    const serverId = this.#serverId
    const checkServerIdentity = (_host: string, cert: PeerCertificate): Error | undefined => {
      const uris = (cert.subjectaltname ?? '')
        .split(', ')
        .filter((s) => s.startsWith('URI:'))
        .map((s) => s.slice(4))
      if (uris.length === 1 && uris[0] === serverId) return undefined
      return new Error(`server certificate is not for ${serverId}`)
    }
    const creds = grpc.credentials.createSsl(
      c.rootsPem === undefined ? null : Buffer.from(c.rootsPem),
      c.keyPem === undefined ? null : Buffer.from(c.keyPem),
      c.chainPem === undefined ? null : Buffer.from(c.chainPem),
      { checkServerIdentity, ...(c.rootsPem === undefined ? { rejectUnauthorized: false } : {}) },
    )
    return new this.#ctor(this.#address, creds, {
      'grpc.ssl_target_name_override': this.#td.name,
      'grpc.default_authority': this.#td.name,
      'grpc.max_receive_message_length': 64 * 1024 * 1024,
      // HTTP/2 flow-control window of the connection and of each stream (default 64 KiB): a batch of 100 X.509-SVIDs
      // is ~100 KiB, which a 64 KiB window splits into round trips of WINDOW_UPDATE; measured on 2 cores, the
      // larger window cut the client's CPU per such call by a quarter.
      'grpc-node.flow_control_window': FLOW_CONTROL_WINDOW,
      'grpc.initial_reconnect_backoff_ms': 200,
      'grpc.max_reconnect_backoff_ms': 5000,
      // Keepalive pings notice a silent partition on the long-lived Sync stream.
      'grpc.keepalive_time_ms': 30_000,
      'grpc.keepalive_timeout_ms': 10_000,
      'grpc.keepalive_permit_without_calls': 1,
    })
  }

  attest(
    params: { attestor: string; payload: Uint8Array; csr: Uint8Array },
    answer: (challenge: Uint8Array) => Promise<Uint8Array>,
    opts: CallOpts = {},
  ): Promise<AttestOutcome> {
    return new Promise<AttestOutcome>((resolve, reject) => {
      const call = this.#client.Attest({ deadline: Date.now() + 120_000 })
      let settled = false
      const finish = (err: unknown, out?: AttestOutcome) => {
        if (settled) return
        settled = true
        opts.signal?.removeEventListener('abort', onAbort)
        if (err) {
          call.cancel()
          reject(fromGrpcError(err, 'attestation'))
        } else {
          call.end()
          resolve(out!)
        }
      }
      const onAbort = () => finish(new IdentityError('ERR_UNAVAILABLE', 'attestation aborted'))
      opts.signal?.addEventListener('abort', onAbort)
      call.on('data', (m: { challenge?: Buffer; result?: { agent_id: string; svid_chain: Buffer[]; bundle: Bundle__Output | null } }) => {
        if (m.result) {
          finish(undefined, {
            agentId: m.result.agent_id,
            svidChain: (m.result.svid_chain ?? []).map((d) => new Uint8Array(d)),
            bundle: bundleFromMsg(m.result.bundle),
          })
        } else if (m.challenge) {
          answer(new Uint8Array(m.challenge)).then(
            (resp) => {
              if (!settled) call.write({ challenge_response: Buffer.from(resp) })
            },
            (err: unknown) => finish(err),
          )
        }
      })
      call.on('error', (err) => finish(err))
      call.on('end', () => finish(new IdentityError('ERR_NODE_ATTESTATION_FAILED', 'attestation: server ended the stream without a result')))
      call.write({ params: { attestor: params.attestor, payload: Buffer.from(params.payload), csr: Buffer.from(params.csr) } })
    })
  }

  renewAgent(csr: Uint8Array, opts: CallOpts = {}): Promise<Uint8Array[]> {
    return this.#unary('RenewAgent', { csr: Buffer.from(csr) }, opts, (r: { svid_chain: Buffer[] }) => (r.svid_chain ?? []).map((d) => new Uint8Array(d)))
  }

  batchNewX509Svid(params: X509SvidParam[], opts: CallOpts = {}): Promise<X509SvidResultItem[]> {
    if (params.length > MAX_X509_BATCH) throw new RangeError(`at most ${MAX_X509_BATCH} CSRs per batch`)
    // Direct codec (see DIRECT_METHODS): the request is encoded as built here, the response is protobufjs' decoded message.
    // Each certificate is copied out of the response's buffer, so a cached SVID keeps only its own bytes.
    const req = { params: params.map((p) => ({ entry_id: p.entryId, csr: p.csr, instance_id: p.instanceId ?? '' })) }
    return this.#unary(
      'BatchNewX509SVID',
      req,
      opts,
      (r: {
        results: readonly {
          entry_id: string
          status: { code: number; error_code: string; message: string } | null
          svid_chain: readonly Uint8Array[]
          expires_at: unknown
        }[]
      }) =>
        r.results.map((x) => {
          const st = x.status
          let error: IdentityError | undefined
          if (st && st.code !== 0) {
            const code = Object.hasOwn(ERROR_CODES, st.error_code) ? (st.error_code as ErrorCode) : 'ERR_INTERNAL'
            error = new IdentityError(code, st.message || 'X509-SVID not signed', { details: { grpc_code: st.code } })
          }
          return { entryId: x.entry_id, error, svidChain: x.svid_chain.map((d) => new Uint8Array(d)), expiresAt: int64(x.expires_at) }
        }),
    )
  }

  newJwtSvid(entryId: string, audience: string[], opts: CallOpts & { instanceId?: string } = {}): Promise<JwtSvidMint> {
    return this.#unary(
      'NewJWTSVID',
      { entry_id: entryId, audience, instance_id: opts.instanceId ?? '' },
      opts,
      (r: { token: string; expires_at: string; issued_at: string }) => ({
        token: r.token,
        expiresAt: num(r.expires_at),
        issuedAt: num(r.issued_at),
      }),
    )
  }

  registerInstance(entryId: string, proc: { pid: number; startTime: string }, opts: CallOpts = {}): Promise<RegisteredInstance> {
    return this.#unary(
      'RegisterInstance',
      { entry_id: entryId, pid: proc.pid, start_time: proc.startTime },
      opts,
      (r: { instance_id: string; spiffe_id: string }) => {
        if (!r.instance_id || !r.spiffe_id) throw new IdentityError('ERR_INTERNAL', 'RegisterInstance: server returned no instance')
        return { instanceId: r.instance_id, spiffeId: r.spiffe_id }
      },
    )
  }

  endInstance(instanceId: string, opts: CallOpts = {}): Promise<void> {
    return this.#unary('EndInstance', { instance_id: instanceId }, opts, () => undefined)
  }

  endAllInstances(opts: CallOpts = {}): Promise<number> {
    return this.#unary('EndAllInstances', {}, opts, (r: { ended: number }) => r.ended ?? 0)
  }

  sync(onMessage: (m: SyncMessage) => void, opts: CallOpts = {}): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const call = this.#client.Sync({})
      let settled = false
      const finish = (err?: unknown) => {
        if (settled) return
        settled = true
        opts.signal?.removeEventListener('abort', onAbort)
        if (err) reject(fromGrpcError(err, 'sync'))
        else resolve()
      }
      const onAbort = () => {
        call.cancel()
        finish()
      }
      if (opts.signal?.aborted) return onAbort()
      opts.signal?.addEventListener('abort', onAbort)
      // Pages of one update (`more`) are applied together, once the last one has come.
      const pages = new SyncPages()
      call.on('data', (m: SyncResponse__Output) => {
        if (settled) return
        try {
          const whole = pages.accept(m)
          if (whole) onMessage(syncFromMsg(whole))
        } catch (err) {
          call.cancel()
          finish(err)
        }
      })
      call.on('error', (err) => finish(err))
      call.on('end', () => finish(new IdentityError('ERR_UNAVAILABLE', 'sync: server ended the stream')))
    })
  }

  #unary<Req, Raw, Out>(
    method: 'RenewAgent' | 'BatchNewX509SVID' | 'NewJWTSVID' | 'RegisterInstance' | 'EndInstance' | 'EndAllInstances',
    req: Req,
    opts: CallOpts,
    map: (r: Raw) => Out,
  ): Promise<Out> {
    return new Promise<Out>((resolve, reject) => {
      const fn = (this.#client as unknown as Record<string, (...a: unknown[]) => grpc.ClientUnaryCall>)[method]!
      const call = fn.call(this.#client, req, new grpc.Metadata(), { deadline: Date.now() + UNARY_DEADLINE_MS }, (err: grpc.ServiceError | null, res: Raw) => {
        opts.signal?.removeEventListener('abort', onAbort)
        if (err) reject(fromGrpcError(err, method))
        else {
          try {
            resolve(map(res))
          } catch (e) {
            reject(e)
          }
        }
      })
      const onAbort = () => call.cancel()
      opts.signal?.addEventListener('abort', onAbort)
    })
  }
}
