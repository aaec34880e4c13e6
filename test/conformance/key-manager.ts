/**
 * One suite for every KeyManager implementation (memory, disk, pkcs11).
 * Signatures are checked with node:crypto, independently of the manager.
 */
import { constants, createHash, randomBytes, verify, type KeyObject } from 'node:crypto'
import { afterEach, describe, expect, it } from 'vitest'
import type { KeyManager, KeyType, ManagedKey } from '../../src/keymanager/key-manager.js'
import type { SignatureAlgorithm } from '../../src/spiffe/signer.js'

export interface KeyManagerHarness {
  km: KeyManager
  /** Closing `km` is the suite's job; `reopen` returns a fresh manager over the same storage. */
  reopen?: () => Promise<KeyManager>
  /** Releases storage (directories, tokens). Called after the suite closed every manager. */
  cleanup: () => Promise<void> | void
}

export interface KeyManagerConformanceOptions {
  create: () => Promise<KeyManagerHarness>
  keyTypes: readonly KeyType[]
}

const ALL_ALGS: readonly SignatureAlgorithm[] = ['ES256', 'ES384', 'ES512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']

export function allowedAlgorithms(type: KeyType): readonly SignatureAlgorithm[] {
  if (type === 'ec-p256') return ['ES256']
  if (type === 'ec-p384') return ['ES384']
  return ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512']
}

const HASH: Record<SignatureAlgorithm, string> = {
  ES256: 'sha256',
  ES384: 'sha384',
  ES512: 'sha512',
  RS256: 'sha256',
  RS384: 'sha384',
  RS512: 'sha512',
  PS256: 'sha256',
  PS384: 'sha384',
  PS512: 'sha512',
}

/** Verifies a Signer-contract signature with node:crypto. */
export function verifySignature(publicKey: KeyObject, alg: SignatureAlgorithm, data: Uint8Array, sig: Uint8Array): boolean {
  const hash = HASH[alg]
  if (alg.startsWith('ES')) return verify(hash, data, { key: publicKey, dsaEncoding: 'ieee-p1363' }, sig)
  if (alg.startsWith('PS')) {
    return verify(hash, data, { key: publicKey, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: createHash(hash).digest().length }, sig)
  }
  return verify(hash, data, { key: publicKey, padding: constants.RSA_PKCS1_PADDING }, sig)
}

function expectedShape(type: KeyType): { kty: string; detail: string | number } {
  switch (type) {
    case 'ec-p256':
      return { kty: 'ec', detail: 'prime256v1' }
    case 'ec-p384':
      return { kty: 'ec', detail: 'secp384r1' }
    default:
      return { kty: 'rsa', detail: Number(type.slice(4)) }
  }
}

function spki(k: KeyObject): string {
  return k.export({ format: 'der', type: 'spki' }).toString('hex')
}

let seq = 0
/** Unique ids, so suites sharing one persistent store (a token) never collide. */
function uid(tag: string): string {
  seq += 1
  return `${tag}-${process.pid}-${Date.now().toString(36)}-${seq}`
}

