/**
 * The SPIFFE Workload API (`/SpiffeWorkloadAPI/<Method>`), following the
 * SPIFFE Workload API spec and SPIRE's agent handler:
 *  - every call needs the metadata `workload.spiffe.io: true` (exactly one
 *    value) or gets InvalidArgument "security header missing from request";
 *  - the caller is attested from the peer credentials of its connection;
 *    failure (or PID reuse detected afterwards) → Unavailable "workload attestation failed";
 *  - no entitled identity → PermissionDenied "no identity issued";
 *  - streams send the full state at once and on every change, and unsubscribe
 *    when the client cancels;
 *  - the WIT RPCs answer Unimplemented.
 */
import {
  status as Status,
  type handleServerStreamingCall,
  type Metadata,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js'
import { GrpcStatusError, toGrpcError } from '../../common/grpc/errors.js'
import { CALL_CANCELLED, serverStream, unary, type CallContext } from '../../common/grpc/handlers.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { CallOpts } from '../../plugin/contracts.js'
import type { PeerInfo } from '../workload/peer.js'
import type { WorkloadIdentity, WorkloadManager, WorkloadPeer, WorkloadUpdate } from './manager.js'
import { toStruct } from './struct.js'

export const SECURITY_HEADER = 'workload.spiffe.io'

/** Wire shapes (proto-loader objects, keepCase). */
export interface X509SVIDMessage {
  spiffe_id: string
  x509_svid: Buffer
  x509_svid_key: Buffer
  bundle: Buffer
  hint: string
}
export interface X509SVIDResponseMessage {
  svids: X509SVIDMessage[]
  crl: Buffer[]
  federated_bundles: Record<string, Buffer>
}
export interface X509BundlesResponseMessage {
  crl: Buffer[]
  bundles: Record<string, Buffer>
}
export interface JWTBundlesResponseMessage {
  bundles: Record<string, Buffer>
}
interface JWTSVIDRequestMessage {
  audience?: string[]
  spiffe_id?: string
}
interface ValidateJWTSVIDRequestMessage {
  audience?: string
  svid?: string
}

/** How handlers reach the peer tracker (implemented by PeerTrackingServer). */
export interface PeerResolver {
  peerOf(call: { getPeer(): string }): PeerInfo
  assertPeerAlive(peer: PeerInfo): void
  /** Watches a call for client resets (see PeerTrackingServer.watchResets). */
  watchResets?(call: { getPeer(): string }): void
}

export interface WorkloadApiHandlerOptions {
  manager: WorkloadManager
  peers: PeerResolver
  log: Logger
  /** SPIRE's `allow_unauthenticated_verifiers`: bundle RPCs and ValidateJWTSVID work without an identity. Default false. */
  allowUnauthenticatedVerifiers?: boolean
  /**
   * Milliseconds a connection's attestation result is reused for its later
   * calls (the least `selectorsStableForMs` of the workload attestors; 0: attest
   * every call). The caller's credentials, executable and liveness are
   * re-checked on every call either way.
   */
  attestationReuseMs?: number
  /** Monotonic milliseconds (tests). Default performance.now. */
  now?: () => number
}

function checkSecurityHeader(metadata: Metadata): void {
  const values = metadata.get(SECURITY_HEADER)
  if (values.length !== 1 || String(values[0]) !== 'true') {
    throw new IdentityError('ERR_SECURITY_HEADER_MISSING', 'security header missing from request')
  }
}

function concat(parts: readonly Uint8Array[]): Buffer {
  return Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)))
}

