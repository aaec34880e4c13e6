import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { afterEach, describe, expect, it } from 'vitest'
import type { AuditEventInput } from '../../../src/audit/event.js'
import type { AuditReceipt, AuditSink } from '../../../src/audit/sink.js'
import { AuditLog } from '../../../src/audit/store/audit-log.js'
import { AuditLogReader } from '../../../src/audit/store/log-reader.js'
import { IdentityError } from '../../../src/errors/identity-error.js'
import { tempDir } from '../../helpers/temp.js'
import { A, B, cc, client, dpop, exchange, fixture, refused, RS, type Fixture } from './fixture.js'

let f: Fixture | undefined
afterEach(async () => {
  await f?.cleanup()
  f = undefined
})

class RecordingSink implements AuditSink {
  readonly events: AuditEventInput[] = []
  fail: Error | undefined
  async append(e: AuditEventInput): Promise<AuditReceipt> {
    if (this.fail) throw this.fail
    this.events.push(e)
    return { seq: this.events.length, leafIndex: this.events.length - 1, chainHash: '0'.repeat(64), time: new Date().toISOString() }
  }
}

describe('the broker audits what it issues and revokes', () => {
  it('exchange, renewal, grant and redemption each append an event naming ids, never a token; revocations too', async () => {
    const sink = new RecordingSink()
    f = await fixture({ audit: sink })
    const t = await f.task()
    const key = dpop()
    const a = (await f.svc.token(cc(t), client(A), key)).access_token
    const renewed = (await f.svc.token(exchange(a), client(A), key)).access_token
    const grant = (await f.svc.token(exchange(renewed, { mayAct: B }), client(A), key)).access_token
    const b = (await f.svc.token(exchange(grant), client(B), dpop())).access_token
    await f.svc.revokeAt({ kind: 'instance', value: B, reason: 'x' }, 'admin')
    await new Promise((r) => setImmediate(r))
    expect(sink.events.map((e) => e.type)).toEqual(['token.exchanged', 'token.renewed', 'token.delegated', 'token.delegated', 'token.revoked'])
    expect(sink.events[0]).toMatchObject({
      outcome: 'success',
      actor: { spiffe_id: A },
      subject: A,
      task_id: t,
      token_id: decodeJwt(a).jti,
      delegation_depth: 0,
    })
    expect(sink.events[3]).toMatchObject({ actor: { spiffe_id: B }, subject: A, token_id: decodeJwt(b).jti, delegation_depth: 1 })
    expect(sink.events[3]!.act_chain_hash).toMatch(/^[0-9a-f]{64}$/)
    expect(sink.events[4]).toMatchObject({ type: 'token.revoked', subject: B, attributes: { level: 'instance', by: 'admin' } })
    const text = JSON.stringify(sink.events)
    for (const tok of [a, renewed, grant, b]) expect(text).not.toContain(tok)
  })

  it('fails closed: when the log is unavailable no token is released and its record is marked revoked', async () => {
    const sink = new RecordingSink()
    f = await fixture({ audit: sink })
    const t = await f.task()
    sink.fail = new IdentityError('ERR_AUDIT_UNAVAILABLE', 'audit log down')
    await refused(() => f!.svc.token(cc(t), client(A), dpop()), 'ERR_AUDIT_UNAVAILABLE')
    const withheld = f.log.lines.find((l) => l.msg === 'Audit log unavailable; token withheld')
    expect(withheld).toBeDefined()
    const jti = withheld!.fields.jti as string
    expect(f.svc.store.getToken(jti)?.revokedAt).toBeTypeOf('number')
    sink.fail = undefined
    const ok = (await f.svc.token(cc(t), client(A), dpop())).access_token
    expect((await f.svc.introspect(ok, client(RS))).active).toBe(true)
  })

  it('a revocation recorded while the token is signed stops it inside the store transaction; an error event for the same token follows', async () => {
    const sink = new RecordingSink()
    f = await fixture({ audit: sink })
    const t = await f.task()
    const fx = f
    const append = sink.append.bind(sink)
    let armed = true
    sink.append = async (e) => {
      // the broker has checked revocations and started signing: revoke the instance now
      if (armed && e.type === 'token.exchanged') {
        armed = false
        await fx.svc.revokeAt({ kind: 'instance', value: A }, 'admin')
      }
      return append(e)
    }
    await refused(() => fx.svc.token(cc(t), client(A), dpop()), 'ERR_REVOKED')
    for (let i = 0; i < 10 && sink.events.filter((e) => e.type === 'token.exchanged').length < 2; i++) await new Promise((r) => setImmediate(r))
    const exchanged = sink.events.filter((e) => e.type === 'token.exchanged')
    expect(exchanged.map((e) => e.outcome)).toEqual(['success', 'error'])
    expect(exchanged[1]).toMatchObject({ reason: 'ERR_REVOKED', token_id: exchanged[0]!.token_id })
    expect(fx.svc.store.getToken(exchanged[0]!.token_id!)).toBeUndefined()
  })

  it('with the real AuditLog, the issued token is in the log when it is returned', async () => {
    const tmp = tempDir('wba-')
    const path = join(tmp.dir, 'audit.sqlite3')
    const log = AuditLog.open({ path, origin: 'corp.example/warrant/broker-audit' })
    try {
      f = await fixture({ audit: log })
      const t = await f.task()
      const a = (await f.svc.token(cc(t), client(A), dpop())).access_token
      const reader = AuditLogReader.open(path)
      const rows = reader.search({ type: 'token.exchanged' })
      reader.close()
      expect(rows.map((r) => (JSON.parse(r.event) as { token_id: string }).token_id)).toEqual([decodeJwt(a).jti])
    } finally {
      await f?.cleanup()
      f = undefined
      await log.close()
      tmp.cleanup()
    }
  })
})
