/**
 * PKCS#11 sealing keys against a real SoftHSM2 token: the AES key is generated
 * in the token and never leaves it, envelopes round-trip and refuse tampering,
 * and a key planted under warrant's label that the token does not keep secret
 * is refused.
 */
import { createDecipheriv } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import pkcs11js from 'pkcs11js'
import { Pkcs11KeyManager, type Pkcs11Config } from '../../src/keymanager/pkcs11/index.js'
import { captureLogger } from '../helpers/capture-logger.js'
import { createSoftHsmToken, type SoftHsmToken } from '../helpers/softhsm.js'
import { tempDir } from '../helpers/temp.js'
import { requireTools } from '../helpers/tools.js'
import { sealingConformance } from '../unit/keymanager/sealing-suite.js'

const haveTools = requireTools('softhsm2-util')
const te = new TextEncoder()

let token: SoftHsmToken
let tmp: { dir: string; cleanup: () => void }

function config(over: Partial<Pkcs11Config> = {}): Pkcs11Config {
  return { module_path: token.modulePath, token_label: token.tokenLabel, pin: token.pin, session_pool_size: 2, ...over }
}

type Raw = InstanceType<typeof pkcs11js.PKCS11>

/** A raw pkcs11js handle on the same module, for looking behind the manager's back. Never finalized here. */
function rawModule(): Raw {
  const p = new pkcs11js.PKCS11()
  p.load(token.modulePath)
  try {
    p.C_Initialize({ flags: pkcs11js.CKF_OS_LOCKING_OK })
  } catch (err) {
    if ((err as Error).message !== 'CKR_CRYPTOKI_ALREADY_INITIALIZED') throw err
  }
  return p
}

/** A R/W session on the test token; the manager under test has logged the application in. */
function rawSession(p: Raw): Buffer {
  const slot = p.C_GetSlotList(true).find((s) => p.C_GetTokenInfo(s).label.trim() === token.tokenLabel)
  if (slot === undefined) throw new Error('token not found')
  return p.C_OpenSession(slot, pkcs11js.CKF_SERIAL_SESSION | pkcs11js.CKF_RW_SESSION)
}

function findSecret(p: Raw, session: Buffer, label: string): Buffer[] {
  p.C_FindObjectsInit(session, [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_LABEL, value: label },
  ])
  const found = p.C_FindObjects(session, 10)
  p.C_FindObjectsFinal(session)
  return found
}

