/** The JSON form of a revocation request, shared by the admin socket and the HTTPS route for revocation admins. */
import { IdentityError } from '../../errors/identity-error.js'
import type { RevocationRequest } from '../contract.js'

/** A revocation request from JSON (admin socket or HTTPS): `{kind, value, reason?, not_after?}` (not_after: epoch seconds or RFC 3339). */
export function revocationRequestFromWire(body: unknown): RevocationRequest {
  if (body === null || typeof body !== 'object' || Array.isArray(body))
    throw new IdentityError('ERR_REVOCATION_INVALID', 'invalid revocation: body must be an object')
  const b = body as Record<string, unknown>
  for (const k of Object.keys(b))
    if (!['kind', 'value', 'reason', 'not_after'].includes(k))
      throw new IdentityError('ERR_REVOCATION_INVALID', `invalid revocation: unknown field "${k.slice(0, 40)}"`)
  let notAfter: number | undefined
  if (typeof b.not_after === 'number') notAfter = b.not_after
  else if (typeof b.not_after === 'string') {
    const ms = Date.parse(b.not_after)
    if (Number.isNaN(ms)) throw new IdentityError('ERR_REVOCATION_INVALID', 'invalid revocation: not_after is not a time')
    notAfter = Math.floor(ms / 1000)
  } else if (b.not_after !== undefined) throw new IdentityError('ERR_REVOCATION_INVALID', 'invalid revocation: not_after is not a time')
  return {
    kind: b.kind as RevocationRequest['kind'],
    value: b.value as string,
    ...(b.reason !== undefined ? { reason: b.reason as string } : {}),
    ...(notAfter !== undefined ? { notAfter } : {}),
  }
}
