import { chmodSync, linkSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DiskKeyManager } from '../../../src/keymanager/disk/index.js'
import { MemoryKeyManager } from '../../../src/keymanager/memory/index.js'
import { tempDir } from '../../helpers/temp.js'
import { openWithRawKey, sealingConformance } from './sealing-suite.js'

const te = new TextEncoder()

sealingConformance('memory', async () => ({ km: new MemoryKeyManager(), cleanup: () => {} }))

sealingConformance('disk', async () => {
  const { dir, cleanup } = tempDir('wseal-')
  const keys = join(dir, 'keys')
  return { km: new DiskKeyManager({ dir: keys }), reopen: async () => new DiskKeyManager({ dir: keys }), cleanup }
})

describe('DiskKeyManager sealing key files', () => {
  it('stores 32 raw bytes in <id>.sealing-key, mode 0600, beside the signing keys, no temporary file left', async () => {
    const { dir, cleanup } = tempDir('wseal-')
    try {
      const keys = join(dir, 'keys')
      const km = new DiskKeyManager({ dir: keys })
      await km.generateKey('jwt-a', 'ec-p256')
      const key = await km.sealingKey('creds')
      expect(readdirSync(keys).sort()).toEqual(['creds.sealing-key', 'jwt-a.pem'])
      const file = join(keys, 'creds.sealing-key')
      expect(statSync(file).mode & 0o777).toBe(0o600)
      expect(statSync(keys).mode & 0o777).toBe(0o700)
      const raw = readFileSync(file)
      expect(raw.length).toBe(32)
      // The file is the key: an envelope opens with it, outside the manager.
      const sealed = await key.seal(te.encode('secret'), te.encode('aad'))
      expect(openWithRawKey(raw, sealed, te.encode('aad')).toString()).toBe('secret')
      expect((await km.listKeys()).map((k) => k.id)).toEqual(['jwt-a'])
      await km.deleteSealingKey('creds')
      expect(readdirSync(keys)).toEqual(['jwt-a.pem'])
    } finally {
      cleanup()
    }
  })

  it('managers creating the same key at once end up with one key (link, never rename over)', async () => {
    const { dir, cleanup } = tempDir('wseal-')
    try {
      const keys = join(dir, 'keys')
      const managers = Array.from({ length: 6 }, () => new DiskKeyManager({ dir: keys }))
      const sealingKeys = await Promise.all(managers.map((m) => m.sealingKey('raced')))
      const sealed = await sealingKeys[0]!.seal(te.encode('x'), te.encode('a'))
      for (const k of sealingKeys) expect(Buffer.from(await k.open(sealed, te.encode('a'))).toString()).toBe('x')
      expect(readdirSync(keys)).toEqual(['raced.sealing-key'])
    } finally {
      cleanup()
    }
  })

  it.each([
    { title: 'a file of the wrong size', setup: (f: string) => writeFileSync(f, Buffer.alloc(31), { mode: 0o600 }), reason: 'key_malformed' },
    { title: 'a group-readable file', setup: (f: string) => (writeFileSync(f, Buffer.alloc(32)), chmodSync(f, 0o640)), reason: 'key_not_protected' },
  ])('refuses $title with ERR_KEY_INVALID and never replaces it', async ({ setup, reason }) => {
    const { dir, cleanup } = tempDir('wseal-')
    try {
      const keys = join(dir, 'keys')
      await new DiskKeyManager({ dir: keys }).generateKey('k', 'ec-p256')
      const file = join(keys, 'bad.sealing-key')
      setup(file)
      const before = readFileSync(file)
      const km = new DiskKeyManager({ dir: keys })
      await expect(km.sealingKey('bad')).rejects.toMatchObject({ code: 'ERR_KEY_INVALID', details: { key_id: 'bad', reason } })
      await expect(km.sealingKey('bad')).rejects.toMatchObject({ code: 'ERR_KEY_INVALID' })
      expect(readFileSync(file)).toEqual(before)
    } finally {
      cleanup()
    }
  })

  it('reads a key that another process linked in meanwhile', async () => {
    const { dir, cleanup } = tempDir('wseal-')
    try {
      const keys = join(dir, 'keys')
      const a = new DiskKeyManager({ dir: keys })
      const sealed = await (await a.sealingKey('one')).seal(te.encode('v'), te.encode(''))
      linkSync(join(keys, 'one.sealing-key'), join(keys, 'two.sealing-key'))
      const b = new DiskKeyManager({ dir: keys })
      expect(Buffer.from(await (await b.sealingKey('two')).open(sealed, te.encode(''))).toString()).toBe('v')
    } finally {
      cleanup()
    }
  })
})
