import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync, chmodSync } from 'node:fs'
import { createPrivateKey } from 'node:crypto'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { DiskKeyManager } from '../../../src/keymanager/disk/index.js'
import { keyManagerConformance } from '../../conformance/key-manager.js'
import { tempDir } from '../../helpers/temp.js'

keyManagerConformance('disk', {
  create: async () => {
    const { dir, cleanup } = tempDir('wkm-')
    const keys = join(dir, 'keys')
    return { km: new DiskKeyManager({ dir: keys }), reopen: async () => new DiskKeyManager({ dir: keys }), cleanup }
  },
  keyTypes: ['ec-p256', 'rsa-2048', 'ec-p384', 'rsa-3072', 'rsa-4096'],
})

describe('DiskKeyManager files', () => {
  it('writes PKCS#8 PEM files with mode 0600 in a 0700 directory and leaves no temp files', async () => {
    const { dir, cleanup } = tempDir('wkm-')
    try {
      const keys = join(dir, 'a', 'keys')
      const km = new DiskKeyManager({ dir: keys })
      const key = await km.generateKey('x509-ca-a', 'ec-p256')
      await km.generateKey('x509-ca-a', 'ec-p256')
      expect(statSync(keys).mode & 0o777).toBe(0o700)
      expect(readdirSync(keys)).toEqual(['x509-ca-a.pem'])
      const file = join(keys, 'x509-ca-a.pem')
      expect(statSync(file).mode & 0o777).toBe(0o600)
      const pem = readFileSync(file, 'utf8')
      expect(pem).toMatch(/^-----BEGIN PRIVATE KEY-----\n/)
      expect(createPrivateKey(pem).asymmetricKeyType).toBe('ec')
      expect(key.publicKey.type).toBe('public')
    } finally {
      cleanup()
    }
  })

  it('tightens an existing group/world-readable key directory to 0700', async () => {
    const { dir, cleanup } = tempDir('wkm-')
    try {
      const keys = join(dir, 'keys')
      mkdirSync(keys)
      chmodSync(keys, 0o755)
      await new DiskKeyManager({ dir: keys }).generateKey('k', 'ec-p256')
      expect(statSync(keys).mode & 0o777).toBe(0o700)
    } finally {
      cleanup()
    }
  })

  it('listKeys on a missing directory is empty and skips foreign or unreadable files', async () => {
    const { dir, cleanup } = tempDir('wkm-')
    try {
      const keys = join(dir, 'keys')
      expect(await new DiskKeyManager({ dir: keys }).listKeys()).toEqual([])
      const km = new DiskKeyManager({ dir: keys })
      await km.generateKey('good', 'ec-p256')
      writeFileSync(join(keys, 'junk.pem'), 'not a key', { mode: 0o600 })
      writeFileSync(join(keys, 'bad name!.pem'), 'x', { mode: 0o600 })
      writeFileSync(join(keys, 'good.pem.abc.tmp'), 'partial', { mode: 0o600 })
      writeFileSync(join(keys, 'notes.txt'), 'x')
      const fresh = new DiskKeyManager({ dir: keys })
      expect((await fresh.listKeys()).map((k) => k.id)).toEqual(['good'])
      await expect(fresh.getKey('junk')).rejects.toMatchObject({ code: 'ERR_KEY_INVALID' })
    } finally {
      cleanup()
    }
  })

  it('requires a directory', () => {
    expect(() => new DiskKeyManager({ dir: '' })).toThrow(TypeError)
  })
})
