import { IdentityError } from '../../errors/identity-error.js'
import type { SpiffeId } from '../../spiffe/spiffe-id.js'
import { failureOf, isoTime, plainId, type ServerAudit } from '../audit/server-audit.js'
import type { BoundsLookup, BoundsService } from '../bounds/bounds-service.js'
import { inlineCsrVerifier, type CsrVerifier, type SignItem } from '../ca/csr-verifier.js'
import { serialOf, type CaManager } from '../ca/manager.js'
import type { AttestedNode, RegistrationEntry } from '../datastore/types.js'
import type { Metrics } from '../metrics.js'
import type { AuthorizedEntries } from '../registration/authorized-entries.js'
import { isTemplateId } from '../registration/validate.js'
import type { RevocationService } from '../revocation/revocation-service.js'
import type { Subjects } from './subject.js'

/** Items one batch may hold. */
export const MAX_X509_BATCH = 500

/** One X.509-SVID an agent asks for: for an entry (and, for a per-instance template, one of its instances), with the agent's CSR. */
export interface X509Request {
  entryId: string
  csr: Uint8Array
  /** Empty for a plain entry. */
  instanceId: string
}

/** One item's outcome, in request order: the chain (leaf first) and its notAfter (epoch ms), or why not (any error; the API maps it). */
export type X509Outcome = { ok: true; chain: readonly Uint8Array[]; notAfter: number } | { ok: false; error: unknown }

export interface X509IssuanceDeps {
  entries: Pick<AuthorizedEntries, 'of'>
  subjects: Pick<Subjects, 'of' | 'claimed'>
  bounds: Pick<BoundsService, 'lookup' | 'admitX509'>
  ca: Pick<CaManager, 'x509Delegate' | 'signX509Svid'>
  metrics: Pick<Metrics, 'signLatency' | 'signings'>
  /** The TTL of entries that set none. */
  defaultTtlMs: number
  /** Refuses revoked instances and quarantined prefixes (ERR_REVOKED); absent, nothing is refused. */
  revocations?: Pick<RevocationService, 'refuse'>
  /** Checks CSRs (default: on the main thread; the server passes a worker pool, which also signs with a software CA key). */
  csrVerifier?: CsrVerifier
  /**
   * Records each issued SVID (`x509_svid.issued`: ID, instance, agent, entry, serial, not_after) and each refused item
   * (the same type, outcome `refused` with its code), without waiting (see server-audit.ts).
   */
  audit?: Pick<ServerAudit, 'record'>
}

/** An item that passed authorization and has its subject, before its CSR is checked. */
interface Authorized {
  at: number
  entry: RegistrationEntry
  spiffeId: SpiffeId
  instanceKey: string
  bounds: BoundsLookup
}

/**
 * Batch X.509-SVID issuance for an attested agent: per item, authorize (the
 * entry is one the agent may serve), decide the subject (the entry's ID or its
 * live instance's), admit it under the namespace bounds (node selectors, TTL
 * and DNS clamp, instance count), then verify the CSR and sign, on the CSR
 * worker pool with a software CA key or through the CA's `Signer` (an HSM
 * key). Items fail one by one; the batch as a whole fails only when it is
 * empty or too large.
 */
export class X509Issuance {
  readonly #d: X509IssuanceDeps
  readonly #csr: CsrVerifier
  readonly #latency: ReturnType<Metrics['signLatency']['labels']>
  readonly #signed: ReturnType<Metrics['signings']['labels']>

  constructor(deps: X509IssuanceDeps) {
    this.#d = deps
    this.#csr = deps.csrVerifier ?? inlineCsrVerifier
    this.#latency = deps.metrics.signLatency.labels({ kind: 'x509' })
    this.#signed = deps.metrics.signings.labels({ kind: 'x509' })
  }

