/**
 * Pkcs11KeyManager against a real SoftHSM2 token, initialized for this file in
 * its own SOFTHSM2_CONF (vitest runs each file in its own fork, so setting
 * process.env here reaches the module's C_Initialize).
 */
import { execFileSync } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pkcs11js from 'pkcs11js'
import { Pkcs11KeyManager, type Pkcs11Config } from '../../src/keymanager/pkcs11/index.js'
import { keyManagerConformance, verifySignature } from '../conformance/key-manager.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { createSoftHsmToken, type SoftHsmToken } from '../helpers/softhsm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'

const haveTools = requireTools('softhsm2-util', 'openssl')

let token: SoftHsmToken
let tmp: { dir: string; cleanup: () => void }

function config(over: Partial<Pkcs11Config> = {}): Pkcs11Config {
  return { module_path: token.modulePath, token_label: token.tokenLabel, pin: token.pin, session_pool_size: 4, ...over }
}

/** A raw pkcs11js handle on the same module, for looking behind the manager's back. Never finalized here. */
function rawModule(): InstanceType<typeof pkcs11js.PKCS11> {
  const p = new pkcs11js.PKCS11()
  p.load(token.modulePath)
  try {
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
  } catch (err) {
    if ((err as Error).message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err
  }
  return p
}

function tokenSlot(p: InstanceType<typeof pkcs11js.PKCS11>): Buffer {
  const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === token.tokenLabel)
  if (slot === undefined) throw new Error('token not found')
  return slot
}

