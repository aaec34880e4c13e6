import type { ServerDuplexStream, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js'
import { IdentityError } from '../../errors/identity-error.js'
import { protoTypes, withDirectCodecs } from '../../common/grpc/direct-codec.js'
import { OK_ITEM_STATUS, toItemStatus, type ItemStatus } from '../../common/grpc/errors.js'
import { bidi, serverStream, unary, type Observe } from '../../common/grpc/handlers.js'
import { loadProto } from '../../common/grpc/proto.js'
import { withRequestDecodeGuard } from '../../common/grpc/request-decoding.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import type { AttestRequest__Output } from '../../gen/warrant/agent/v1/AttestRequest.js'
import type { AttestResponse } from '../../gen/warrant/agent/v1/AttestResponse.js'
import type { NewJWTSVIDRequest__Output } from '../../gen/warrant/agent/v1/NewJWTSVIDRequest.js'
import type { NewJWTSVIDResponse } from '../../gen/warrant/agent/v1/NewJWTSVIDResponse.js'
import type { RenewAgentRequest__Output } from '../../gen/warrant/agent/v1/RenewAgentRequest.js'
import type { RenewAgentResponse } from '../../gen/warrant/agent/v1/RenewAgentResponse.js'
import type { SyncRequest__Output } from '../../gen/warrant/agent/v1/SyncRequest.js'
import type { SyncResponse } from '../../gen/warrant/agent/v1/SyncResponse.js'
import type { RegisterInstanceRequest__Output } from '../../gen/warrant/agent/v1/RegisterInstanceRequest.js'
import type { RegisterInstanceResponse } from '../../gen/warrant/agent/v1/RegisterInstanceResponse.js'
import type { EndInstanceRequest__Output } from '../../gen/warrant/agent/v1/EndInstanceRequest.js'
import type { EndInstanceResponse } from '../../gen/warrant/agent/v1/EndInstanceResponse.js'
import type { NodeAttestationService } from '../attestation/service.js'
import type { BoundsService } from '../bounds/bounds-service.js'
import type { CaManager } from '../ca/manager.js'
import type { InstanceService } from '../instances/instance-service.js'
import type { JwtIssuance } from '../issuance/jwt-issuance.js'
import type { X509Issuance } from '../issuance/x509-issuance.js'
import type { Metrics } from '../metrics.js'
import type { AuthorizedEntries } from '../registration/authorized-entries.js'
import { boundsSpiffeId, isTemplateId } from '../registration/validate.js'
import type { SyncStreams, SyncUpdate } from '../sync/sync-stream.js'
import { bundleToMsg, entryToMsg, revocationToMsg } from './convert.js'

/**
 * What the agent API calls: each RPC decodes its request, calls one of these
 * and encodes the answer (authentication by the caller's SVID included).
 */
export interface NodeServiceDeps {
  attestation: Pick<NodeAttestationService, 'attest' | 'authenticate' | 'renew'>
  x509: Pick<X509Issuance, 'issue'>
  jwt: Pick<JwtIssuance, 'issue'>
  sync: Pick<SyncStreams, 'serve'>
  /** The entries each agent may serve (RegisterInstance). */
  entries: Pick<AuthorizedEntries, 'entry'>
  instances: Pick<InstanceService, 'register' | 'end' | 'endAll'>
  bounds: Pick<BoundsService, 'allowsNode' | 'releaseInstance'>
  ca: Pick<CaManager, 'bundle'>
  log: Logger
  metrics: Pick<Metrics, 'requests' | 'signings'>
  /** How long an Attest call waits for its params and for each challenge answer (defaults 20 s and 60 s; tests shorten them). */
  attestTimeoutsMs?: { params?: number; challenge?: number }
}

const CHALLENGE_TIMEOUT_MS = 60_000
/** An Attest call holds one of the few attestation slots (api/call-limits.ts): its first message must come soon. */
const PARAMS_TIMEOUT_MS = 20_000
const EMPTY = new Uint8Array(0)
/** A request item's CSR (an unset bytes field decodes as an empty array). */
const csrOf = (p: { csr: Uint8Array | readonly never[] }): Uint8Array => (p.csr instanceof Uint8Array ? p.csr : EMPTY)

type AnyCall = ServerUnaryCall<unknown, unknown> | ServerWritableStream<unknown, unknown> | ServerDuplexStream<unknown, unknown>

function peerChain(call: AnyCall): Uint8Array[] | undefined {
  const cert = call.getAuthContext?.()?.sslPeerCertificate
  if (!cert?.raw) return undefined
  return [new Uint8Array(cert.raw)]
}

/**
 * BatchNewX509SVID as its direct codec (common/grpc/direct-codec.ts) carries
 * it: the request is protobufjs' decoded message (an unset CSR reads as an
 * empty array, not a Buffer); the response is encoded as built here (int64 as
 * a number).
 */
interface BatchNewX509SVIDRequestWire {
  params: readonly { entry_id: string; csr: Uint8Array | readonly never[]; instance_id: string }[]
}
interface X509SVIDResultWire {
  entry_id: string
  status: ItemStatus
  svid_chain: readonly Uint8Array[]
  /** Epoch ms. */
  expires_at: number
}
interface BatchNewX509SVIDResponseWire {
  results: X509SVIDResultWire[]
}
/** Methods whose requests and responses skip proto-loader's object conversion (the hot path of every agent). */
const DIRECT_METHODS = ['BatchNewX509SVID'] as const

/**
 * The `warrant.agent.v1.Node` service definition to serve `nodeService` with
 * (direct codecs on DIRECT_METHODS; a request that does not decode is
 * INVALID_ARGUMENT ERR_REQUEST_MALFORMED, not grpc-js' INTERNAL).
 */
export function nodeServiceDefinition(): ServiceDefinition {
  const pkg = loadProto('warrant/agent/v1/node.proto') as unknown as { warrant: { agent: { v1: { Node: { service: ServiceDefinition } } } } }
  return withRequestDecodeGuard(withDirectCodecs(pkg.warrant.agent.v1.Node.service, protoTypes('warrant/agent/v1/node.proto'), DIRECT_METHODS, 'server'))
}

/** A trust domain's SPIFFE bundle as a wire message. */
function spiffeBundleMsg(b: SpiffeBundle) {
  return { trust_domain: b.trustDomain.name, document: b.marshal(), sequence: String(b.sequenceNumber ?? 0) }
}

function syncMsg(u: SyncUpdate): SyncResponse {
  const msg: SyncResponse = { full: u.full }
  if (u.entries) msg.entries = u.entries.map(entryToMsg)
  if (u.deletedEntryIds) msg.deleted_entry_ids = u.deletedEntryIds
  if (u.bundle) msg.bundle = spiffeBundleMsg(u.bundle)
  if (u.federatedBundles) {
    msg.federated_bundles = u.federatedBundles.map(bundleToMsg)
    msg.federated_bundles_changed = true
  }
  if (u.revocations) {
    msg.revocations = u.revocations.map(revocationToMsg)
    msg.revocations_changed = true
  }
  if (u.more) msg.more = true
  return msg
}

/**
 * The agent-facing `warrant.agent.v1.Node` service (serve it with
 * `nodeServiceDefinition()`): decodes each request, authenticates the agent
 * by its SVID, calls the service that answers (attestation, issuance, Sync,
 * instances) and encodes the result. Errors, of whole calls and of batch
 * items, go through the one boundary (common/grpc/errors.ts).
 */
export function nodeService(d: NodeServiceDeps): UntypedServiceImplementation {
  const log = d.log.child({ [F.SUBSYSTEM]: 'node_api' })
  const observe: Observe = (method, code) => d.metrics.requests.inc({ method: `Node/${method}`, code: String(code) })
  const auth = (call: AnyCall) => d.attestation.authenticate(peerChain(call))
  const localBundleMsg = () => spiffeBundleMsg(d.ca.bundle())

  return {
    Attest: bidi<AttestRequest__Output, AttestResponse>(
      log,
      'Attest',
      async (source, sink, ctx) => {
        /** The next message, or ERR_NODE_ATTESTATION_FAILED after `ms`. */
        const nextWithin = async (ms: number, what: string): Promise<AttestRequest__Output> => {
          let timer: NodeJS.Timeout | undefined
          const timeout = new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new IdentityError('ERR_NODE_ATTESTATION_FAILED', `${what} timed out`)), ms)
          })
          try {
            return await Promise.race([source.next(), timeout])
          } finally {
            clearTimeout(timer)
          }
        }
        const first = await nextWithin(d.attestTimeoutsMs?.params ?? PARAMS_TIMEOUT_MS, 'attestation params')
        if (first.step !== 'params' || !first.params) throw new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', 'first message must carry attestation params')
        const p = first.params
        const challenge = async (c: Uint8Array): Promise<Uint8Array> => {
          sink.send({ challenge: Buffer.from(c) })
          const m = await nextWithin(d.attestTimeoutsMs?.challenge ?? CHALLENGE_TIMEOUT_MS, 'challenge response')
          if (m.step !== 'challenge_response' || !m.challenge_response) {
            throw new IdentityError('ERR_ATTESTATION_PAYLOAD_INVALID', 'expected a challenge response')
          }
          return new Uint8Array(m.challenge_response)
        }
        const out = await d.attestation.attest(
          { attestor: p.attestor ?? '', payload: new Uint8Array(p.payload ?? []), csr: new Uint8Array(p.csr ?? []) },
          challenge,
          { signal: ctx.signal },
        )
        d.metrics.signings.inc({ kind: 'agent' })
        sink.send({
          result: {
            agent_id: out.node.agentId,
            svid_chain: out.chain.map((c) => Buffer.from(c)),
            bundle: localBundleMsg(),
          },
        })
      },
      observe,
      // A well-behaved agent sends its params, then one answer per challenge, each once asked: one unread message at most.
      { maxQueued: 2 },
    ),

    RenewAgent: unary<RenewAgentRequest__Output, RenewAgentResponse>(
      log,
      'RenewAgent',
      async (req, ctx) => {
        const node = await auth(ctx.call)
        const chain = await d.attestation.renew(node, new Uint8Array(req.csr ?? []))
        d.metrics.signings.inc({ kind: 'agent' })
        return { svid_chain: chain.map((c) => Buffer.from(c)) }
      },
      observe,
    ),

    Sync: serverStream<SyncRequest__Output, SyncResponse>(
      log,
      'Sync',
      async (_req, sink, ctx) => {
        const node = await auth(ctx.call)
        const notAfter = Date.parse(ctx.call.getAuthContext?.()?.sslPeerCertificate?.valid_to ?? '')
        await d.sync.serve(node, {
          send: (u) => sink.send(syncMsg(u)),
          reauthenticate: () => auth(ctx.call),
          ...(Number.isFinite(notAfter) ? { credentialExpiresAt: notAfter } : {}),
          signal: sink.signal,
        })
      },
      observe,
    ),

    BatchNewX509SVID: unary<BatchNewX509SVIDRequestWire, BatchNewX509SVIDResponseWire>(
      log,
      'BatchNewX509SVID',
      async (req, ctx) => {
        const node = await auth(ctx.call)
        const params = req.params ?? []
        const outcomes = await d.x509.issue(
          node,
          params.map((p) => ({ entryId: p.entry_id, csr: csrOf(p), instanceId: p.instance_id })),
        )
        const results = new Array<X509SVIDResultWire>(outcomes.length)
        for (let i = 0; i < outcomes.length; i++) {
          const o = outcomes[i]!
          const entryId = params[i]!.entry_id
          results[i] = o.ok
            ? { entry_id: entryId, status: OK_ITEM_STATUS, svid_chain: o.chain, expires_at: o.notAfter }
            : {
                entry_id: entryId,
                status: toItemStatus(o.error, ctx.log, { [F.AGENT_ID]: node.agentId, [F.ENTRY_ID]: entryId.slice(0, 64) }, 'X509-SVID not signed'),
                svid_chain: [],
                expires_at: 0,
              }
        }
        return { results }
      },
      observe,
    ),

    NewJWTSVID: unary<NewJWTSVIDRequest__Output, NewJWTSVIDResponse>(
      log,
      'NewJWTSVID',
      async (req, ctx) => {
        const node = await auth(ctx.call)
        const r = await d.jwt.issue(node, { entryId: req.entry_id ?? '', audience: req.audience ?? [], instanceId: req.instance_id ?? '' })
        return { token: r.token, expires_at: String(r.expiresAt), issued_at: String(r.issuedAt) }
      },
      observe,
    ),

    RegisterInstance: unary<RegisterInstanceRequest__Output, RegisterInstanceResponse>(
      log,
      'RegisterInstance',
      async (req, ctx) => {
        const node = await auth(ctx.call)
        const entry = await d.entries.entry(node, req.entry_id ?? '')
        if (!isTemplateId(entry.spiffeId)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'entry is not a per-instance template')
        if (!d.bounds.allowsNode(boundsSpiffeId(entry.spiffeId), node.selectors))
          throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `node does not meet the bounds of ${entry.spiffeId}`)
        const r = await d.instances.register(node.agentId, entry, { pid: req.pid ?? 0, startTime: req.start_time ?? '' })
        return { instance_id: r.instanceId, spiffe_id: r.spiffeId }
      },
      observe,
    ),

    EndInstance: unary<EndInstanceRequest__Output, EndInstanceResponse>(
      log,
      'EndInstance',
      async (req, ctx) => {
        const node = await auth(ctx.call)
        await d.instances.end(node.agentId, req.instance_id ?? '')
        d.bounds.releaseInstance(`${node.agentId}|${req.instance_id ?? ''}`)
        return { ended: 1 }
      },
      observe,
    ),

    EndAllInstances: unary<unknown, EndInstanceResponse>(
      log,
      'EndAllInstances',
      async (_req, ctx) => {
        const node = await auth(ctx.call)
        const ended = await d.instances.endAll(node.agentId)
        for (const r of ended) d.bounds.releaseInstance(`${node.agentId}|${r.instanceId}`)
        return { ended: ended.length }
      },
      observe,
    ),
  }
}
