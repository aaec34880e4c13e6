import { EventEmitter } from 'node:events'
import { IdentityError } from '../../errors/identity-error.js'
import { F, type Logger } from '../../common/log/logger.js'
import { SpiffeBundle } from '../../spiffe/bundle/spiffe-bundle.js'
import { X509Bundle } from '../../spiffe/bundle/x509-bundle.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import type { BundleRecord, DataStore } from '../datastore/types.js'

/**
 * Bundles of other trust domains: set by operators (`warrant bundle set`) or,
 * later, by the federation refresher. Never merged across trust domains.
 * Emits `change` with the full federated set on every write.
 */
export class FederatedBundles {
  readonly #ds: DataStore
  readonly #local: TrustDomain
  readonly #log: Logger
  readonly #events = new EventEmitter()

  constructor(o: { ds: DataStore; localTrustDomain: TrustDomain; log: Logger }) {
    this.#ds = o.ds
    this.#local = o.localTrustDomain
    this.#log = o.log.child({ [F.SUBSYSTEM]: 'bundles' })
    this.#events.setMaxListeners(0)
  }

  onChange(fn: () => void): () => void {
    this.#events.on('change', fn)
    return () => this.#events.off('change', fn)
  }

  /**
   * A foreign trust domain's bundle changed in the datastore, possibly through another server sharing it (its
   * change feed): the listeners (agents' Sync streams) read the set again. The local trust domain's is the CA's.
   */
  applyRemoteChange(trustDomain: string): void {
    if (trustDomain === this.#local.name) return
    this.#log.debug({ [F.TRUST_DOMAIN]: trustDomain }, 'Federated bundle changed by another server')
    this.#events.emit('change')
  }

  async list(): Promise<BundleRecord[]> {
    return (await this.#ds.bundles.list()).filter((b) => b.trustDomain !== this.#local.name)
  }

  /** The stored bundles of exactly these trust domains (what Sync sends an agent), ordered by trust domain. */
  async listFor(trustDomains: ReadonlySet<string>): Promise<BundleRecord[]> {
    if (trustDomains.size === 0) return []
    return (await this.list()).filter((b) => trustDomains.has(b.trustDomain))
  }

  async get(td: string): Promise<BundleRecord> {
    const t = this.#foreign(td)
    const b = await this.#ds.bundles.get(t.name)
    if (!b) throw new IdentityError('ERR_BUNDLE_NOT_FOUND', `no bundle for trust domain "${t.name}"`)
    return b
  }

  /** Stores a bundle for a foreign trust domain from a SPIFFE document or PEM (X.509 authorities only). */
  async set(td: string, format: 'spiffe' | 'pem', data: string): Promise<BundleRecord> {
    const t = this.#foreign(td)
    let bundle: SpiffeBundle
    if (format === 'spiffe') bundle = SpiffeBundle.parse(t, data)
    else if (format === 'pem') {
      const x = X509Bundle.parsePem(t, data)
      if (x.isEmpty()) throw new IdentityError('ERR_BUNDLE_INVALID', 'PEM holds no certificate')
      bundle = SpiffeBundle.from({ trustDomain: t, x509Authorities: x.authorities })
    } else throw new IdentityError('ERR_INVALID_ARGUMENT', 'format must be "spiffe" or "pem"')
    return this.put(bundle)
  }

  /** Stores an already-parsed bundle (federation refresher). */
  async put(bundle: SpiffeBundle): Promise<BundleRecord> {
    const t = this.#foreign(bundle.trustDomain.name)
    const prev = await this.#ds.bundles.get(t.name)
    const sequence = bundle.sequenceNumber ?? (prev?.sequence ?? 0) + 1
    const rec = await this.#ds.bundles.put({ trustDomain: t.name, document: bundle.marshal(), sequence })
    this.#log.info({ [F.TRUST_DOMAIN]: t.name, sequence }, 'Federated bundle stored')
    this.#events.emit('change')
    return rec
  }

  async delete(td: string): Promise<void> {
    const t = this.#foreign(td)
    await this.#ds.bundles.delete(t.name)
    this.#log.info({ [F.TRUST_DOMAIN]: t.name }, 'Federated bundle deleted')
    this.#events.emit('change')
  }

  #foreign(td: string): TrustDomain {
    const t = TrustDomain.fromString(td)
    if (t.equals(this.#local)) throw new IdentityError('ERR_INVALID_ARGUMENT', 'the local trust domain bundle is managed by the CA')
    return t
  }
}
