import { X509Certificate, createHash } from 'node:crypto'
import { IdentityError, isIdentityError } from '../../errors/identity-error.js'
import type { Clock } from '../../common/clock.js'
import { F, type Logger } from '../../common/log/logger.js'
import { issuesTokens, type CallOpts, type ServerNodeAttestor, type TokenIssuingNodeAttestor } from '../../plugin/contracts.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import type { TrustDomain } from '../../spiffe/trust-domain.js'
import { parseCsr } from '../../spiffe/x509-svid/csr.js'
import { verifyX509Svid } from '../../spiffe/x509-svid/verify.js'
import { serialOf, type CaManager } from '../ca/manager.js'
import { failureOf, isoTime, type ServerAudit, type ServerAuditEvent } from '../audit/server-audit.js'
import type { AttestedNode, DataStore, Selector } from '../datastore/types.js'
import type { Metrics } from '../metrics.js'
import type { RegistrationService } from '../registration/service.js'
import { isAgentId, serverIdOf } from '../registration/validate.js'

const VERIFIED_CACHE_MAX = 10_000
/** Codes of a plugin failure passed on as they are; any other becomes ERR_NODE_ATTESTATION_FAILED. */
const KEPT_CODES: ReadonlySet<string> = new Set([
  'ERR_ATTESTATION_PAYLOAD_INVALID',
  'ERR_TPM_PAYLOAD_INVALID',
  'ERR_REQUEST_MALFORMED',
  'ERR_JOIN_TOKEN_INVALID',
])

export interface AttestOutcome {
  node: AttestedNode
  chain: Uint8Array[]
}

/**
 * A node already attested here (it has a node record, not banned) attested again and was refused: its attestor
 * refused the proof (a PCR policy no longer met, a quote that fails). Known only when the attestor names the node
 * in its refusal (`details.agent_id`), which it does only once the proof got far enough to show whose it is (the
 * TPM attestor: once the credential activation proved the EK; a refusal before that, such as an EK no longer
 * trusted, names nobody, since anyone may send another node's EK public area). A refusal of a node never seen, a
 * call that broke off (the challenge round trip failed, the call was cancelled) or a banned node's attempt is not one.
 */
export interface ReattestationRefusal {
  readonly agentId: string
  /** The attestor of the refused attempt. */
  readonly attestor: string
  /** The attestor of the node's record (how it was attested until now). */
  readonly nodeAttestor: string
  /** The error code and the internal reason (never sent to the agent). */
  readonly code: string
  readonly reason: string
}

/** Nodes whose refusal was announced since their last accepted attestation, at most (then forgotten, and announced again). */
const ANNOUNCED_MAX = 10_000

/**
 * Node attestation and agent authentication: runs the named attestor's
 * challenge/response, issues the agent SVID from the agent's CSR, records the
 * attested node, and checks each later call's client certificate against that
 * record (evicted or banned agents fail on their next call).
 */
export class NodeAttestationService {
  readonly #td: TrustDomain
  readonly #ds: DataStore
  readonly #ca: CaManager
  readonly #reg: RegistrationService
  readonly #attestors: ReadonlyMap<string, ServerNodeAttestor>
  readonly #tokenIssuer: TokenIssuingNodeAttestor | undefined
  readonly #clock: Clock
  readonly #log: Logger
  readonly #agentTtlMs: number
  readonly #metrics: Metrics | undefined
  readonly #audit: ServerAudit | undefined
  readonly #verified = new Map<string, { id: SpiffeId; sequence: number | undefined; notAfter: number }>()
  readonly #nodeListeners = new Set<(agentId: string) => void>()
  readonly #refusalListeners = new Set<(r: ReattestationRefusal) => void>()
  /** Nodes whose refused re-attestation was announced, until they attest again: an agent retrying is announced once. */
  readonly #announced = new Set<string>()

