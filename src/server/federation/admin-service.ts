import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import { unary, type Observe } from '../../common/grpc/handlers.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { CreateFederationRelationshipRequest__Output } from '../../gen/warrant/admin/v1/CreateFederationRelationshipRequest.js'
import type { FederationRelationship as FederationRelationshipMsg, FederationRelationship__Output } from '../../gen/warrant/admin/v1/FederationRelationship.js'
import type { FederationRelationshipRequest__Output } from '../../gen/warrant/admin/v1/FederationRelationshipRequest.js'
import type { ListFederationRelationshipsResponse } from '../../gen/warrant/admin/v1/ListFederationRelationshipsResponse.js'
import type { UpdateFederationRelationshipRequest__Output } from '../../gen/warrant/admin/v1/UpdateFederationRelationshipRequest.js'
import type { FederatedBundles } from '../bundle/federated.js'
import type { FederationRefresher, RefreshStatus } from './refresher.js'
import { type FederationProfile, type FederationRelationship, type RelationshipInput, type RelationshipPatch, type RelationshipStore } from './relationships.js'

export interface FederationAdminDeps {
  relationships: RelationshipStore
  refresher: Pick<FederationRefresher, 'refresh' | 'status'>
  /** Stores bootstrap bundles (`bootstrap_bundle` on Create/Update). */
  federated: Pick<FederatedBundles, 'set'>
  log: Logger
  observe?: Observe
}

const MUTABLE_FIELDS = [
  'bundle_endpoint_url',
  'profile',
  'endpoint_spiffe_id',
  'web_ca_file',
  'refresh_hint_seconds',
  'bootstrap_bundle',
  'bootstrap_format',
] as const
type MutableField = (typeof MUTABLE_FIELDS)[number]

/**
 * The `warrant.admin.v1.Federation` service (admin socket only): manage
 * federation relationships and trigger refreshes. Bootstrap bundles are stored
 * through FederatedBundles before the relationship, so the first https_spiffe
 * fetch has something to authenticate the endpoint against.
 */
export function federationAdminService(d: FederationAdminDeps): UntypedServiceImplementation {
  const log = d.log.child({ [F.SUBSYSTEM]: 'federation_admin' })
  const msg = (r: FederationRelationship) => relationshipToMsg(r, d.refresher.status(r.trustDomain))

  return {
    Create: unary<CreateFederationRelationshipRequest__Output, FederationRelationshipMsg>(
      log,
      'Create',
      async (req) => {
        const m = req.relationship
        if (!m) throw invalid('relationship is required')
        const input = msgToInput(m)
        const local = d.relationships.validate(input) // before any write: the bootstrap bundle is stored first
        if (await d.relationships.find(local.trustDomain)) {
          throw new IdentityError('ERR_ALREADY_EXISTS', `a federation relationship with "${local.trustDomain}" already exists`)
        }
        await storeBootstrap(d, local.trustDomain, m)
        const rel = await d.relationships.create(input)
        log.info({ [F.RELATIONSHIP]: rel.trustDomain, profile: rel.profile }, 'Federation relationship created')
        return msg(rel)
      },
      d.observe,
    ),
    Update: unary<UpdateFederationRelationshipRequest__Output, FederationRelationshipMsg>(
      log,
      'Update',
      async (req) => {
        const m = req.relationship
        if (!m || !m.trust_domain) throw invalid('relationship.trust_domain is required')
        const mask = req.mask.length > 0 ? req.mask : MUTABLE_FIELDS.filter((f) => isSet(m, f))
        for (const f of mask) if (!(MUTABLE_FIELDS as readonly string[]).includes(f)) throw invalid(`field "${f}" cannot be updated`)
        const has = (f: MutableField) => mask.includes(f)
        const patch: RelationshipPatch = {}
        if (has('bundle_endpoint_url')) patch.bundleEndpointUrl = m.bundle_endpoint_url
        if (has('profile')) patch.profile = m.profile as FederationProfile
        if (has('endpoint_spiffe_id')) patch.endpointSpiffeId = m.endpoint_spiffe_id
        if (has('web_ca_file')) patch.webCaFile = m.web_ca_file
        if (has('refresh_hint_seconds')) patch.refreshHintSeconds = m.refresh_hint_seconds
        const prev = await d.relationships.get(m.trust_domain)
        if (has('bootstrap_bundle') && m.bootstrap_bundle) await storeBootstrap(d, prev.trustDomain, m)
        const rel = Object.keys(patch).length > 0 ? await d.relationships.update(prev.trustDomain, patch) : prev
        log.info({ [F.RELATIONSHIP]: rel.trustDomain, fields: mask }, 'Federation relationship updated')
        return msg(rel)
      },
      d.observe,
    ),
    Delete: unary<FederationRelationshipRequest__Output, FederationRelationshipMsg>(
      log,
      'Delete',
      async (req) => {
        const rel = await d.relationships.delete(required(req.trust_domain))
        log.info({ [F.RELATIONSHIP]: rel.trustDomain }, 'Federation relationship deleted; its bundle is kept')
        return relationshipToMsg(rel, undefined)
      },
      d.observe,
    ),
    Get: unary<FederationRelationshipRequest__Output, FederationRelationshipMsg>(
      log,
      'Get',
      async (req) => msg(await d.relationships.get(required(req.trust_domain))),
      d.observe,
    ),
    List: unary<unknown, ListFederationRelationshipsResponse>(log, 'List', async () => ({ relationships: (await d.relationships.list()).map(msg) }), d.observe),
    Refresh: unary<FederationRelationshipRequest__Output, FederationRelationshipMsg>(
      log,
      'Refresh',
      async (req) => {
        const td = required(req.trust_domain)
        await d.refresher.refresh(td)
        return msg(await d.relationships.get(td))
      },
      d.observe,
    ),
  }
}

