import { Metadata, status as Status } from '@grpc/grpc-js'
import { describe, expect, it } from 'vitest'
import { GrpcStatusError, OK_ITEM_STATUS, toGrpcError, toItemStatus } from '../../../src/common/grpc/errors.js'
import { ERROR_CODES, type ErrorCode } from '../../../src/errors/codes.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { captureLogger } from '../../helpers/capture-logger.js'

const trailer = (e: ReturnType<typeof toGrpcError>) => e.metadata.get('x-error-code')

describe('toGrpcError', () => {
  it.each<{ code: ErrorCode; status: number }>([
    { code: 'ERR_ENTRY_INVALID', status: Status.INVALID_ARGUMENT },
    { code: 'ERR_CONFIG_INVALID', status: Status.INVALID_ARGUMENT },
    { code: 'ERR_CSR_INVALID', status: Status.INVALID_ARGUMENT },
    { code: 'ERR_ENTRY_NOT_FOUND', status: Status.NOT_FOUND },
    { code: 'ERR_ALREADY_EXISTS', status: Status.ALREADY_EXISTS },
    { code: 'ERR_NODE_ATTESTATION_FAILED', status: Status.PERMISSION_DENIED },
    { code: 'ERR_JOIN_TOKEN_INVALID', status: Status.PERMISSION_DENIED },
    { code: 'ERR_AGENT_BANNED', status: Status.PERMISSION_DENIED },
    { code: 'ERR_ID_NOT_AUTHORIZED', status: Status.PERMISSION_DENIED },
    { code: 'ERR_UNAUTHENTICATED', status: Status.UNAUTHENTICATED },
    { code: 'ERR_UNAVAILABLE', status: Status.UNAVAILABLE },
    { code: 'ERR_INTERNAL', status: Status.INTERNAL },
  ])('$code → status $status', ({ code, status }) => {
    expect(ERROR_CODES[code]).toBe(status)
    const e = toGrpcError(new IdentityError(code, 'reason'), captureLogger())
    expect(e.code).toBe(status)
    expect(trailer(e)).toEqual([code])
  })

  it('maps every registered code to its status and sets the trailer', () => {
    for (const [code, status] of Object.entries(ERROR_CODES) as [ErrorCode, number][]) {
      const e = toGrpcError(new IdentityError(code, 'x'), captureLogger())
      expect(e.code, code).toBe(status)
      expect(trailer(e), code).toEqual([code])
    }
  })

  it('passes the message through for ordinary errors and logs it once', () => {
    const log = captureLogger()
    const e = toGrpcError(new IdentityError('ERR_ENTRY_INVALID', 'invalid entry: hint: too long', { details: { issues: [{ path: 'hint' }] } }), log, {
      method: 'BatchCreateEntry',
    })
    expect(e.details).toBe('invalid entry: hint: too long')
    expect(e.message).toBe('invalid entry: hint: too long')
    expect(log.lines).toHaveLength(1)
    expect(log.lines[0]).toMatchObject({ level: 'info', msg: 'Request failed', fields: { method: 'BatchCreateEntry', error_code: 'ERR_ENTRY_INVALID' } })
    expect(log.lines[0]!.fields.err).toMatchObject({ message: 'invalid entry: hint: too long', details: { issues: [{ path: 'hint' }] } })
  })

  it.each<{ code: ErrorCode; generic: string }>([
    { code: 'ERR_NODE_ATTESTATION_FAILED', generic: 'attestation failed' },
    { code: 'ERR_JOIN_TOKEN_INVALID', generic: 'attestation failed' },
    { code: 'ERR_ATTESTATION_PAYLOAD_INVALID', generic: 'attestation failed' },
    { code: 'ERR_TPM_VERIFICATION_FAILED', generic: 'attestation failed' },
    { code: 'ERR_TPM_PAYLOAD_INVALID', generic: 'attestation failed' },
    { code: 'ERR_AGENT_BANNED', generic: 'permission denied' },
    { code: 'ERR_AGENT_EVICTED', generic: 'permission denied' },
    { code: 'ERR_ID_NOT_AUTHORIZED', generic: 'permission denied' },
    { code: 'ERR_X509_SVID_UNTRUSTED', generic: 'permission denied' },
    { code: 'ERR_UNAUTHENTICATED', generic: 'unauthenticated' },
    { code: 'ERR_NO_IDENTITY_ISSUED', generic: 'no identity issued' },
    { code: 'ERR_WORKLOAD_ATTESTATION_FAILED', generic: 'workload attestation failed' },
  ])('hides the reason of $code behind "$generic" and logs the real one', ({ code, generic }) => {
    const log = captureLogger()
    const secret = `nodeattestor(tpm): PCR 7 mismatch for ek ${code}`
    const e = toGrpcError(new IdentityError(code, secret, { cause: new Error('inner cause') }), log)
    expect(e.details).toBe(generic)
    expect(e.message).toBe(generic)
    expect(JSON.stringify([e.details, e.message, e.metadata.getMap()])).not.toContain('PCR 7')
    expect(trailer(e)).toEqual([code])
    expect(log.lines).toHaveLength(1)
    expect(log.lines[0]).toMatchObject({
      level: 'warn',
      msg: 'Request denied',
      fields: { error_code: code, err: { message: secret, cause: 'Error: inner cause' } },
    })
  })

  it.each([
    ['a plain Error', new Error('db exploded at /var/lib/x')],
    ['a TypeError', new TypeError('x is not a function')],
    ['a string', 'oops'],
    ['undefined', undefined],
  ])('turns %s into INTERNAL "internal error" and logs it at error', (_t, err) => {
    const log = captureLogger()
    const e = toGrpcError(err, log, { method: 'M' })
    expect(e).toMatchObject({ code: Status.INTERNAL, details: 'internal error', message: 'internal error' })
    expect(trailer(e)).toEqual(['ERR_INTERNAL'])
    expect(log.lines).toHaveLength(1)
    expect(log.lines[0]).toMatchObject({ level: 'error', msg: 'Internal error', fields: { method: 'M' } })
    if (err instanceof Error) expect(log.lines[0]!.fields.err).toMatchObject({ message: err.message, stack: expect.any(String) })
  })

  it('logs an IdentityError with an INTERNAL status at error and keeps its message', () => {
    const log = captureLogger()
    const e = toGrpcError(new IdentityError('ERR_INTERNAL', 'internal error'), log)
    expect(e.code).toBe(Status.INTERNAL)
    expect(log.lines[0]?.level).toBe('error')
  })

  it('answers INTERNAL IdentityErrors with "internal error" (their message is for the operator) and logs it', () => {
    const log = captureLogger()
    const e = toGrpcError(new IdentityError('ERR_DATASTORE', 'datastore: insert failed at /var/lib/warrant/x.sqlite3'), log)
    expect(e).toMatchObject({ code: Status.INTERNAL, details: 'internal error', message: 'internal error' })
    expect(trailer(e)).toEqual(['ERR_DATASTORE'])
    expect(log.lines[0]!.fields.err).toMatchObject({ message: 'datastore: insert failed at /var/lib/warrant/x.sqlite3' })
  })

  it('hides an UNAVAILABLE relayed from another gRPC service behind "service unavailable"; a local one keeps its message', () => {
    const log = captureLogger()
    const upstream = Object.assign(new Error('14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 10.1.2.3:8081'), {
      code: Status.UNAVAILABLE,
      details: 'No connection established. Last error: Error: connect ECONNREFUSED 10.1.2.3:8081',
      metadata: new Metadata(),
    })
    const relayed = new IdentityError('ERR_UNAVAILABLE', `NewJWTSVID: ${upstream.details}`, { cause: upstream })
    const e = toGrpcError(new IdentityError('ERR_UNAVAILABLE', 'cannot mint JWT-SVID', { cause: relayed }), log)
    expect(e).toMatchObject({ code: Status.UNAVAILABLE, details: 'service unavailable', message: 'service unavailable' })
    expect(trailer(e)).toEqual(['ERR_UNAVAILABLE'])
    expect(JSON.stringify(log.lines)).toContain('ECONNREFUSED')
    expect(toGrpcError(relayed, captureLogger()).details).toBe('service unavailable')
    expect(toGrpcError(new IdentityError('ERR_UNAVAILABLE', 'agent not ready', { cause: new Error('x') }), captureLogger()).details).toBe('agent not ready')
  })

  it('passes a GrpcStatusError through unchanged', () => {
    const log = captureLogger()
    const e = toGrpcError(new GrpcStatusError(Status.INVALID_ARGUMENT, 'security header missing'), log)
    expect(e).toMatchObject({ code: Status.INVALID_ARGUMENT, details: 'security header missing' })
    expect(trailer(e)).toEqual([])
    expect(log.lines).toHaveLength(1)
    expect(log.lines[0]).toMatchObject({ level: 'info', fields: { grpc_code: Status.INVALID_ARGUMENT } })
  })
})

