import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import { IdentityError } from '../../errors/identity-error.js'
import { OK_ITEM_STATUS, toItemStatus } from '../../common/grpc/errors.js'
import { unary, type CallContext, type Observe } from '../../common/grpc/handlers.js'
import { F, type Logger } from '../../common/log/logger.js'
import type { BatchCreateEntriesRequest__Output } from '../../gen/warrant/admin/v1/BatchCreateEntriesRequest.js'
import type { BatchDeleteEntriesRequest__Output } from '../../gen/warrant/admin/v1/BatchDeleteEntriesRequest.js'
import type { BatchEntriesResponse } from '../../gen/warrant/admin/v1/BatchEntriesResponse.js'
import type { BatchUpdateEntriesRequest__Output } from '../../gen/warrant/admin/v1/BatchUpdateEntriesRequest.js'
import type { CountResponse } from '../../gen/warrant/admin/v1/CountResponse.js'
import type { CreateJoinTokenRequest__Output } from '../../gen/warrant/admin/v1/CreateJoinTokenRequest.js'
import type { CreateJoinTokenResponse } from '../../gen/warrant/admin/v1/CreateJoinTokenResponse.js'
import type { GetAgentRequest__Output } from '../../gen/warrant/admin/v1/GetAgentRequest.js'
import type { GetBundleRequest__Output } from '../../gen/warrant/admin/v1/GetBundleRequest.js'
import type { GetEntryRequest__Output } from '../../gen/warrant/admin/v1/GetEntryRequest.js'
import type { ListAgentsRequest__Output } from '../../gen/warrant/admin/v1/ListAgentsRequest.js'
import type { ListAgentsResponse } from '../../gen/warrant/admin/v1/ListAgentsResponse.js'
import type { ListEntriesRequest__Output } from '../../gen/warrant/admin/v1/ListEntriesRequest.js'
import type { ListEntriesResponse } from '../../gen/warrant/admin/v1/ListEntriesResponse.js'
import type { ListFederatedBundlesResponse } from '../../gen/warrant/admin/v1/ListFederatedBundlesResponse.js'
import type { SetBundleRequest__Output } from '../../gen/warrant/admin/v1/SetBundleRequest.js'
import type { AttestedNode as AttestedNodeMsg } from '../../gen/warrant/types/v1/AttestedNode.js'
import type { Bundle } from '../../gen/warrant/types/v1/Bundle.js'
import type { Entry } from '../../gen/warrant/types/v1/Entry.js'
import type { Entry__Output } from '../../gen/warrant/types/v1/Entry.js'
import type { NodeAttestationService } from '../attestation/service.js'
import type { FederatedBundles } from '../bundle/federated.js'
import type { CaManager } from '../ca/manager.js'
import type { DataStore, EntryFilter, EntryPatch, SelectorMatch } from '../datastore/types.js'
import type { Metrics } from '../metrics.js'
import type { RegistrationService } from '../registration/service.js'
import type { InstanceRecord, InstanceService } from '../instances/instance-service.js'
import type { Instance } from '../../gen/warrant/admin/v1/Instance.js'
import type { ListInstancesRequest__Output } from '../../gen/warrant/admin/v1/ListInstancesRequest.js'
import type { ListInstancesResponse } from '../../gen/warrant/admin/v1/ListInstancesResponse.js'
import type { GetInstanceRequest__Output } from '../../gen/warrant/admin/v1/GetInstanceRequest.js'
import { checkSelector } from '../registration/selectors.js'
import { bundleToMsg, entryToMsg, msgToNewEntry, nodeToMsg } from './convert.js'

export interface AdminDeps {
  ds: DataStore
  registration: RegistrationService
  attestation: NodeAttestationService
  ca: CaManager
  federated: FederatedBundles
  instances: InstanceService
  log: Logger
  metrics: Metrics
}

const MUTABLE: Record<string, keyof EntryPatch> = {
  spiffe_id: 'spiffeId',
  parent_id: 'parentId',
  selectors: 'selectors',
  x509_svid_ttl: 'x509SvidTtl',
  jwt_svid_ttl: 'jwtSvidTtl',
  dns_names: 'dnsNames',
  federates_with: 'federatesWith',
  hint: 'hint',
  admin: 'admin',
  downstream: 'downstream',
  expires_at: 'expiresAt',
}

const MAX_PAGE = 1000

function filterFrom(req: ListEntriesRequest__Output): EntryFilter {
  const f: EntryFilter = {}
  if (req.spiffe_id) f.spiffeId = req.spiffe_id
  if (req.parent_id) f.parentId = req.parent_id
  if (req.federates_with) f.federatesWith = req.federates_with
  if (req.hint) f.hint = req.hint
  if (req.selectors && req.selectors.length > 0) {
    const match = (req.selector_match || 'superset') as SelectorMatch
    if (!['exact', 'subset', 'superset', 'any'].includes(match))
      throw new IdentityError('ERR_INVALID_ARGUMENT', 'selector_match must be exact, subset, superset or any')
    f.selectors = { set: req.selectors.map((s) => checkSelector({ type: s.type, value: s.value })), match }
  }
  return f
}