  #ttlOf(entry: RegistrationEntry): number {
    return entry.x509SvidTtl > 0 ? entry.x509SvidTtl * 1000 : this.#d.defaultTtlMs
  }

  #ok(chain: readonly Uint8Array[], notAfter: number, t0: number): X509Outcome {
    this.#latency.observe((performance.now() - t0) / 1000)
    this.#signed.inc()
    return { ok: true, chain, notAfter }
  }

  /** Issues an SVID per request, in order. Throws (the whole call fails) only for an empty or oversized batch. */
  async issue(node: AttestedNode, requests: readonly X509Request[]): Promise<X509Outcome[]> {
    if (requests.length === 0 || requests.length > MAX_X509_BATCH)
      throw new IdentityError('ERR_INVALID_ARGUMENT', `batch must hold 1-${MAX_X509_BATCH} requests`)
    const authorized = await this.#d.entries.of(node)
    const out = new Array<X509Outcome>(requests.length)
    // With a software CA key and a worker pool, a leaf whose ID no namespace bounds (nothing to check, clamp or
    // count: what admitX509 answers for it) is checked and signed on a worker in one go; the rest (bounded IDs, HSM
    // keys) have their CSRs checked first, then are admitted and signed here.
    const delegate = this.#csr.verifyAndSign ? this.#d.ca.x509Delegate() : undefined
    const direct: { at: number; item: SignItem }[] = []
    const here: Authorized[] = []
    for (let i = 0; i < requests.length; i++) {
      const r = requests[i]!
      try {
        const entry = authorized.get(r.entryId)
        if (!entry) throw new IdentityError('ERR_ID_NOT_AUTHORIZED', `entry ${r.entryId.slice(0, 64)} is not authorized for agent ${node.agentId}`)
        // A revoked instance is refused as such, before its (then ended) record is looked at.
        this.#d.revocations?.refuse(this.#d.subjects.claimed(entry, r.instanceId), r.instanceId)
        const s = this.#d.subjects.of(entry, node.agentId, r.instanceId)
        const subject = s instanceof Promise ? await s : s
        const bounds = this.#d.bounds.lookup(subject.spiffeId)
        if (delegate === undefined || bounds.effective !== undefined) {
          here.push({ at: i, entry, spiffeId: subject.spiffeId, instanceKey: subject.instanceKey, bounds })
          continue
        }
        const v = delegate.validity(this.#ttlOf(entry))
        direct.push({
          at: i,
          item: { csr: r.csr, spiffeId: subject.spiffeId.toString(), notBefore: v.notBefore, notAfter: v.notAfter, dnsNames: [...entry.dnsNames] },
        })
      } catch (error) {
        out[i] = { ok: false, error }
      }
    }
    const pending: Promise<void>[] = []
    if (direct.length > 0) pending.push(this.#signOnPool(node, requests, direct, delegate!, out))
    if (here.length > 0) this.#admitAndSign(node, here, requests, out, pending)
    if (pending.length > 0) await Promise.all(pending)
    if (this.#d.audit)
      for (let i = 0; i < out.length; i++) {
        const o = out[i]!
        if (!o.ok) this.#auditRefusal(node, requests[i]!, authorized.get(requests[i]!.entryId), o.error)
      }
    return out
  }

  /** Records a refused item: its code, the ID it asked for when the entry is the agent's (and the instance well-formed). */
  #auditRefusal(node: AttestedNode, r: X509Request, entry: RegistrationEntry | undefined, error: unknown): void {
    const instance = /^i[0-9a-z]{25}$/.test(r.instanceId) ? r.instanceId : undefined
    const claimed = entry && (!isTemplateId(entry.spiffeId) || instance) ? this.#d.subjects.claimed(entry, r.instanceId) : undefined
    const entryId = plainId(r.entryId)
    this.#d.audit!.record({
      type: 'x509_svid.issued',
      ...failureOf(error),
      ...(claimed !== undefined ? { actor: instance ? { spiffe_id: claimed, instance } : { spiffe_id: claimed }, subject: claimed } : {}),
      node: node.agentId,
      attributes: { kind: 'workload', ...(entryId !== undefined ? { entry_id: entryId } : {}) },
    })
  }

  /** Records one issued SVID (not awaited). */
  #audit(node: AttestedNode, r: X509Request, spiffeId: string, serial: string, notAfter: number): void {
    this.#d.audit!.record({
      type: 'x509_svid.issued',
      outcome: 'success',
      actor: r.instanceId === '' ? { spiffe_id: spiffeId } : { spiffe_id: spiffeId, instance: r.instanceId },
      subject: spiffeId,
      node: node.agentId,
      attributes: { kind: 'workload', entry_id: r.entryId, serial, not_after: isoTime(notAfter) },
    })
  }

  /** Checks and signs unbounded items on the worker pool in one go. */
  async #signOnPool(
    node: AttestedNode,
    requests: readonly X509Request[],
    direct: { at: number; item: SignItem }[],
    delegate: NonNullable<ReturnType<CaManager['x509Delegate']>>,
    out: X509Outcome[],
  ): Promise<void> {
    const t0 = performance.now()
    const tail = delegate.chainTail
    const signed = await this.#csr.verifyAndSign!(
      direct.map((x) => x.item),
      delegate,
    )
    for (let k = 0; k < direct.length; k++) {
      const { at, item } = direct[k]!
      const o = signed[k]!
      out[at] = o.ok ? this.#ok(tail.length === 0 ? [o.leaf] : [o.leaf, ...tail], item.notAfter, t0) : { ok: false, error: o.error }
      if (o.ok && this.#d.audit) this.#audit(node, requests[at]!, item.spiffeId, serialOf(o.leaf), item.notAfter)
    }
  }

  /**
   * Checks the CSRs of `here`, admits each item under its bounds and signs it
   * through the CA. Admissions (which count live instances) are queued in item
   * order, each once its own check is back; the bounds service writes what is
   * queued in one transaction, and each item is signed once its admission is
   * stored. The CA signatures (async behind the Signer) overlap. Pushes one
   * promise per item onto `pending`; none rejects.
   */
  #admitAndSign(node: AttestedNode, here: Authorized[], requests: readonly X509Request[], out: X509Outcome[], pending: Promise<void>[]): void {
    const checks = this.#csr.verify(here.map((x) => requests[x.at]!.csr))
    let gate: Promise<unknown> = Promise.resolve()
    for (let k = 0; k < here.length; k++) {
      const { at, entry, spiffeId, instanceKey, bounds } = here[k]!
      const queued = gate
        .then(() => checks[k]!)
        .then((check) => {
          if (!check.ok) throw check.error
          // admitX509 queues the admission before it returns.
          const admission = this.#d.bounds.admitX509({
            spiffeId,
            ttlMs: this.#ttlOf(entry),
            dnsNames: entry.dnsNames,
            nodeSelectors: node.selectors,
            instanceKey,
            lookup: bounds,
          })
          admission.catch(() => undefined) // handled below, as this item's outcome
          return { spki: check.csr.spki, admission }
        })
      gate = queued.catch(() => undefined)
      pending.push(
        queued
          .then(async (q) => {
            const a = await q.admission
            const t0 = performance.now()
            const svid = await this.#d.ca.signX509Svid({ spiffeId, publicKey: { spki: q.spki }, ttlMs: a.ttlMs, dnsNames: a.dnsNames })
            if (this.#d.audit) this.#audit(node, requests[at]!, spiffeId.toString(), svid.serial, svid.notAfter)
            return this.#ok(svid.chain, svid.notAfter, t0)
          })
          .catch((error: unknown): X509Outcome => ({ ok: false, error }))
          .then((o) => {
            out[at] = o
          }),
      )
    }
  }
}
