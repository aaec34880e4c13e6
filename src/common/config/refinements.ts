import { z } from 'zod'
import { SpiffeId } from '../../spiffe/spiffe-id.js'
import { TrustDomain } from '../../spiffe/trust-domain.js'

export const trustDomain = () =>
  z.string().transform((v, ctx) => {
    try {
      return TrustDomain.fromString(v)
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message })
      return z.NEVER
    }
  })

export const spiffeId = () =>
  z.string().transform((v, ctx) => {
    try {
      return SpiffeId.fromString(v)
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message })
      return z.NEVER
    }
  })

/** `host:port` or `:port`. */
export const hostPort = () => z.string().regex(/^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]*):\d{1,5}$/, 'must be host:port')

export const logLevel = () => z.enum(['debug', 'info', 'warn', 'error'])
