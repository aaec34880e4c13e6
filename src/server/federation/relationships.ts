import { EventEmitter } from 'node:events'
import type { Clock } from '../../common/clock.js'
import { IdentityError } from '../../errors/identity-error.js'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'
import type { KvStore } from '../datastore/types.js'
import { checkBundleEndpointUrl } from './client.js'

export const FEDERATION_KV_NAMESPACE = 'federation'
export const FEDERATION_PROFILES = ['https_spiffe', 'https_web'] as const
export type FederationProfile = (typeof FEDERATION_PROFILES)[number]
/** Bounds for the refresh interval override (seconds); 0 means "use the bundle's hint". */
export const MIN_REFRESH_SECONDS = 5
export const MAX_REFRESH_SECONDS = 7 * 24 * 3600

/** A federation relationship with one foreign trust domain (SPIRE's `federates_with`). */
export interface FederationRelationship {
  /** Trust domain name (`partner.example`); the key. */
  trustDomain: string
  bundleEndpointUrl: string
  profile: FederationProfile
  /** https_spiffe: the SPIFFE ID the endpoint's X.509-SVID must carry; '' for https_web. */
  endpointSpiffeId: string
  /** https_web: a PEM CA file replacing the system roots; '' = system roots. */
  webCaFile: string
  /** Poll interval override in seconds; 0 = the bundle's `spiffe_refresh_hint` (default 300). */
  refreshHintSeconds: number
  createdAt: number
  updatedAt: number
}

export type RelationshipInput = Omit<FederationRelationship, 'createdAt' | 'updatedAt' | 'endpointSpiffeId' | 'webCaFile' | 'refreshHintSeconds'> & {
  endpointSpiffeId?: string
  webCaFile?: string
  refreshHintSeconds?: number
}

export type RelationshipPatch = Partial<Omit<RelationshipInput, 'trustDomain'>>

function bad(message: string): IdentityError {
  return new IdentityError('ERR_INVALID_ARGUMENT', `federation relationship: ${message}`)
}

/**
 * Checks a relationship and returns it normalized (lowercase trust domain,
 * canonical SPIFFE ID). Throws ERR_INVALID_ARGUMENT (or ERR_TRUST_DOMAIN_INVALID /
 * ERR_SPIFFE_ID_INVALID from the parsers).
 */
export function validateRelationship(input: RelationshipInput, localTrustDomain: TrustDomain): Omit<FederationRelationship, 'createdAt' | 'updatedAt'> {
  if (typeof input !== 'object' || input === null) throw new TypeError('relationship must be an object')
  const td = TrustDomain.fromString(String(input.trustDomain ?? ''))
  if (td.equals(localTrustDomain)) throw bad('cannot federate with the local trust domain')
  const url = checkBundleEndpointUrl(String(input.bundleEndpointUrl ?? '')).toString()
  const profile = input.profile
  if (!FEDERATION_PROFILES.includes(profile)) throw bad('profile must be "https_spiffe" or "https_web"')
  let endpointSpiffeId = ''
  const webCaFile = input.webCaFile ?? ''
  if (typeof webCaFile !== 'string') throw bad('web CA file must be a path')
  if (profile === 'https_spiffe') {
    if (!input.endpointSpiffeId) throw bad('https_spiffe needs the endpoint SPIFFE ID')
    const id = SpiffeId.fromString(input.endpointSpiffeId)
    if (id.isTrustDomainId()) throw bad('the endpoint SPIFFE ID needs a path')
    endpointSpiffeId = id.toString()
    if (webCaFile) throw bad('a web CA file applies to https_web only')
  } else if (input.endpointSpiffeId) {
    throw bad('an endpoint SPIFFE ID applies to https_spiffe only')
  }
  const hint = input.refreshHintSeconds ?? 0
  if (!Number.isSafeInteger(hint) || (hint !== 0 && (hint < MIN_REFRESH_SECONDS || hint > MAX_REFRESH_SECONDS))) {
    throw bad(`refresh hint must be 0 or between ${MIN_REFRESH_SECONDS} and ${MAX_REFRESH_SECONDS} seconds`)
  }
  return { trustDomain: td.name, bundleEndpointUrl: url, profile, endpointSpiffeId, webCaFile, refreshHintSeconds: hint }
}

/**
 * Federation relationships, kept as JSON in the datastore's KvStore (namespace
 * `federation`, key = trust domain name). Emits `change` after every write.
 */
export class RelationshipStore {
  readonly #kv: KvStore
  readonly #local: TrustDomain
  readonly #clock: Clock
  readonly #events = new EventEmitter()

  constructor(o: { kv: KvStore; localTrustDomain: TrustDomain; clock: Clock }) {
    this.#kv = o.kv
    this.#local = o.localTrustDomain
    this.#clock = o.clock
    this.#events.setMaxListeners(0)
  }