describe('toItemStatus (per-item statuses of batch calls)', () => {
  const errors: [string, unknown][] = [
    ...(Object.keys(ERROR_CODES) as ErrorCode[]).map((code): [string, unknown] => [code, new IdentityError(code, `secret reason of ${code} at /var/lib/x`)]),
    ['a plain Error', new Error('db exploded at /var/lib/x')],
    ['a GrpcStatusError', new GrpcStatusError(Status.INVALID_ARGUMENT, 'security header missing')],
  ]

  it.each(errors)('%s: the same code, error code and message as the whole-call boundary', (_t, err) => {
    const whole = toGrpcError(err, captureLogger())
    const item = toItemStatus(err, captureLogger())
    expect(item).toEqual({ code: whole.code, error_code: trailer(whole)[0] ?? '', message: whole.details })
  })

  it('hides an authorization failure of one item behind "permission denied" and logs the reason once, under the given event', () => {
    const log = captureLogger()
    const s = toItemStatus(
      new IdentityError('ERR_ID_NOT_AUTHORIZED', 'entry e1 is not authorized for agent spiffe://example.org/warrant/agent/x'),
      log,
      { entry_id: 'e1' },
      'X509-SVID not signed',
    )
    expect(s).toEqual({ code: Status.PERMISSION_DENIED, error_code: 'ERR_ID_NOT_AUTHORIZED', message: 'permission denied' })
    expect(log.lines).toHaveLength(1)
    expect(log.lines[0]).toMatchObject({
      level: 'warn',
      msg: 'X509-SVID not signed',
      fields: { entry_id: 'e1', error_code: 'ERR_ID_NOT_AUTHORIZED', err: { message: expect.stringContaining('warrant/agent/x') } },
    })
  })

  it('answers an unexpected error with INTERNAL "internal error" and ERR_INTERNAL, keeping the cause in the log only', () => {
    const log = captureLogger()
    expect(toItemStatus(new Error('db exploded at /var/lib/x'), log)).toEqual({ code: Status.INTERNAL, error_code: 'ERR_INTERNAL', message: 'internal error' })
    expect(log.lines[0]).toMatchObject({ level: 'error', fields: { err: { message: 'db exploded at /var/lib/x' } } })
  })

  it('keeps the reason of a caller mistake (a bad CSR)', () => {
    expect(toItemStatus(new IdentityError('ERR_CSR_INVALID', 'invalid CSR: bad signature'), captureLogger())).toEqual({
      code: Status.INVALID_ARGUMENT,
      error_code: 'ERR_CSR_INVALID',
      message: 'invalid CSR: bad signature',
    })
    expect(OK_ITEM_STATUS).toEqual({ code: Status.OK, error_code: '', message: '' })
  })
})
