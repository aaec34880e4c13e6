/**
 * One sealing suite for every KeyManager with the capability (memory, disk,
 * pkcs11). Envelopes are taken apart here, independently of the manager.
 */
import { createDecipheriv } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import type { SealingKeyManager } from '../../../src/keymanager/key-manager.js'
import { canSeal } from '../../../src/keymanager/key-manager.js'
import { MAX_SEALED_PLAINTEXT } from '../../../src/keymanager/sealed-envelope.js'

export interface SealingHarness {
  km: SealingKeyManager
  /** A fresh manager over the same storage (disk, pkcs11); undefined for memory. */
  reopen?: () => Promise<SealingKeyManager>
  cleanup: () => Promise<void> | void
}

const te = new TextEncoder()
const PT = te.encode('sk-live-0123456789abcdef')
const AAD = te.encode('tool:spiffe://example.org/tools/search')

async function refusal(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    (v) => ({ resolved: v }),
    (e: unknown) => e,
  )
}

function flip(buf: Uint8Array, index: number): Uint8Array {
  const out = Uint8Array.from(buf)
  out[index] = out[index]! ^ 0x01
  return out
}

export function sealingConformance(name: string, create: () => Promise<SealingHarness>): void {
  describe(`SealingKey conformance: ${name}`, () => {
    async function withKm<T>(fn: (h: SealingHarness) => Promise<T>): Promise<T> {
      const h = await create()
      try {
        return await fn(h)
      } finally {
        await h.km.close?.()
        await h.cleanup()
      }
    }

    it('has the capability', async () => {
      await withKm(async ({ km }) => expect(canSeal(km)).toBe(true))
    })

    it('round-trips, with the envelope version ‖ 12-byte IV ‖ ciphertext ‖ 16-byte tag', async () => {
      await withKm(async ({ km }) => {
        const key = await km.sealingKey('creds')
        expect(key.id).toBe('creds')
        for (const pt of [PT, new Uint8Array([0]), new Uint8Array(MAX_SEALED_PLAINTEXT).fill(7)]) {
          const sealed = await key.seal(pt, AAD)
          expect(sealed).toBeInstanceOf(Uint8Array)
          expect(sealed.byteLength).toBe(1 + 12 + pt.byteLength + 16)
          expect(sealed[0]).toBe(0x01)
          if (pt.byteLength > 16) expect(Buffer.from(sealed.subarray(13, 13 + pt.byteLength)).equals(Buffer.from(pt))).toBe(false)
          expect(Buffer.from(await key.open(sealed, AAD)).equals(Buffer.from(pt))).toBe(true)
        }
        // An empty AAD is an AAD like any other.
        expect(Buffer.from(await key.open(await key.seal(PT, new Uint8Array(0)), new Uint8Array(0)))).toEqual(Buffer.from(PT))
      })
    })

    it('uses a fresh IV for every seal (no two of 64 envelopes share one)', async () => {
      await withKm(async ({ km }) => {
        const key = await km.sealingKey('iv')
        const sealed = await Promise.all(Array.from({ length: 64 }, () => key.seal(PT, AAD)))
        const ivs = new Set(sealed.map((s) => Buffer.from(s.subarray(1, 13)).toString('hex')))
        expect(ivs.size).toBe(64)
        const bodies = new Set(sealed.map((s) => Buffer.from(s.subarray(13)).toString('hex')))
        expect(bodies.size).toBe(64)
        for (const s of sealed) expect(Buffer.from(await key.open(s, AAD))).toEqual(Buffer.from(PT))
      })
    })

    it('returns the same key on later calls and, where stored, after a restart', async () => {
      const h = await create()
      try {
        const a = await h.km.sealingKey('same')
        const sealed = await a.seal(PT, AAD)
        const b = await h.km.sealingKey('same')
        expect(Buffer.from(await b.open(sealed, AAD))).toEqual(Buffer.from(PT))
        const [c, d] = await Promise.all([h.km.sealingKey('racing'), h.km.sealingKey('racing')])
        expect(Buffer.from(await d.open(await c.seal(PT, AAD), AAD))).toEqual(Buffer.from(PT))
        if (h.reopen !== undefined) {
          await h.km.close?.()
          const again = await h.reopen()
          try {
            const e = await again.sealingKey('same')
            expect(Buffer.from(await e.open(sealed, AAD))).toEqual(Buffer.from(PT))
          } finally {
            await again.close?.()
          }
        }
      } finally {
        await h.km.close?.()
        await h.cleanup()
      }
    })

    it.each([
      { part: 'version byte', index: () => 0 },
      { part: 'first IV byte', index: () => 1 },
      { part: 'last IV byte', index: () => 12 },
      { part: 'first ciphertext byte', index: () => 13 },
      { part: 'last ciphertext byte', index: (n: number) => n - 17 },
      { part: 'first tag byte', index: (n: number) => n - 16 },
      { part: 'last tag byte', index: (n: number) => n - 1 },
    ])('refuses a change to the $part with ERR_SEALED_DATA_INVALID', async ({ index }) => {
      await withKm(async ({ km }) => {
        const key = await km.sealingKey('tamper')
        const sealed = await key.seal(PT, AAD)
        const err = await refusal(key.open(flip(sealed, index(sealed.byteLength)), AAD))
        expect(err).toMatchObject({ name: 'IdentityError', code: 'ERR_SEALED_DATA_INVALID', details: { key_id: 'tamper' } })
        expect(JSON.stringify(err)).not.toContain(Buffer.from(PT).toString('hex'))
        // The original still opens: the refusal left nothing behind (pkcs11: no operation left active).
        expect(Buffer.from(await key.open(sealed, AAD))).toEqual(Buffer.from(PT))
      })
    })

    it('refuses truncated, extended, empty and reordered envelopes', async () => {
      await withKm(async ({ km }) => {
        const key = await km.sealingKey('shape')
        const sealed = await key.seal(PT, AAD)
        const cases = [
          sealed.subarray(0, sealed.byteLength - 1),
          sealed.subarray(0, 1 + 12 + 16),
          sealed.subarray(0, 13),
          new Uint8Array(0),
          Uint8Array.from([...sealed, 0]),
          Uint8Array.from([sealed[0]!, ...sealed.subarray(13, 25), ...sealed.subarray(1, 13), ...sealed.subarray(25)]),
        ]
        for (const bad of cases) await expect(key.open(bad, AAD)).rejects.toMatchObject({ code: 'ERR_SEALED_DATA_INVALID' })
        expect(Buffer.from(await key.open(sealed, AAD))).toEqual(Buffer.from(PT))
      })
    })

    it('refuses the wrong AAD (changed, extended, empty)', async () => {
      await withKm(async ({ km }) => {
        const key = await km.sealingKey('aad')
        const sealed = await key.seal(PT, AAD)
        for (const aad of [flip(AAD, 3), Uint8Array.from([...AAD, 0]), new Uint8Array(0)]) {
          await expect(key.open(sealed, aad)).rejects.toMatchObject({ code: 'ERR_SEALED_DATA_INVALID', details: { reason: 'authentication_failed' } })
        }
      })
    })

    it('refuses another key: another id, and the same id after deleteSealingKey', async () => {
      await withKm(async ({ km }) => {
        const a = await km.sealingKey('key-a')
        const b = await km.sealingKey('key-b')
        const sealed = await a.seal(PT, AAD)
        await expect(b.open(sealed, AAD)).rejects.toMatchObject({ code: 'ERR_SEALED_DATA_INVALID' })
        await km.deleteSealingKey('key-a')
        await km.deleteSealingKey('key-a') // a no-op now
        const fresh = await km.sealingKey('key-a')
        await expect(fresh.open(sealed, AAD)).rejects.toMatchObject({ code: 'ERR_SEALED_DATA_INVALID' })
        expect(Buffer.from(await fresh.open(await fresh.seal(PT, AAD), AAD))).toEqual(Buffer.from(PT))
      })
    })

    it('keeps sealing keys apart from signing keys', async () => {
      await withKm(async ({ km }) => {
        await km.sealingKey('shared-id')
        expect((await km.listKeys()).map((k) => k.id)).toEqual([])
        await expect(km.getKey('shared-id')).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
        await km.generateKey('shared-id', 'ec-p256')
        await km.deleteKey('shared-id')
        const key = await km.sealingKey('shared-id')
        const sealed = await key.seal(PT, AAD)
        expect(Buffer.from(await (await km.sealingKey('shared-id')).open(sealed, AAD))).toEqual(Buffer.from(PT))
      })
    })

    it('rejects bad arguments as programmer errors and bad ids with ERR_INVALID_ARGUMENT', async () => {
      await withKm(async ({ km }) => {
        const key = await km.sealingKey('args')
        await expect(key.seal(new Uint8Array(0), AAD)).rejects.toThrow(RangeError)
        await expect(key.seal(new Uint8Array(MAX_SEALED_PLAINTEXT + 1), AAD)).rejects.toThrow(RangeError)
        await expect(key.seal('text' as never, AAD)).rejects.toThrow(TypeError)
        await expect(key.seal(PT, 'aad' as never)).rejects.toThrow(TypeError)
        await expect(key.open('x' as never, AAD)).rejects.toThrow(TypeError)
        await expect(km.sealingKey('../escape')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
        await expect(km.deleteSealingKey('a/b')).rejects.toMatchObject({ code: 'ERR_INVALID_ARGUMENT' })
        expect(JSON.parse(JSON.stringify(key))).toEqual({ id: 'args' })
      })
    })
  })
}

/** Opens an envelope with a raw AES-256-GCM key (for managers whose key bytes a test can read). */
export function openWithRawKey(raw: Uint8Array, sealed: Uint8Array, aad: Uint8Array): Buffer {
  const d = createDecipheriv('aes-256-gcm', raw, sealed.subarray(1, 13), { authTagLength: 16 })
  d.setAuthTag(sealed.subarray(sealed.byteLength - 16))
  d.setAAD(aad)
  return Buffer.concat([d.update(sealed.subarray(13, sealed.byteLength - 16)), d.final()])
}