  constructor(o: {
    trustDomain: TrustDomain
    ds: DataStore
    ca: CaManager
    registration: RegistrationService
    attestors: ReadonlyMap<string, ServerNodeAttestor>
    clock: Clock
    log: Logger
    agentTtlMs: number
    metrics?: Metrics
    /** Each attestation, accepted or refused, and each agent SVID renewal is appended, durably, before the agent gets an answer. */
    audit?: ServerAudit
  }) {
    this.#td = o.trustDomain
    this.#ds = o.ds
    this.#ca = o.ca
    this.#reg = o.registration
    this.#attestors = o.attestors
    const issuers = [...o.attestors.values()].filter(issuesTokens)
    if (issuers.length > 1) throw new IdentityError('ERR_CONFIG_INVALID', 'at most one node attestor may issue join tokens')
    this.#tokenIssuer = issuers[0]
    this.#clock = o.clock
    this.#log = o.log.child({ [F.SUBSYSTEM]: 'node_attestation' })
    this.#agentTtlMs = o.agentTtlMs
    this.#metrics = o.metrics
    this.#audit = o.audit
  }

  /**
   * Calls `fn` with an agent ID whose node record changed in the datastore (banned, evicted, re-attested),
   * through this server or another sharing the datastore: an open Sync stream of that agent authenticates
   * again at once instead of at its next periodic check. Returns the unsubscribe function.
   */
  onNodeChange(fn: (agentId: string) => void): () => void {
    this.#nodeListeners.add(fn)
    return () => this.#nodeListeners.delete(fn)
  }

