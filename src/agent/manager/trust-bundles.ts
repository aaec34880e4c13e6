/**
 * The bundles the agent trusts: its own trust domain's and the federated
 * ones the server syncs, each kept parsed (for JWT-SVID validation) and in
 * the Workload API's encodings (for delivery). Invalid documents are logged
 * and ignored; the previous bundle stays.
 */
import { F, type Logger } from '../../common/log/logger.js'
import { BundleSet } from '../../spiffe/bundle/bundle-set.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import type { WorkloadBundle } from '../workload-api/manager.js'
import type { BundleDoc } from './ports.js'

interface FederatedState {
  doc: BundleDoc
  bundle: SpiffeBundle
  workload: WorkloadBundle
}

const EMPTY_BUNDLE: WorkloadBundle = { x509: new Uint8Array(0), jwks: '{"keys":[]}' }

export function workloadBundleOf(b: SpiffeBundle): WorkloadBundle {
  return { x509: b.x509Bundle().toDer(), jwks: b.jwtBundle().toJwks() }
}

export class TrustBundles {
  readonly #td: TrustDomain
  readonly #log: Logger
  #local: SpiffeBundle | undefined
  #localWorkload: WorkloadBundle = EMPTY_BUNDLE
  #federated = new Map<string, FederatedState>()
  #set = new BundleSet()

  constructor(opts: { trustDomain: TrustDomain; log: Logger }) {
    this.#td = opts.trustDomain
    this.#log = opts.log
  }

  /** The local trust domain's bundle, once known. */
  get local(): SpiffeBundle | undefined {
    return this.#local
  }

  /** The local bundle in Workload API encodings (empty until known). */
  get localWorkload(): WorkloadBundle {
    return this.#localWorkload
  }

  /** Local and federated bundles, for validation. Replaced (never mutated) on change. */
  get set(): BundleSet {
    return this.#set
  }

  /** A federated trust domain's bundle by name: its trust domain ID and Workload API encodings. */
  federated(name: string): { trustDomainId: string; workload: WorkloadBundle } | undefined {
    const f = this.#federated.get(name)
    return f ? { trustDomainId: f.bundle.trustDomain.idString(), workload: f.workload } : undefined
  }

  /** Applies the local bundle; ignored for another trust domain or when invalid. True when it changed. */
  applyLocal(doc: BundleDoc): boolean {
    let td: TrustDomain
    try {
      td = TrustDomain.fromString(doc.trustDomain)
    } catch {
      this.#log.warn({ [F.TRUST_DOMAIN]: doc.trustDomain }, 'Ignoring bundle with an invalid trust domain')
      return false
    }
    if (!td.equals(this.#td)) {
      this.#log.warn({ [F.TRUST_DOMAIN]: doc.trustDomain }, 'Ignoring local bundle of another trust domain')
      return false
    }
    let b: SpiffeBundle
    try {
      b = SpiffeBundle.parse(td, doc.document)
    } catch (err) {
      this.#log.error({ [F.TRUST_DOMAIN]: td.name, [F.ERR]: err }, 'Ignoring invalid local bundle')
      return false
    }
    if (this.#local?.equals(b)) return false
    this.#local = b
    this.#localWorkload = workloadBundleOf(b)
    this.#rebuildSet()
    return true
  }

  /** Replaces the federated set (the local trust domain and invalid documents are skipped). True when it changed. */
  applyFederated(docs: BundleDoc[]): boolean {
    const next = new Map<string, FederatedState>()
    for (const doc of docs) {
      try {
        const td = TrustDomain.fromString(doc.trustDomain)
        if (td.equals(this.#td)) continue
        const prev = this.#federated.get(td.name)
        if (prev && prev.doc.document === doc.document) {
          next.set(td.name, prev)
          continue
        }
        const bundle = SpiffeBundle.parse(td, doc.document)
        next.set(td.name, { doc, bundle, workload: workloadBundleOf(bundle) })
      } catch (err) {
        this.#log.warn({ [F.TRUST_DOMAIN]: doc.trustDomain, [F.ERR]: err }, 'Ignoring invalid federated bundle')
      }
    }
    const same = next.size === this.#federated.size && [...next].every(([k, v]) => this.#federated.get(k) === v)
    this.#federated = next
    if (!same) this.#rebuildSet()
    return !same
  }

  #rebuildSet(): void {
    const set = new BundleSet()
    if (this.#local) set.set(this.#local)
    for (const f of this.#federated.values()) set.set(f.bundle)
    this.#set = set
  }
}
