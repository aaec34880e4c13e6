import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { canonicalBytes, parseAuditEvent, type AuditEventInput } from '../../../../src/audit/index.js'
import { AuditLog } from '../../../../src/audit/store/audit-log.js'
import { AuditLogReader } from '../../../../src/audit/store/log-reader.js'
import { ORIGIN, sampleEvent } from '../helpers.js'

/** Events as the broker writes them (attributes, act chain hash, key id), and odd ones the fast path leaves to the schema. */
function events(): AuditEventInput[] {
  const out: AuditEventInput[] = []
  for (let i = 0; i < 50; i++) out.push(sampleEvent(i))
  out.push({
    type: 'token.delegated',
    outcome: 'success',
    actor: { spiffe_id: 'spiffe://example.org/agent/o1/t1/i1' },
    subject: 'spiffe://example.org/agent/o1/t1/i1',
    resource: ['https://rs.example.org'],
    scope: ['tools:read'],
    delegation_depth: 2,
    act_chain_hash: 'cd'.repeat(32),
    token_id: 'jti-x',
    key_id: 'kid-1',
    attributes: { kind: 'access', parent_token_id: 'jti-p', n: -3, ok: true },
  })
  out.push({ type: 'signal', outcome: 'success', attributes: { note: 'café "quoted"' } })
  out.push({ type: 'approval', outcome: 'refused', reason: 'ERR_X', time: '2026-02-30T00:00:00Z' })
  return out
}

describe('AuditLog.append stores the canonical bytes of the validated event', () => {
  let dir: string
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'waudit-append-'))
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  it('the same bytes, time and search columns as the schema path, on and off the fast path', async () => {
    const path = join(dir, 'a.db')
    const now = Date.UTC(2026, 11, 5)
    const log = AuditLog.open({ path, origin: ORIGIN, now: () => now })
    const inputs = events()
    const receipts = await Promise.all(inputs.map((e) => log.append(e)))
    await log.close()
    const reader = AuditLogReader.open(path)
    try {
      inputs.forEach((input, i) => {
        const expected = parseAuditEvent({ ...input, v: 1, time: input.time ?? new Date(now).toISOString() })
        expect(reader.event(i + 1)!.event).toBe(Buffer.from(canonicalBytes(expected)).toString('utf8'))
        expect(receipts[i]!.time).toBe(expected.time)
      })
      expect(reader.search({ type: 'token.delegated' }).map((r) => r.seq)).toEqual([51])
      expect(reader.search({ actor: 'spiffe://example.org/agent/o1/t1/i1' }).map((r) => r.seq)).toEqual([51])
      expect(reader.search({ taskId: 'task-000003' }).map((r) => r.seq)).toEqual([4])
    } finally {
      reader.close()
    }
  })

  it('refuses what the schema refuses, with its message', async () => {
    const log = AuditLog.open({ path: join(dir, 'b.db'), origin: ORIGIN })
    await expect(log.append({ type: 'signal', outcome: 'error' })).rejects.toMatchObject({ code: 'ERR_AUDIT_EVENT_INVALID', message: /reason/ })
    await expect(log.append({ type: 'signal', outcome: 'success', token_id: 'eyJhbGciOiJFUzI1NiJ9.eyJ4IjoxfQ.sig' })).rejects.toMatchObject({
      code: 'ERR_AUDIT_EVENT_INVALID',
      message: /JWT/,
    })
    await expect(log.append({ type: 'signal', outcome: 'success', attributes: { password: 'x' } })).rejects.toMatchObject({ code: 'ERR_AUDIT_EVENT_INVALID' })
    await log.close()
  })
})
