import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import { failureOf, isoTime, plainId, type ServerAudit } from '../audit/server-audit.js'
import type { BoundsService } from '../bounds/bounds-service.js'
import type { CaManager } from '../ca/manager.js'
import type { AttestedNode } from '../datastore/types.js'
import type { Metrics } from '../metrics.js'
import type { AuthorizedEntries } from '../registration/authorized-entries.js'
import { isTemplateId } from '../registration/validate.js'
import type { RevocationService } from '../revocation/revocation-service.js'
import type { Subjects } from './subject.js'

/** Audiences one JWT-SVID may carry, and the length of each. */
const MAX_AUDIENCES = 32
const MAX_AUDIENCE_LENGTH = 2048

/** A JWT-SVID an agent asks for: for an entry (and, for a per-instance template, one of its instances), for some audiences. */
export interface JwtRequest {
  entryId: string
  audience: readonly string[]
  /** Empty for a plain entry. */
  instanceId: string
}

export interface JwtSvidIssued {
  token: string
  /** Epoch ms. */
  expiresAt: number
  issuedAt: number
}

export interface JwtIssuanceDeps {
  entries: Pick<AuthorizedEntries, 'entry'>
  subjects: Pick<Subjects, 'of' | 'claimed'>
  bounds: Pick<BoundsService, 'admitJwt'>
  ca: Pick<CaManager, 'mintJwtSvid'>
  metrics: Pick<Metrics, 'signLatency' | 'signings'>
  log: Logger
  /** The TTL of entries that set none. */
  defaultTtlMs: number
  /** Refuses revoked instances and quarantined prefixes (ERR_REVOKED); absent, nothing is refused. */
  revocations?: Pick<RevocationService, 'refuse'>
  /**
   * Records each minted JWT-SVID (`jwt_svid.issued`: ID, instance, agent, entry, audience, kid, exp; never the token) and
   * each refusal (the same type, outcome `refused` with its code), without waiting.
   */
  audit?: Pick<ServerAudit, 'record'>
}

/**
 * JWT-SVID issuance for an attested agent, in the same steps as X.509:
 * authorize the entry, decide the subject, admit it under the namespace
 * bounds (node selectors, audiences, instance count, TTL clamp), then mint
 * with the CA's active JWT key.
 */
export class JwtIssuance {
  readonly #d: JwtIssuanceDeps

  constructor(deps: JwtIssuanceDeps) {
    this.#d = deps
  }

  /** ERR_INVALID_ARGUMENT for a missing or oversized audience; ERR_ID_NOT_AUTHORIZED when the entry, instance or bounds refuse. */
  async issue(node: AttestedNode, r: JwtRequest): Promise<JwtSvidIssued> {
    if (!this.#d.audit) return this.#issue(node, r, {})
    const seen: { claimed?: string } = {}
    try {
      return await this.#issue(node, r, seen)
    } catch (err) {
      const entryId = plainId(r.entryId)
      const instance = /^i[0-9a-z]{25}$/.test(r.instanceId) ? r.instanceId : undefined
      this.#d.audit.record({
        type: 'jwt_svid.issued',
        ...failureOf(err),
        ...(seen.claimed !== undefined ? { actor: instance ? { spiffe_id: seen.claimed, instance } : { spiffe_id: seen.claimed }, subject: seen.claimed } : {}),
        node: node.agentId,
        attributes: entryId !== undefined ? { entry_id: entryId } : {},
      })
      throw err
    }
  }

  /** `seen.claimed`: the ID asked for, once the entry is known to be the agent's (and the instance well-formed). */
  async #issue(node: AttestedNode, r: JwtRequest, seen: { claimed?: string }): Promise<JwtSvidIssued> {
    const audience = r.audience.filter((a) => a.length > 0)
    if (audience.length === 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience must be specified')
    if (audience.some((a) => a.length > MAX_AUDIENCE_LENGTH) || audience.length > MAX_AUDIENCES)
      throw new IdentityError('ERR_INVALID_ARGUMENT', 'audience too large')
    const entry = await this.#d.entries.entry(node, r.entryId)
    if (!isTemplateId(entry.spiffeId) || /^i[0-9a-z]{25}$/.test(r.instanceId)) seen.claimed = this.#d.subjects.claimed(entry, r.instanceId)
    // A revoked instance is refused as such, before its (then ended) record is looked at.
    this.#d.revocations?.refuse(this.#d.subjects.claimed(entry, r.instanceId), r.instanceId)
    const subject = await this.#d.subjects.of(entry, node.agentId, r.instanceId)
    const admitted = await this.#d.bounds.admitJwt({
      spiffeId: subject.spiffeId,
      ttlMs: entry.jwtSvidTtl > 0 ? entry.jwtSvidTtl * 1000 : this.#d.defaultTtlMs,
      audience,
      nodeSelectors: node.selectors,
      instanceKey: subject.instanceKey,
    })
    const t0 = performance.now()
    const minted = await this.#d.ca.mintJwtSvid({ spiffeId: subject.spiffeId, audience, ttlMs: admitted.ttlMs })
    this.#d.metrics.signLatency.observe({ kind: 'jwt' }, (performance.now() - t0) / 1000)
    this.#d.metrics.signings.inc({ kind: 'jwt' })
    this.#d.log.debug({ [F.AGENT_ID]: node.agentId, [F.SPIFFE_ID]: subject.spiffeId.toString(), [F.KID]: minted.kid }, 'JWT-SVID minted')
    if (this.#d.audit) {
      const id = subject.spiffeId.toString()
      this.#d.audit.record({
        type: 'jwt_svid.issued',
        outcome: 'success',
        actor: r.instanceId === '' ? { spiffe_id: id } : { spiffe_id: id, instance: r.instanceId },
        subject: id,
        node: node.agentId,
        resource: audience,
        key_id: minted.kid,
        attributes: { entry_id: r.entryId, expires_at: isoTime(minted.expiresAt) },
      })
    }
    return { token: minted.token, expiresAt: minted.expiresAt, issuedAt: minted.issuedAt }
  }
}
