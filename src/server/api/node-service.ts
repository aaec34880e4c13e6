import type { ServerDuplexStream, ServerUnaryCall, ServerWritableStream, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js'
import { IdentityError } from '../../errors/identity-error.js'
import type { Clock } from '../../common/clock.js'
import { protoTypes, withDirectCodecs } from '../../common/grpc/direct-codec.js'
import { bidi, serverStream, unary, type Observe } from '../../common/grpc/handlers.js'
import { loadProto } from '../../common/grpc/proto.js'
import { withRequestDecodeGuard } from '../../common/grpc/request-decoding.js'
import { F, type Logger } from '../../common/log/logger.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { AttestRequest__Output } from '../../gen/warrant/agent/v1/AttestRequest.js'
import type { AttestResponse } from '../../gen/warrant/agent/v1/AttestResponse.js'
import type { NewJWTSVIDRequest__Output } from '../../gen/warrant/agent/v1/NewJWTSVIDRequest.js'
import type { NewJWTSVIDResponse } from '../../gen/warrant/agent/v1/NewJWTSVIDResponse.js'
import type { RenewAgentRequest__Output } from '../../gen/warrant/agent/v1/RenewAgentRequest.js'
import type { RenewAgentResponse } from '../../gen/warrant/agent/v1/RenewAgentResponse.js'
import type { SyncRequest__Output } from '../../gen/warrant/agent/v1/SyncRequest.js'
import type { SyncResponse } from '../../gen/warrant/agent/v1/SyncResponse.js'
import type { Status } from '../../gen/warrant/types/v1/Status.js'
import type { NodeAttestationService } from '../attestation/service.js'
import type { BoundsService } from '../bounds/bounds-service.js'
import type { InstanceService } from '../instances/instance-service.js'
import { INSTANCE_SAMPLE, instanceSpiffeId, isTemplateId } from '../registration/validate.js'
import type { RegisterInstanceRequest__Output } from '../../gen/warrant/agent/v1/RegisterInstanceRequest.js'
import type { RegisterInstanceResponse } from '../../gen/warrant/agent/v1/RegisterInstanceResponse.js'
import type { EndInstanceRequest__Output } from '../../gen/warrant/agent/v1/EndInstanceRequest.js'
import type { EndInstanceResponse } from '../../gen/warrant/agent/v1/EndInstanceResponse.js'
import type { FederatedBundles } from '../bundle/federated.js'
import { inlineCsrVerifier, type CsrVerifier, type SignItem } from '../ca/csr-verifier.js'
import type { CaManager } from '../ca/manager.js'
import type { AttestedNode, RegistrationEntry } from '../datastore/types.js'
import type { Metrics } from '../metrics.js'
import { asIdentityError, type RegistrationService } from '../registration/service.js'
import { bundleToMsg, entryToMsg, errorStatus, OK_STATUS } from './convert.js'

export interface NodeServiceDeps {
  attestation: NodeAttestationService
  registration: RegistrationService
  ca: CaManager
  federated: FederatedBundles
  clock: Clock
  log: Logger
  metrics: Metrics
  defaultX509TtlMs: number
  defaultJwtTtlMs: number
  bounds: BoundsService
  instances: InstanceService
  /** Checks CSRs of BatchNewX509SVID (default: on the main thread; the server passes a worker pool). */
  csrVerifier?: CsrVerifier
  /** How long an Attest call waits for its params and for each challenge answer (defaults 20 s and 60 s; tests shorten them). */
  attestTimeoutsMs?: { params?: number; challenge?: number }
}

/** The ID bounds are evaluated for: a template's bounds are those of any instance it can produce. */
const boundsId = (spiffeId: string) => (isTemplateId(spiffeId) ? instanceSpiffeId(spiffeId, INSTANCE_SAMPLE) : spiffeId)

const CHALLENGE_TIMEOUT_MS = 60_000
/** An Attest call holds one of the few attestation slots (api/call-limits.ts): its first message must come soon. */
const PARAMS_TIMEOUT_MS = 20_000
const MAX_BATCH = 500
const RECHECK_MS = 30_000
const EMPTY = new Uint8Array(0)
/** The SPIFFE ID to sign for an item, and the key its live instance is counted under. */
type Subject = { spiffeId: string; instanceKey: string }
/** A request item's CSR (an unset bytes field decodes as an empty array). */
const csrOf = (p: { csr: Uint8Array | readonly never[] }): Uint8Array => (p.csr instanceof Uint8Array ? p.csr : EMPTY)
const AUTHZ_CACHE_MS = 30_000
const ID_CACHE_MAX = 10_000
const AUTHZ_CACHE_MAX = 10_000

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
  status: Status
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

/** The agent-facing `warrant.agent.v1.Node` service (serve it with `nodeServiceDefinition()`). */
export function nodeService(d: NodeServiceDeps): UntypedServiceImplementation {
  const log = d.log.child({ [F.SUBSYSTEM]: 'node_api' })
  const observe: Observe = (method, code) => d.metrics.requests.inc({ method: `Node/${method}`, code: String(code) })
  const auth = (call: AnyCall) => d.attestation.authenticate(peerChain(call))
  const csrVerifier = d.csrVerifier ?? inlineCsrVerifier
  const ttlOf = (entry: RegistrationEntry): number => (entry.x509SvidTtl > 0 ? entry.x509SvidTtl * 1000 : d.defaultX509TtlMs)
  const x509Latency = d.metrics.signLatency.labels({ kind: 'x509' })
  const x509Signed = d.metrics.signings.labels({ kind: 'x509' })

  /** SPIFFE IDs of entries and instances, parsed once (they were validated when written). */
  const idCache = new Map<string, SpiffeId>()
  const parsedId = (id: string): SpiffeId => {
    let sid = idCache.get(id)
    if (sid === undefined) {
      sid = SpiffeId.fromString(id)
      if (idCache.size >= ID_CACHE_MAX) idCache.clear()
      idCache.set(id, sid)
    }
    return sid
  }

  /**
   * The entries an agent may sign for, as BatchNewX509SVID needs them. Looking
   * them up costs a query per entry in the agent's subtree, so the answer is
   * kept per agent and selector set until any entry changes (every write goes
   * through the registration service, which announces it), until the first of
   * the entries, or of the node aliases that led to them, expires, and for
   * AUTHZ_CACHE_MS at most (a backstop: nothing else changes the answer).
   */
  const authzCache = new Map<string, { entries: Map<string, RegistrationEntry>; until: number }>()
  let authzGeneration = 0
  d.registration.onChange(() => {
    authzGeneration++
    authzCache.clear()
  })
  const authorizedFor = async (node: AttestedNode): Promise<Map<string, RegistrationEntry>> => {
    const key = `${node.agentId}\n${JSON.stringify(node.selectors)}`
    const now = d.clock.now()
    const hit = authzCache.get(key)
    if (hit && now < hit.until) return hit.entries
    const generation = authzGeneration
    const { entries: list, validUntil } = await d.registration.authorizedSet(node)
    const entries = new Map(list.map((e) => [e.id, e]))
    const until = validUntil === null ? now + AUTHZ_CACHE_MS : Math.min(validUntil, now + AUTHZ_CACHE_MS)
    if (generation === authzGeneration) {
      if (authzCache.size >= AUTHZ_CACHE_MAX) authzCache.clear()
      authzCache.set(key, { entries, until })
    }
    return entries
  }

  /**
   * The SPIFFE ID to sign for an entry: the entry's own, or for a per-instance
   * template the recorded, live instance's (ERR_ID_NOT_AUTHORIZED otherwise).
   * Synchronous for plain entries (no promise per item of a batch).
   */
  const subjectFor = (entry: RegistrationEntry, agentId: string, instanceId: string): Subject | Promise<Subject> => {
    if (!isTemplateId(entry.spiffeId)) {
      if (instanceId) throw new IdentityError('ERR_INVALID_ARGUMENT', 'instance_id is only for per-instance template entries')
      return { spiffeId: entry.spiffeId, instanceKey: `${agentId}|${entry.id}` }
    }
    if (!instanceId) throw new IdentityError('ERR_INVALID_ARGUMENT', 'instance_id is required for a per-instance template entry')
    return d.instances.authorize(agentId, entry.id, instanceId).then((inst) => ({ spiffeId: inst.spiffeId, instanceKey: `${agentId}|${inst.instanceId}` }))
  }

  /** The local trust domain's current bundle as a wire message. */
  const localBundleMsg = () => {
    const b = d.ca.bundle()
    return { trust_domain: b.trustDomain.name, document: b.marshal(), sequence: String(b.sequenceNumber ?? 0) }
  }

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
        let node = await auth(ctx.call)
        const slog = log.child({ [F.AGENT_ID]: node.agentId })
        let sent = new Map<string, number>() // entry id → revision
        let first = true
        let pending: Promise<void> = Promise.resolve()
        let dirtyEntries = true
        let dirtyBundle = true
        let dirtyFederated = true
        // Trust domains whose bundles this agent gets: those its entries federate with, within the current bounds.
        let federatesWith = new Set<string>()

        const push = async () => {
          const msg: SyncResponse = { full: first }
          if (dirtyEntries) {
            dirtyEntries = false
            // Entries whose namespace bounds the node does not meet are not served to it.
            const entries = (await d.registration.authorizedEntries(node)).filter((e) => d.bounds.allowsNode(boundsId(e.spiffeId), node.selectors))
            const next = new Map(entries.map((e) => [e.id, e.revision]))
            const changed: RegistrationEntry[] = first ? entries : entries.filter((e) => sent.get(e.id) !== e.revision)
            const deleted = first ? [] : [...sent.keys()].filter((id) => !next.has(id))
            sent = next
            msg.entries = changed.map(entryToMsg)
            msg.deleted_entry_ids = deleted
            const tds = d.bounds.federationFor(entries, boundsId)
            if (tds.size !== federatesWith.size || [...tds].some((t) => !federatesWith.has(t))) dirtyFederated = true
            federatesWith = tds
          }
          if (dirtyBundle) {
            dirtyBundle = false
            msg.bundle = localBundleMsg()
          }
          if (dirtyFederated) {
            dirtyFederated = false
            msg.federated_bundles = (await d.federated.listFor(federatesWith)).map(bundleToMsg)
            msg.federated_bundles_changed = true
          }
          const empty = !first && !msg.bundle && !msg.federated_bundles_changed && (msg.entries?.length ?? 0) === 0 && (msg.deleted_entry_ids?.length ?? 0) === 0
          first = false
          if (!empty) sink.send(msg)
        }
        await new Promise<void>((resolve, reject) => {
          const unsubs: (() => void)[] = []
          let finished = false
          const done = (err?: unknown) => {
            if (finished) return
            finished = true
            for (const u of unsubs) u()
            clearInterval(timer)
            if (err) reject(err)
            else resolve()
          }
          // Pushes are serialised; a failing push ends the stream with its error.
          const schedule = () => {
            pending = pending.then(() => (finished ? undefined : push())).catch((err: unknown) => done(err))
          }
          unsubs.push(d.registration.onChange(() => {
            dirtyEntries = true
            schedule()
          }))
          unsubs.push(d.ca.onBundleChange(() => {
            dirtyBundle = true
            schedule()
          }))
          unsubs.push(d.federated.onChange(() => {
            dirtyFederated = true
            schedule()
          }))
          // Changed bounds can withdraw entries and federated bundles (or give them back).
          unsubs.push(d.bounds.onChange(() => {
            dirtyEntries = true
            schedule()
          }))
          // An evicted or banned agent loses its stream; node selectors may also change on re-attestation.
          const timer = setInterval(() => {
            d.attestation
              .authenticate(peerChain(ctx.call))
              .then((n) => {
                if (JSON.stringify(n.selectors) !== JSON.stringify(node.selectors)) {
                  node = n
                  dirtyEntries = true
                  schedule()
                }
              })
              .catch((err: unknown) => done(err))
          }, RECHECK_MS)
          timer.unref()
          sink.signal.addEventListener('abort', () => done())
          slog.debug({}, 'Sync stream opened')
          schedule()
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
        if (params.length === 0 || params.length > MAX_BATCH) throw new IdentityError('ERR_INVALID_ARGUMENT', `batch must hold 1-${MAX_BATCH} requests`)
        const failed = (entryId: string, err: unknown): X509SVIDResultWire => {
          const e = asIdentityError(err)
          ctx.log.warn({ [F.AGENT_ID]: node.agentId, [F.ENTRY_ID]: entryId.slice(0, 64), [F.ERROR_CODE]: e.code, [F.ERR]: e.message }, 'X509-SVID not signed')
          // Authorization failures tell the caller little.
          const shown = e.code === 'ERR_ID_NOT_AUTHORIZED' ? new IdentityError('ERR_ID_NOT_AUTHORIZED', 'permission denied') : e
          return { entry_id: entryId, status: errorStatus(shown), svid_chain: [], expires_at: 0 }
        }
        const signedOk = (entryId: string, chain: readonly Uint8Array[], notAfter: number, t0: number): X509SVIDResultWire => {
          x509Latency.observe((performance.now() - t0) / 1000)
          x509Signed.inc()
          return { entry_id: entryId, status: OK_STATUS, svid_chain: chain, expires_at: notAfter }
        }
        // With a software CA key and a worker pool, a leaf whose ID no namespace bounds (nothing to count, so admission
        // needs no checked CSR first) is checked and signed on a worker in one go; the rest (bounded IDs, HSM keys) have
        // their CSRs checked first, then are admitted and signed here.
        const authorized = await authorizedFor(node)
        const delegate = csrVerifier.verifyAndSign ? d.ca.x509Delegate() : undefined
        const results: X509SVIDResultWire[] = new Array(params.length)
        const pending: Promise<void>[] = []
        const direct: { at: number; entryId: string; item: SignItem }[] = []
        const here: { at: number; entryId: string; spiffeId: SpiffeId; entry: RegistrationEntry; instanceKey: string }[] = []
        for (let i = 0; i < params.length; i++) {
          const entryId = params[i]!.entry_id
          try {
            const entry = authorized.get(entryId)
            if (!entry) throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `entry ${entryId.slice(0, 64)} is not authorized for agent ${node.agentId}`)
            const s = subjectFor(entry, node.agentId, params[i]!.instance_id)
            const subject = s instanceof Promise ? await s : s
            const spiffeId = parsedId(subject.spiffeId)
            if (delegate === undefined || d.bounds.effective(spiffeId) !== undefined) {
              here.push({ at: i, entryId, spiffeId, entry, instanceKey: subject.instanceKey })
              continue
            }
            // No namespace bounds this ID: nothing to check, clamp or count (what admitX509 answers for it).
            const v = delegate.validity(ttlOf(entry))
            direct.push({ at: i, entryId, item: { csr: csrOf(params[i]!), spiffeId: subject.spiffeId, notBefore: v.notBefore, notAfter: v.notAfter, dnsNames: [...entry.dnsNames] } })
          } catch (err) {
            results[i] = failed(entryId, err)
          }
        }
        if (direct.length > 0) {
          const t0 = performance.now()
          const tail = delegate!.chainTail
          pending.push(
            csrVerifier.verifyAndSign!(
              direct.map((x) => x.item),
              delegate!,
            ).then((signed) => {
              for (let k = 0; k < direct.length; k++) {
                const { at, entryId, item } = direct[k]!
                const o = signed[k]!
                results[at] = o.ok ? signedOk(entryId, tail.length === 0 ? [o.leaf] : [o.leaf, ...tail], item.notAfter, t0) : failed(entryId, o.error)
              }
            }),
          )
        }
        if (here.length > 0) {
          // Admissions (which count live instances) are queued in item order, each once its own check is back; the
          // bounds service writes what is queued in one transaction, and each item is signed once its admission is
          // stored. The CA signatures (async behind the Signer) overlap. Checks never reject.
          const checks = csrVerifier.verify(here.map((x) => csrOf(params[x.at]!)))
          let gate: Promise<unknown> = Promise.resolve()
          for (let k = 0; k < here.length; k++) {
            const { at, entryId, spiffeId, entry, instanceKey } = here[k]!
            const queued = gate
              .then(() => checks[k]!)
              .then((check) => {
                if (!check.ok) throw check.error
                // admitX509 queues the admission before it returns.
                const admission = d.bounds.admitX509({ spiffeId, ttlMs: ttlOf(entry), dnsNames: entry.dnsNames, nodeSelectors: node.selectors, instanceKey })
                admission.catch(() => undefined) // handled below, as this item's result
                return { spki: check.csr.spki, admission }
              })
            gate = queued.catch(() => undefined)
            const admitted = queued.then(async (q) => ({ spki: q.spki, ...(await q.admission) }))
            pending.push(
              admitted
                .then(async (a) => {
                  const t0 = performance.now()
                  const svid = await d.ca.signX509Svid({ spiffeId, publicKey: { spki: a.spki }, ttlMs: a.ttlMs, dnsNames: a.dnsNames })
                  return signedOk(entryId, svid.chain, svid.notAfter, t0)
                })
                .catch((err: unknown) => failed(entryId, err))
                .then((r) => {
                  results[at] = r
                }),
            )
          }
        }
        if (pending.length > 0) await Promise.all(pending)
        return { results }
      },
      observe,
    ),

    NewJWTSVID: unary<NewJWTSVIDRequest__Output, NewJWTSVIDResponse>(
      log,
      'NewJWTSVID',
      async (req, ctx) => {
        const node: AttestedNode = await auth(ctx.call)
        const audience = (req.audience ?? []).filter((a) => a.length > 0)
        if (audience.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
        if (audience.some((a) => a.length > 2048) || audience.length > 32) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience too large')
        const entry = await d.registration.authorizedEntry(node, req.entry_id ?? '')
        const subject = await subjectFor(entry, node.agentId, req.instance_id ?? '')
        const admitted = await d.bounds.admitJwt({
          spiffeId: subject.spiffeId,
          ttlMs: entry.jwtSvidTtl > 0 ? entry.jwtSvidTtl * 1000 : d.defaultJwtTtlMs,
          audience,
          nodeSelectors: node.selectors,
          instanceKey: subject.instanceKey,
        })
        const t0 = performance.now()
        const r = await d.ca.mintJwtSvid({ spiffeId: SpiffeId.fromString(subject.spiffeId), audience, ttlMs: admitted.ttlMs })
        d.metrics.signLatency.observe({ kind: 'jwt' }, (performance.now() - t0) / 1000)
        d.metrics.signings.inc({ kind: 'jwt' })
        ctx.log.debug({ [F.AGENT_ID]: node.agentId, [F.SPIFFE_ID]: subject.spiffeId, [F.KID]: r.kid }, 'JWT-SVID minted')
        return { token: r.token, expires_at: String(r.expiresAt), issued_at: String(r.issuedAt) }
      },
      observe,
    ),

    RegisterInstance: unary<RegisterInstanceRequest__Output, RegisterInstanceResponse>(
      log,
      'RegisterInstance',
      async (req, ctx) => {
        const node = await auth(ctx.call)
        const entry = await d.registration.authorizedEntry(node, req.entry_id ?? '')
        if (!isTemplateId(entry.spiffeId)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'entry is not a per-instance template')
        if (!d.bounds.allowsNode(boundsId(entry.spiffeId), node.selectors)) throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `node does not meet the bounds of ${entry.spiffeId}`)
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
