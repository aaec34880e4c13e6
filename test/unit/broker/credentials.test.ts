import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parseAuditEvent, type AuditEventInput } from '../../../src/audit/event.js'
import { CredentialVault } from '../../../src/broker/credentials.js'
import type { CredentialSealer } from '../../../src/broker/ports.js'
import { BrokerStore } from '../../../src/broker/store/broker-store.js'
import { captureLogger } from '../../helpers/capture-logger.js'
import { tempDir } from '../../helpers/temp.js'

/** A software AES-256-GCM sealer (the key managers provide the real ones). */
function softSealer(key = randomBytes(32)): CredentialSealer {
  return {
    seal: async (pt, aad) => {
      const iv = randomBytes(12)
      const c = createCipheriv('aes-256-gcm', key, iv)
      c.setAAD(aad)
      const ct = Buffer.concat([c.update(pt), c.final()])
      return Buffer.concat([iv, ct, c.getAuthTag()])
    },
    open: async (s, aad) => {
      const b = Buffer.from(s)
      const d = createDecipheriv('aes-256-gcm', key, b.subarray(0, 12))
      d.setAAD(aad)
      d.setAuthTag(b.subarray(b.length - 16))
      return Buffer.concat([d.update(b.subarray(12, b.length - 16)), d.final()])
    },
  }
}

const GW = 'spiffe://corp.example/gateway/g1'
const AGENT = 'spiffe://corp.example/agents/a'
const SECRET = 'sk_live_4f9a8b7c6d5e4f3a2b1c'

let tmp: ReturnType<typeof tempDir>
let store: BrokerStore
let events: AuditEventInput[]
let log: ReturnType<typeof captureLogger>
let vault: CredentialVault
beforeEach(() => {
  tmp = tempDir('wcred-')
  store = BrokerStore.open({ path: join(tmp.dir, 'broker.db') })
  events = []
  log = captureLogger()
  vault = new CredentialVault(store, softSealer(), { readers: ['spiffe://corp.example/gateway/'], now: () => 1_800_000_000, log, audit: (e) => events.push(e) })
})
afterEach(() => {
  store.close()
  tmp.cleanup()
})

describe('CredentialVault (credential shielding)', () => {
  it('stores the value sealed (never in clear), lists without it, releases it to a reader only', async () => {
    const i = await vault.put({ tool: 'payments', header: 'X-Api-Key', value: SECRET }, 'admin')
    expect(i).toEqual({ tool: 'payments', header: 'x-api-key', version: 1, createdBy: 'admin', createdAt: 1_800_000_000 })
    expect(Buffer.from(store.getCredential('payments')!.sealed).includes(Buffer.from(SECRET))).toBe(false)
    expect(JSON.stringify(vault.list())).not.toContain(SECRET)
    const r = await vault.release('payments', { spiffeId: GW, method: 'tls_client_auth' })
    expect(r).toEqual({ tool: 'payments', header: 'x-api-key', value: SECRET, version: 1 })
    await expect(vault.release('payments', { spiffeId: AGENT, method: 'tls_client_auth' })).rejects.toMatchObject({ code: 'ERR_CLIENT_UNAUTHORIZED' })
    await expect(vault.release('unknown', { spiffeId: GW, method: 'tls_client_auth' })).rejects.toMatchObject({ code: 'ERR_CLIENT_UNAUTHORIZED' })
  })

  it('no log line and no audit event carries the value; every event fits the audit schema', async () => {
    await vault.put({ tool: 'search', header: 'authorization', scheme: 'Bearer', value: SECRET }, 'spiffe://corp.example/admin/ops')
    expect((await vault.release('search', { spiffeId: GW, method: 'tls_client_auth' })).value).toBe(`Bearer ${SECRET}`)
    await vault.release('search', { spiffeId: AGENT, method: 'jwt-spiffe' }).catch(() => undefined)
    vault.delete('search', 'admin')
    expect(JSON.stringify(log.lines)).not.toContain(SECRET)
    expect(JSON.stringify(events)).not.toContain(SECRET)
    expect(events.map((e) => [e.type, e.outcome])).toEqual([
      ['credential.stored', 'success'],
      ['credential.released', 'success'],
      ['credential.released', 'refused'],
      ['credential.deleted', 'success'],
    ])
    for (const e of events) expect(() => parseAuditEvent({ ...e, v: 1, time: '2026-12-05T12:00:00Z' })).not.toThrow()
  })

  it('a sealed blob moved to another tool does not open (bound to tool and header)', async () => {
    await vault.put({ tool: 'payments', header: 'x-api-key', value: SECRET }, 'admin')
    await vault.put({ tool: 'search', header: 'x-api-key', value: 'other' }, 'admin')
    const moved = store.getCredential('payments')!
    store.putCredential({ ...store.getCredential('search')!, sealed: moved.sealed })
    await expect(vault.release('search', { spiffeId: GW, method: 'tls_client_auth' })).rejects.toMatchObject({ code: 'ERR_INTERNAL' })
  })

  it('refuses bad specs and stores nothing', async () => {
    for (const spec of [
      { tool: 'Pay', header: 'x-api-key', value: 'v' },
      { tool: 'pay', header: 'x api key', value: 'v' },
      { tool: 'pay', header: 'txn-token', value: 'v' },
      { tool: 'pay', header: 'Host', value: 'v' },
      { tool: 'pay', header: 'x-api-key', value: '' },
      { tool: 'pay', header: 'x-api-key', value: 'a\r\nx-evil: 1' },
      { tool: 'pay', header: 'x-api-key', value: 'x'.repeat(4097) },
      { tool: 'pay', header: 'authorization', scheme: 'Bad Scheme', value: 'v' },
    ]) {
      await expect(vault.put(spec, 'admin')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    }
    expect(vault.list()).toEqual([])
  })

  it('a replaced credential bumps its version; a deleted one is gone', async () => {
    await vault.put({ tool: 'pay', header: 'x-api-key', value: 'one' }, 'admin')
    expect((await vault.put({ tool: 'pay', header: 'x-api-key', value: 'two' }, 'admin')).version).toBe(2)
    expect((await vault.release('pay', { spiffeId: GW, method: 'tls_client_auth' })).value).toBe('two')
    expect(vault.delete('pay', 'admin')).toBe(true)
    expect(vault.delete('pay', 'admin')).toBe(false)
    await expect(vault.release('pay', { spiffeId: GW, method: 'tls_client_auth' })).rejects.toMatchObject({ code: 'ERR_CLIENT_UNAUTHORIZED' })
  })
})
