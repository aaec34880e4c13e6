import type { UntypedServiceImplementation } from '@grpc/grpc-js'
import { unary, type Observe } from '../../common/grpc/handlers.js'
import type { Logger } from '../../common/log/logger.js'
import { IdentityError } from '../../errors/identity-error.js'
import type { DeleteRevocationRequest__Output } from '../../gen/warrant/admin/v1/DeleteRevocationRequest.js'
import type { ListRevocationsRequest__Output } from '../../gen/warrant/admin/v1/ListRevocationsRequest.js'
import type { ListRevocationsResponse } from '../../gen/warrant/admin/v1/ListRevocationsResponse.js'
import type { RevokeRequest__Output } from '../../gen/warrant/admin/v1/RevokeRequest.js'
import type { Revocation as RevocationMsg } from '../../gen/warrant/types/v1/Revocation.js'
import type { RevocationService } from '../revocation/revocation-service.js'
import { revocationToMsg } from './convert.js'

export interface RevocationsAdminDeps {
  revocations: Pick<RevocationService, 'revoke' | 'list' | 'delete'>
  log: Logger
  observe?: Observe
}

/** An int64 field (a decimal string on the wire) as a safe integer, or ERR_REVOCATION_INVALID. */
function int64(name: string, v: string | number | undefined): number {
  const n = Number(v ?? 0)
  if (!Number.isSafeInteger(n) || n < 0) throw new IdentityError('ERR_REVOCATION_INVALID', `${name} must be a non-negative integer`)
  return n
}

/** `warrant.admin.v1.Revocations` on the admin socket: decode, call the revocation service, encode. */
export function revocationsAdminService(d: RevocationsAdminDeps): UntypedServiceImplementation {
  return {
    Revoke: unary<RevokeRequest__Output, RevocationMsg>(
      d.log,
      'Revocations/Revoke',
      async (req) => {
        const notAfter = int64('not_after', req.not_after)
        const out = await d.revocations.revoke({ kind: req.kind, value: req.value, reason: req.reason, ...(notAfter > 0 ? { notAfter } : {}) })
        return revocationToMsg(out.revocation)
      },
      d.observe,
    ),
    List: unary<ListRevocationsRequest__Output, ListRevocationsResponse>(
      d.log,
      'Revocations/List',
      async (req) => ({ revocations: (await d.revocations.list({ includeExpired: !!req.include_expired })).map(revocationToMsg) }),
      d.observe,
    ),
    Delete: unary<DeleteRevocationRequest__Output, RevocationMsg>(
      d.log,
      'Revocations/Delete',
      async (req) => revocationToMsg(await d.revocations.delete(int64('id', req.id))),
      d.observe,
    ),
  }
}
