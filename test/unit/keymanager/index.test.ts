import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { nullLogger } from '../../../src/common/log/logger.js'
import { TrustDomain } from '../../../src/spiffe/trust-domain.js'
import {
  diskKeyManagerPlugin,
  keyManagerPlugins,
  memoryKeyManagerPlugin,
  pkcs11KeyManagerPlugin,
  resolvePin,
  DiskKeyManager,
  MemoryKeyManager,
} from '../../../src/keymanager/index.js'
import { FakeClock } from '../../helpers/fake-clock.js'
import { tempDir } from '../../helpers/temp.js'

function issuesOf(fn: () => unknown): Array<{ path: string; message: string }> {
  try {
    fn()
  } catch (err) {
    expect(err).toMatchObject({ code: 'ERR_CONFIG_INVALID' })
    return (err as { details: { issues: Array<{ path: string; message: string }> } }).details.issues
  }
  throw new Error('expected ERR_CONFIG_INVALID')
}

const cleanups: Array<() => void> = []
afterEach(() => {
  for (const c of cleanups.splice(0)) c()
})

describe('keyManagerPlugins', () => {
  it('lists memory, disk and pkcs11 as key_manager plugins', () => {
    expect(keyManagerPlugins.map((p) => [p.type, p.name])).toEqual([
      ['key_manager', 'memory'],
      ['key_manager', 'disk'],
      ['key_manager', 'pkcs11'],
    ])
  })
})

describe('parseConfig', () => {
  it.each([
    { title: 'memory: empty block', plugin: memoryKeyManagerPlugin, raw: {}, expected: {} },
    { title: 'memory: no block', plugin: memoryKeyManagerPlugin, raw: undefined, expected: {} },
    { title: 'disk', plugin: diskKeyManagerPlugin, raw: { keys_path: 'keys' }, expected: { keys_path: 'keys' } },
    {
      title: 'pkcs11 with token_label and pin_file',
      plugin: pkcs11KeyManagerPlugin,
      raw: { module_path: '/usr/lib/softhsm/libsofthsm2.so', token_label: 'warrant', pin_file: 'hsm/pin' },
      expected: { module_path: '/usr/lib/softhsm/libsofthsm2.so', token_label: 'warrant', pin_file: 'hsm/pin' },
    },
    {
      title: 'pkcs11 with slot, pin_env and options',
      plugin: pkcs11KeyManagerPlugin,
      raw: { module_path: '/m.so', slot: 0, pin_env: 'HSM_PIN', key_label_prefix: 'x-', session_pool_size: 8, sign_mode: 'async' },
      expected: { module_path: '/m.so', slot: 0, pin_env: 'HSM_PIN', key_label_prefix: 'x-', session_pool_size: 8, sign_mode: 'async' },
    },
  ])('accepts $title', ({ plugin, raw, expected }) => {
    expect((plugin.parseConfig as (r: unknown) => unknown)(raw)).toEqual(expected)
  })

  it.each([
    { title: 'memory: unknown key', plugin: memoryKeyManagerPlugin, raw: { path: 'x' }, paths: ['path'] },
    { title: 'disk: missing keys_path', plugin: diskKeyManagerPlugin, raw: {}, paths: ['keys_path'] },
    { title: 'disk: empty keys_path and unknown key', plugin: diskKeyManagerPlugin, raw: { keys_path: '', mode: 1 }, paths: ['keys_path', 'mode'] },
    { title: 'disk: not an object', plugin: diskKeyManagerPlugin, raw: 'keys', paths: ['(root)'] },
    {
      title: 'pkcs11: inline pin is refused',
      plugin: pkcs11KeyManagerPlugin,
      raw: { module_path: '/m.so', token_label: 't', pin: '1234' },
      paths: ['pin', 'pin_file'],
    },
    {
      title: 'pkcs11: both token_label and slot, both pin_file and pin_env',
      plugin: pkcs11KeyManagerPlugin,
      raw: { module_path: '/m.so', token_label: 't', slot: 1, pin_file: 'p', pin_env: 'P' },
      paths: ['token_label', 'pin_file'],
    },
    {
      title: 'pkcs11: every problem at once',
      plugin: pkcs11KeyManagerPlugin,
      raw: { slot: -1, session_pool_size: 0, pin_env: '1BAD', extra: true, sign_mode: 'fast' },
      paths: ['module_path', 'slot', 'pin_env', 'session_pool_size', 'sign_mode', 'extra'],
    },
    {
      title: 'pkcs11: token label longer than 32',
      plugin: pkcs11KeyManagerPlugin,
      raw: { module_path: '/m.so', token_label: 'x'.repeat(33), pin_env: 'P' },
      paths: ['token_label'],
    },
  ])('rejects $title with every issue path', ({ plugin, raw, paths }) => {
    const issues = issuesOf(() => (plugin.parseConfig as (r: unknown) => unknown)(raw))
    for (const p of paths)
      expect(
        issues.map((i) => i.path),
        p,
      ).toContain(p)
    expect(JSON.stringify(issues)).not.toContain('1234')
  })
})