export function keyManagerConformance(name: string, opts: KeyManagerConformanceOptions): void {
  describe(`KeyManager conformance: ${name}`, () => {
    const open: KeyManager[] = []
    const harnesses: KeyManagerHarness[] = []

    async function setup(): Promise<KeyManagerHarness> {
      const h = await opts.create()
      open.push(h.km)
      harnesses.push(h)
      return h
    }

    afterEach(async () => {
      for (const km of open.splice(0)) await km.close?.()
      for (const h of harnesses.splice(0)) await h.cleanup()
    })

    describe.each(opts.keyTypes.map((t) => ({ type: t })))('key type $type', ({ type }) => {
      it('generates a key whose signatures verify for every fitting algorithm and rejects the others', async () => {
        const { km } = await setup()
        const id = uid('gen')
        const key = await km.generateKey(id, type)
        expect(key.id).toBe(id)
        expect(key.type).toBe(type)
        const shape = expectedShape(type)
        expect(key.publicKey.type).toBe('public')
        expect(key.publicKey.asymmetricKeyType).toBe(shape.kty)
        const d = key.publicKey.asymmetricKeyDetails
        expect(shape.kty === 'ec' ? d?.namedCurve : d?.modulusLength).toBe(shape.detail)

        const data = randomBytes(200)
        for (const alg of allowedAlgorithms(type)) {
          const sig = await key.sign(data, alg)
          expect(sig).toBeInstanceOf(Uint8Array)
          if (alg.startsWith('ES')) expect(sig.length).toBe(type === 'ec-p256' ? 64 : 96)
          expect(verifySignature(key.publicKey, alg, data, sig), `${alg} signature verifies`).toBe(true)
          const other = Buffer.from(data)
          other[0] = other[0]! ^ 1
          expect(verifySignature(key.publicKey, alg, other, sig), `${alg} signature binds the data`).toBe(false)
        }
        for (const alg of ALL_ALGS.filter((a) => !allowedAlgorithms(type).includes(a))) {
          await expect(key.sign(data, alg), alg).rejects.toThrow(TypeError)
        }
      })
    })

    it('getKey returns the generated key; unknown ids are ERR_KEY_NOT_FOUND', async () => {
      const { km } = await setup()
      const id = uid('get')
      const type = opts.keyTypes[0]!
      const made = await km.generateKey(id, type)
      const got = await km.getKey(id)
      expect(got.id).toBe(id)
      expect(got.type).toBe(type)
      expect(spki(got.publicKey)).toBe(spki(made.publicKey))
      const alg = allowedAlgorithms(type)[0]!
      const data = Buffer.from('hello')
      expect(verifySignature(made.publicKey, alg, data, await got.sign(data, alg))).toBe(true)
      await expect(km.getKey(uid('missing'))).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
    })

    it.each([
      { title: 'empty', id: '' },
      { title: 'slash', id: 'a/b' },
      { title: 'path traversal', id: '../x' },
      { title: 'space', id: 'a b' },
      { title: 'too long', id: 'a'.repeat(65) },
      { title: 'non-ascii', id: 'clé' },
    ])('rejects an invalid key id ($title) with ERR_INVALID_ARGUMENT', async ({ id }) => {
      const { km } = await setup()
      await expect(km.generateKey(id, opts.keyTypes[0]!)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(km.getKey(id)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
      await expect(km.deleteKey(id)).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
    })

    it('accepts the longest valid id (64 characters of [A-Za-z0-9._-])', async () => {
      const { km } = await setup()
      const id = `Az09._-${uid('l')}`.padEnd(64, 'x').slice(0, 64)
      const key = await km.generateKey(id, opts.keyTypes[0]!)
      expect((await km.getKey(id)).id).toBe(key.id)
      await km.deleteKey(id)
    })

    it('generateKey with an existing id replaces the key', async () => {
      const { km } = await setup()
      const id = uid('replace')
      const type = opts.keyTypes[0]!
      const first = await km.generateKey(id, type)
      const second = await km.generateKey(id, type)
      expect(spki(second.publicKey)).not.toBe(spki(first.publicKey))
      const got = await km.getKey(id)
      expect(spki(got.publicKey)).toBe(spki(second.publicKey))
      const alg = allowedAlgorithms(type)[0]!
      const data = Buffer.from('replaced')
      expect(verifySignature(second.publicKey, alg, data, await got.sign(data, alg))).toBe(true)
      expect((await km.listKeys()).filter((k) => k.id === id)).toHaveLength(1)
    })

    it('generateKey can replace a key with one of another type', async () => {
      const { km } = await setup()
      const types = opts.keyTypes
      const other = types.find((t) => t !== types[0]) ?? types[0]!
      const id = uid('retype')
      await km.generateKey(id, types[0]!)
      await km.generateKey(id, other)
      expect((await km.getKey(id)).type).toBe(other)
    })

    it('listKeys lists generated keys and deleteKey removes them', async () => {
      const { km } = await setup()
      const a = uid('list-a')
      const b = uid('list-b')
      const type = opts.keyTypes[0]!
      const ka = await km.generateKey(a, type)
      await km.generateKey(b, type)
      const listed = await km.listKeys()
      const ids = listed.map((k) => k.id)
      expect(ids).toContain(a)
      expect(ids).toContain(b)
      expect(spki(listed.find((k) => k.id === a)!.publicKey)).toBe(spki(ka.publicKey))

      await km.deleteKey(a)
      expect((await km.listKeys()).map((k) => k.id)).not.toContain(a)
      await expect(km.getKey(a)).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
      expect((await km.getKey(b)).id).toBe(b)
      // deleting a missing key is a no-op
      await km.deleteKey(a)
      await km.deleteKey(uid('never'))
    })

    it('100 parallel signatures all verify', async () => {
      const { km } = await setup()
      const type = opts.keyTypes[0]!
      const alg = allowedAlgorithms(type)[0]!
      const key = await km.generateKey(uid('par'), type)
      const inputs = Array.from({ length: 100 }, (_, i) => Buffer.from(`message ${i} ${randomBytes(8).toString('hex')}`))
      const sigs = await Promise.all(inputs.map((d) => key.sign(d, alg)))
      sigs.forEach((sig, i) => expect(verifySignature(key.publicKey, alg, inputs[i]!, sig), `signature ${i}`).toBe(true))
    })

    it('keys survive reopening the manager (when the implementation persists them)', async () => {
      const h = await setup()
      if (h.reopen === undefined) {
        // In-memory implementations: a key lives exactly as long as its manager.
        const id = uid('mem')
        await h.km.generateKey(id, opts.keyTypes[0]!)
        expect((await h.km.listKeys()).map((k) => k.id)).toContain(id)
        return
      }
      const ids = new Map<string, ManagedKey>()
      for (const type of opts.keyTypes.slice(0, 2)) {
        const id = uid(`persist-${type}`)
        ids.set(id, await h.km.generateKey(id, type))
      }
      const deleted = uid('persist-del')
      await h.km.generateKey(deleted, opts.keyTypes[0]!)
      await h.km.deleteKey(deleted)
      await h.km.close?.()
      open.splice(open.indexOf(h.km), 1)

      const km2 = await h.reopen()
      open.push(km2)
      const listed = (await km2.listKeys()).map((k) => k.id)
      for (const [id, before] of ids) {
        expect(listed).toContain(id)
        const after = await km2.getKey(id)
        expect(after.type).toBe(before.type)
        expect(spki(after.publicKey)).toBe(spki(before.publicKey))
        const alg = allowedAlgorithms(after.type)[0]!
        const data = Buffer.from(`after reopen ${id}`)
        expect(verifySignature(before.publicKey, alg, data, await after.sign(data, alg))).toBe(true)
      }
      expect(listed).not.toContain(deleted)
      await expect(km2.getKey(deleted)).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
    })
  })
}