  /** The change feed's node changes (or this server's own bans and evictions): tells the listeners. */
  applyNodeChanges(agentIds: Iterable<string>): void {
    for (const id of new Set(agentIds))
      for (const fn of [...this.#nodeListeners]) {
        try {
          fn(id)
        } catch (err) {
          this.#log.warn({ [F.ERR]: String(err) }, 'Node change listener failed')
        }
      }
  }

  /**
   * Calls `fn` when a node already attested here attests again and is refused (see ReattestationRefusal), once
   * until it attests again. Only this server's own refusals: nothing about them is in the shared datastore, so a
   * server sharing it does not hear of them. Returns the unsubscribe function.
   */
  onReattestationRefused(fn: (r: ReattestationRefusal) => void): () => void {
    this.#refusalListeners.add(fn)
    return () => this.#refusalListeners.delete(fn)
  }

  attestorNames(): string[] {
    return [...this.#attestors.keys()]
  }

  /**
   * Creates a single-use join token through the configured node attestor that
   * issues them; ERR_NOT_CONFIGURED when none is configured. With an audit
   * log, the token is handed out only once its event (`join_token.created`:
   * its expiry and alias, never the token) is durable, else ERR_AUDIT_UNAVAILABLE.
   */
  async createJoinToken(opts: { ttlSeconds?: number; spiffeId?: string }): Promise<{ token: string; expiresAt: number }> {
    if (!this.#tokenIssuer) throw new IdentityError('ERR_NOT_CONFIGURED', 'no configured node attestor issues join tokens')
    const t = await this.#tokenIssuer.issueToken(opts)
    if (this.#audit) {
      const ok = await this.#audit.durable({
        type: 'join_token.created',
        outcome: 'success',
        ...(opts.spiffeId ? { subject: opts.spiffeId } : {}),
        attributes: { via: 'admin', expires_at: isoTime(t.expiresAt) },
      })
      if (!ok) throw new IdentityError('ERR_AUDIT_UNAVAILABLE', 'join token not audited (audit log unavailable); not handed out')
    }
    return t
  }

  /**
   * Runs attestation. `challenge` sends bytes to the agent and waits for its answer.
   * Failures throw IdentityError with the reason (logged by the API boundary; the
   * agent only learns "attestation failed"). Nothing is recorded on failure.
   * With an audit log, the outcome is appended (an acceptance with the agent
   * SVID's serial and expiry, a refusal with its code, never the evidence)
   * and durable before the agent is answered; an acceptance that cannot be
   * audited is refused with ERR_AUDIT_UNAVAILABLE before the node is recorded.
   */
  async attest(
    params: { attestor: string; payload: Uint8Array; csr: Uint8Array },
    challenge: (c: Uint8Array) => Promise<Uint8Array>,
    opts: CallOpts,
  ): Promise<AttestOutcome> {
    const started = this.#clock.now()
    const attestor = params.attestor
    let agent: string | undefined
    let audited = false
    // a refusal by the attestor (its verdict on the proof), not a round trip that broke off
    let verdict = false
    let brokeOff = false
    try {
      const csr = parseCsr(params.csr)
      const plugin = this.#attestors.get(attestor)
      if (!plugin) throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', `no node attestor named "${attestor.slice(0, 64)}" is configured`)
      const ask = async (c: Uint8Array): Promise<Uint8Array> => {
        try {
          return await challenge(c)
        } catch (err) {
          brokeOff = true
          throw err
        }
      }
      let res
      try {
        // The catalog labels the plugin's failures (nodeattestor(<name>): ...).
        res = await plugin.attest(params.payload, ask, opts)
      } catch (err) {
        verdict = !brokeOff && !(opts.signal?.aborted ?? false)
        // Malformed input (the payload, or a challenge answer that does not decode) is the caller's fault: INVALID_ARGUMENT.
        // A refused proof keeps its own code when it has one; anything else is a failed attestation.
        if (err instanceof IdentityError && KEPT_CODES.has(err.code)) throw err
        throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', err instanceof Error ? err.message : String(err), { cause: err })
      }
      const agentId = res.agentId
      if (!agentId.memberOf(this.#td) || !isAgentId(agentId)) {
        throw new IdentityError('ERR_NODE_ATTESTATION_FAILED', `nodeattestor(${attestor}): returned an agent ID outside ${this.#td.idString()}/warrant/agent/`)
      }
      const alias = res.nodeAlias
      if (alias && (!alias.memberOf(this.#td) || alias.isTrustDomainId() || alias.path.startsWith('/warrant/'))) {
        throw new IdentityError(
          'ERR_NODE_ATTESTATION_FAILED',
          `nodeattestor(${attestor}): returned a node alias that is not a non-reserved ID of ${this.#td.name}`,
        )
      }
      const selectors: Selector[] = res.selectorValues.map((v) => ({ type: attestor, value: v }))
      const canReattest = res.canReattest
      agent = agentId.toString()
      const existing = await this.#ds.nodes.find(agentId.toString())
      if (existing?.banned) throw new IdentityError('ERR_AGENT_BANNED', `agent ${agentId.toString()} is banned`)
      const svid = await this.#ca.signX509Svid({ spiffeId: agentId, publicKey: csr.publicKey, ttlMs: this.#agentTtlMs })
      if (this.#audit) {
        audited = true
        const ok = await this.#audit.durable({
          type: 'node_attestation.accepted',
          outcome: 'success',
          actor: { spiffe_id: agent },
          subject: agent,
          node: agent,
          attributes: { attestor, serial: svid.serial, not_after: isoTime(svid.notAfter), selectors: selectors.length, can_reattest: canReattest },
        })
        if (!ok) throw new IdentityError('ERR_AUDIT_UNAVAILABLE', 'attestation not audited (audit log unavailable); nothing recorded')
      }
      const node = await this.#ds.nodes.upsert({
        agentId: agentId.toString(),
        attestor,
        selectors,
        serial: svid.serial,
        previousSerial: '',
        expiresAt: svid.notAfter,
        banned: false,
        canReattest,
      })
      if (alias) {
        await this.#reg
          .createInternal({
            spiffeId: alias.toString(),
            parentId: serverIdOf(this.#td).toString(),
            selectors,
            x509SvidTtl: 0,
            jwtSvidTtl: 0,
            dnsNames: [],
            federatesWith: [],
            hint: '',
            admin: false,
            downstream: false,
            expiresAt: null,
          })
          .catch((err: unknown) => {
            if (!(err instanceof IdentityError && err.code === 'ERR_ALREADY_EXISTS')) throw err
          })
      }
      this.#announced.delete(node.agentId)
      this.#log.info({ [F.AGENT_ID]: node.agentId, attestor, [F.SELECTORS]: selectors.length, [F.DURATION_MS]: this.#clock.now() - started }, 'Node attested')
      this.#metrics?.attestations.inc({ attestor, outcome: 'success' })
      return { node, chain: svid.chain }
    } catch (err) {
      this.#metrics?.attestations.inc({ attestor: attestor.slice(0, 32), outcome: 'failure' })
      const refused = verdict && isIdentityError(err, 'ERR_NODE_ATTESTATION_FAILED') ? await this.#refusedNode(err) : undefined
      if (this.#audit && !audited) await this.#audit.durable(this.#refusal(attestor, agent ?? refused?.agentId, err, refused !== undefined))
      if (refused) this.#announceRefusal(refused, attestor, err as IdentityError)
      throw err
    }
  }

  /** The node a refused proof was for, when the attestor named it (`details.agent_id`) and it is one attested here, not banned. Never throws. */
  async #refusedNode(err: IdentityError): Promise<AttestedNode | undefined> {
    const named = namedAgent(err)
    if (named === undefined || !SpiffeId.isValid(named)) return undefined
    const id = SpiffeId.fromString(named)
    if (!id.memberOf(this.#td) || !isAgentId(id)) return undefined
    try {
      const node = await this.#ds.nodes.find(id.toString())
      return node !== undefined && !node.banned ? node : undefined
    } catch (e) {
      this.#log.warn({ [F.AGENT_ID]: id.toString(), [F.ERR]: e instanceof Error ? e.message : String(e) }, 'Node of a refused attestation not looked up')
      return undefined
    }
  }

  #announceRefusal(node: AttestedNode, attestor: string, err: IdentityError): void {
    this.#log.warn({ [F.AGENT_ID]: node.agentId, attestor, [F.ERROR_CODE]: err.code, [F.REASON]: err.message }, 'Re-attestation of an attested node refused')
    if (this.#announced.has(node.agentId)) return
    if (this.#announced.size >= ANNOUNCED_MAX) this.#announced.clear()
    this.#announced.add(node.agentId)
    const r: ReattestationRefusal = { agentId: node.agentId, attestor, nodeAttestor: node.attestor, code: err.code, reason: err.message }
    for (const fn of [...this.#refusalListeners]) {
      try {
        fn(r)
      } catch (e) {
        this.#log.warn({ [F.ERR]: String(e) }, 'Re-attestation refusal listener failed')
      }
    }
  }

  /**
   * A refused (or failed) attestation's event: the code, the attestor if it is one of ours, the agent ID if the attestor named one
   * (for a node attested here attesting again, that node and `reattestation: true`).
   */
  #refusal(attestor: string, agent: string | undefined, err: unknown, reattestation: boolean): ServerAuditEvent {
    return {
      type: 'node_attestation.refused',
      ...failureOf(err),
      ...(agent !== undefined ? { actor: { spiffe_id: agent }, node: agent } : {}),
      attributes: { attestor: this.#attestors.has(attestor) ? attestor : 'unknown', ...(reattestation ? { reattestation: true } : {}) },
    }
  }

  /**
   * Authenticates an agent from its TLS client certificate chain: a valid
   * X.509-SVID of our trust domain with an agent ID, a node record that is not
   * banned, and the certificate's serial equal to the current (or previous) one.
   */
  async authenticate(chain: Uint8Array[] | undefined): Promise<AttestedNode> {
    if (!chain || chain.length === 0) throw new IdentityError('ERR_UNAUTHENTICATED', 'no client certificate')
    const id = await this.#verifyClientSvid(chain)
    if (!isAgentId(id)) throw new IdentityError('ERR_UNAUTHENTICATED', `caller ${id.toString()} is not an agent`)
    const node = await this.#ds.nodes.find(id.toString())
    if (!node) throw new IdentityError('ERR_AGENT_EVICTED', `agent ${id.toString()} is not attested (evicted?)`)
    if (node.banned) throw new IdentityError('ERR_AGENT_BANNED', `agent ${id.toString()} is banned`)
    const serial = serialOf(chain[0]!)
    if (serial !== node.serial && serial !== node.previousSerial) {
      throw new IdentityError('ERR_AGENT_EVICTED', `agent ${id.toString()} presented a superseded SVID`)
    }
    return node
  }

  /**
   * Path validation of an agent's client certificate, cached per certificate
   * and bundle sequence until the certificate expires: a chain verified
   * against an unchanged bundle stays valid, while the node record (evicted,
   * banned, superseded serial) is still checked on every call.
   */
  async #verifyClientSvid(chain: Uint8Array[]): Promise<SpiffeId> {
    const now = this.#clock.now()
    const bundle = this.#ca.bundle()
    const key = createHash('sha256').update(chain[0]!).digest('base64')
    const hit = this.#verified.get(key)
    if (hit && hit.sequence === bundle.sequenceNumber && now < hit.notAfter) return hit.id
    let v
    try {
      v = await verifyX509Svid(chain, bundle, { now: new Date(now) })
    } catch (err) {
      throw new IdentityError('ERR_UNAUTHENTICATED', `client certificate rejected: ${(err as Error).message}`, { cause: err })
    }
    if (this.#verified.size >= VERIFIED_CACHE_MAX) this.#verified.delete(this.#verified.keys().next().value!)
    const notAfter = Date.parse(new X509Certificate(chain[0]!).validTo)
    this.#verified.set(key, { id: v.id, sequence: bundle.sequenceNumber, notAfter })
    return v.id
  }

  /**
   * Issues a new agent SVID for an authenticated agent; the old serial stays
   * valid until the new one is used. Agents whose attestor can attest again
   * (tpm, x509pop) must do so instead, as in SPIRE: a TPM agent's renewal is
   * a fresh quote, so a changed PCR is noticed at the next renewal.
   */
  async renew(node: AttestedNode, csrDer: Uint8Array): Promise<Uint8Array[]> {
    if (node.canReattest) {
      throw new IdentityError('ERR_REATTESTATION_REQUIRED', `agent ${node.agentId} renews by attesting again (${node.attestor})`)
    }
    const csr = parseCsr(csrDer)
    const svid = await this.#ca.signX509Svid({ spiffeId: SpiffeId.fromString(node.agentId), publicKey: csr.publicKey, ttlMs: this.#agentTtlMs })
    if (this.#audit) {
      const ok = await this.#audit.durable({
        type: 'x509_svid.issued',
        outcome: 'success',
        actor: { spiffe_id: node.agentId },
        subject: node.agentId,
        node: node.agentId,
        attributes: { kind: 'agent', serial: svid.serial, not_after: isoTime(svid.notAfter) },
      })
      if (!ok) throw new IdentityError('ERR_AUDIT_UNAVAILABLE', 'agent SVID not audited (audit log unavailable); not renewed')
    }
    await this.#ds.nodes.update(node.agentId, { serial: svid.serial, previousSerial: node.serial, expiresAt: svid.notAfter })
    this.#log.info({ [F.AGENT_ID]: node.agentId, [F.SERIAL]: svid.serial }, 'Agent SVID renewed')
    return svid.chain
  }

  /** Evicts an agent (it must attest again); with an audit log, answered once `node.evicted` is durable (a lost event is logged and counted). */
  async evict(agentId: string): Promise<AttestedNode> {
    const n = await this.#ds.nodes.delete(checkAgentId(agentId, this.#td))
    this.#log.info({ [F.AGENT_ID]: agentId }, 'Agent evicted')
    this.applyNodeChanges([n.agentId])
    await this.#audit?.durable(nodeEvent('node.evicted', n))
    return n
  }

  /** Bans an agent (no attestation, no call); with an audit log, answered once `node.banned` is durable. */
  async ban(agentId: string): Promise<AttestedNode> {
    const n = await this.#ds.nodes.update(checkAgentId(agentId, this.#td), { banned: true, serial: '', previousSerial: '' })
    this.#log.info({ [F.AGENT_ID]: agentId }, 'Agent banned')
    this.applyNodeChanges([n.agentId])
    await this.#audit?.durable(nodeEvent('node.banned', n))
    return n
  }
}

/** The agent ID an attestor named in its refusal (`details.agent_id`), looked for through the causes (the catalog and this service wrap it). */
function namedAgent(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const v = isIdentityError(e) ? e.details?.['agent_id'] : undefined
    if (typeof v === 'string') return v
  }
  return undefined
}

function nodeEvent(type: 'node.evicted' | 'node.banned', n: AttestedNode): ServerAuditEvent {
  return { type, outcome: 'success', subject: n.agentId, node: n.agentId, attributes: { via: 'admin', attestor: n.attestor } }
}

function checkAgentId(agentId: string, td: TrustDomain): string {
  const id = SpiffeId.fromString(agentId)
  if (!id.memberOf(td) || !isAgentId(id)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'not an agent ID of this trust domain')
  return id.toString()
}