describe('create', () => {
  const deps = (dataDir: string) => ({ log: nullLogger, clock: new FakeClock(), trustDomain: TrustDomain.fromString('example.org'), dataDir })

  it('memory creates a MemoryKeyManager', async () => {
    const km = await memoryKeyManagerPlugin.create({}, deps('/nonexistent'))
    expect(km).toBeInstanceOf(MemoryKeyManager)
  })

  it('disk resolves keys_path against dataDir', async () => {
    const t = tempDir('wkp-')
    cleanups.push(t.cleanup)
    const km = await diskKeyManagerPlugin.create({ keys_path: 'keys' }, deps(t.dir))
    expect(km).toBeInstanceOf(DiskKeyManager)
    expect((km as DiskKeyManager).dir).toBe(join(t.dir, 'keys'))
    await km.generateKey('a', 'ec-p256')
    expect((await (await diskKeyManagerPlugin.create({ keys_path: join(t.dir, 'keys') }, deps('/elsewhere'))).getKey('a')).id).toBe('a')
  })

  it('pkcs11 with a missing pin_file fails with ERR_CONFIG_INVALID before touching the module', async () => {
    const t = tempDir('wkp-')
    cleanups.push(t.cleanup)
    await expect(pkcs11KeyManagerPlugin.create({ module_path: '/nope.so', token_label: 't', pin_file: 'pin' }, deps(t.dir))).rejects.toMatchObject({
      code: 'ERR_CONFIG_INVALID',
      details: { issues: [{ path: 'pin_file' }] },
    })
  })
})

describe('resolvePin', () => {
  it('reads pin_file relative to dataDir, drops the trailing newline, and warns on a loose mode', () => {
    const t = tempDir('wkp-')
    cleanups.push(t.cleanup)
    writeFileSync(join(t.dir, 'pin'), 's3cret\n', { mode: 0o600 })
    const warned: string[] = []
    expect(resolvePin({ pin_file: 'pin' }, t.dir, (p) => warned.push(p))).toBe('s3cret')
    expect(warned).toEqual([])
    chmodSync(join(t.dir, 'pin'), 0o644)
    expect(resolvePin({ pin_file: join(t.dir, 'pin') }, '/elsewhere', (p) => warned.push(p))).toBe('s3cret')
    expect(warned).toEqual([join(t.dir, 'pin')])
  })

  it.each([
    { title: 'missing file', setup: (dir: string) => ({ pin_file: join(dir, 'none') }) },
    { title: 'empty file', setup: (dir: string) => (writeFileSync(join(dir, 'empty'), '\n', { mode: 0o600 }), { pin_file: join(dir, 'empty') }) },
    { title: 'a directory', setup: (dir: string) => ({ pin_file: dir }) },
    { title: 'unset variable', setup: () => ({ pin_env: 'WARRANT_TEST_UNSET_PIN_VARIABLE' }) },
  ])('rejects $title with ERR_CONFIG_INVALID', ({ setup }) => {
    const t = tempDir('wkp-')
    cleanups.push(t.cleanup)
    expect(() => resolvePin(setup(t.dir), t.dir, () => {})).toThrow(expect.objectContaining({ code: 'ERR_CONFIG_INVALID' }))
  })

  it('reads pin_env', () => {
    process.env.WARRANT_TEST_PIN = '424242'
    try {
      expect(resolvePin({ pin_env: 'WARRANT_TEST_PIN' }, '/', () => {})).toBe('424242')
    } finally {
      delete process.env.WARRANT_TEST_PIN
    }
  })
})