  onChange(fn: (trustDomain: string) => void): () => void {
    this.#events.on('change', fn)
    return () => this.#events.off('change', fn)
  }

  /** Validates without writing (the admin API checks before storing a bootstrap bundle). */
  validate(input: RelationshipInput): Omit<FederationRelationship, 'createdAt' | 'updatedAt'> {
    return validateRelationship(input, this.#local)
  }

  /** Throws ERR_ALREADY_EXISTS. */
  async create(input: RelationshipInput): Promise<FederationRelationship> {
    const v = validateRelationship(input, this.#local)
    if (await this.find(v.trustDomain)) {
      throw new IdentityError('ERR_ALREADY_EXISTS', `a federation relationship with "${v.trustDomain}" already exists`)
    }
    const now = this.#clock.now()
    const rel: FederationRelationship = { ...v, createdAt: now, updatedAt: now }
    await this.#kv.put(FEDERATION_KV_NAMESPACE, rel.trustDomain, JSON.stringify(rel))
    this.#events.emit('change', rel.trustDomain)
    return rel
  }

  /** Creates or replaces (config-file relationships at startup). */
  async upsert(input: RelationshipInput): Promise<FederationRelationship> {
    const v = validateRelationship(input, this.#local)
    const prev = await this.find(v.trustDomain)
    const now = this.#clock.now()
    const rel: FederationRelationship = { ...v, createdAt: prev?.createdAt ?? now, updatedAt: now }
    await this.#kv.put(FEDERATION_KV_NAMESPACE, rel.trustDomain, JSON.stringify(rel))
    this.#events.emit('change', rel.trustDomain)
    return rel
  }

  /** Applies the fields present in `patch`. Throws ERR_NOT_FOUND. */
  async update(trustDomain: string, patch: RelationshipPatch): Promise<FederationRelationship> {
    const prev = await this.get(trustDomain)
    const merged: RelationshipInput = { ...prev }
    for (const [k, v] of Object.entries(patch)) if (v !== undefined) (merged as unknown as Record<string, unknown>)[k] = v
    // Switching profile drops the other profile's parameter unless it is given again.
    if (patch.profile === 'https_web' && patch.endpointSpiffeId === undefined) merged.endpointSpiffeId = ''
    if (patch.profile === 'https_spiffe' && patch.webCaFile === undefined) merged.webCaFile = ''
    const v = validateRelationship(merged, this.#local)
    const rel: FederationRelationship = { ...v, createdAt: prev.createdAt, updatedAt: this.#clock.now() }
    await this.#kv.put(FEDERATION_KV_NAMESPACE, rel.trustDomain, JSON.stringify(rel))
    this.#events.emit('change', rel.trustDomain)
    return rel
  }

  /** Throws ERR_NOT_FOUND. Returns the deleted relationship. */
  async delete(trustDomain: string): Promise<FederationRelationship> {
    const prev = await this.get(trustDomain)
    await this.#kv.delete(FEDERATION_KV_NAMESPACE, prev.trustDomain)
    this.#events.emit('change', prev.trustDomain)
    return prev
  }

  /** Throws ERR_NOT_FOUND. */
  async get(trustDomain: string): Promise<FederationRelationship> {
    const rel = await this.find(trustDomain)
    if (!rel) throw new IdentityError('ERR_NOT_FOUND', `no federation relationship with "${String(trustDomain).slice(0, 255)}"`)
    return rel
  }

  async find(trustDomain: string): Promise<FederationRelationship | undefined> {
    const td = TrustDomain.fromString(String(trustDomain))
    const raw = await this.#kv.get(FEDERATION_KV_NAMESPACE, td.name)
    return raw === undefined ? undefined : decode(raw)
  }

  /** Sorted by trust domain. */
  async list(): Promise<FederationRelationship[]> {
    const rows = await this.#kv.list(FEDERATION_KV_NAMESPACE)
    return rows.map((r) => decode(r.value)).sort((a, b) => (a.trustDomain < b.trustDomain ? -1 : a.trustDomain > b.trustDomain ? 1 : 0))
  }
}

function decode(raw: string): FederationRelationship {
  try {
    const o = JSON.parse(raw) as FederationRelationship
    return {
      trustDomain: o.trustDomain,
      bundleEndpointUrl: o.bundleEndpointUrl,
      profile: o.profile,
      endpointSpiffeId: o.endpointSpiffeId ?? '',
      webCaFile: o.webCaFile ?? '',
      refreshHintSeconds: o.refreshHintSeconds ?? 0,
      createdAt: o.createdAt ?? 0,
      updatedAt: o.updatedAt ?? 0,
    }
  } catch (cause) {
    throw new IdentityError('ERR_DATASTORE', 'stored federation relationship is corrupt', { cause })
  }
}
