import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import { unary, type Observe } from '../../common/grpc/handlers.js'
import { F, type Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { BoundsInfo } from '../../gen/warrant/admin/v1/BoundsInfo.js'
import type { GetBoundsRequest__Output } from '../../gen/warrant/admin/v1/GetBoundsRequest.js'
import type { ListBoundsResponse } from '../../gen/warrant/admin/v1/ListBoundsResponse.js'
import type { NamespaceBounds, NamespaceBounds__Output } from '../../gen/warrant/admin/v1/NamespaceBounds.js'
import type { SetBoundsRequest__Output } from '../../gen/warrant/admin/v1/SetBoundsRequest.js'
import type { SignedBoundsDocument } from '../../gen/warrant/admin/v1/SignedBoundsDocument.js'
import { parseBounds, type Bounds } from '../../spiffe/bounds/bounds.js'
import type { BoundsService } from './bounds-service.js'

export interface BoundsAdminDeps {
  bounds: BoundsService
  log: Logger
  /** For request metrics, as the other admin services. */
  observe?: Observe
}

const int = (v: string | undefined): number | string | undefined => {
  if (v === undefined) return undefined
  const n = Number(v)
  return Number.isSafeInteger(n) ? n : v // an unsafe value fails parseBounds with its path
}

/** Proto → wire JSON (then parseBounds checks it like a config table). */
export function msgToBounds(m: NamespaceBounds__Output | null | undefined): Bounds {
  if (!m) return {}
  const raw: Record<string, unknown> = {
    x509_svid_ttl: int(m.x509_svid_ttl),
    jwt_svid_ttl: int(m.jwt_svid_ttl),
    max_instances: int(m.max_instances),
    jwt_audiences: m.jwt_audiences?.values,
    dns_suffixes: m.dns_suffixes?.values,
    federates_with: m.federates_with?.values,
    require_node_selectors: m.require_node_selectors?.values,
    scopes: m.scopes?.values,
    resources: m.resources?.values,
    max_token_ttl: int(m.max_token_ttl),
    max_renewals: int(m.max_renewals),
    max_delegation_depth: int(m.max_delegation_depth),
    may_delegate_to: m.may_delegate_to?.values,
    allow_bearer: m.allow_bearer,
  }
  return parseBounds(raw)
}

export function boundsToMsg(b: Bounds): NamespaceBounds {
  const m: NamespaceBounds = {}
  if (b.x509SvidTtlSeconds !== undefined) m.x509_svid_ttl = b.x509SvidTtlSeconds
  if (b.jwtSvidTtlSeconds !== undefined) m.jwt_svid_ttl = b.jwtSvidTtlSeconds
  if (b.maxInstances !== undefined) m.max_instances = b.maxInstances
  if (b.jwtAudiences !== undefined) m.jwt_audiences = { values: [...b.jwtAudiences] }
  if (b.dnsSuffixes !== undefined) m.dns_suffixes = { values: [...b.dnsSuffixes] }
  if (b.federatesWith !== undefined) m.federates_with = { values: [...b.federatesWith] }
  if (b.requireNodeSelectors !== undefined) m.require_node_selectors = { values: [...b.requireNodeSelectors] }
  if (b.scopes !== undefined) m.scopes = { values: [...b.scopes] }
  if (b.resources !== undefined) m.resources = { values: [...b.resources] }
  if (b.maxTokenTtlSeconds !== undefined) m.max_token_ttl = b.maxTokenTtlSeconds
  if (b.maxRenewals !== undefined) m.max_renewals = b.maxRenewals
  if (b.maxDelegationDepth !== undefined) m.max_delegation_depth = b.maxDelegationDepth
  if (b.mayDelegateTo !== undefined) m.may_delegate_to = { values: [...b.mayDelegateTo] }
  if (b.allowBearer !== undefined) m.allow_bearer = b.allowBearer
  return m
}

function info(svc: BoundsService, prefix: string): BoundsInfo {
  const declared = svc.get(prefix)
  const eff = svc.effectiveForPrefix(prefix)
  return {
    prefix: declared?.prefix ?? prefix,
    ...(declared ? { declared: boundsToMsg(declared.bounds) } : {}),
    ...(eff ? { effective: boundsToMsg(eff.bounds) } : {}),
    effective_from: eff ? [...eff.prefixes] : [],
    source: declared?.source ?? '',
    sequence: svc.sequence,
  }
}

function requirePrefix(p: string | undefined): string {
  if (!p) throw new IdentityError('ERR_INVALID_ARGUMENT', 'prefix is required')
  return p
}

/** The `warrant.admin.v1.Bounds` service (register on the admin Unix socket). */
export function boundsAdminService(d: BoundsAdminDeps): UntypedServiceImplementation {
  const log = d.log.child({ [F.SUBSYSTEM]: 'admin_api' })
  const svc = d.bounds
  return {
    Set: unary<SetBoundsRequest__Output, BoundsInfo>(
      log,
      'Bounds/Set',
      async (req) => {
        const prefix = requirePrefix(req.prefix)
        let bounds: Bounds
        try {
          bounds = msgToBounds(req.bounds)
        } catch (err) {
          // Report paths under the prefix, as the config does.
          if (err instanceof IdentityError && err.code === 'ERR_BOUNDS_INVALID') {
            const issues = ((err.details?.issues as { path: string; message: string }[]) ?? []).map((i) => ({
              path: `${prefix}.${i.path}`,
              message: i.message,
            }))
            throw new IdentityError('ERR_BOUNDS_INVALID', `invalid bounds: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`, { details: { issues } })
          }
          throw err
        }
        const r = await svc.set(prefix, bounds)
        return info(svc, r.prefix)
      },
      d.observe,
    ),
    Get: unary<GetBoundsRequest__Output, BoundsInfo>(log, 'Bounds/Get', async (req) => info(svc, requirePrefix(req.prefix)), d.observe),
    List: unary<unknown, ListBoundsResponse>(
      log,
      'Bounds/List',
      async () => ({
        bounds: svc.list().map((b) => info(svc, b.prefix)),
        sequence: svc.sequence,
      }),
      d.observe,
    ),
    Delete: unary<GetBoundsRequest__Output, BoundsInfo>(
      log,
      'Bounds/Delete',
      async (req) => {
        const r = await svc.delete(requirePrefix(req.prefix))
        return { prefix: r.prefix, declared: boundsToMsg(r.bounds), effective_from: [], source: r.source, sequence: svc.sequence }
      },
      d.observe,
    ),
    GetSigned: unary<unknown, SignedBoundsDocument>(
      log,
      'Bounds/GetSigned',
      async () => {
        const document = await svc.signedDocument()
        const header = JSON.parse(Buffer.from(document.split('.')[0]!, 'base64url').toString('utf8')) as { kid: string }
        const payload = JSON.parse(Buffer.from(document.split('.')[1]!, 'base64url').toString('utf8')) as { trust_domain: string; sequence: number }
        return { document, trust_domain: payload.trust_domain, sequence: payload.sequence, kid: header.kid }
      },
      d.observe,
    ),
  }
}