function plantAes(p: Raw, session: Buffer, label: string, over: { extractable?: boolean; sensitive?: boolean; value?: Buffer }): Buffer {
  const base = [
    { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
    { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_AES },
    { type: pkcs11js.CKA_TOKEN, value: true },
    { type: pkcs11js.CKA_PRIVATE, value: true },
    { type: pkcs11js.CKA_ENCRYPT, value: true },
    { type: pkcs11js.CKA_DECRYPT, value: true },
    { type: pkcs11js.CKA_LABEL, value: label },
    { type: pkcs11js.CKA_ID, value: Buffer.from('planted') },
  ]
  if (over.value !== undefined) {
    // An imported key: never ALWAYS_SENSITIVE / NEVER_EXTRACTABLE, whatever it says now.
    return p.C_CreateObject(session, [
      ...base,
      { type: pkcs11js.CKA_VALUE, value: over.value },
      { type: pkcs11js.CKA_SENSITIVE, value: true },
      { type: pkcs11js.CKA_EXTRACTABLE, value: false },
    ])
  }
  return p.C_GenerateKey(session, { mechanism: pkcs11js.CKM_AES_KEY_GEN }, [
    ...base,
    { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
    { type: pkcs11js.CKA_SENSITIVE, value: over.sensitive ?? true },
    { type: pkcs11js.CKA_EXTRACTABLE, value: over.extractable ?? false },
  ])
}

describe.runIf(haveTools)('Pkcs11KeyManager sealing keys with SoftHSM2', () => {
  beforeAll(async () => {
    tmp = tempDir('wseal-hsm-')
    token = await createSoftHsmToken({ dir: tmp.dir, label: 'seal-token', pin: '24681357' })
    process.env.SOFTHSM2_CONF = token.confPath
  })
  afterAll(() => tmp?.cleanup())

  let run = 0
  sealingConformance('pkcs11 (SoftHSM2)', async () => {
    // Each case its own label prefix, so cases do not see each other's keys.
    const prefix = `conf${++run}-`
    return {
      km: await Pkcs11KeyManager.open(config({ key_label_prefix: prefix })),
      reopen: () => Pkcs11KeyManager.open(config({ key_label_prefix: prefix })),
      cleanup: () => {},
    }
  })

  it('generates the AES-256 key in the token: sensitive, never extractable, private, its value refused', async () => {
    const km = await Pkcs11KeyManager.open(config())
    const p = rawModule()
    const session = rawSession(p)
    try {
      const key = await km.sealingKey('creds')
      const sealed = await key.seal(te.encode('sk-live-1'), te.encode('aad'))
      const found = findSecret(p, session, 'warrant-sealing-creds')
      expect(found).toHaveLength(1)
      const h = found[0]!
      const attrs = p.C_GetAttributeValue(session, h, [
        { type: pkcs11js.CKA_TOKEN },
        { type: pkcs11js.CKA_PRIVATE },
        { type: pkcs11js.CKA_SENSITIVE },
        { type: pkcs11js.CKA_EXTRACTABLE },
        { type: pkcs11js.CKA_ALWAYS_SENSITIVE },
        { type: pkcs11js.CKA_NEVER_EXTRACTABLE },
        { type: pkcs11js.CKA_ENCRYPT },
        { type: pkcs11js.CKA_DECRYPT },
        { type: pkcs11js.CKA_WRAP },
        { type: pkcs11js.CKA_LOCAL },
      ])
      expect(attrs.map((a) => a.value[0])).toEqual([1, 1, 1, 0, 1, 1, 1, 1, 0, 1])
      const [kt, len] = p.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_KEY_TYPE }, { type: pkcs11js.CKA_VALUE_LEN }])
      expect(kt!.value.readUInt32LE(0)).toBe(pkcs11js.CKK_AES)
      expect(len!.value.readUInt32LE(0)).toBe(32)
      expect(() => p.C_GetAttributeValue(session, h, [{ type: pkcs11js.CKA_VALUE }])).toThrow('CKR_ATTRIBUTE_SENSITIVE')
      // Nor can it be wrapped out of the token.
      expect(() => p.C_WrapKey(session, { mechanism: pkcs11js.CKM_AES_KEY_WRAP }, h, h, Buffer.alloc(64))).toThrow(/CKR_/)
      // The envelope is ordinary AES-256-GCM: the token itself opens it with the same parameters.
      const gcm: pkcs11js.GcmParams = {
        type: pkcs11js.CK_PARAMS_GCM,
        iv: Buffer.from(sealed.subarray(1, 13)),
        ivBits: 96,
        aad: Buffer.from('aad'),
        tagBits: 128,
      }
      p.C_DecryptInit(session, { mechanism: pkcs11js.CKM_AES_GCM, parameter: gcm }, h)
      expect(p.C_Decrypt(session, Buffer.from(sealed.subarray(13)), Buffer.alloc(sealed.length)).toString()).toBe('sk-live-1')
      expect(Buffer.from(await key.open(sealed, te.encode('aad'))).toString()).toBe('sk-live-1')
      await km.deleteSealingKey('creds')
      expect(findSecret(p, session, 'warrant-sealing-creds')).toHaveLength(0)
    } finally {
      p.C_CloseSession(session)
      await km.close()
    }
  })

  it.each([
    { title: 'extractable', over: { extractable: true }, problem: 'CKA_EXTRACTABLE is true' },
    { title: 'not sensitive', over: { sensitive: false }, problem: 'CKA_SENSITIVE is false' },
    { title: 'imported (never always sensitive)', over: { value: Buffer.alloc(32, 9) }, problem: 'CKA_ALWAYS_SENSITIVE is false' },
  ])('refuses a planted $title key under the label with ERR_KEY_INVALID, and never seals with or replaces it', async ({ title, over, problem }) => {
    const log = captureLogger()
    const km = await Pkcs11KeyManager.open(config(), { log })
    const p = rawModule()
    const session = rawSession(p)
    const id = `planted-${title.split(' ')[0]!}`
    try {
      plantAes(p, session, `warrant-sealing-${id}`, over)
      const err = await km.sealingKey(id).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(err).toMatchObject({ code: 'ERR_KEY_INVALID', details: { key_id: id, reason: 'key_not_protected' } })
      expect((err as { details: { problems: string[] } }).details.problems).toContain(problem)
      expect(log.lines.some((l) => l.msg === 'PKCS#11: refusing a sealing key the token does not keep secret')).toBe(true)
      expect(findSecret(p, session, `warrant-sealing-${id}`)).toHaveLength(1) // not replaced by a fresh key
    } finally {
      p.C_CloseSession(session)
      await km.close()
    }
  })

  it('refuses a planted key next to a good one, and a non-AES object under the label', async () => {
    const km = await Pkcs11KeyManager.open(config())
    const p = rawModule()
    const session = rawSession(p)
    try {
      await km.sealingKey('pair')
      plantAes(p, session, 'warrant-sealing-pair', { extractable: true })
      await expect(km.sealingKey('pair')).rejects.toMatchObject({ code: 'ERR_KEY_INVALID', details: { reason: 'key_not_protected' } })
      p.C_GenerateKey(session, { mechanism: pkcs11js.CKM_GENERIC_SECRET_KEY_GEN }, [
        { type: pkcs11js.CKA_CLASS, value: pkcs11js.CKO_SECRET_KEY },
        { type: pkcs11js.CKA_KEY_TYPE, value: pkcs11js.CKK_GENERIC_SECRET },
        { type: pkcs11js.CKA_VALUE_LEN, value: 32 },
        { type: pkcs11js.CKA_TOKEN, value: true },
        { type: pkcs11js.CKA_PRIVATE, value: true },
        { type: pkcs11js.CKA_SENSITIVE, value: true },
        { type: pkcs11js.CKA_EXTRACTABLE, value: false },
        { type: pkcs11js.CKA_LABEL, value: 'warrant-sealing-hmac' },
      ])
      await expect(km.sealingKey('hmac')).rejects.toMatchObject({ code: 'ERR_KEY_INVALID', details: { reason: 'key_malformed' } })
    } finally {
      p.C_CloseSession(session)
      await km.close()
    }
  })

  it('a SealingKey whose token object was deleted and replaced refuses (ERR_KEY_NOT_FOUND), never using the new key silently', async () => {
    const km = await Pkcs11KeyManager.open(config())
    try {
      const old = await km.sealingKey('rotated')
      await km.deleteSealingKey('rotated')
      await expect(old.seal(te.encode('x'), te.encode(''))).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
      const fresh = await km.sealingKey('rotated')
      const sealed = await fresh.seal(te.encode('x'), te.encode(''))
      await expect(old.open(sealed, te.encode(''))).rejects.toMatchObject({ code: 'ERR_KEY_NOT_FOUND' })
      expect(Buffer.from(await fresh.open(sealed, te.encode(''))).toString()).toBe('x')
    } finally {
      await km.close()
    }
  })

  it('tampered data is refused without leaving an operation active on the pooled session', async () => {
    const km = await Pkcs11KeyManager.open(config({ session_pool_size: 1 }))
    try {
      const key = await km.sealingKey('one-session')
      const sealed = await key.seal(te.encode('payload'), te.encode('a'))
      const bad = Uint8Array.from(sealed)
      bad[20] = bad[20]! ^ 0xff
      for (let i = 0; i < 3; i++) await expect(key.open(bad, te.encode('a'))).rejects.toMatchObject({ code: 'ERR_SEALED_DATA_INVALID' })
      expect(Buffer.from(await key.open(sealed, te.encode('a'))).toString()).toBe('payload')
      expect(Buffer.from(await key.open(await key.seal(te.encode('again'), te.encode('a')), te.encode('a'))).toString()).toBe('again')
      // Node's AES-256-GCM cannot open it with some other key either (the envelope is no software format).
      const d = createDecipheriv('aes-256-gcm', Buffer.alloc(32), sealed.subarray(1, 13), { authTagLength: 16 })
      d.setAuthTag(sealed.subarray(sealed.length - 16))
      d.update(sealed.subarray(13, sealed.length - 16))
      expect(() => d.final()).toThrow()
    } finally {
      await km.close()
    }
  })
})
