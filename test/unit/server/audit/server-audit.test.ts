import { describe, expect, it } from 'vitest'
import { IdentityError } from '../../../../src/errors/identity-error.js'
import { ServerAudit, failureOf, fits, isoTime, plainId } from '../../../../src/server/audit/server-audit.js'
import { createServerMetrics } from '../../../../src/server/metrics.js'
import { captureLogger } from '../../../helpers/capture-logger.js'
import { memoryAudit } from './memory-sink.js'

const event = { type: 'entry.deleted', outcome: 'success', subject: 'spiffe://example.org/a' } as const

describe('ServerAudit', () => {
  it('durable resolves true once the sink has the event', async () => {
    const { sink, audit, lost } = memoryAudit()
    sink.hold()
    let done = false
    const p = audit.durable(event).then((ok) => ((done = true), ok))
    await new Promise((r) => setImmediate(r))
    expect(done).toBe(false)
    sink.release()
    expect(await p).toBe(true)
    expect(sink.events).toEqual([event])
    expect(await lost()).toBe(0)
  })

  it('a lost event (log unavailable) is false for durable, never thrown, logged at error level with its code and counted by type', async () => {
    const { sink, audit, log, lost } = memoryAudit()
    sink.failing = true
    expect(await audit.durable(event)).toBe(false)
    audit.record(event)
    await new Promise((r) => setImmediate(r))
    expect(await lost()).toBe(2)
    const lines = log.lines.filter((l) => l.msg === 'Audit event lost')
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatchObject({ level: 'error', fields: { type: 'entry.deleted', error_code: 'ERR_AUDIT_UNAVAILABLE', subsystem: 'audit' } })
  })

  it('an event the log refuses (prose as a reason) is lost, not thrown; a sink that throws at once too', async () => {
    const { sink, audit, lost } = memoryAudit()
    expect(await audit.durable({ type: 'node_attestation.refused', outcome: 'refused', reason: 'the token was wrong' })).toBe(false)
    expect(sink.events).toHaveLength(0)
    const metrics = createServerMetrics()
    const throwing = new ServerAudit({
      sink: {
        append: () => {
          throw new Error('boom')
        },
      },
      log: captureLogger(),
      registry: metrics.registry,
    })
    expect(() => throwing.record(event)).not.toThrow()
    expect(await throwing.durable(event)).toBe(false)
    expect(await lost()).toBe(1)
  })

  it('failureOf: the code, refused, or error for faults of the server and what is no IdentityError; plainId keeps only plain identifiers', () => {
    expect(failureOf(new IdentityError('ERR_REVOKED', 'x'))).toEqual({ outcome: 'refused', reason: 'ERR_REVOKED' })
    expect(failureOf(new IdentityError('ERR_DATASTORE', 'x'))).toEqual({ outcome: 'error', reason: 'ERR_DATASTORE' })
    expect(failureOf(new Error('x'))).toEqual({ outcome: 'error', reason: 'ERR_INTERNAL' })
    expect(plainId('3ac945aa-63e9-4e5d-99c2-2852d248b8fd')).toBe('3ac945aa-63e9-4e5d-99c2-2852d248b8fd')
    for (const bad of ['', 'a b', 'eyJhbGciOiJub25lIn0.eyJ4IjoxfQ.', 'x'.repeat(129), 'a\nb']) expect(plainId(bad)).toBeUndefined()
  })

  it('fits leaves out values over 256 characters; isoTime is RFC 3339 UTC', () => {
    expect(fits('x'.repeat(256))).toBe('x'.repeat(256))
    expect(fits('x'.repeat(257))).toBeUndefined()
    expect(isoTime(Date.UTC(2026, 11, 5, 12))).toBe('2026-12-05T12:00:00.000Z')
  })
})