function buf(u: Uint8Array): Buffer {
  return Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

function noIdentity(): IdentityError {
  return new IdentityError('ERR_NO_IDENTITY_ISSUED', 'no identity issued')
}

/**
 * Keeps the first item of each non-empty hint: the spec requires hints to be
 * unique within a response, and clients keep the first anyway.
 */
export function uniqueHints<T extends { hint: string }>(items: readonly T[]): T[] {
  const seen = new Set<string>()
  return items.filter((i) => {
    if (i.hint === '') return true
    if (seen.has(i.hint)) return false
    seen.add(i.hint)
    return true
  })
}

export function x509SvidResponse(u: WorkloadUpdate): X509SVIDResponseMessage {
  const bundle = buf(u.bundle.x509)
  const federated: Record<string, Buffer> = {}
  for (const [td, b] of u.federatedBundles) federated[td] = buf(b.x509)
  return {
    svids: uniqueHints(u.identities).map((id) => ({
      spiffe_id: id.spiffeId,
      x509_svid: concat(id.x509Svid),
      x509_svid_key: buf(id.x509SvidKey),
      bundle,
      hint: id.hint,
    })),
    crl: [],
    federated_bundles: federated,
  }
}

/**
 * Messages {@link X509ResponseCache} built (frozen, never changed), whose
 * serialized bytes the serializer of {@link workloadApiService} keeps.
 */
const reusable = new WeakSet<object>()
const serialized = new WeakMap<object, Buffer>()

/**
 * X509SVIDResponses already built, kept by the first identity of the update
 * they were built from. The manager hands out the same identity, chain, key
 * and bundle objects until one of them changes (rotation, entry or bundle
 * change), so an update whose sources are all the same objects (and the same
 * SPIFFE IDs and hints) as last time gets the same message again, and with
 * {@link workloadApiService} the same serialized bytes. Anything different
 * builds a new message. Entries go away with their identity object.
 */
export class X509ResponseCache {
  readonly #entries = new WeakMap<WorkloadIdentity, { sources: unknown[]; msg: X509SVIDResponseMessage }>()

  get(u: WorkloadUpdate): X509SVIDResponseMessage {
    const first = u.identities[0]
    if (first === undefined) return x509SvidResponse(u)
    const e = this.#entries.get(first)
    if (e !== undefined && sameSources(e.sources, u)) return e.msg
    const msg = freezeX509Response(x509SvidResponse(u))
    reusable.add(msg)
    this.#entries.set(first, { sources: x509Sources(u), msg })
    return msg
  }
}

/** Everything an X509SVIDResponse is built from, flattened: compared element by element with `===`. */
function x509Sources(u: WorkloadUpdate): unknown[] {
  const out: unknown[] = [u.bundle.x509, u.identities.length]
  for (const id of u.identities) {
    out.push(id.spiffeId, id.hint, id.x509SvidKey, id.x509Svid.length)
    for (const c of id.x509Svid) out.push(c)
  }
  out.push(u.federatedBundles.size)
  for (const [td, b] of u.federatedBundles) out.push(td, b.x509)
  return out
}

function sameSources(s: readonly unknown[], u: WorkloadUpdate): boolean {
  if (s[0] !== u.bundle.x509 || s[1] !== u.identities.length) return false
  let i = 2
  for (const id of u.identities) {
    if (s[i] !== id.spiffeId || s[i + 1] !== id.hint || s[i + 2] !== id.x509SvidKey || s[i + 3] !== id.x509Svid.length) return false
    i += 4
    for (const c of id.x509Svid) if (s[i++] !== c) return false
  }
  if (s[i++] !== u.federatedBundles.size) return false
  for (const [td, b] of u.federatedBundles) {
    if (s[i] !== td || s[i + 1] !== b.x509) return false
    i += 2
  }
  return i === s.length
}

function freezeX509Response(m: X509SVIDResponseMessage): X509SVIDResponseMessage {
  for (const s of m.svids) Object.freeze(s)
  Object.freeze(m.svids)
  Object.freeze(m.crl)
  Object.freeze(m.federated_bundles)
  return Object.freeze(m)
}

/**
 * The SpiffeWorkloadAPI service definition to register the handlers with:
 * FetchX509SVID's serializer encodes a message from {@link X509ResponseCache}
 * once and then hands grpc-js the same bytes (grpc-js copies them into each
 * frame). Every other message is serialized as before, so the wire bytes are
 * the same either way.
 */
export function workloadApiService(def: ServiceDefinition): ServiceDefinition {
  const m = def.FetchX509SVID
  if (m === undefined) return def
  const serialize = m.responseSerialize
  const responseSerialize = (msg: unknown): Buffer => {
    if (typeof msg !== 'object' || msg === null || !reusable.has(msg)) return serialize(msg)
    let bytes = serialized.get(msg)
    if (bytes === undefined) {
      bytes = serialize(msg)
      serialized.set(msg, bytes)
    }
    return bytes
  }
  return { ...def, FetchX509SVID: { ...m, responseSerialize } }
}

export function x509BundlesResponse(u: WorkloadUpdate): X509BundlesResponseMessage {
  const bundles: Record<string, Buffer> = { [u.trustDomainId]: buf(u.bundle.x509) }
  for (const [td, b] of u.federatedBundles) if (td !== u.trustDomainId) bundles[td] = buf(b.x509)
  return { crl: [], bundles }
}

export function jwtBundlesResponse(u: WorkloadUpdate): JWTBundlesResponseMessage {
  const bundles: Record<string, Buffer> = { [u.trustDomainId]: Buffer.from(u.bundle.jwks, 'utf8') }
  for (const [td, b] of u.federatedBundles) if (td !== u.trustDomainId) bundles[td] = Buffer.from(b.jwks, 'utf8')
  return { bundles }
}

interface WatchDeps<Res> {
  attest(call: ServerWritableStream<unknown, Res>, opts: CallOpts, log: Logger): Promise<{ selectors: string[]; peer: WorkloadPeer }>
  manager: WorkloadManager
  render: (u: WorkloadUpdate) => Res | IdentityError
  log: Logger
}

/**
 * One Workload API stream: attests the caller, then sends `render(update)` for
 * every update until the client cancels; ends the stream with the error
 * `render` returns instead of a message. The first message is written
 * synchronously from the manager's first delivery. Cancellation aborts the
 * attestation if it is still running, and unsubscribes. (A class rather than
 * closures: a call allocates one object and two small callbacks.)
 */
class WatchCall<Res> {
  readonly #call: ServerWritableStream<unknown, Res>
  readonly #deps: WatchDeps<Res>
  #done = false
  #attesting: AbortController | undefined
  #unsubscribe: (() => void) | undefined

  constructor(call: ServerWritableStream<unknown, Res>, deps: WatchDeps<Res>) {
    this.#call = call
    this.#deps = deps
    call.on('cancelled', () => this.#cancel())
  }

  /** Never rejects: every failure ends the stream with a status. */
  async run(): Promise<void> {
    const ac = new AbortController()
    this.#attesting = ac
    let caller: { selectors: string[]; peer: WorkloadPeer }
    try {
      caller = await this.#deps.attest(this.#call, { signal: ac.signal }, this.#deps.log)
    } catch (err) {
      this.#attesting = undefined
      this.#fail(err)
      return
    }
    this.#attesting = undefined
    if (this.#done) return
    let u: () => void
    try {
      u = this.#deps.manager.subscribe(caller.selectors, (update) => this.#update(update), { peer: caller.peer })
    } catch (err) {
      this.#fail(new IdentityError('ERR_INTERNAL', 'cannot subscribe to workload updates', { cause: err }))
      return
    }
    if (this.#done) u()
    else this.#unsubscribe = u
  }

  #update(update: WorkloadUpdate): void {
    if (this.#done) return
    let msg: Res | IdentityError
    try {
      msg = this.#deps.render(update)
    } catch (err) {
      this.#fail(err instanceof IdentityError ? err : new IdentityError('ERR_INTERNAL', 'cannot encode update', { cause: err }))
      return
    }
    if (msg instanceof IdentityError) this.#fail(msg)
    else if (!this.#call.writableEnded) this.#call.write(msg)
  }

  #cancel(): void {
    if (this.#done) return
    this.#done = true
    this.#attesting?.abort(CALL_CANCELLED)
    this.#unsubscribeNow()
  }

  #fail(err: unknown): void {
    if (this.#done) return
    this.#done = true
    this.#unsubscribeNow()
    this.#call.emit('error', toGrpcError(err, this.#deps.log))
  }

  #unsubscribeNow(): void {
    const u = this.#unsubscribe
    this.#unsubscribe = undefined
    u?.()
  }
}

/** The SpiffeWorkloadAPI service implementation for `grpc.Server.addService`. */
export function workloadApiHandlers(opts: WorkloadApiHandlerOptions): UntypedServiceImplementation {
  const { manager, peers } = opts
  const log = opts.log.child({ [F.SUBSYSTEM]: 'workload_api' })
  const allowUnauthenticated = opts.allowUnauthenticatedVerifiers ?? false
  const reuseMs = opts.attestationReuseMs ?? 0
  const now = opts.now ?? (() => performance.now())
  /** Per connection: the last attestation's selectors and until when they may be reused. */
  const attested = new WeakMap<PeerInfo, { selectors: string[]; until: number }>()
  const x509Responses = new X509ResponseCache()

  /** Header check, then attestation of the caller and the PID-reuse re-check. */
  async function attestCaller(call: CallContext<unknown>['call'], opts: CallOpts, mlog: Logger): Promise<{ selectors: string[]; peer: WorkloadPeer }> {
    checkSecurityHeader(call.metadata)
    const peer = peers.peerOf(call)
    peers.watchResets?.(call)
    let selectors: string[]
    const memo = reuseMs > 0 ? attested.get(peer) : undefined
    if (memo !== undefined && now() < memo.until) {
      selectors = memo.selectors
    } else {
      const started = now()
      try {
        // The kernel's record of the caller, not the connection's internals.
        selectors = await manager.attest({ pid: peer.pid, uid: peer.uid, gid: peer.gid, groups: peer.groups }, opts)
      } catch (cause) {
        throw new IdentityError('ERR_WORKLOAD_ATTESTATION_FAILED', `workload attestation failed for pid ${peer.pid}`, {
          cause,
          details: { pid: peer.pid },
        })
      }
      // Stored before the re-check: a refused re-check refuses every later call on this connection too.
      if (reuseMs > 0) attested.set(peer, { selectors, until: started + reuseMs })
    }
    // Always, reused selectors or not: ids, groups and executable unchanged since connect, process alive.
    peers.assertPeerAlive(peer)
    mlog.debug({ [F.PID]: peer.pid, [F.UID]: peer.uid, [F.SELECTORS]: selectors }, 'Workload attested')
    return { selectors, peer: { pid: peer.pid, uid: peer.uid, gid: peer.gid, groups: peer.groups, startTime: peer.startTime } }
  }

  /** A Workload API stream handler sending `render(update)` (see {@link WatchCall}). */
  function watch<Res>(method: string, render: (u: WorkloadUpdate) => Res | IdentityError): handleServerStreamingCall<unknown, Res> {
    const deps: WatchDeps<Res> = { attest: attestCaller, manager, render, log: log.child({ [F.METHOD]: method }) }
    return (call: ServerWritableStream<unknown, Res>) => {
      void new WatchCall(call, deps).run()
    }
  }

  return {
    FetchX509SVID: watch('FetchX509SVID', (u) => (u.identities.length === 0 ? noIdentity() : x509Responses.get(u))),

    FetchX509Bundles: watch('FetchX509Bundles', (u) => (u.identities.length === 0 && !allowUnauthenticated ? noIdentity() : x509BundlesResponse(u))),

    FetchJWTBundles: watch('FetchJWTBundles', (u) => (u.identities.length === 0 && !allowUnauthenticated ? noIdentity() : jwtBundlesResponse(u))),

    FetchJWTSVID: unary(log, 'FetchJWTSVID', async (req: JWTSVIDRequestMessage, ctx) => {
      checkSecurityHeader(ctx.call.metadata)
      const audience = (req.audience ?? []).filter((a) => a !== '')
      if (audience.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
      const spiffeId = req.spiffe_id ?? ''
      if (spiffeId !== '') SpiffeId.fromString(spiffeId) // ERR_SPIFFE_ID_INVALID → InvalidArgument
      const { selectors, peer } = await attestCaller(ctx.call, ctx, ctx.log)
      const svids = await manager.fetchJwtSvids(selectors, spiffeId === '' ? { audience } : { audience, spiffeId }, {
        get signal() {
          return ctx.signal
        },
        peer,
      })
      if (svids.length === 0) throw noIdentity()
      return { svids: uniqueHints(svids).map((s) => ({ spiffe_id: s.spiffeId, svid: s.token, hint: s.hint })) }
    }),

    ValidateJWTSVID: unary(log, 'ValidateJWTSVID', async (req: ValidateJWTSVIDRequestMessage, ctx) => {
      checkSecurityHeader(ctx.call.metadata)
      const audience = req.audience ?? ''
      const token = req.svid ?? ''
      if (audience === '') throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
      if (token === '') throw new IdentityError('ERR_INVALID_ARGUMENT', 'svid must be specified')
      const { selectors, peer } = await attestCaller(ctx.call, ctx, ctx.log)
      if (!allowUnauthenticated) await requireIdentity(selectors, peer)
      let result
      try {
        result = await manager.validateJwtSvid(selectors, { token, audience }, { signal: ctx.signal })
      } catch (err) {
        // SPIRE answers every validation failure with InvalidArgument.
        const message = err instanceof IdentityError ? err.message : 'JWT-SVID validation failed'
        throw new IdentityError('ERR_JWT_SVID_INVALID', message, { cause: err })
      }
      const claims: Record<string, unknown> = { ...result.claims }
      if (claims.aud !== undefined && !Array.isArray(claims.aud)) claims.aud = [claims.aud]
      return { spiffe_id: result.spiffeId, claims: toStruct(claims) }
    }),

    FetchWITSVID: serverStream(log, 'FetchWITSVID', async () => {
      throw new GrpcStatusError(Status.UNIMPLEMENTED, 'WIT-SVIDs are not supported')
    }),

    FetchWITBundles: serverStream(log, 'FetchWITBundles', async () => {
      throw new GrpcStatusError(Status.UNIMPLEMENTED, 'WIT bundles are not supported')
    }),
  }

  /** PermissionDenied "no identity issued" unless the selectors map to at least one identity. */
  function requireIdentity(selectors: string[], peer: WorkloadPeer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false
      let unsubscribe: (() => void) | undefined
      const u = manager.subscribe(
        selectors,
        (update) => {
          if (settled) return
          settled = true
          unsubscribe?.()
          if (update.identities.length === 0) reject(noIdentity())
          else resolve()
        },
        { peer },
      )
      if (settled) u()
      else unsubscribe = u
    })
  }
}
