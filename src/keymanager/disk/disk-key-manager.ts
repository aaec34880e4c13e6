import { randomBytes } from 'node:crypto'
import { chmod, link, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { IdentityError } from '../../errors/index.js'
import type { KeyManager, KeyType, ManagedKey, SealingKey } from '../key-manager.js'
import { assertKeyId, assertKeyType, generateSoftwareKey, parsePrivateKeyPem, SoftwareKey } from '../memory/software-key.js'
import { newSealingKeyBytes, SEALING_KEY_BYTES, SoftwareSealingKey } from '../memory/software-sealing-key.js'

const SUFFIX = '.pem'
/** Sealing keys: the 32 raw key bytes in `<id>.sealing-key` (never listed as signing keys). */
const SEALING_SUFFIX = '.sealing-key'

/**
 * Keys as PKCS#8 PEM files (`<id>.pem`, mode 0600) in one directory (mode
 * 0700). Files are written to a temporary name, fsynced and renamed, so a
 * crash never leaves a half-written key under its real name. Keys are found
 * again after a restart by reading the directory. Sealing keys are
 * `<id>.sealing-key` files (32 raw bytes, mode 0600) in the same directory,
 * created on first use with link(2) from a fsynced temporary file, so two
 * processes creating one at once agree on a single key.
 */
export class DiskKeyManager implements KeyManager {
  readonly #dir: string
  readonly #cache = new Map<string, SoftwareKey>()
  readonly #sealing = new Map<string, Promise<SoftwareSealingKey>>()
  #ready: Promise<void> | undefined

  constructor(opts: { dir: string }) {
    if (typeof opts?.dir !== 'string' || opts.dir === '') throw new TypeError('DiskKeyManager: dir is required')
    this.#dir = opts.dir
  }

  get dir(): string {
    return this.#dir
  }

  #ensureDir(): Promise<void> {
    this.#ready ??= (async () => {
      await mkdir(this.#dir, { recursive: true, mode: 0o700 })
      const st = await stat(this.#dir)
      if ((st.mode & 0o077) !== 0) await chmod(this.#dir, 0o700)
    })().catch((cause: unknown) => {
      this.#ready = undefined
      throw new IdentityError('ERR_UNAVAILABLE', `cannot create key directory ${this.#dir}`, { cause })
    })
    return this.#ready
  }

  #path(id: string): string {
    return join(this.#dir, id + SUFFIX)
  }

  async generateKey(id: string, type: KeyType): Promise<ManagedKey> {
    assertKeyId(id)
    assertKeyType(type)
    await this.#ensureDir()
    const privateKey = await generateSoftwareKey(type)
    const pem = privateKey.export({ format: 'pem', type: 'pkcs8' })
    const tmp = join(this.#dir, `${id}${SUFFIX}.${randomBytes(6).toString('hex')}.tmp`)
    try {
      const fh = await open(tmp, 'wx', 0o600)
      try {
        await fh.writeFile(pem)
        await fh.sync()
      } finally {
        await fh.close()
      }
      await rename(tmp, this.#path(id))
    } catch (cause) {
      await rm(tmp, { force: true })
      throw new IdentityError('ERR_UNAVAILABLE', `cannot store key "${id}"`, { cause, details: { key_id: id } })
    }
    await syncDir(this.#dir)
    const key = new SoftwareKey(id, type, privateKey)
    this.#cache.set(id, key)
    return key
  }

  async getKey(id: string): Promise<ManagedKey> {
    assertKeyId(id)
    const cached = this.#cache.get(id)
    if (cached !== undefined) return cached
    let pem: Buffer
    try {
      pem = await readFile(this.#path(id))
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new IdentityError('ERR_KEY_NOT_FOUND', `key "${id}" not found`, { details: { key_id: id } })
      }
      throw new IdentityError('ERR_UNAVAILABLE', `cannot read key "${id}"`, { cause, details: { key_id: id } })
    }
    const { key: privateKey, type } = parsePrivateKeyPem(pem)
    const key = new SoftwareKey(id, type, privateKey)
    this.#cache.set(id, key)
    return key
  }

  async listKeys(): Promise<ManagedKey[]> {
    let names: string[]
    try {
      names = await readdir(this.#dir)
    } catch (cause) {
      if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw new IdentityError('ERR_UNAVAILABLE', `cannot read key directory ${this.#dir}`, { cause })
    }
    const keys: ManagedKey[] = []
    for (const name of names.sort()) {
      if (!name.endsWith(SUFFIX)) continue
      const id = name.slice(0, -SUFFIX.length)
      try {
        assertKeyId(id)
        keys.push(await this.getKey(id))
      } catch (err) {
        // A stray or foreign file is not one of our keys; a key deleted meanwhile is simply gone.
        if (err instanceof IdentityError) continue
        throw err
      }
    }
    return keys
  }

  async deleteKey(id: string): Promise<void> {
    assertKeyId(id)
    this.#cache.delete(id)
    await rm(this.#path(id), { force: true })
  }

  /** Reads `<id>.sealing-key`, or creates it when it does not exist. ERR_KEY_INVALID for a file of the wrong size or mode. */
  async sealingKey(id: string): Promise<SealingKey> {
    assertKeyId(id)
    let p = this.#sealing.get(id)
    if (p === undefined) {
      p = this.#loadOrCreateSealingKey(id)
      this.#sealing.set(id, p)
      // A failed load is not remembered: the next call tries again.
      p.catch(() => {
        if (this.#sealing.get(id) === p) this.#sealing.delete(id)
      })
    }
    return p
  }

  async deleteSealingKey(id: string): Promise<void> {
    assertKeyId(id)
    this.#sealing.delete(id)
    await rm(join(this.#dir, id + SEALING_SUFFIX), { force: true })
    await syncDir(this.#dir)
  }

  async #loadOrCreateSealingKey(id: string): Promise<SoftwareSealingKey> {
    const path = join(this.#dir, id + SEALING_SUFFIX)
    const existing = await this.#readSealingKey(id, path)
    if (existing !== undefined) return existing
    await this.#ensureDir()
    const raw = newSealingKeyBytes()
    const tmp = join(this.#dir, `${id}${SEALING_SUFFIX}.${randomBytes(6).toString('hex')}.tmp`)
    try {
      const fh = await open(tmp, 'wx', 0o600)
      try {
        await fh.writeFile(raw)
        await fh.sync()
      } finally {
        await fh.close()
      }
      // link(2), unlike rename, never replaces: whoever links first created the key, everyone else reads it.
      await link(tmp, path)
    } catch (cause) {
      raw.fill(0)
      if ((cause as NodeJS.ErrnoException).code === 'EEXIST') {
        const theirs = await this.#readSealingKey(id, path)
        if (theirs !== undefined) return theirs
      }
      throw new IdentityError('ERR_UNAVAILABLE', `cannot store sealing key "${id}"`, { cause, details: { key_id: id } })
    } finally {
      await rm(tmp, { force: true })
    }
    await syncDir(this.#dir)
    const key = new SoftwareSealingKey(id, raw)
    raw.fill(0)
    return key
  }

  async #readSealingKey(id: string, path: string): Promise<SoftwareSealingKey | undefined> {
    let raw: Buffer
    try {
      const fh = await open(path, 'r')
      try {
        const st = await fh.stat()
        if (!st.isFile() || st.size !== SEALING_KEY_BYTES) {
          throw new IdentityError('ERR_KEY_INVALID', `sealing key "${id}" is not a ${SEALING_KEY_BYTES}-byte key file`, {
            details: { key_id: id, reason: 'key_malformed' },
          })
        }
        if ((st.mode & 0o077) !== 0) {
          throw new IdentityError('ERR_KEY_INVALID', `sealing key "${id}" is readable or writable by group or others`, {
            details: { key_id: id, reason: 'key_not_protected' },
          })
        }
        raw = await fh.readFile()
      } finally {
        await fh.close()
      }
    } catch (cause) {
      if (cause instanceof IdentityError) throw cause
      if ((cause as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw new IdentityError('ERR_UNAVAILABLE', `cannot read sealing key "${id}"`, { cause, details: { key_id: id } })
    }
    if (raw.length !== SEALING_KEY_BYTES) {
      raw.fill(0)
      throw new IdentityError('ERR_KEY_INVALID', `sealing key "${id}" is not a ${SEALING_KEY_BYTES}-byte key file`, {
        details: { key_id: id, reason: 'key_malformed' },
      })
    }
    const key = new SoftwareSealingKey(id, raw)
    raw.fill(0)
    return key
  }

  async close(): Promise<void> {
    this.#cache.clear()
    this.#sealing.clear()
  }
}

async function syncDir(dir: string): Promise<void> {
  try {
    const fh = await open(dir, 'r')
    try {
      await fh.sync()
    } finally {
      await fh.close()
    }
  } catch {
    // Directory fsync is best effort (not supported everywhere).
  }
}