function pageSize(n: number | undefined): number {
  const v = n ?? 0
  if (!Number.isInteger(v) || v < 0) throw new IdentityError('ERR_INVALID_ARGUMENT', 'page_size must be a non-negative integer')
  return Math.min(v, MAX_PAGE)
}

/** The admin services (Entries, Agents, Bundles). Served only on the local Unix socket. */
export function adminServices(d: AdminDeps): {
  entries: UntypedServiceImplementation
  agents: UntypedServiceImplementation
  bundles: UntypedServiceImplementation
  instances: UntypedServiceImplementation
} {
  const log = d.log.child({ [F.SUBSYSTEM]: 'admin_api' })
  const observe: Observe = (method, code) => d.metrics.requests.inc({ method: `Admin/${method}`, code: String(code) })

  // Per-item statuses go through the same boundary as whole calls (one mapping, one log line each).
  const results = (rs: Awaited<ReturnType<RegistrationService['createEntries']>>, ctx: CallContext): BatchEntriesResponse => ({
    results: rs.map((r) =>
      r.ok ? { status: OK_ITEM_STATUS, entry: entryToMsg(r.value) } : { status: toItemStatus(r.error, ctx.log, {}, 'Entry not written') },
    ),
  })

  const entries: UntypedServiceImplementation = {
    BatchCreate: unary<BatchCreateEntriesRequest__Output, BatchEntriesResponse>(
      log,
      'Entries/BatchCreate',
      async (req, ctx) => {
        const items = req.entries ?? []
        const parsed = items.map((m) => {
          try {
            return msgToNewEntry(m)
          } catch (e) {
            return e as IdentityError
          }
        })
        const good = parsed.filter((p): p is Exclude<typeof p, IdentityError> => !(p instanceof IdentityError))
        const created = good.length > 0 ? await d.registration.createEntries(good) : []
        let i = 0
        return results(
          parsed.map((p) => (p instanceof IdentityError ? { ok: false as const, error: p } : created[i++]!)),
          ctx,
        )
      },
      observe,
    ),

    BatchUpdate: unary<BatchUpdateEntriesRequest__Output, BatchEntriesResponse>(
      log,
      'Entries/BatchUpdate',
      async (req, ctx) => {
        const mask = req.mask && req.mask.length > 0 ? req.mask : Object.keys(MUTABLE)
        for (const m of mask) if (!MUTABLE[m]) throw new IdentityError('ERR_INVALID_ARGUMENT', `unknown field in mask: ${m.slice(0, 64)}`)
        const patches = (req.entries ?? []).map((m: Entry__Output) => {
          if (!m.id) throw new IdentityError('ERR_INVALID_ARGUMENT', 'every entry to update needs its id')
          const full = msgToPatch(m)
          const patch: EntryPatch & { id: string } = { id: m.id }
          for (const k of mask) (patch as Record<string, unknown>)[MUTABLE[k]!] = full[MUTABLE[k]!]
          return patch
        })
        return results(await d.registration.updateEntries(patches), ctx)
      },
      observe,
    ),

    BatchDelete: unary<BatchDeleteEntriesRequest__Output, BatchEntriesResponse>(
      log,
      'Entries/BatchDelete',
      async (req, ctx) => {
        return results(await d.registration.deleteEntries(req.ids ?? []), ctx)
      },
      observe,
    ),

    Get: unary<GetEntryRequest__Output, Entry>(
      log,
      'Entries/Get',
      async (req) => {
        if (!req.id) throw new IdentityError('ERR_INVALID_ARGUMENT', 'id is required')
        return entryToMsg(await d.registration.get(req.id))
      },
      observe,
    ),

    List: unary<ListEntriesRequest__Output, ListEntriesResponse>(
      log,
      'Entries/List',
      async (req) => {
        const size = pageSize(req.page_size)
        const r = await d.registration.list(filterFrom(req), { pageSize: size, ...(req.page_token ? { pageToken: req.page_token } : {}) })
        return { entries: r.entries.map(entryToMsg), next_page_token: r.nextPageToken }
      },
      observe,
    ),

    Count: unary<ListEntriesRequest__Output, CountResponse>(
      log,
      'Entries/Count',
      async (req) => {
        return { count: String(await d.registration.count(filterFrom(req))) }
      },
      observe,
    ),
  }

  const agents: UntypedServiceImplementation = {
    List: unary<ListAgentsRequest__Output, ListAgentsResponse>(
      log,
      'Agents/List',
      async (req) => {
        const filter: Parameters<DataStore['nodes']['list']>[0] = {}
        if (req.attestor) filter.attestor = req.attestor
        if (req.banned === 'true') filter.banned = true
        else if (req.banned === 'false') filter.banned = false
        else if (req.banned) throw new IdentityError('ERR_INVALID_ARGUMENT', 'banned must be "true", "false" or empty')
        const r = await d.ds.nodes.list(filter, { pageSize: pageSize(req.page_size), ...(req.page_token ? { pageToken: req.page_token } : {}) })
        return { agents: r.nodes.map(nodeToMsg), next_page_token: r.nextPageToken }
      },
      observe,
    ),
    Get: unary<GetAgentRequest__Output, AttestedNodeMsg>(log, 'Agents/Get', async (req) => nodeToMsg(await d.ds.nodes.get(requireAgent(req))), observe),
    Evict: unary<GetAgentRequest__Output, AttestedNodeMsg>(
      log,
      'Agents/Evict',
      async (req) => nodeToMsg(await d.attestation.evict(requireAgent(req))),
      observe,
    ),
    Ban: unary<GetAgentRequest__Output, AttestedNodeMsg>(log, 'Agents/Ban', async (req) => nodeToMsg(await d.attestation.ban(requireAgent(req))), observe),
    CreateJoinToken: unary<CreateJoinTokenRequest__Output, CreateJoinTokenResponse>(
      log,
      'Agents/CreateJoinToken',
      async (req) => {
        const t = await d.attestation.createJoinToken({ ttlSeconds: req.ttl ?? 0, ...(req.spiffe_id ? { spiffeId: req.spiffe_id } : {}) })
        return { token: t.token, expires_at: String(t.expiresAt) }
      },
      observe,
    ),
  }

  const bundles: UntypedServiceImplementation = {
    Get: unary<GetBundleRequest__Output, Bundle>(
      log,
      'Bundles/Get',
      async (req) => {
        const local = d.ca.bundle()
        if (!req.trust_domain || req.trust_domain === local.trustDomain.name) {
          return { trust_domain: local.trustDomain.name, document: local.marshal(), sequence: String(local.sequenceNumber ?? 0) }
        }
        return bundleToMsg(await d.federated.get(req.trust_domain))
      },
      observe,
    ),
    ListFederated: unary<unknown, ListFederatedBundlesResponse>(
      log,
      'Bundles/ListFederated',
      async () => ({ bundles: (await d.federated.list()).map(bundleToMsg) }),
      observe,
    ),
    Set: unary<SetBundleRequest__Output, Bundle>(
      log,
      'Bundles/Set',
      async (req) => {
        const format = req.format || 'spiffe'
        if (format !== 'spiffe' && format !== 'pem') throw new IdentityError('ERR_INVALID_ARGUMENT', 'format must be "spiffe" or "pem"')
        if (!req.trust_domain) throw new IdentityError('ERR_INVALID_ARGUMENT', 'trust_domain is required')
        return bundleToMsg(await d.federated.set(req.trust_domain, format, req.data ?? ''))
      },
      observe,
    ),
    Delete: unary<GetBundleRequest__Output, Record<string, never>>(
      log,
      'Bundles/Delete',
      async (req) => {
        if (!req.trust_domain) throw new IdentityError('ERR_INVALID_ARGUMENT', 'trust_domain is required')
        await d.federated.delete(req.trust_domain)
        return {}
      },
      observe,
    ),
  }
  const instanceMsg = (r: InstanceRecord): Instance => ({
    instance_id: r.instanceId,
    spiffe_id: r.spiffeId,
    entry_id: r.entryId,
    agent_id: r.agentId,
    pid: r.pid,
    start_time: r.startTime,
    created_at: String(r.createdAt),
    ended_at: String(r.endedAt ?? 0),
  })
  const instances: UntypedServiceImplementation = {
    List: unary<ListInstancesRequest__Output, ListInstancesResponse>(
      log,
      'Instances/List',
      async (req) => {
        const list = await d.instances.list({
          ...(req.agent_id ? { agentId: req.agent_id } : {}),
          ...(req.entry_id ? { entryId: req.entry_id } : {}),
          liveOnly: !!req.live_only,
        })
        return { instances: list.map(instanceMsg) }
      },
      observe,
    ),
    Get: unary<GetInstanceRequest__Output, Instance>(
      log,
      'Instances/Get',
      async (req) => {
        if (!req.instance_id) throw new IdentityError('ERR_INVALID_ARGUMENT', 'instance_id is required')
        return instanceMsg(await d.instances.get(req.instance_id))
      },
      observe,
    ),
  }
  return { entries, agents, bundles, instances }
}

function requireAgent(req: GetAgentRequest__Output): string {
  if (!req.agent_id) throw new IdentityError('ERR_INVALID_ARGUMENT', 'agent_id is required')
  return req.agent_id
}

function msgToPatch(m: Entry__Output): EntryPatch {
  const n = msgToNewEntry({ ...m, spiffe_id: m.spiffe_id || 'x', parent_id: m.parent_id || 'x' })
  return { ...n, spiffeId: m.spiffe_id, parentId: m.parent_id }
}