/** Domain relationship (+ refresher status) → wire message. */
export function relationshipToMsg(r: FederationRelationship, s: RefreshStatus | undefined): FederationRelationshipMsg {
  return {
    trust_domain: r.trustDomain,
    bundle_endpoint_url: r.bundleEndpointUrl,
    profile: r.profile,
    endpoint_spiffe_id: r.endpointSpiffeId,
    web_ca_file: r.webCaFile,
    refresh_hint_seconds: r.refreshHintSeconds,
    created_at: r.createdAt,
    updated_at: r.updatedAt,
    last_attempt_at: s?.lastAttemptAt ?? 0,
    last_success_at: s?.lastSuccessAt ?? 0,
    next_attempt_at: s?.nextAttemptAt ?? 0,
    last_error: s?.lastError ?? '',
    last_error_code: s?.lastErrorCode ?? '',
    consecutive_failures: s?.consecutiveFailures ?? 0,
    last_sequence: s?.lastSequence ?? -1,
  }
}

function msgToInput(m: FederationRelationship__Output): RelationshipInput {
  return {
    trustDomain: m.trust_domain,
    bundleEndpointUrl: m.bundle_endpoint_url,
    profile: m.profile as FederationProfile,
    endpointSpiffeId: m.endpoint_spiffe_id,
    webCaFile: m.web_ca_file,
    refreshHintSeconds: m.refresh_hint_seconds,
  }
}

async function storeBootstrap(d: FederationAdminDeps, td: string, m: FederationRelationship__Output): Promise<void> {
  if (!m.bootstrap_bundle) return
  const format = m.bootstrap_format || 'spiffe'
  if (format !== 'spiffe' && format !== 'pem') throw invalid('bootstrap_format must be "spiffe" or "pem"')
  await d.federated.set(td, format, m.bootstrap_bundle)
}

function isSet(m: FederationRelationship__Output, f: MutableField): boolean {
  const v = m[f]
  return typeof v === 'number' ? v !== 0 : v !== ''
}

function required(td: string): string {
  if (!td) throw invalid('trust_domain is required')
  return td
}

function invalid(message: string): IdentityError {
  return new IdentityError('ERR_INVALID_ARGUMENT', message)
}
