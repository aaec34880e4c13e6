/**
 * TOTP secrets set up in the console are stored sealed under the key
 * manager's sealing key, bound to their operator: the store file never holds
 * the secret, a sealed value moved to another operator's row or changed by
 * one byte does not open, and a plaintext secret left by an earlier version
 * is sealed at its next use.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { Secret, TOTP } from 'otpauth'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { parseConsoleConfig, type ConsoleConfig } from '../../../src/console/config.js'
import { OperatorAuth } from '../../../src/console/operator-auth.js'
import { OperatorStore } from '../../../src/console/operator-store.js'
import { MemoryKeyManager } from '../../../src/keymanager/index.js'

let dir: string
let cfg: ConsoleConfig
let clock: number
const now = () => clock
const code = (secret: string) => TOTP.generate({ secret: Secret.fromBase32(secret), period: 30, timestamp: clock })
const rowOf = (operator: string): string => {
  const db = new Database(cfg.storePath, { readonly: true })
  try {
    return (db.prepare('SELECT secret FROM totp WHERE operator = ?').get(operator) as { secret: string }).secret
  } finally {
    db.close()
  }
}
const setRow = (operator: string, secret: string): void => {
  const db = new Database(cfg.storePath)
  try {
    db.prepare(
      'INSERT INTO totp (operator, secret, last_step, created_at) VALUES (?, ?, -1, 0) ON CONFLICT (operator) DO UPDATE SET secret = excluded.secret',
    ).run(operator, secret)
  } finally {
    db.close()
  }
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'wtotp-'))
  cfg = parseConsoleConfig({
    console: { enabled: true, public_url: 'https://console.example:9443', operators: [{ name: 'alice' }, { name: 'bob' }] },
    baseDir: dir,
    dataDir: dir,
  })!
  clock = Date.UTC(2026, 11, 6, 12, 0, 0)
})
afterEach(() => rmSync(dir, { recursive: true, force: true }))

describe('console TOTP secrets, sealed', () => {
  it('are stored sealed (never the secret), open for their operator, and sign in once per code', async () => {
    const sealer = await new MemoryKeyManager().sealingKey('console-totp-secrets')
    const store = OperatorStore.open(cfg.storePath)
    const auth = new OperatorAuth(cfg, store, now, sealer)
    const secret = auth.newTotpSecret()
    await auth.confirmTotp('alice', secret, code(secret))
    const stored = rowOf('alice')
    expect(stored.startsWith('sealed:')).toBe(true)
    expect(stored).not.toContain(secret)
    expect(Buffer.from(stored.slice(7), 'base64url').toString('latin1')).not.toContain(secret)
    clock += 30_000
    await expect(auth.loginTotp('alice', code(secret))).resolves.toBe('alice')
    await expect(auth.loginTotp('alice', code(secret))).rejects.toMatchObject({ code: 'ERR_OPERATOR_AUTH_FAILED', reason: 'TOTP code already used' })
    store.close()
  })

  it('a sealed secret moved to another operator, or changed, does not open; nor without the sealer or under another key', async () => {
    const km = new MemoryKeyManager()
    const sealer = await km.sealingKey('console-totp-secrets')
    const store = OperatorStore.open(cfg.storePath)
    const auth = new OperatorAuth(cfg, store, now, sealer)
    const secret = auth.newTotpSecret()
    await auth.confirmTotp('alice', secret, code(secret))
    const sealed = rowOf('alice')
    clock += 30_000
    setRow('bob', sealed)
    await expect(auth.loginTotp('bob', code(secret))).rejects.toMatchObject({ reason: expect.stringContaining('does not open') })
    const raw = Buffer.from(sealed.slice(7), 'base64url')
    raw[raw.length - 1]! ^= 1
    setRow('alice', `sealed:${raw.toString('base64url')}`)
    await expect(auth.loginTotp('alice', code(secret))).rejects.toMatchObject({ reason: expect.stringContaining('does not open') })
    setRow('alice', sealed)
    const other = new OperatorAuth(cfg, store, now, await new MemoryKeyManager().sealingKey('console-totp-secrets'))
    await expect(other.loginTotp('alice', code(secret))).rejects.toMatchObject({ reason: expect.stringContaining('does not open') })
    await expect(new OperatorAuth(cfg, store, now).loginTotp('alice', code(secret))).rejects.toMatchObject({
      reason: 'TOTP secret is sealed and no sealer is configured',
    })
    await expect(auth.loginTotp('alice', code(secret))).resolves.toBe('alice')
    store.close()
  })

  it('a plaintext secret from before sealing still signs in and is sealed at that use', async () => {
    const store = OperatorStore.open(cfg.storePath)
    const plain = new OperatorAuth(cfg, store, now)
    const secret = plain.newTotpSecret()
    await plain.confirmTotp('alice', secret, code(secret))
    expect(rowOf('alice')).toBe(secret)
    clock += 30_000
    const auth = new OperatorAuth(cfg, store, now, await new MemoryKeyManager().sealingKey('console-totp-secrets'))
    await expect(auth.loginTotp('alice', code(secret))).resolves.toBe('alice')
    expect(rowOf('alice').startsWith('sealed:')).toBe(true)
    clock += 30_000
    await expect(auth.loginTotp('alice', code(secret))).resolves.toBe('alice')
    store.close()
  })
})