describe.runIf(haveTools)('Pkcs11KeyManager with SoftHSM2', () => {
  beforeAll(async () => {
    tmp = tempDir('whsm-')
    token = await createSoftHsmToken({ dir: tmp.dir, label: 'e2e-token', pin: '98765432' })
    process.env.SOFTHSM2_CONF = token.confPath
  })
  afterAll(() => tmp?.cleanup())

  // Runs first, while no manager is logged in: once one is, SoftHSM answers any
  // further C_Login with CKR_USER_ALREADY_LOGGED_IN and cannot check a PIN.
  describe('start-up errors', () => {
    it.each([
      { title: 'wrong PIN', over: () => ({ pin: '00000000' }), code: 'ERR_HSM_LOGIN_FAILED' },
      { title: 'missing module file', over: () => ({ module_path: join(tmp.dir, 'nope.so') }), code: 'ERR_HSM_UNAVAILABLE' },
      { title: 'file that is not a module', over: () => ({ module_path: token.confPath }), code: 'ERR_HSM_UNAVAILABLE' },
      { title: 'unknown token label', over: () => ({ token_label: 'no-such-token' }), code: 'ERR_HSM_UNAVAILABLE' },
      { title: 'unknown slot', over: (): Partial<Pkcs11Config> => ({ slot: 987654 }), code: 'ERR_HSM_UNAVAILABLE' },
    ])('$title → $code, without the PIN in the error', async ({ over, code }) => {
      const cfg = config(over())
      if (cfg.slot !== undefined) delete cfg.token_label
      const err = await Pkcs11KeyManager.open(cfg).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toMatchObject({ code })
      const text = `${String((err as Error).message)} ${JSON.stringify((err as { details?: unknown }).details ?? {})}`
      expect(text).not.toContain(token.pin)
      expect(text).not.toContain('00000000')
    })

    it('names the module path when it cannot be loaded', async () => {
      const path = join(tmp.dir, 'missing-module.so')
      await expect(Pkcs11KeyManager.open(config({ module_path: path }))).rejects.toThrow(`cannot load PKCS#11 module ${path}`)
    })

    it('rejects a config without token_label or slot as a programmer error', async () => {
      const cfg = config()
      delete cfg.token_label
      await expect(Pkcs11KeyManager.open(cfg)).rejects.toThrow(TypeError)
    })
  })

  keyManagerConformance('pkcs11 (SoftHSM2)', {
    create: async () => ({
      km: await Pkcs11KeyManager.open(config()),
      reopen: () => Pkcs11KeyManager.open(config()),
      cleanup: () => {},
    }),
    keyTypes: ['ec-p256', 'ec-p384', 'rsa-2048', 'rsa-3072', 'rsa-4096'],
  })

  describe('token-specific behaviour', () => {
    it('finds the token by slot id as well as by label', async () => {
      const p = rawModule()
      const slotHandle = tokenSlot(p)
      const slot = Number(slotHandle.readBigUInt64LE(0))
      const cfg = config({ slot })
      delete cfg.token_label
      const km = await Pkcs11KeyManager.open(cfg)
      try {
        expect(km.tokenLabel).toBe(token.tokenLabel)
        const key = await km.generateKey('by-slot', 'ec-p256')
        expect((await km.getKey('by-slot')).id).toBe(key.id)
      } finally {
        await km.close()
      }
    })

    it('keeps private keys sensitive and non-extractable; CKA_VALUE is refused', async () => {
      const km = await Pkcs11KeyManager.open(config({ key_label_prefix: 'attr-' }))
      const p = rawModule()
      const session = p.C_OpenSession(tokenSlot(p), pkcs11js.CKF_SERIAL_SESSION)
      try {
        for (const [id, type] of [
          ['ec', 'ec-p256'],
          ['rsa', 'rsa-2048'],
        ] as const) {
          await km.generateKey(id, type)
          p.C_FindObjectsInit(session, [
            { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_PRIVATE_KEY },
            { type: pkcs11js.CKA_LABEL, value: `attr-${id}` },
          ])
          const found = p.C_FindObjects(session, 10)
          p.C_FindObjectsFinal(session)
          expect(found).toHaveLength(1)
          const priv = found[0]!
          const attrs = p.C_GetAttributeValue(session, priv, [
            { type: pkcs11js.CKA_SENSITIVE },
            { type: pkcs11js.CKA_EXTRACTABLE },
            { type: pkcs11js.CKA_TOKEN },
            { type: pkcs11js.CKA_PRIVATE },
            { type: pkcs11js.CKA_SIGN },
            { type: pkcs11js.CKA_ID },
          ])
          expect(attrs.map((a) => a.value[0])).toEqual([1, 0, 1, 1, 1, Buffer.from(id)[0]])
          expect(attrs[5]!.value.toString()).toBe(id)
          const secret = type === 'ec-p256' ? pkcs11js.CKA_VALUE : pkcs11js.CKA_PRIVATE_EXPONENT
          expect(() => p.C_GetAttributeValue(session, priv, [{ type: secret }])).toThrow('CKR_ATTRIBUTE_SENSITIVE')
        }
      } finally {
        p.C_CloseSession(session)
        await km.close()
      }
    })

    it('produces ECDSA signatures that openssl verifies (r||s converted to DER)', async () => {
      const km = await Pkcs11KeyManager.open(config())
      try {
        for (const [type, alg, dgst] of [
          ['ec-p256', 'ES256', '-sha256'],
          ['ec-p384', 'ES384', '-sha384'],
        ] as const) {
          const key = await km.generateKey(`openssl-${type}`, type)
          const data = randomBytes(333)
          const raw = Buffer.from(await key.sign(data, alg))
          const dir = tmp.dir
          writeFileSync(join(dir, 'data.bin'), data)
          writeFileSync(join(dir, 'pub.pem'), key.publicKey.export({ format: 'pem', type: 'spki' }))
          writeFileSync(join(dir, 'sig.der'), rawToDer(raw))
          const out = execFileSync('openssl', ['dgst', dgst, '-verify', join(dir, 'pub.pem'), '-signature', join(dir, 'sig.der'), join(dir, 'data.bin')], {
            encoding: 'utf8',
          })
          expect(out.trim()).toBe('Verified OK')
        }
        const rsa = await km.generateKey('openssl-rsa', 'rsa-2048')
        const data = randomBytes(100)
        writeFileSync(join(tmp.dir, 'data.bin'), data)
        writeFileSync(join(tmp.dir, 'pub.pem'), rsa.publicKey.export({ format: 'pem', type: 'spki' }))
        writeFileSync(join(tmp.dir, 'sig.bin'), await rsa.sign(data, 'PS256'))
        const out = execFileSync(
          'openssl',
          [
            'dgst',
            '-sha256',
            '-sigopt',
            'rsa_padding_mode:pss',
            '-sigopt',
            'rsa_pss_saltlen:32',
            '-verify',
            join(tmp.dir, 'pub.pem'),
            '-signature',
            join(tmp.dir, 'sig.bin'),
            join(tmp.dir, 'data.bin'),
          ],
          { encoding: 'utf8' },
        )
        expect(out.trim()).toBe('Verified OK')
      } finally {
        await km.close()
      }
    })

    it('recovers when every session is closed behind its back', async () => {
      const log = captureLogger()
      const km = await Pkcs11KeyManager.open(config({ session_pool_size: 3 }), { log })
      try {
        const key = await km.generateKey('recover', 'ec-p256')
        const p = rawModule()
        p.C_CloseAllSessions(tokenSlot(p))
        const inputs = Array.from({ length: 12 }, (_, i) => Buffer.from(`after close ${i}`))
        const sigs = await Promise.all(inputs.map((d) => key.sign(d, 'ES256')))
        sigs.forEach((s, i) => expect(verifySignature(key.publicKey, 'ES256', inputs[i]!, s)).toBe(true))
        expect(log.lines.filter((l) => l.msg.startsWith('PKCS#11 session lost')).length).toBeGreaterThanOrEqual(1)
        expect((await km.getKey('recover')).id).toBe('recover')
        expect(JSON.stringify(log.lines)).not.toContain(token.pin)
      } finally {
        await km.close()
      }
    })

    it('a ManagedKey from before a replacement no longer signs (ERR_KEY_NOT_FOUND), the new one does', async () => {
      const km = await Pkcs11KeyManager.open(config())
      try {
        const old = await km.generateKey('rotated', 'ec-p256')
        const fresh = await km.generateKey('rotated', 'ec-p256')
        await expect(old.sign(Buffer.from('x'), 'ES256')).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
        const sig = await fresh.sign(Buffer.from('x'), 'ES256')
        expect(verifySignature(fresh.publicKey, 'ES256', Buffer.from('x'), sig)).toBe(true)
        await km.deleteKey('rotated')
        await expect(fresh.sign(Buffer.from('x'), 'ES256')).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
      } finally {
        await km.close()
      }
    })

    it.each(['sync', 'async', 'auto'] as const)('signs correctly in sign_mode %s, in parallel, with EC and RSA keys', async (mode) => {
      const km = await Pkcs11KeyManager.open(config({ sign_mode: mode, session_pool_size: 2 }))
      try {
        for (const [type, alg] of [
          ['ec-p256', 'ES256'],
          ['rsa-2048', 'PS256'],
          ['rsa-2048', 'RS256'],
        ] as const) {
          const key = await km.generateKey(`mode-${mode}-${type}`, type)
          const inputs = Array.from({ length: 20 }, (_, i) => Buffer.from(`${mode} ${type} ${i}`))
          const sigs = await Promise.all(inputs.map((d) => key.sign(d, alg)))
          sigs.forEach((sig, i) => expect(verifySignature(key.publicKey, alg, inputs[i]!, sig), `${alg} #${i}`).toBe(true))
        }
      } finally {
        await km.close()
      }
    })

    it('rejects an unknown sign_mode as a programmer error', async () => {
      await expect(Pkcs11KeyManager.open(config({ sign_mode: 'fast' as never }))).rejects.toThrow(TypeError)
    })

    it('keeps keys apart by label prefix', async () => {
      const a = await Pkcs11KeyManager.open(config({ key_label_prefix: 'tenant-a-' }))
      const b = await Pkcs11KeyManager.open(config({ key_label_prefix: 'tenant-b-' }))
      try {
        await a.generateKey('shared-id', 'ec-p256')
        await expect(b.getKey('shared-id')).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
        expect((await a.listKeys()).map((k) => k.id)).toEqual(['shared-id'])
        expect((await b.listKeys()).map((k) => k.id)).toEqual([])
      } finally {
        await a.close()
        await b.close()
      }
    })

    it('a closed manager refuses to sign; close is idempotent', async () => {
      const km = await Pkcs11KeyManager.open(config())
      const key = await km.generateKey('closed', 'ec-p256')
      await km.close()
      await km.close()
      await expect(key.sign(createHash('sha256').digest(), 'ES256')).rejects.toMatchObject({ code: 'ERR_HSM_UNAVAILABLE' })
    })
  })
})

/** IEEE P1363 r||s → DER ECDSA-Sig-Value. */
function rawToDer(raw: Buffer): Buffer {
  const half = raw.length / 2
  const int = (b: Buffer): Buffer => {
    let i = 0
    while (i < b.length - 1 && b[i] === 0) i++
    let v = b.subarray(i)
    if (v[0]! & 0x80) v = Buffer.concat([Buffer.from([0]), v])
    return Buffer.concat([Buffer.from([0x02, v.length]), v])
  }
  const body = Buffer.concat([int(raw.subarray(0, half)), int(raw.subarray(half))])
  const len = body.length < 128 ? Buffer.from([body.length]) : Buffer.from([0x81, body.length])
  return Buffer.concat([Buffer.from([0x30]), len, body])
}
