import { describe, expect, it } from 'vitest'
import { ERROR_CODES, GrpcStatus, IdentityError, isIdentityError } from '../../src/errors/index.js'

describe('IdentityError', () => {
  it('carries a stable code, its gRPC status and a cause', () => {
    const cause = new Error('inner')
    const e = new IdentityError('ERR_ENTRY_NOT_FOUND', 'entry not found', { cause, details: { id: 'x' } })
    expect(e.code).toBe('ERR_ENTRY_NOT_FOUND')
    expect(e.grpcStatus).toBe(GrpcStatus.NOT_FOUND)
    expect(e.cause).toBe(cause)
    expect(e.details).toEqual({ id: 'x' })
    expect(isIdentityError(e, 'ERR_ENTRY_NOT_FOUND')).toBe(true)
    expect(isIdentityError(e, 'ERR_INTERNAL')).toBe(false)
    expect(isIdentityError(new Error('x'))).toBe(false)
  })

  it('maps every code to a real gRPC status', () => {
    const statuses = new Set<number>(Object.values(GrpcStatus))
    for (const [code, status] of Object.entries(ERROR_CODES)) {
      expect(code).toMatch(/^ERR_[A-Z0-9_]+$/)
      expect(statuses.has(status)).toBe(true)
    }
  })
})
